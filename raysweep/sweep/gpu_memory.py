"""The GPU share of an evaluation trial, sized from the peak GPU memory its kind of trial needs.

Trials of one *kind* (encoder architecture, protocol, batch size) need the same memory. The
first trial of a kind that runs on a GPU measures its peak (``torch.cuda.max_memory_allocated``,
reset before it starts) and stores it as one small JSON file per kind in the experiment's
storage, ``<experiment>/gpu_memory/<encoder>-<protocol>-b<batch>.json``, next to the rows; it is
read back as JSON only. Later trials of that kind are packed by it:

    trials per GPU = floor(device memory / (measured peak x margin)),  at least 1
    GPU share      = 1 / trials per GPU

so the share is a divisor of 1 (1, 1/2, 1/3, ...) and that many trials always fit one device
(the count is rounded down, never the memory). ``margin`` is ``resources.gpu_memory_margin``
(default 1.25: the CUDA context, cuDNN workspaces and the allocator's fragmentation are not
counted by ``max_memory_allocated``). The device memory is that of the GPU that measured: a
cluster of one kind of GPU is assumed.

A kind not measured yet runs its first trial on a whole GPU, in a pass of its own before the
other trials (:func:`raysweep.sweep.evaluate_stage.evaluation_tuners`); an explicit
``resources.gpus_per_trial`` in the spec is used as given and nothing is measured.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from raysweep.artefacts import atomic_write_json
from raysweep.storage import AnyPath
from raysweep.stored import (
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
    """One kind's measured peak (bytes) on a device of ``device_bytes`` total memory."""

    peak_bytes: int
    device_bytes: int
    device_name: str = ""

    @classmethod
    def from_dict(cls, data: Any) -> MemoryMeasurement:
        """From the stored JSON object; ``ValueError`` when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return cls(_positive_int(data.get("peak_bytes")), _positive_int(data.get("device_bytes")),
                   str(data.get("device_name", "")))


def _positive_int(value: object) -> int:
    """``value`` when it is a positive integer (a bool is not one), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("peak_bytes and device_bytes must be positive integers")
    return value


def trials_per_gpu(peak_bytes: float, device_bytes: float, margin: float) -> int:
    """How many trials of peak ``peak_bytes`` (x ``margin``) fit one device of
    ``device_bytes``: rounded down, between 1 and :data:`MAX_TRIALS_PER_GPU`."""
    need = peak_bytes * margin
    fit = math.floor(device_bytes / need + 1e-9) if need > 0 else MAX_TRIALS_PER_GPU
    return max(1, min(MAX_TRIALS_PER_GPU, fit))


def gpu_fraction(measurement: MemoryMeasurement, margin: float) -> float:
    """The GPU share of a trial of that measured kind: ``1 / trials_per_gpu``."""
    return 1.0 / trials_per_gpu(measurement.peak_bytes, measurement.device_bytes, margin)


def describe_measurement(measurement: MemoryMeasurement, margin: float) -> str:
    """``measured: peak 20.0 GiB x 1.25 of 80.0 GiB (NVIDIA H100): 3 per GPU``."""
    per_gpu = trials_per_gpu(measurement.peak_bytes, measurement.device_bytes, margin)
    device = f" ({measurement.device_name})" if measurement.device_name else ""
    return (f"measured: peak {_gib(measurement.peak_bytes)} x {margin:g} of "
            f"{_gib(measurement.device_bytes)}{device}: {per_gpu} per GPU")


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"


#: The fields of a stored measurement and their ranges (bytes up to 1 PiB, batches up to 2**20).
_FIELDS = {"encoder": str_field, "protocol": str_field, "batch_size": int_field(1, 2**20),
           "peak_bytes": int_field(1, 2**50), "device_bytes": int_field(1, 2**50)}


def read_measurements(experiment_dir: AnyPath) -> dict[TrialKind, MemoryMeasurement]:
    """The stored measurements of an experiment, by kind. A file that cannot be read as one
    (:mod:`raysweep.stored`: not JSON, wrong types or ranges, a link out of the experiment) is
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
    measured on a CPU). The yielded dict holds, after the block, ``measurement``: a
    :class:`MemoryMeasurement`, or None on a CPU."""
    import torch

    result: dict[str, Any] = {"measurement": None}
    on_cuda = device.startswith("cuda") and torch.cuda.is_available()
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    yield result
    if on_cuda:
        props = torch.cuda.get_device_properties(device)
        result["measurement"] = MemoryMeasurement(
            peak_bytes=int(torch.cuda.max_memory_allocated(device)),
            device_bytes=int(props.total_memory), device_name=str(props.name))
