"""Summary tables over the results table (pure functions returning DataFrames).

- :func:`summary_table`: mean, std and n per condition of each metric, per family (the paper's
  Tables 4 and 6, one per protocol).
- :func:`protocol_table`: probe vs fine-tune side by side for one metric (Tables 7 and 8).
- :func:`per_class_f1`: mean per-class F1 per condition (the slides' classification report).

Standard deviations are sample standard deviations (ddof=1), as pandas and the paper report.
Conditions keep their order of first appearance in the results table.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from raysweep.errors import DataError

#: Columns describing a condition that the tables show beside its id when present
#: (the paper's "initial", "further data", "further method").
CONDITION_KEYS = ("initial", "further_data", "further_method")

PER_CLASS_F1_PREFIX = "f1/"
SUPPORT_PREFIX = "support/"


def condition_keys(results: pd.DataFrame) -> list[str]:
    """The :data:`CONDITION_KEYS` present in ``results``."""
    return [c for c in CONDITION_KEYS if c in results.columns]


def _group_keys(results: pd.DataFrame, family_by: Sequence[str]) -> list[str]:
    missing = [c for c in (*family_by, "condition") if c not in results.columns]
    if missing:
        raise DataError(f"results table has no column(s) {missing}")
    return [*family_by, "condition"]


def summary_table(
    results: pd.DataFrame, metrics: Sequence[str], family_by: Sequence[str] = ("protocol",)
) -> pd.DataFrame:
    """One row per (family, condition): the condition keys, then ``<metric>_mean``,
    ``<metric>_std`` and ``<metric>_n`` (non-missing runs) for each metric."""
    keys = _group_keys(results, family_by)
    missing = [m for m in metrics if m not in results.columns]
    if missing:
        raise DataError(f"results table has no metric column(s) {missing}")
    grouped = results.groupby(keys, sort=False, dropna=False)
    out = grouped[condition_keys(results)].first() if condition_keys(results) else None
    parts = []
    for metric in metrics:
        agg = grouped[metric].agg(["mean", "std", "count"])
        agg.columns = [f"{metric}_mean", f"{metric}_std", f"{metric}_n"]
        parts.append(agg)
    table = pd.concat(([out] if out is not None else []) + parts, axis=1)
    return table.reset_index()


def protocol_table(
    results: pd.DataFrame, metric: str, protocol_col: str = "protocol"
) -> pd.DataFrame:
    """One row per condition; columns ``<protocol>_mean``, ``<protocol>_std``, ``<protocol>_n``
    for each protocol (e.g. probe and finetune side by side, the paper's Tables 7 and 8).

    Conditions are matched across protocols by their ``condition`` id, so the id must name the
    encoder condition only (the sweep's convention); a condition run under one protocol only
    has missing values under the other.
    """
    keys = _group_keys(results, (protocol_col,))
    if metric not in results.columns:
        raise DataError(f"results table has no metric column {metric!r}")
    agg = results.groupby(keys, sort=False)[metric].agg(["mean", "std", "count"])
    agg.columns = ["mean", "std", "n"]
    wide = agg.unstack(protocol_col)
    protocols = list(pd.unique(results[protocol_col]))
    wide = wide.reindex(
        columns=pd.MultiIndex.from_product([["mean", "std", "n"], protocols])
    )
    wide.columns = [f"{p}_{stat}" for stat, p in wide.columns]
    order = [f"{p}_{stat}" for p in protocols for stat in ("mean", "std", "n")]
    wide = wide[order].reindex(pd.unique(results["condition"]))
    wide.index.name = "condition"
    return wide.reset_index()


def class_names(results: pd.DataFrame) -> list[str]:
    """Class names from the ``f1/<class>`` columns, in column order."""
    return [
        c[len(PER_CLASS_F1_PREFIX):] for c in results.columns if c.startswith(PER_CLASS_F1_PREFIX)
    ]


def per_class_f1(
    results: pd.DataFrame, family_by: Sequence[str] = ("protocol",)
) -> pd.DataFrame:
    """Long table: one row per (family, condition, class) with ``f1_mean``, ``f1_std``, ``n``
    and ``support`` (mean ``support/<class>`` when recorded). Empty when no ``f1/<class>``
    columns exist."""
    keys = _group_keys(results, family_by)
    names = class_names(results)
    columns = [*keys, "class", "f1_mean", "f1_std", "n", "support"]
    if not names:
        return pd.DataFrame(columns=columns)
    grouped = results.groupby(keys, sort=False, dropna=False)
    frames = []
    for name in names:
        agg = grouped[PER_CLASS_F1_PREFIX + name].agg(["mean", "std", "count"])
        agg.columns = ["f1_mean", "f1_std", "n"]
        support_col = SUPPORT_PREFIX + name
        agg["support"] = grouped[support_col].mean() if support_col in results else float("nan")
        agg["class"] = name
        frames.append(agg.reset_index())
    return pd.concat(frames, ignore_index=True)[columns]
