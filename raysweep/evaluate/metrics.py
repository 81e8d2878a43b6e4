"""Test-set metrics of one run (docs/protocol.md "Seeds, metrics"; paper section 3.6), via sklearn.

Weighted-average F1 weights each class's F1 by its frequency in the test set (sklearn's
``average="weighted"``), as the paper defines it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = ["classification_metrics"]


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


def classification_metrics(labels: np.ndarray, probs: np.ndarray,
                           class_names: Sequence[str]) -> dict[str, float | int | str]:
    """Metrics of predictions ``argmax(probs)`` against ``labels``.

    Args:
        labels: int (N,) true classes.
        probs: float (N, C) class probabilities (rows sum to 1).
        class_names: C names, used in the per-class keys.

    Returns ``accuracy``, ``f1_weighted``, ``f1_macro``, ``balanced_accuracy``, ``auc_ovr``,
    ``precision/<class>``, ``recall/<class>``, ``f1/<class>``, ``support/<class>`` and
    ``confusion_matrix`` (JSON list of lists, rows = true class, columns = predicted).
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    predictions = probs.argmax(axis=1)
    classes = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0)
    row: dict[str, float | int | str] = {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1_weighted": float(f1_score(labels, predictions, labels=classes, average="weighted",
                                      zero_division=0)),
        "f1_macro": float(f1_score(labels, predictions, labels=classes, average="macro",
                                   zero_division=0)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predictions)),
        "auc_ovr": _auc_ovr(labels, probs),
    }
    for index, name in enumerate(class_names):
        row[f"precision/{name}"] = float(precision[index])
        row[f"recall/{name}"] = float(recall[index])
        row[f"f1/{name}"] = float(f1[index])
        row[f"support/{name}"] = int(support[index])
    row["confusion_matrix"] = json.dumps(
        confusion_matrix(labels, predictions, labels=classes).tolist())
    return row
