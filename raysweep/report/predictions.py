"""What the classifiers answered: degenerate rows (one class for nearly every test image), the
logistic protocol's regularisation chosen at an edge of its grid, and each condition's mean
row-normalised confusion matrix (docs/protocol.md "Baselines and degenerate classifiers").

Pure functions over one test set's rows, plus the confusion-matrix figure. Rows written before
the ``top_prediction_share`` and ``logistic_c_at_edge`` columns existed get both from what they
stored: the confusion matrix, and the validation score of every C.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from raysweep.report.plots import new_figure

__all__ = ["DEGENERATE_SHARE", "c_edge_counts", "degenerate_counts", "mean_confusion",
           "confusion_figure"]

#: A row is degenerate when more than this share of its test images get one class.
DEGENERATE_SHARE = 0.95


def _matrix(value: object) -> np.ndarray | None:
    """A row's confusion matrix (rows = true class, columns = predicted), None if absent."""
    if not isinstance(value, str):
        return None
    try:
        matrix = np.asarray(json.loads(value), dtype=float)
    except (ValueError, TypeError):
        return None
    return matrix if matrix.ndim == 2 and matrix.shape[0] == matrix.shape[1] else None


def top_shares(frame: pd.DataFrame) -> pd.Series:
    """Each row's share of test images given its most frequent answer: the
    ``top_prediction_share`` column, else from its confusion matrix (NaN when neither)."""
    shares = (frame["top_prediction_share"].astype(float) if "top_prediction_share" in frame
              else pd.Series(np.nan, index=frame.index))
    if "confusion_matrix" in frame:
        for index in shares.index[shares.isna()]:
            matrix = _matrix(frame.at[index, "confusion_matrix"])
            if matrix is not None and matrix.sum() > 0:
                shares.at[index] = float(matrix.sum(axis=0).max() / matrix.sum())
    return shares


def degenerate_counts(frame: pd.DataFrame, family_by: Sequence[str]) -> pd.DataFrame:
    """One row per (family, condition): ``runs``, ``degenerate`` (rows whose top answer takes
    more than :data:`DEGENERATE_SHARE` of the test images) and ``top_share_mean``."""
    shares = top_shares(frame)
    keys = [*family_by, "condition"]
    table = (frame.assign(_share=shares, _degenerate=shares > DEGENERATE_SHARE)
             .groupby(keys, sort=False)
             .agg(runs=("_share", "size"), degenerate=("_degenerate", "sum"),
                  top_share_mean=("_share", "mean"))
             .reset_index())
    table["degenerate"] = table["degenerate"].astype(int)
    if family_by:  # family by family, each in its order of appearance
        order = {k: i for i, k in enumerate(frame[list(family_by)].drop_duplicates()
                                            .itertuples(index=False, name=None))}
        table = table.iloc[sorted(range(len(table)), key=lambda i: order[tuple(
            table.iloc[i][list(family_by)])])].reset_index(drop=True)
    return table


def _at_edge(row: pd.Series) -> bool | None:
    """Whether a logistic row's C is at an edge of its grid: its flag, else from the index of
    its best validation score (None when the row has neither)."""
    flag = row.get("logistic_c_at_edge")
    if flag is not None and not (isinstance(flag, float) and math.isnan(flag)):
        return bool(flag)
    try:
        scores = json.loads(str(row.get("logistic_val_scores")))
    except ValueError:
        return None
    if not isinstance(scores, list) or len(scores) < 2:
        return False if isinstance(scores, list) else None
    best = int(np.argmax(np.asarray(scores, dtype=float)))
    return best in (0, len(scores) - 1)


def c_edge_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per condition of the ``logistic`` rows: ``runs`` and ``at_edge`` (C chosen at
    the smallest or largest value of its grid); empty without logistic rows."""
    columns = ["condition", "runs", "at_edge"]
    if "protocol" not in frame:
        return pd.DataFrame(columns=columns)
    rows = frame[frame["protocol"] == "logistic"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    edges = rows.apply(_at_edge, axis=1)
    table = (rows.assign(_edge=edges.fillna(False).astype(bool))
             .groupby("condition", sort=False)
             .agg(runs=("_edge", "size"), at_edge=("_edge", "sum")).reset_index())
    table["at_edge"] = table["at_edge"].astype(int)
    return table


def mean_confusion(frame: pd.DataFrame) -> np.ndarray | None:
    """The mean over ``frame``'s rows of their row-normalised confusion matrices (each true
    class's answers as shares; a class without test images a row of zeros), None when no row
    has one."""
    matrices = [m for m in map(_matrix, frame.get("confusion_matrix", [])) if m is not None]
    if not matrices or len({m.shape for m in matrices}) != 1:
        return None
    normalised = []
    for matrix in matrices:
        totals = matrix.sum(axis=1, keepdims=True)
        normalised.append(np.divide(matrix, totals, out=np.zeros_like(matrix),
                                    where=totals > 0))
    return np.mean(normalised, axis=0)


def confusion_figure(panels: Sequence[tuple[str, np.ndarray]], classes: Sequence[str],
                     title: str) -> Figure | None:
    """One heat map per (label, mean row-normalised confusion matrix), shares printed in the
    cells; None without panels."""
    if not panels:
        return None
    k = len(classes)
    side = max(2.6, 0.45 * k + 1.2)
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig = new_figure(side * cols, side * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    names = [c if len(c) <= 12 else c[:11] + "…" for c in classes]
    for ax, (label, matrix) in zip(axes, panels, strict=False):
        ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="Blues")
        if k <= 12:
            for (i, j), share in np.ndenumerate(matrix):
                ax.text(j, i, f"{share:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if share > 0.5 else "black")
        ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(label, fontsize=9)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    return fig
