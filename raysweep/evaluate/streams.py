"""Per-purpose random streams of one seed index (docs/design.md principle 6).

A seed index ``s`` gives independent generators for the head initialisation, the data order, the
training augmentation, the LR finder's batches and the TTA views, derived with
:func:`raysweep.seeding.torch_generator` from ``(s, purpose)``. The same index therefore means
the same draws in every condition, so conditions can be compared run by run.

``seed_scope``:
- ``head`` (default; the paper, section 3.6): only the head initialisation follows ``s``; every
  other stream is derived from index 0, so all runs of a condition see the same batches,
  augmentations and TTA views. This is also what lets batched probes share one encoder pass.
- ``all``: every stream follows ``s``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raysweep.seeding import torch_generator

__all__ = ["SeedStreams", "SHARED_STREAM_SEED"]

#: The index the non-head streams use under ``seed_scope: head``.
SHARED_STREAM_SEED = 0


@dataclass(frozen=True)
class SeedStreams:
    """Fresh generators for each purpose of one run (each call returns a new generator)."""

    seed: int
    scope: str = "head"

    @property
    def data_seed(self) -> int:
        return self.seed if self.scope == "all" else SHARED_STREAM_SEED

    def head(self) -> torch.Generator:
        return torch_generator(self.seed, "head")

    def data_order(self) -> torch.Generator:
        return torch_generator(self.data_seed, "data_order")

    def train_aug(self) -> torch.Generator:
        return torch_generator(self.data_seed, "train_aug")

    def lr_finder(self) -> tuple[torch.Generator, torch.Generator]:
        """(data order, augmentation) of the LR finder's batches: the ``lr_finder`` stream."""
        return (torch_generator(self.data_seed, "lr_finder", "data_order"),
                torch_generator(self.data_seed, "lr_finder", "train_aug"))

    def tta(self) -> torch.Generator:
        return torch_generator(self.data_seed, "tta")
