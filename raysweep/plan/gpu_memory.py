"""The GPU share of an evaluation trial, sized from the peak GPU memory its kind of trial needs.

Trials of one *kind* (encoder architecture, protocol, batch size) need the same memory. The
first trial of a kind that runs on a GPU measures its peak (``torch.cuda.max_memory_allocated``,
reset before it starts) and stores it as one small JSON file per kind in the experiment's
storage, ``<experiment>/gpu_memory/<encoder>-<protocol>-b<batch>.json``, next to the rows; it is
read back as JSON only. Later trials of that kind are packed by it:

    trials per GPU = floor(device memory / (measured peak x margin + process overhead)),
                     at least 1
    GPU share      = 1 / trials per GPU

so the share is a divisor of 1 (1, 1/2, 1/3, ...) and that many trials always fit one device
(the count is rounded down, never the memory). ``margin`` is ``resources.gpu_memory_margin``
(default 1.25: the caching allocator's fragmentation and blocks it keeps are not counted by
``max_memory_allocated``). The process overhead is what the trial's process holds on the
device beyond its allocator (the CUDA context, cuBLAS/cuDNN handles: several hundred MiB per
process, however small the trial): device memory in use minus ``torch.cuda.memory_reserved``,
read when the measuring trial ends, alone on its GPU (another process on that GPU makes it
larger, never smaller: the packing errs on the side of fewer trials). Every packed trial is a
process of its own and pays it once, so it is added, not multiplied. Measurements stored
before it was recorded count it as 0. The device memory is that of the GPU that measured: a
cluster of one kind of GPU is assumed.

A kind not measured yet runs its first trial on a whole GPU, in a pass of its own before the
other trials (:func:`raysweep.stages.evaluate.evaluation_tuners`); an explicit
``resources.gpus_per_trial`` in the spec is used as given and nothing is measured.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from raysweep.storage.atomic import atomic_write_json
from raysweep.storage.paths import AnyPath
from raysweep.storage.reading import (
    StoredFileError,
    check_fields,
    check_within,
    int_field,
    read_json,
    str_field,
)

#: The experiment's folder of measurements (one JSON file per kind of trial).
GPU_MEMORY_DIR = "gpu_memory"
#: At most this many trials share one GPU, however small their measured peak (Ray keeps GPU
#: shares to 4 decimals; CPUs bound the packing long before).
MAX_TRIALS_PER_GPU = 64


@dataclass(frozen=True, order=True)
class TrialKind:
    """Trials that need the same GPU memory: encoder architecture, protocol, batch size."""

    encoder: str
    protocol: str
    batch_size: int

    @property
    def file_name(self) -> str:
        return f"{self.encoder}-{self.protocol}-b{self.batch_size}.json"

    def describe(self) -> str:
        return f"{self.encoder} {self.protocol} batch {self.batch_size}"


@dataclass(frozen=True)
class MemoryMeasurement:
    """One kind's measured peak (bytes) on a device of ``device_bytes`` total memory, and the
    process overhead beyond the allocator (``overhead_bytes``: the CUDA context and handles)."""

    peak_bytes: int
    device_bytes: int
    device_name: str = ""
    overhead_bytes: int = 0

    @classmethod
    def from_dict(cls, data: Any) -> MemoryMeasurement:
        """From the stored JSON object (``overhead_bytes`` 0 when absent: a file written before
        it was recorded); ``ValueError`` when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        overhead = data.get("overhead_bytes", 0)
        if isinstance(overhead, bool) or not isinstance(overhead, int) or overhead < 0:
            raise ValueError("overhead_bytes must be a non-negative integer")
        return cls(_positive_int(data.get("peak_bytes")), _positive_int(data.get("device_bytes")),
                   str(data.get("device_name", "")), overhead)


