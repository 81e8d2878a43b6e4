"""Packing trials onto the cluster.

Single-process evaluation trials request a *fraction* of a GPU (``resources.gpus_per_trial``,
default 0.25: four fine-tunes of a ResNet-50 at batch 64 fit an 80 GB card with room to spare),
so several share one device. DDP pre-training runs request whole GPUs per worker and never share
one: two NCCL ranks on one GPU break. ``max_concurrent_trials`` follows from the resources. On a
CPU-only cluster everything runs on CPUs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from raysweep.config import PretrainSpec, ResourcesSpec

DEFAULT_GPU_FRACTION = 0.25


@dataclass(frozen=True)
class ClusterResources:
    """What the cluster (or this machine, before Ray starts) offers."""

    cpus: float
    gpus: float

    @classmethod
    def detect(cls) -> ClusterResources:
        """From the running Ray cluster when connected, else from this machine."""
        try:
            import ray

            if ray.is_initialized():
                total = ray.cluster_resources()
                return cls(cpus=float(total.get("CPU", 0)), gpus=float(total.get("GPU", 0)))
        except ImportError:  # pragma: no cover - ray is a hard dependency
            pass
        gpus = 0
        try:
            import torch

            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        except Exception:  # noqa: BLE001 - a broken CUDA install means "no GPU"
            gpus = 0
        return cls(cpus=float(os.cpu_count() or 1), gpus=float(gpus))


@dataclass(frozen=True)
class TrialResources:
    cpu: float
    gpu: float

    def as_ray(self) -> dict[str, float]:
        """The mapping ``tune.with_resources`` takes."""
        return {"cpu": self.cpu, "gpu": self.gpu}


def evaluation_trial_resources(spec: ResourcesSpec, cluster: ClusterResources) -> TrialResources:
    """CPU and GPU share of one single-process evaluation trial."""
    cpu = min(spec.cpus_per_trial, max(cluster.cpus, 1.0))
    if cluster.gpus <= 0:
        return TrialResources(cpu=cpu, gpu=0.0)
    gpu = spec.gpus_per_trial if spec.gpus_per_trial is not None else DEFAULT_GPU_FRACTION
    return TrialResources(cpu=cpu, gpu=gpu)


def max_concurrent_trials(trial: TrialResources, cluster: ClusterResources,
                          cap: int | None = None) -> int:
    """How many such trials fit at once (at least 1), optionally capped."""
    limits = [math.floor(cluster.cpus / trial.cpu + 1e-9)] if trial.cpu > 0 else []
    if trial.gpu > 0:
        limits.append(math.floor(cluster.gpus / trial.gpu + 1e-9))
    fit = max(1, min(limits) if limits else 1)
    return min(fit, cap) if cap else fit


@dataclass(frozen=True)
class PretrainResources:
    """Resources of one Ray Train run: ``num_workers`` x (``cpu``, whole ``gpu``)."""

    num_workers: int
    use_gpu: bool
    cpu_per_worker: float

    @property
    def total_cpus(self) -> float:
        return self.num_workers * self.cpu_per_worker

    @property
    def total_gpus(self) -> int:
        return self.num_workers if self.use_gpu else 0


def pretrain_resources(spec: PretrainSpec, cluster: ClusterResources) -> PretrainResources:
    """A DDP run gets whole GPUs (one per worker) when it uses GPUs at all."""
    use_gpu = spec.use_gpu if spec.use_gpu is not None else cluster.gpus >= 1
    cpu = float(spec.resources_per_worker.get("CPU", 1.0))
    return PretrainResources(num_workers=spec.num_workers, use_gpu=use_gpu, cpu_per_worker=cpu)


def concurrent_pretrain_runs(runs: list[PretrainResources], cluster: ClusterResources) -> int:
    """How many of these (equal-sized) runs fit at once: whole GPUs, never shared."""
    if not runs:
        return 0
    largest = max(runs, key=lambda r: (r.total_gpus, r.total_cpus))
    limits = [math.floor(cluster.cpus / largest.total_cpus + 1e-9)] if largest.total_cpus else []
    if largest.total_gpus:
        limits.append(math.floor(cluster.gpus / largest.total_gpus + 1e-9))
    return max(1, min(limits) if limits else 1)
