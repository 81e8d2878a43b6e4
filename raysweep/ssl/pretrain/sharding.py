"""Which images each rank trains on: seeded global batches, sliced per rank.

Ray's ``prepare_data_loader`` adds a ``DistributedSampler`` seeded 0 for every run. Instead, the
order of an epoch is a permutation drawn from ``(seed, epoch)`` alone, cut into *global* batches
of ``batch_size`` images (the incomplete last batch is dropped, as Barlow Twins needs full batch
statistics), and rank ``r`` of ``W`` takes the ``r``-th contiguous slice of each global batch.
One worker and two workers therefore see exactly the same global batches, and the position in an
epoch is fully described by ``(epoch, step)``: that is the sampler state a checkpoint records.

With ``validation_fraction`` a share of the distinct images is held out first
(:func:`validation_split`): never trained on, scored in fixed batches after every epoch.
"""

from __future__ import annotations

import numpy as np

from raysweep.seeding import numpy_rng

__all__ = ["epoch_order", "global_batches", "local_batch", "validation_split"]


def global_batches(num_images: int, batch_size: int) -> int:
    """Optimisation steps in an epoch: whole global batches only (drop-last), 0 when there are
    fewer images than one batch (the evaluation's ``steps_per_epoch`` is at least 1)."""
    return num_images // batch_size


def epoch_order(indices: np.ndarray, *, seed: int, epoch: int) -> np.ndarray:
    """``indices`` (int64, (N,)) permuted by a stream derived from ``(seed, "order", epoch)``."""
    return numpy_rng(seed, "pretrain-order", epoch).permutation(np.asarray(indices, dtype=np.int64))


def local_batch(order: np.ndarray, *, step: int, batch_size: int, rank: int,
                world_size: int) -> np.ndarray:
    """Rank ``rank``'s slice, (batch_size // world_size,), of global batch ``step`` of ``order``.

    ``batch_size`` must be a multiple of ``world_size`` (checked by the caller once).
    """
    per_rank = batch_size // world_size
    start = step * batch_size + rank * per_rank
    return order[start:start + per_rank]


def validation_split(indices: np.ndarray, fraction: float, *, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)`` indices: ``fraction`` of the *distinct* images of ``indices``
    (int64, (N,), with oversampling repeats) held out, drawn from ``(seed, "pretrain-validation")``
    (the data's split seed), rounded to the nearest count (halves up, at least one).

    Every repeat of a held-out image leaves the training indices, so no held-out image is ever
    trained on; the validation indices are distinct, in the drawn (random) order, which fixes
    the composition of the validation batches for the whole run.
    """
    indices = np.asarray(indices, dtype=np.int64)
    distinct = np.unique(indices)
    count = max(1, int(np.floor(fraction * len(distinct) + 0.5)))
    held = numpy_rng(seed, "pretrain-validation").choice(distinct, size=count, replace=False)
    return indices[~np.isin(indices, held)], held.astype(np.int64)