def _positive_int(value: object) -> int:
    """``value`` when it is a positive integer (a bool is not one), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("peak_bytes and device_bytes must be positive integers")
    return value


def trials_per_gpu(peak_bytes: float, device_bytes: float, margin: float,
                   overhead_bytes: float = 0) -> int:
    """How many trials of peak ``peak_bytes`` (x ``margin``), each a process holding
    ``overhead_bytes`` more, fit one device of ``device_bytes``: rounded down, between 1 and
    :data:`MAX_TRIALS_PER_GPU`."""
    need = peak_bytes * margin + overhead_bytes
    fit = math.floor(device_bytes / need + 1e-9) if need > 0 else MAX_TRIALS_PER_GPU
    return max(1, min(MAX_TRIALS_PER_GPU, fit))


def _per_gpu(measurement: MemoryMeasurement, margin: float) -> int:
    return trials_per_gpu(measurement.peak_bytes, measurement.device_bytes, margin,
                          measurement.overhead_bytes)


def gpu_fraction(measurement: MemoryMeasurement, margin: float) -> float:
    """The GPU share of a trial of that measured kind: ``1 / trials_per_gpu``."""
    return 1.0 / _per_gpu(measurement, margin)


def describe_measurement(measurement: MemoryMeasurement, margin: float) -> str:
    """``measured: peak 20.0 GiB x 1.25 + 0.5 GiB per process of 80.0 GiB (NVIDIA H100): 3 per
    GPU`` (without the ``+ ... per process`` when no overhead was recorded)."""
    device = f" ({measurement.device_name})" if measurement.device_name else ""
    overhead = (f" + {_gib(measurement.overhead_bytes)} per process"
                if measurement.overhead_bytes else "")
    return (f"measured: peak {_gib(measurement.peak_bytes)} x {margin:g}{overhead} of "
            f"{_gib(measurement.device_bytes)}{device}: {_per_gpu(measurement, margin)} per GPU")


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"


#: The fields of a stored measurement and their ranges (bytes up to 1 PiB, batches up to 2**20).
_FIELDS = {"encoder": str_field, "protocol": str_field, "batch_size": int_field(1, 2**20),
           "peak_bytes": int_field(1, 2**50), "device_bytes": int_field(1, 2**50)}


def read_measurements(experiment_dir: AnyPath) -> dict[TrialKind, MemoryMeasurement]:
    """The stored measurements of an experiment, by kind. A file that cannot be read as one
    (:mod:`raysweep.storage.reading`: not JSON, wrong types or ranges, a link out of the experiment) is
    skipped with a warning naming it (its kind is measured again)."""
    folder = experiment_dir / GPU_MEMORY_DIR
    try:
        check_within(folder, experiment_dir)
    except StoredFileError as err:
        warnings.warn(f"{err}; every kind of trial is measured again", stacklevel=2)
        return {}
    if not folder.is_dir():
        return {}
    found = {}
    # By name: object-store paths have no order of their own (all share ``folder``).
    for path in sorted((p for p in folder.glob("*.json")), key=lambda p: p.name):
        try:
            data = read_json(path, root=experiment_dir, limit=2**16)
            fields = check_fields(data, path, _FIELDS, root=experiment_dir)
        except StoredFileError as err:
            warnings.warn(f"ignoring an unreadable GPU memory measurement: {err}; that kind of "
                          "trial is measured again", stacklevel=2)
            continue
        kind = TrialKind(fields["encoder"], fields["protocol"], fields["batch_size"])
        found[kind] = MemoryMeasurement(fields["peak_bytes"], fields["device_bytes"],
                                        str(data.get("device_name", ""))[:100])
    return found


def write_measurement(experiment_dir: AnyPath, kind: TrialKind,
                      measurement: MemoryMeasurement) -> AnyPath:
    """Store one kind's measurement (atomically, JSON)."""
    path = experiment_dir / GPU_MEMORY_DIR / kind.file_name
    return atomic_write_json(path, {**asdict(kind), **asdict(measurement)})


@contextlib.contextmanager
def measuring_peak(device: str) -> Iterator[dict[str, Any]]:
    """Measure the peak GPU memory of the block on ``device`` (a CUDA device; nothing is
    measured on a CPU): the allocator's peak since the block began (its peak statistics are
    reset first: a reused process measures each block on its own) and, when the block ends,
    the process's overhead beyond the allocator (device memory in use, by every process,
    minus what this one's allocator reserves). The yielded dict holds, after the block,
    ``measurement``: a :class:`MemoryMeasurement`, or None on a CPU."""

    result: dict[str, Any] = {"measurement": None}
    on_cuda = device.startswith("cuda") and torch.cuda.is_available()
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    yield result
    if on_cuda:
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        overhead = int(total) - int(free) - int(torch.cuda.memory_reserved(device))
        result["measurement"] = MemoryMeasurement(
            peak_bytes=max(1, int(torch.cuda.max_memory_allocated(device))),
            device_bytes=int(props.total_memory), device_name=str(props.name),
            overhead_bytes=max(0, overhead))
