"""Summary tables over the results table (pure functions returning DataFrames).

- :func:`summary_table`: mean, std and n per condition of each metric, per family (the paper's
  Tables 4 and 6, one per protocol).
- :func:`protocol_table`: probe vs fine-tune side by side for one metric (Tables 7 and 8).
- :func:`per_class_f1`: mean per-class F1 per condition (the slides' classification report).
- :func:`across_test_sets`: each condition's metric on every test set side by side (in- vs
  out-of-distribution, Chaves et al.).
- :func:`budget_table`: each arm's metric against its label budget, with a 95% confidence
  interval of the mean (the thesis' 100 / 250 / 1000 labels, Chaves et al.'s 1 / 10 / 100 %).

Standard deviations are sample standard deviations (ddof=1), as pandas and the paper report.
Conditions keep their order of first appearance in the results table.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from scipy import stats as sps

from raysweep.errors import DataError

#: Columns describing a condition that the tables show beside its id when present
#: (the paper's "initial", "further data", "further method").
CONDITION_KEYS = ("initial", "further_data", "further_method")

PER_CLASS_F1_PREFIX = "f1/"
SUPPORT_PREFIX = "support/"


def condition_key_columns(results: pd.DataFrame) -> list[str]:
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
    labels = condition_key_columns(results)
    out = grouped[labels].first() if labels else None
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
    assert isinstance(wide, pd.DataFrame)  # two index levels: unstacking one leaves a frame
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


#: The columns of the results table that a label-budget study carries
#: (``raysweep.plan.budgets``): the labelled training images used, and the condition's arm.
BUDGET_COLUMNS = ("n_labels", "arm")
TEST_SET = "test_set"


def across_test_sets(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (protocol, condition) in order of appearance; columns ``<test set>_mean``,
    ``<test set>_std``, ``<test set>_n`` for each test set (the ``test_set`` column's values,
    in order of appearance: the in-distribution ``test`` first)."""
    keys = _group_keys(results, ("protocol", TEST_SET))
    if metric not in results.columns:
        raise DataError(f"results table has no metric column {metric!r}")
    test_sets = [str(t) for t in pd.unique(results[TEST_SET])]
    agg = results.groupby(keys, sort=False)[metric].agg(["mean", "std", "count"])
    agg.columns = ["mean", "std", "n"]
    wide = agg.unstack(TEST_SET)
    assert isinstance(wide, pd.DataFrame)  # two index levels: unstacking one leaves a frame
    wide = wide.reindex(columns=pd.MultiIndex.from_product([["mean", "std", "n"], test_sets]))
    wide.columns = [f"{t}_{stat}" for stat, t in wide.columns]
    wide = wide[[f"{t}_{stat}" for t in test_sets for stat in ("mean", "std", "n")]]
    order = results[["protocol", "condition"]].drop_duplicates()
    wide = wide.reindex(pd.MultiIndex.from_frame(order))
    return wide.reset_index()


def mean_ci(values: pd.Series, level: float = 0.95) -> tuple[float, float]:
    """The ``level`` confidence interval of the mean of ``values`` (Student's t; NaN for fewer
    than two values)."""

    sample = values.dropna().to_numpy(float)
    if len(sample) < 2:
        return float("nan"), float("nan")
    half = sps.t.ppf(0.5 + level / 2, len(sample) - 1) * sample.std(ddof=1) / len(sample) ** 0.5
    return float(sample.mean() - half), float(sample.mean() + half)


def budget_table(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (test set, protocol, arm, label budget): ``n_labels``, ``mean``, ``std``,
    ``n`` (runs) and the 95% confidence interval of the mean (``ci_low``, ``ci_high``),
    sorted by label budget within each arm. Empty when the table has no label budgets."""
    columns = [TEST_SET, "protocol", "arm", "n_labels", "mean", "std", "n", "ci_low",
               "ci_high"]
    if not all(c in results.columns for c in BUDGET_COLUMNS) or metric not in results.columns:
        return pd.DataFrame(columns=columns)
    frame = results.dropna(subset=["n_labels"]).copy()
    if frame.empty:
        return pd.DataFrame(columns=columns)
    if TEST_SET not in frame.columns:
        frame[TEST_SET] = "test"
    rows = []
    keys = [TEST_SET, "protocol", "arm", "n_labels"]
    for key, part in frame.groupby(keys, sort=False):
        low, high = mean_ci(part[metric])
        rows.append({**dict(zip(keys, key, strict=True)), "mean": part[metric].mean(),
                     "std": part[metric].std(), "n": int(part[metric].notna().sum()),
                     "ci_low": low, "ci_high": high})
    table = pd.DataFrame(rows, columns=columns)
    table["n_labels"] = table["n_labels"].astype(int)
    order = {key: i for i, key in enumerate(
        table[[TEST_SET, "protocol", "arm"]].drop_duplicates().itertuples(index=False))}
    table["_order"] = [order[tuple(r)] for r in
                       table[[TEST_SET, "protocol", "arm"]].itertuples(index=False)]
    return (table.sort_values(["_order", "n_labels"], kind="stable")
            .drop(columns="_order").reset_index(drop=True))
