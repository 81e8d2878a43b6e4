"""Linear probes of one encoder over many seeds (:func:`probe`): batched by default, separate
runs where batching cannot reproduce them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from raysweep.config import EvaluationSpec
from raysweep.errors import RaysweepError
from raysweep.evaluate.batched import probe_batched
from raysweep.evaluate.inputs import ImagesLabels
from raysweep.evaluate.optimizers import uses_fastai_defaults
from raysweep.evaluate.protocol import probe_single
from raysweep.evaluate.tta import Augment

__all__ = ["probe"]


def probe(encoder: nn.Module, train: ImagesLabels, test: ImagesLabels, *, settings: EvaluationSpec,
          seeds: Sequence[int], class_names: Sequence[str], augment: Augment | None = None,
          device: Any = "cpu", test_sets: Mapping[str, ImagesLabels] | None = None
          ) -> list[dict[str, Any]]:
    """Linear probes of ``encoder`` for each seed; one row per seed, in ``seeds`` order, each
    scored on the external ``test_sets`` too.

    Batched (one shared encoder pass, :mod:`raysweep.evaluate.batched`) when
    ``settings.batched_probes``; separate runs when it is off, and also when the batched path
    cannot reproduce separate runs: ``seed_scope: all`` (each seed has its own batches and
    augmentations, so nothing can be shared), a non-zero weight decay, or an optimiser or
    schedule other than the paper's (fastai's Adam and 1cycle).
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise RaysweepError("probe: no seeds given")
    if len(set(seeds)) != len(seeds):
        raise RaysweepError(f"probe: duplicate seeds in {seeds}")
    if (settings.batched_probes and settings.seed_scope == "head"
            and settings.weight_decay == 0 and uses_fastai_defaults(settings)):
        return probe_batched(encoder, train, test, settings=settings, seeds=seeds,
                             class_names=class_names, augment=augment, device=device,
                             test_sets=test_sets)
    return [probe_single(encoder, train, test, settings=settings, seed=seed,
                         class_names=class_names, augment=augment, device=device,
                         test_sets=test_sets)
            for seed in seeds]
