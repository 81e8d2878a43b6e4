"""The objective of a search trial: batched linear probes of its encoder over k paired seeds.

The probes (the evaluation protocol's linear probe, K seeds sharing one encoder pass:
:func:`raysweep.evaluate.probe`) train on the labelled *fit* part of the search's evaluation
data and are scored on its *validation* part (:func:`raysweep.ssl.pretrain.proxy.validation_split`:
the data's validation split, or a stratified holdout of its labelled training images). The
test split is never read, so it stays apart for the evaluate stage that reports the chosen
configuration. Every trial and the default use the same seeds, data and protocol, so their
per-seed values pair up by seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from raysweep.config import EvaluationSpec, SearchSpec
from raysweep.data import load_dataset
from raysweep.errors import SpecError
from raysweep.evaluate import probe
from raysweep.models import build_encoder
from raysweep.ssl.pretrain.proxy import validation_split
from raysweep.storage.paths import AnyPath

__all__ = ["TrialScore", "score_encoder", "search_seeds"]


@dataclass(frozen=True)
class TrialScore:
    """``objective`` = mean of ``values`` (the search metric of each seed in ``seeds``);
    ``means``: every overall probe metric averaged over the seeds."""

    objective: float
    values: tuple[float, ...]
    seeds: tuple[int, ...]
    means: dict[str, float]


def search_seeds(search: SearchSpec) -> tuple[int, ...]:
    first = search.evaluate.first_seed
    return tuple(range(first, first + search.evaluate.seeds))


def _overall_metrics(row: dict[str, Any]) -> list[str]:
    """Numeric metrics of a probe row that are not per class (``f1/<class>``) or bookkeeping."""
    skip = {"seed", "head_epochs", "epochs", "batch_size", "tta_views", "batched_heads",
            "lr_max"}
    return [k for k, v in row.items()
            if "/" not in k and k not in skip and not k.endswith("_s")
            and isinstance(v, (int, float)) and not isinstance(v, bool)]


def score_encoder(search: SearchSpec, encoder_path: str | AnyPath,
                  settings: EvaluationSpec) -> TrialScore:
    """Probe the encoder saved at ``encoder_path`` (a ``file:`` weight source of
    ``search.pretrain.encoder.name``) on the search's fit / validation data."""

    dataset = load_dataset(search.evaluate.data, progress=False)
    fit_index, fit_labels, val_index, val_labels = validation_split(dataset)
    fit = (np.asarray(dataset.images[np.sort(fit_index)]), fit_labels[np.argsort(fit_index)])
    val = (np.asarray(dataset.images[np.sort(val_index)]), val_labels[np.argsort(val_index)])
    encoder = build_encoder(search.pretrain.encoder.name, f"file:{encoder_path}")
    seeds = search_seeds(search)
    rows = probe(encoder, fit, val, settings=settings, seeds=seeds,
                 class_names=dataset.classes, device=settings.device)
    metrics = _overall_metrics(rows[0])
    if search.metric not in metrics:
        raise SpecError(f"search {search.name}: metric {search.metric!r} is not a probe metric; "
                        f"choose one of {', '.join(sorted(metrics))}")
    values = tuple(float(row[search.metric]) for row in rows)
    means = {m: float(np.mean([float(row[m]) for row in rows])) for m in metrics}
    objective = float(np.mean(values)) if all(math.isfinite(v) for v in values) else math.nan
    return TrialScore(objective=objective, values=values, seeds=seeds, means=means)
