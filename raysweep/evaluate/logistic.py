"""The ``logistic`` protocol: the linear evaluation of SSL papers on frozen features.

SimCLR's (Chen et al. 2020, appendix B.5) and VISSL's linear evaluation for small datasets: an
L2-regularised multinomial logistic regression (scikit-learn's ``LogisticRegression``, L-BFGS)
on standardised frozen features (``StandardScaler``), its inverse regularisation C chosen among
``c_num`` log-spaced values in ``[c_min, c_max]`` on a validation share of the labelled training
data, then refit with that C on *all* the labelled training data and scored on the test set.
C is chosen by the validation log-loss by default (``select_by``), a proper scoring rule:
chosen by accuracy on imbalanced data, the strongest regularisation (a constant answer, the
majority class) often ties or wins. A C at either end of the grid is flagged in the row
(``logistic_c_at_edge``) and counted in the report.
No augmentation, no TTA: the features are computed once per encoder
(:func:`raysweep.evaluate.features.labelled_features`).

What the seed changes: only the validation split that chooses C (a stratified
``val_fraction`` of the training items per class, drawn from the seed's
``logistic/validation`` stream). Everything else is deterministic, so two seeds that choose
the same C give the same row, and with a single C (``c_num: 1``) all seeds give identical
rows. The protocol still writes one row per seed: every protocol then has the same seeds, so
comparisons with the other protocols pair run by run, and the spread over seeds is the
spread due to choosing C.

Duplicated training items (oversampled classes) are kept together on one side of the
validation split (items with identical features and label form one group), so the
validation score never sees an item the classifier was fit on.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from raysweep.config import EvaluationSpec, LogisticSpec
from raysweep.errors import DataError, RaysweepError
from raysweep.evaluate.features import LabelledFeatures, labelled_features
from raysweep.evaluate.inputs import ImagesLabels
from raysweep.evaluate.metrics import classification_metrics, external_metrics
from raysweep.evaluate.protocol import TEST_SETS, lr_finder_json
from raysweep.seeding import numpy_rng

__all__ = ["c_at_edge", "c_grid", "choose_c", "final_fit", "fit_logistic", "logistic_probe",
           "logistic_rows", "validation_split"]


def c_grid(spec: LogisticSpec) -> np.ndarray:
    """The candidate C values, ascending: ``c_num`` geometrically spaced values from ``c_min``
    to ``c_max`` (both exact)."""
    return np.geomspace(spec.c_min, spec.c_max, spec.c_num)


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def validation_split(features: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *,
                     fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit_index, val_index)``, sorted int64, of a stratified validation split.

    Items with identical features and label form one group (an oversampled item and its
    copies); per class, ``round(fraction * n_groups)`` of its groups (halves up, at most all
    but one) go to validation, chosen by a permutation from ``numpy_rng(seed, "logistic",
    "validation", class name)``. Every class thus keeps a group to fit on.
    """
    rows = np.column_stack([features, labels.astype(np.float64)])
    _, group_of = np.unique(rows, axis=0, return_inverse=True)
    group_of = group_of.reshape(-1)
    group_label = np.zeros(group_of.max() + 1, dtype=np.int64)
    group_label[group_of] = labels
    chosen = []
    for cls in np.unique(labels):
        groups = np.flatnonzero(group_label == cls)
        n_val = min(_round_half_up(fraction * len(groups)), len(groups) - 1)
        order = numpy_rng(seed, "logistic", "validation", class_names[int(cls)]).permutation(
            len(groups))
        chosen.append(groups[order[:n_val]])
    is_val = np.isin(group_of, np.concatenate(chosen))
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float, spec: LogisticSpec) -> Pipeline:
    """``StandardScaler`` + ``LogisticRegression(C=c)`` (L-BFGS; multinomial for three or more
    classes, scikit-learn's binomial model for two) fit on ``x`` float (N, D), ``y`` int (N,).
    Convergence warnings are silenced: the caller reads ``n_iter_``."""
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=float(c), solver="lbfgs", max_iter=spec.max_iter, tol=spec.tol,
                           class_weight=None if spec.class_weight == "none" else "balanced"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model


def class_probabilities(model: Pipeline, x: np.ndarray, num_classes: int) -> np.ndarray:
    """float (N, num_classes): the model's probabilities, 0 for a class it was not fit on."""
    probs = np.zeros((x.shape[0], num_classes))
    probs[:, model.classes_] = model.predict_proba(x)
    return probs


def selection_score(metric: str, labels: np.ndarray, probs: np.ndarray) -> float:
    """The validation score of one C; higher is better (``log_loss`` is negated)."""
    predictions = probs.argmax(axis=1)
    if metric == "log_loss":
        return -float(log_loss(labels, probs, labels=list(range(probs.shape[1]))))
    if metric == "accuracy":
        return float(accuracy_score(labels, predictions))
    if metric == "balanced_accuracy":
        return float(balanced_accuracy_score(labels, predictions))
    average = {"f1_weighted": "weighted", "f1_macro": "macro"}[metric]
    return float(f1_score(labels, predictions, labels=list(range(probs.shape[1])),
                          average=average, zero_division=0))


def c_at_edge(c: float, grid: Sequence[float] | np.ndarray) -> bool:
    """Whether a chosen C is the smallest or largest of a grid of several: the best value
    may lie beyond the grid (at the smallest C, typically a constant answer)."""
    return len(grid) > 1 and c in (float(grid[0]), float(grid[-1]))


def _converged(model: Pipeline, spec: LogisticSpec) -> tuple[int, bool]:
    n_iter = int(np.max(model[-1].n_iter_))
    return n_iter, n_iter < spec.max_iter


