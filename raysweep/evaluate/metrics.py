"""Test-set metrics of one run (docs/protocol.md "Seeds, metrics"; paper section 3.6), via sklearn.

Weighted-average F1 weights each class's F1 by its frequency in the test set (sklearn's
``average="weighted"``), as the paper defines it.

An external test set may hold only some of the training classes
(docs/protocol.md "External test sets"); its metrics are then taken over the classes present
(``over_present_classes``):

- ``accuracy`` and ``f1_weighted`` are unchanged by it: a class absent from the test labels has
  weight 0 in the weighted F1 (predictions *of* an absent class still count as errors, through
  the recall of the true classes);
- ``f1_macro`` is the mean F1 of the classes present; ``balanced_accuracy`` the mean recall of
  the classes present (sklearn's, which ignores absent classes by construction);
- ``auc_ovr`` is the mean one-vs-rest AUC of the classes present (each class's probability
  against the rest; with every class present it equals sklearn's ``multi_class="ovr"`` macro
  AUC); a binary task uses the positive class's probability as usual, and with a single class
  present AUC is undefined (NaN);
- the per-class columns keep every training class; an absent class has ``support/<class>`` 0.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = ["classification_metrics", "external_metrics", "prediction_concentration"]


def _auc_ovr(labels: np.ndarray, probs: np.ndarray) -> float:
    """One-vs-rest AUC; binary: AUC of the positive class's probability. NaN where undefined
    (a class absent from the test labels)."""
    num_classes = probs.shape[1]
    try:
        if num_classes == 2:
            return float(roc_auc_score(labels, probs[:, 1]))
        return float(roc_auc_score(labels, probs, multi_class="ovr",
                                   labels=list(range(num_classes))))
    except ValueError:
        return math.nan


def _auc_present(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean one-vs-rest AUC over the classes present in ``labels`` (the positive class's AUC
    for a binary task); NaN with fewer than two classes present."""
    present = np.unique(labels)
    if len(present) < 2:
        return math.nan
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels == 1, probs[:, 1]))
    return float(np.mean([roc_auc_score(labels == c, probs[:, c]) for c in present]))


def classification_metrics(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                           *, over_present_classes: bool = False) -> dict[str, float | int | str]:
    """Metrics of predictions ``argmax(probs)`` against ``labels``.

    Args:
        labels: int (N,) true classes.
        probs: float (N, C) class probabilities (rows sum to 1).
        class_names: C names, used in the per-class keys.
        over_present_classes: macro F1 and AUC over the classes present in ``labels`` (an
            external test set holding some of the classes; see the module docstring).

    Returns ``accuracy``, ``f1_weighted``, ``f1_macro``, ``balanced_accuracy``, ``auc_ovr``,
    ``precision/<class>``, ``recall/<class>``, ``f1/<class>``, ``support/<class>``,
    ``confusion_matrix`` (JSON list of lists, rows = true class, columns = predicted) and
    :func:`prediction_concentration`'s ``top_prediction`` and ``top_prediction_share``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    predictions = probs.argmax(axis=1)
    classes = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0)
    scored = sorted(set(labels.tolist())) if over_present_classes else classes
    with warnings.catch_warnings():
        if over_present_classes:  # a prediction of a class the set lacks: expected there
            warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(labels, predictions))
    row: dict[str, float | int | str] = {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1_weighted": float(f1_score(labels, predictions, labels=classes, average="weighted",
                                      zero_division=0)),
        "f1_macro": float(f1_score(labels, predictions, labels=scored, average="macro",
                                   zero_division=0)),
        "balanced_accuracy": balanced,
        "auc_ovr": (_auc_present(labels, probs) if over_present_classes
                    else _auc_ovr(labels, probs)),
    }
    for index, name in enumerate(class_names):
        row[f"precision/{name}"] = float(precision[index])
        row[f"recall/{name}"] = float(recall[index])
        row[f"f1/{name}"] = float(f1[index])
        row[f"support/{name}"] = int(support[index])
    row["confusion_matrix"] = json.dumps(
        confusion_matrix(labels, predictions, labels=classes).tolist())
    row.update(prediction_concentration(predictions, class_names))
    return row


def prediction_concentration(predictions: np.ndarray,
                             class_names: Sequence[str]) -> dict[str, float | str]:
    """``top_prediction`` (the class predicted most often; ties: the first) and
    ``top_prediction_share`` (the share of test images given it): a share near 1 is a
    degenerate classifier that answers one class whatever the image."""
    counts = np.bincount(np.asarray(predictions, dtype=np.int64), minlength=len(class_names))
    top = int(np.argmax(counts))
    return {"top_prediction": str(class_names[top]),
            "top_prediction_share": float(counts[top] / max(len(predictions), 1))}


def external_metrics(name: str, labels: Any, probs: Any, class_names: Sequence[str],
                     seconds: float) -> dict[str, Any]:
    """One entry of a row's ``test_sets`` list: the metrics of an external test set, over the
    classes it holds (:func:`classification_metrics` with ``over_present_classes``), and its
    inference time. ``labels`` (N,) and ``probs`` (N, C) are arrays or tensors (any device)."""
    labels = labels.cpu().numpy() if hasattr(labels, "cpu") else labels
    probs = probs.cpu().numpy() if hasattr(probs, "cpu") else probs
    return {"test_set": name,
            **classification_metrics(labels, probs, class_names, over_present_classes=True),
            "time_eval_s": float(seconds)}
