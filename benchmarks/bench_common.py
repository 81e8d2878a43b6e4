"""What the benchmark scripts share: paths, the machine's description and load, CPU time of
helper processes, synchronising a device, FLOPs of one training step and the peak FLOP/s of
the GPUs that model FLOPs utilisation (MFU) is measured against.

Peak FLOP/s (:data:`PEAK_FLOPS`) are the dense (no structured sparsity) tensor-core figures of
NVIDIA's data sheets, keyed by a pattern of the name ``torch.cuda.get_device_name`` reports;
the data sheets print the sparse figures for TF32 and BF16, twice the dense ones, so the
dense figure is half of the one printed with an asterisk. ``tf32`` is what fp32 convolutions
and matrix products reach when cuDNN / cuBLAS may use TF32 tensor cores (PyTorch's default for
convolutions, ``torch.backends.cudnn.allow_tf32``); ``fp32`` the plain CUDA-core figure.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
DATA = Path(os.environ.get("RAYSWEEP_SHARED_DATA", ROOT / "tests" / "data" / "medmnist"))


@dataclass(frozen=True)
class PeakFlops:
    """Dense peak FLOP/s of one GPU model by arithmetic, and where the figures come from."""

    pattern: str  # a regular expression searched in torch.cuda.get_device_name()
    bf16: float | None
    tf32: float | None
    fp32: float
    source: str


#: Most specific pattern first: "H100 PCIe" before "H100", "L40S" before "L40" before "L4".
PEAK_FLOPS: tuple[PeakFlops, ...] = (
    PeakFlops(r"H100 PCIe", 756e12, 378e12, 51e12,
              "NVIDIA H100 Tensor Core GPU data sheet, H100 PCIe (BF16 1,513 and TF32 756 "
              "TFLOPS with sparsity)"),
    PeakFlops(r"H100 NVL", 835.5e12, 417.5e12, 60e12,
              "NVIDIA H100 Tensor Core GPU data sheet, H100 NVL (BF16 1,671 and TF32 835 "
              "TFLOPS with sparsity)"),
    PeakFlops(r"H200 NVL", 835.5e12, 417.5e12, 60e12,
              "NVIDIA H200 Tensor Core GPU data sheet, H200 NVL (BF16 1,671 and TF32 835 "
              "TFLOPS with sparsity)"),
    PeakFlops(r"H100", 989.4e12, 494.7e12, 67e12,
              "NVIDIA H100 Tensor Core GPU data sheet, H100 SXM (BF16 1,979 and TF32 989 "
              "TFLOPS with sparsity)"),
    PeakFlops(r"H200", 989.4e12, 494.7e12, 67e12,
              "NVIDIA H200 Tensor Core GPU data sheet, H200 SXM (BF16 1,979 and TF32 989 "
              "TFLOPS with sparsity)"),
    PeakFlops(r"A100", 312e12, 156e12, 19.5e12,
              "NVIDIA A100 Tensor Core GPU data sheet (BF16 312, TF32 156 TFLOPS dense; SXM "
              "and PCIe alike)"),
    PeakFlops(r"L40S", 362.05e12, 183.1e12, 91.6e12,
              "NVIDIA L40S data sheet (BF16 733 and TF32 366 TFLOPS with sparsity)"),
    PeakFlops(r"L40\b", 181e12, 90.5e12, 90.5e12,
              "NVIDIA L40 data sheet (BF16 362 and TF32 181 TFLOPS with sparsity)"),
    PeakFlops(r"\bL4\b", 121e12, 60e12, 30.3e12,
              "NVIDIA L4 data sheet (BF16 242 and TF32 120 TFLOPS with sparsity)"),
    PeakFlops(r"V100", None, None, 15.7e12,
              "NVIDIA V100 data sheet, SXM2 (no BF16 or TF32 tensor cores)"),
)


def peak_entry(device_name: str) -> PeakFlops | None:
    """The :data:`PEAK_FLOPS` entry of a device name (None for an unknown one)."""
    for entry in PEAK_FLOPS:
        if re.search(entry.pattern, device_name):
            return entry
    return None


def fp32_tensor_cores() -> bool:
    """Whether fp32 convolutions may run on TF32 tensor cores (cuDNN's flag: ResNets are
    mostly convolutions)."""
    return bool(torch.backends.cudnn.allow_tf32)


def peak_flops(device_name: str, bf16: bool) -> tuple[float | None, str]:
    """``(peak FLOP/s, what it is)`` of a device for bf16 autocast or fp32 work: the bf16 peak,
    else the TF32 peak when cuDNN may use TF32 (else the fp32 one); ``(None, why)`` for a
    device not in :data:`PEAK_FLOPS`."""
    entry = peak_entry(device_name)
    if entry is None:
        return None, f"{device_name or 'this device'} is not in the table of peaks"
    if bf16:
        if entry.bf16 is None:
            return None, f"{device_name} has no bf16 tensor cores"
        return entry.bf16, f"bf16 dense peak {entry.bf16 / 1e12:g} TFLOP/s ({entry.source})"
    if fp32_tensor_cores() and entry.tf32 is not None:
        return entry.tf32, f"tf32 dense peak {entry.tf32 / 1e12:g} TFLOP/s ({entry.source})"
    return entry.fp32, f"fp32 peak {entry.fp32 / 1e12:g} TFLOP/s ({entry.source})"


def count_flops(step: Callable[[], Any]) -> int:
    """FLOPs of one call of ``step`` (matrix products and convolutions, forward and backward:
    ``torch.utils.flop_counter.FlopCounterMode``)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(v, 2) for v in os.getloadavg()]


def uptime() -> str:
    """``uptime``'s line (the load, with the time of day), or empty where it is missing."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU seconds of this process's children that have been waited for."""
    usage = os.times()
    return usage.children_user + usage.children_system


def device_name(device: torch.device) -> str:
    """The GPU's name (``NVIDIA H100 80GB HBM3``), or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict[str, Any]:
    """The machine a benchmark ran on: device, CPUs, threads, load, library versions."""
    info: dict[str, Any] = {
        "device": str(device), "device_name": device_name(device),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": load_average(), "uptime": uptime(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_memory_bytes=int(props.total_memory),
                    multiprocessors=int(props.multi_processor_count),
                    cudnn=torch.backends.cudnn.version(),
                    cudnn_allow_tf32=bool(torch.backends.cudnn.allow_tf32),
                    matmul_allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32))
    return info