#: A final fit's test probabilities, n_iter, convergence, and ``{test set: (probs, seconds)}``.
FinalFit = tuple[np.ndarray, int, bool, dict[str, tuple[np.ndarray, float]]]


def choose_c(features: LabelledFeatures, spec: LogisticSpec, grid: Sequence[float] | np.ndarray,
             seed: int) -> tuple[float, float, list[float], int]:
    """``(C, its validation score, every C's score, validation size)`` for ``seed``: each C fit
    on the seed's fit part and scored on its validation part by ``spec.select_by``; the best C
    wins (ties: the smallest, the strongest regularisation). One C: no validation (NaN, [], 0)."""
    if len(grid) == 1:
        return float(grid[0]), math.nan, [], 0
    fit, val = validation_split(features.train_x, features.train_y, features.class_names,
                                fraction=spec.val_fraction, seed=seed)
    if len(val) == 0:
        raise DataError(
            f"logistic: a validation share of {spec.val_fraction:g} of "
            f"{len(features.train_y)} training labels holds no item (each class keeps "
            "one to fit on); raise logistic.val_fraction or give one C (c_num: 1)")
    scores = []
    for candidate in grid:
        model = fit_logistic(features.train_x[fit], features.train_y[fit], candidate, spec)
        probs = class_probabilities(model, features.train_x[val], features.num_classes)
        scores.append(selection_score(spec.select_by, features.train_y[val], probs))
    index = int(np.argmax(scores))  # the first maximum: the smallest C among ties
    return float(grid[index]), scores[index], scores, len(val)


def final_fit(features: LabelledFeatures, spec: LogisticSpec, c: float) -> FinalFit:
    """The fit at ``c`` on all training items, scored on the test set and every external one."""
    model = fit_logistic(features.train_x, features.train_y, c, spec)
    external = {}
    for name, (x, _) in features.external.items():
        began = time.perf_counter()
        external[name] = (class_probabilities(model, x, features.num_classes),
                          time.perf_counter() - began)
    return (class_probabilities(model, features.test_x, features.num_classes),
            *_converged(model, spec), external)


def logistic_rows(features: LabelledFeatures, spec: LogisticSpec, seeds: Sequence[int], *,
                  feature_seconds: float = 0.0) -> list[dict[str, Any]]:
    """One row per seed (in ``seeds`` order) from features computed once.

    Per seed: the C of :func:`choose_c` over :func:`c_grid`, then :func:`final_fit` at that C
    (seeds choosing the same C share it). Rows carry the metrics of
    :func:`classification_metrics` and ``logistic_c``, ``logistic_c_at_edge``
    (:func:`c_at_edge`), ``logistic_val_score``,
    ``logistic_val_scores`` (JSON, one per C), ``logistic_val_size``, ``logistic_n_iter`` and
    ``logistic_converged`` of the final fit. ``feature_seconds`` (the shared feature pass) is
    divided among the seeds' timings. With external test sets (``features.external``) the
    final fit is scored on each too: the row's ``test_sets`` list
    (:func:`raysweep.evaluate.metrics.external_metrics`).
    """
    seeds = [int(s) for s in seeds]
    grid = c_grid(spec)
    finals: dict[float, FinalFit] = {}
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        start = time.perf_counter()
        c, best, scores, n_val = choose_c(features, spec, grid, seed)
        trained = time.perf_counter()
        if c not in finals:
            finals[c] = final_fit(features, spec, c)
        probs, n_iter, converged, external = finals[c]
        metrics = classification_metrics(features.test_y, probs, features.class_names)
        end = time.perf_counter()
        share = feature_seconds / len(seeds)
        rows.append({
            "protocol": "logistic", "seed": seed, **metrics,
            # the fastai protocol's columns, so every protocol's rows have the same columns
            "lr_max": math.nan, "lr_finder": lr_finder_json(None),
            "bn_in_head_epoch": "frozen", "seed_scope": None, "head_epochs": None,
            "epochs": None, "batch_size": None, "tta_views": 0,
            "batched_heads": len(seeds),
            "time_train_s": share + (trained - start), "time_eval_s": end - trained,
            "time_total_s": share + (end - start),
            "logistic_c": c, "logistic_c_at_edge": c_at_edge(c, grid),
            "logistic_val_score": best,
            "logistic_val_scores": json.dumps([float(s) for s in scores]),
            "logistic_val_size": int(n_val), "logistic_select_by": spec.select_by,
            "logistic_class_weight": spec.class_weight,
            "logistic_n_iter": n_iter, "logistic_converged": converged,
        })
        if features.external:
            rows[-1][TEST_SETS] = [
                external_metrics(name, features.external[name][1], external_probs,
                                 features.class_names, seconds)
                for name, (external_probs, seconds) in external.items()]
    return rows


def logistic_probe(encoder: nn.Module, train: ImagesLabels, test: ImagesLabels, *,
                   settings: EvaluationSpec,
                   seeds: Sequence[int], class_names: Sequence[str],
                   device: Any = "cpu", test_sets: Mapping[str, ImagesLabels] | None = None
                   ) -> list[dict[str, Any]]:
    """The ``logistic`` protocol for ``seeds``: features of ``encoder`` once (eval mode), then
    :func:`logistic_rows` with ``settings.logistic``. One row per seed, in ``seeds`` order, each
    scored on the external ``test_sets`` too."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise RaysweepError("logistic: no seeds given")
    if len(set(seeds)) != len(seeds):
        raise RaysweepError(f"logistic: duplicate seeds in {seeds}")
    start = time.perf_counter()
    features = labelled_features(encoder, train, test, class_names=class_names, device=device,
                                 test_sets=test_sets)
    return logistic_rows(features, settings.logistic, seeds,
                         feature_seconds=time.perf_counter() - start)
