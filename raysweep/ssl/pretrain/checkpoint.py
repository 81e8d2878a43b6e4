"""A pre-training checkpoint: one directory that restores a run bit for bit.

Layout (each file written atomically; the directory is handed to Ray Train, which merges the
directories of all ranks into one)::

    state.pt            rank 0: encoder, projector (or head), optimiser, scheduler, scaler,
                        the sampler position (next epoch; checkpoints fall on epoch ends, so
                        step 0), lr_max, the metrics history, spec and provenance
    rng_rank<R>.pt      every rank: torch CPU (and CUDA) RNG, Python ``random``, NumPy global

All randomness of the loop itself comes from streams derived from ``(seed, purpose, epoch,
step, rank)``, so the RNG files only matter for code that draws from the global generators.
Everything loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raysweep.artefacts import atomic_torch_save
from raysweep.errors import WeightsError

__all__ = [
    "STATE_FILE",
    "capture_rng_state",
    "load_rng_state",
    "load_state",
    "restore_rng_state",
    "save_rng_state",
    "save_state",
]

STATE_FILE = "state.pt"


def _rng_file(rank: int) -> str:
    return f"rng_rank{rank}.pt"


def capture_rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain containers (``weights_only``-loadable)."""
    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(mt_state), gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos),
                  int(np_has_gauss), float(np_gauss)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    name, keys, pos, has_gauss, gauss_np = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss_np))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_rng_state(directory: Path, rank: int) -> None:
    atomic_torch_save(capture_rng_state(), directory / _rng_file(rank))


def load_rng_state(directory: Path, rank: int) -> None:
    """Restore this rank's RNG states when the checkpoint has them (it always should)."""
    path = directory / _rng_file(rank)
    if path.is_file():
        restore_rng_state(_load(path))


def save_state(directory: Path, state: dict[str, Any]) -> None:
    """Write the rank-0 training state (a dict of tensors, state dicts and plain values)."""
    atomic_torch_save(state, directory / STATE_FILE)


def load_state(directory: Path) -> dict[str, Any]:
    """Read a checkpoint's training state; a missing or unreadable file is a WeightsError."""
    return _load(directory / STATE_FILE)


def _load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; a missing, damaged or non-tensor file is a
    one-line WeightsError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: checkpoint file not found") from None
    except Exception as err:  # noqa: BLE001 - corrupt pickle / zip: one-line message
        reason = " ".join(str(err).split())[:300]
        raise WeightsError(f"{path}: unreadable checkpoint ({type(err).__name__}: "
                           f"{reason})") from None
