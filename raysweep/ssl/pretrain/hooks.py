"""The few things the per-worker loop needs from its runtime, behind one small interface.

:func:`raysweep.ssl.pretrain.loop.pretrain_worker` is plain PyTorch. What differs between running
it under Ray Train and calling it directly (tests, a single process) is only: which device to
use, where the latest checkpoint is, and how an epoch's metrics and checkpoint are reported.

* :class:`RayTrainHooks` (the only Ray calls of the loop, marked ``# RAY``) uses
  ``ray.train.get_checkpoint`` / ``ray.train.report`` / ``ray.train.torch.get_device``.
* :class:`LocalHooks` keeps checkpoints as ``checkpoint_<epoch>`` directories under a folder,
  for direct calls (one process, or a process group a test started itself).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import ray.train.torch
import torch
import torch.distributed as dist

from raysweep.distributed import get_rank

__all__ = ["LocalHooks", "RayTrainHooks", "WorkerHooks"]


class WorkerHooks(Protocol):
    """Runtime services of one worker."""

    device: torch.device

    def latest_checkpoint(self) -> contextlib.AbstractContextManager[Path | None]:
        """Context manager yielding the newest checkpoint directory, or None to start afresh."""

    def report(self, metrics: dict[str, Any],
               write_checkpoint: Callable[[Path], None] | None) -> None:
        """Called by EVERY rank once per epoch; ``write_checkpoint(dir)`` fills a directory."""


class LocalHooks:
    """Checkpoints under ``root/checkpoint_<NNNNNN>``; metrics kept in :attr:`reported`."""

    def __init__(self, root: str | os.PathLike[str], device: str | torch.device = "cpu") -> None:
        self.root = Path(root)
        self.device = torch.device(device)
        self.reported: list[dict[str, Any]] = []

    def _checkpoints(self) -> list[Path]:
        return sorted(self.root.glob("checkpoint_[0-9]*"))

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        found = self._checkpoints()
        yield found[-1] if found else None

    def report(self, metrics: dict[str, Any],
               write_checkpoint: Callable[[Path], None] | None) -> None:
        self.reported.append(dict(metrics))
        if write_checkpoint is None:
            return
        # Every rank writes its files into one staging folder; rank 0 renames it (atomic).
        staging = self.root / f".staging_{int(metrics['epoch']):06d}"
        staging.mkdir(parents=True, exist_ok=True)
        write_checkpoint(staging)
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        if get_rank() == 0:
            target = self.root / f"checkpoint_{int(metrics['epoch']):06d}"
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        if dist.is_available() and dist.is_initialized():
            dist.barrier()


class RayTrainHooks:
    """Ray Train V2 worker services (the loop's only Ray calls)."""

    def __init__(self) -> None:

        self.device = ray.train.torch.get_device()  # RAY: this worker's GPU, or the CPU

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        checkpoint = ray.train.get_checkpoint()  # RAY: newest reported checkpoint, or None
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as directory:
            yield Path(directory)

    def report(self, metrics: dict[str, Any],
               write_checkpoint: Callable[[Path], None] | None) -> None:
        if write_checkpoint is None:
            ray.train.report(metrics)  # RAY
            return
        with tempfile.TemporaryDirectory(prefix="raysweep-ckpt-") as directory:
            write_checkpoint(Path(directory))
            ray.train.report(  # RAY: persists the directory to RunConfig.storage_path
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(directory),
                checkpoint_dir_name=f"checkpoint_{int(metrics['epoch']):06d}",
            )
