"""Checkpoint files read back without trust: ``torch.load(..., weights_only=True)`` only.

Kept apart from :mod:`raysweep.storage.paths` so that the spec validation (which names storage
paths) never imports torch.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from raysweep.storage.paths import AnyPath, storage_path

__all__ = ["torch_load"]


def torch_load(path: AnyPath | str, **kwargs: Any) -> Any:
    """``torch.load(..., weights_only=True)`` of a local file or an object, mapped to the CPU.

    Nothing is unpickled: shared storage is writable by others (docs/design.md, "The experiment directory")."""
    target = storage_path(path)
    source = target if isinstance(target, Path) else io.BytesIO(target.read_bytes())
    return torch.load(source, map_location="cpu", weights_only=True, **kwargs)
