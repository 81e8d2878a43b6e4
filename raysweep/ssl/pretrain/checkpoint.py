"""A pre-training checkpoint: one directory that restores a run bit for bit.

Layout (each file written atomically; the directory is handed to Ray Train, which merges the
directories of all ranks into one)::

    state.pt            rank 0: :class:`PretrainState` (the network, optimiser, scheduler,
                        the next epoch (checkpoints fall on epoch ends), lr_max and the LR
                        finder's curve, the metrics history, the worker's settings and
                        provenance), plus the encoder's own state dict under ``encoder`` for
                        the ``file:`` weight source (its tensors are the network's, stored once)
    rng_rank<R>.pt      every rank: torch CPU (and CUDA) RNG, Python ``random``, NumPy global

All randomness of the loop itself comes from streams derived from ``(seed, purpose, epoch,
step, rank)``, so the RNG files only matter for code that draws from the global generators.
Everything loads with ``torch.load(..., weights_only=True)``. Checkpoints written before
:class:`PretrainState` existed load too: their ``step`` (always 0) and ``scaler`` (always empty)
entries are ignored.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raysweep.errors import WeightsError
from raysweep.storage.atomic import atomic_torch_save
from raysweep.store.run_dirs import STATE_FILE

__all__ = [
    "PretrainState",
    "capture_rng_state",
    "load_rng_state",
    "load_state",
    "restore_rng_state",
    "save_rng_state",
    "save_state",
]


#: Entries of checkpoints written by earlier versions that are no longer read.
_RETIRED_ENTRIES = frozenset({"step", "scaler"})

#: Prefix of the encoder's entries in :attr:`PretrainState.net`.
_ENCODER_PREFIX = "encoder."


@dataclass
class PretrainState:
    """What rank 0 checkpoints at the end of an epoch, and everything a resumed run reads back.

    ``net`` is the whole :class:`~raysweep.ssl.pretrain.loop.PretrainNet` state dict (encoder
    and projector or head); ``history`` one metrics dict per epoch so far; ``meta`` the worker's
    settings (provenance, world size, device, precision); ``resumed_from`` the epochs at which
    the run restarted from a checkpoint.
    """

    next_epoch: int
    phase: str
    net: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    lr_max: float | None
    lr_finder: dict[str, Any] | None
    history: list[dict[str, Any]]
    meta: dict[str, Any]
    resumed_from: list[int]

    @property
    def encoder(self) -> dict[str, torch.Tensor]:
        """The encoder's state dict (``net`` without the ``encoder.`` prefix, no head)."""
        return {key[len(_ENCODER_PREFIX):]: value for key, value in self.net.items()
                if key.startswith(_ENCODER_PREFIX)}

    def to_file(self) -> dict[str, Any]:
        """The ``weights_only``-loadable dict written to ``state.pt`` (the structured entries as
        JSON text)."""
        return {
            "next_epoch": self.next_epoch, "phase": self.phase, "net": self.net,
            "encoder": self.encoder, "optimizer": self.optimizer, "scheduler": self.scheduler,
            "lr_max": self.lr_max,
            "lr_finder": json.dumps(self.lr_finder) if self.lr_finder else "",
            "history": json.dumps(self.history), "meta": json.dumps(self.meta),
            "resumed_from": json.dumps(self.resumed_from),
        }

    @classmethod
    def from_file(cls, raw: Any, path: Path) -> PretrainState:
        """Inverse of :meth:`to_file`; anything else is a one-line WeightsError naming ``path``."""
        expected = {*_FIELDS, "encoder"}
        if not isinstance(raw, dict):
            raise WeightsError(f"{path}: not a pre-training checkpoint (a {type(raw).__name__}, "
                               f"expected a dict)")
        missing = sorted(expected - raw.keys())
        unknown = sorted(raw.keys() - expected - _RETIRED_ENTRIES)
        if missing or unknown:
            raise WeightsError(f"{path}: not a pre-training checkpoint (missing entries: "
                               f"{', '.join(missing) or 'none'}; unknown: "
                               f"{', '.join(map(str, unknown)) or 'none'})")
        try:
            return cls(
                next_epoch=int(raw["next_epoch"]), phase=str(raw["phase"]), net=raw["net"],
                optimizer=raw["optimizer"], scheduler=raw["scheduler"],
                lr_max=None if raw["lr_max"] is None else float(raw["lr_max"]),
                lr_finder=json.loads(raw["lr_finder"]) if raw["lr_finder"] else None,
                history=json.loads(raw["history"]), meta=json.loads(raw["meta"]),
                resumed_from=[int(e) for e in json.loads(raw["resumed_from"])])
        except (TypeError, ValueError) as err:
            raise WeightsError(f"{path}: damaged pre-training checkpoint ({err})") from None


_FIELDS = tuple(PretrainState.__dataclass_fields__)


def _rng_file(rank: int) -> str:
    return f"rng_rank{rank}.pt"


def capture_rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain containers (``weights_only``-loadable)."""
    version, mt_state, gauss = random.getstate()
    np_state = np.random.get_state(legacy=True)
    if not isinstance(np_state, tuple):  # a dict only when the global generator is not MT19937
        raise TypeError(f"numpy's global generator is {np_state['bit_generator']}, not MT19937")
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np_state
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


def save_state(directory: Path, state: PretrainState) -> None:
    """Write the rank-0 training state to ``directory/state.pt``."""
    atomic_torch_save(state.to_file(), directory / STATE_FILE)


def load_state(directory: Path) -> PretrainState:
    """Read a checkpoint's training state; a missing, unreadable or foreign file is a
    one-line WeightsError."""
    path = directory / STATE_FILE
    return PretrainState.from_file(_load(path), path)


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
