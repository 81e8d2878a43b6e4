"""Pairwise significance tests over the results table (the paper's Tables 13 and 14).

Input: the results table, one row per (condition, seed) with ``condition``, ``seed``, the
``family_by`` columns (default ``protocol``) and the metric columns. Output: one long table, one
row per (family, metric, comparison, test), with raw and corrected p-values, effect sizes, a
bootstrap CI of the mean difference and the seeds needed for 80% power.

Choices (the paper is silent on all but the first):
- Welch's t-test is the paper's test and the default ``primary_test``: a comparison is
  *flagged* when the primary test rejects after correction.
- The correction runs across one family: every comparison of one family value (e.g. all probe
  comparisons), separately per metric and per test.
- Without declared comparisons every pair of conditions in a family is tested two-sided
  ("Model 1 = Model 2"), in order of first appearance in the table; a direction chosen after
  seeing the data would not be a one-sided test.
- Paired tests (paired t, Wilcoxon) pair runs by ``seed`` (inner join); the unpaired ones use
  every run of each condition.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from raysweep.errors import DataError, SpecError
from raysweep.report import stats
from raysweep.report.settings import Comparison, ReportSettings

CONDITION = "condition"
SEED = "seed"


def family_label(key: Sequence[object]) -> str:
    """A family's display name: its ``family_by`` values joined by ``/`` ("all" for none)."""
    return "/".join(str(k) for k in key) if len(key) else "all"


def iter_families(results: pd.DataFrame, family_by: Sequence[str]):
    """Yield ``(label, key_dict, frame)`` for each family, in order of first appearance."""
    missing = [c for c in (*family_by, CONDITION, SEED) if c not in results.columns]
    if missing:
        raise DataError(f"results table has no column(s) {missing} (needed by the report)")
    if not family_by:
        yield "all", {}, results
        return
    for key, frame in results.groupby(list(family_by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        yield family_label(key), dict(zip(family_by, key, strict=True)), frame


def conditions_in_order(frame: pd.DataFrame) -> list[str]:
    """The conditions of ``frame`` in order of first appearance."""
    return [str(c) for c in pd.unique(frame[CONDITION].astype(str))]


def plan_comparisons(
    conditions: Sequence[str], declared: Sequence[Comparison], family: str | None = None
) -> list[Comparison]:
    """The declared comparisons of this ``family`` (or of any family) whose two conditions
    are both present, or, with none declared, every pair of ``conditions`` (two-sided)."""
    if declared:
        present = set(conditions)
        return [c for c in declared if c.model_1 in present and c.model_2 in present
                and (c.family is None or c.family == family)]
    return [Comparison(a, b, "two-sided") for a, b in itertools.combinations(conditions, 2)]


def check_unique_runs(results: pd.DataFrame, family_by: Sequence[str]) -> None:
    """One row per (family, condition, seed), or a :class:`DataError` naming the duplicate."""
    keys = [*family_by, CONDITION, SEED]
    dup = results.duplicated(keys, keep=False)
    if dup.any():
        row = results.loc[dup, keys].iloc[0].to_dict()
        raise DataError(f"results table has more than one row for {row}")


def paired_values(
    frame: pd.DataFrame, model_1: str, model_2: str, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """The metric of both conditions on their common seeds (inner join on ``seed``), sorted by
    seed. Raises :class:`DataError` when the two conditions share no seed."""
    a = frame.loc[frame[CONDITION].astype(str) == model_1, [SEED, metric]].dropna()
    b = frame.loc[frame[CONDITION].astype(str) == model_2, [SEED, metric]].dropna()
    joined = a.merge(b, on=SEED, suffixes=("_1", "_2")).sort_values(SEED)
    if joined.empty:
        raise DataError(
            f"conditions {model_1!r} and {model_2!r} share no seed with a {metric!r} value: "
            "paired tests need runs paired by seed"
        )
    return joined[f"{metric}_1"].to_numpy(float), joined[f"{metric}_2"].to_numpy(float)


def condition_values(frame: pd.DataFrame, condition: str, metric: str) -> np.ndarray:
    """All non-missing values of ``metric`` for one condition."""
    values = frame.loc[frame[CONDITION].astype(str) == condition, metric]
    return values.dropna().to_numpy(float)


def pairwise_tests(results: pd.DataFrame, settings: ReportSettings) -> pd.DataFrame:
    """Run every planned comparison in every family, for each metric and test.

    Returns a long DataFrame with columns ``family``, the ``family_by`` columns, ``metric``,
    ``model_1``, ``model_2``, ``alternative``, ``null``, ``n_1``, ``n_2``, ``mean_1``,
    ``mean_2``, ``diff`` (mean_1 - mean_2), ``ci_low``, ``ci_high`` (percentile bootstrap,
    95%), ``cohens_d`` (pooled sd), ``cliffs_delta``, ``seeds_needed`` (per condition, at
    ``settings.power``), ``test``, ``test_label``, ``n_pairs`` (paired tests), ``statistic``,
    ``df``, ``p_value``, ``correction``, ``p_adjusted``, ``reject`` and ``flagged`` (the primary
    test rejects, repeated on every test's row of that comparison).
    """
    from raysweep.seeding import numpy_rng

    missing = [m for m in settings.metrics if m not in results.columns]
    if missing:
        raise DataError(f"results table has no metric column(s) {missing}")
    check_unique_runs(results, settings.family_by)
    _check_declared(results, settings.comparisons, settings.family_by)

    rows: list[dict[str, object]] = []
    for label, key, frame in iter_families(results, settings.family_by):
        plan = plan_comparisons(conditions_in_order(frame), settings.comparisons, label)
        for metric, comp in itertools.product(settings.metrics, plan):
            a = condition_values(frame, comp.model_1, metric)
            b = condition_values(frame, comp.model_2, metric)
            d = stats.cohens_d(a, b)
            rng = numpy_rng(settings.bootstrap_seed, "bootstrap", label, metric,
                            comp.model_1, comp.model_2)
            ci_low, ci_high = stats.bootstrap_diff_ci(
                a, b, resamples=settings.bootstrap_resamples, rng=rng
            )
            common = {
                "family": label, **key, "metric": metric,
                "model_1": comp.model_1, "model_2": comp.model_2,
                "alternative": comp.alternative, "null": comp.null,
                "n_1": len(a), "n_2": len(b),
                "mean_1": a.mean() if len(a) else math.nan,
                "mean_2": b.mean() if len(b) else math.nan,
                "ci_low": ci_low, "ci_high": ci_high,
                "cohens_d": d, "cliffs_delta": stats.cliffs_delta(a, b),
                "seeds_needed": stats.seeds_needed(
                    d, alpha=settings.alpha, power=settings.power, alternative=comp.alternative
                ),
            }
            common["diff"] = common["mean_1"] - common["mean_2"]
            paired: tuple[np.ndarray, np.ndarray] | None = None
            for name in settings.tests:
                test = stats.TESTS[name]
                if test.paired:
                    if paired is None:
                        paired = paired_values(frame, comp.model_1, comp.model_2, metric)
                    x, y = paired
                else:
                    x, y = a, b
                result = _run_safely(test, x, y, comp.alternative)
                rows.append({
                    **common, "test": name, "test_label": test.label,
                    "n_pairs": len(x) if test.paired else math.nan,
                    "statistic": result.statistic, "df": result.df, "p_value": result.pvalue,
                })
    columns = [
        "family", *settings.family_by, "metric", "model_1", "model_2", "alternative", "null",
        "n_1", "n_2", "mean_1", "mean_2", "diff", "ci_low", "ci_high", "cohens_d",
        "cliffs_delta", "seeds_needed", "test", "test_label", "n_pairs", "statistic", "df",
        "p_value",
    ]
    table = pd.DataFrame(rows, columns=columns)
    return apply_correction(table, settings.correction, settings.alpha, settings.primary_test)


def apply_correction(
    table: pd.DataFrame, method: str, alpha: float, primary_test: str | None = "welch"
) -> pd.DataFrame:
    """Add ``correction``, ``p_adjusted``, ``reject`` (per family, metric and test) and
    ``flagged`` (the ``primary_test`` rejects for that family, metric and comparison)."""
    table = table.copy()
    table["correction"] = method
    table["p_adjusted"] = np.nan
    table["reject"] = False
    for _, index in table.groupby(["family", "metric", "test"], sort=False).groups.items():
        reject, adjusted = stats.correct(table.loc[index, "p_value"].to_numpy(), method, alpha)
        table.loc[index, "p_adjusted"] = adjusted
        table.loc[index, "reject"] = reject
    table["reject"] = table["reject"].astype(bool)
    if primary_test is None or table.empty:
        table["flagged"] = table["reject"]
        return table
    key = ["family", "metric", "model_1", "model_2"]
    primary = table.loc[table["test"] == primary_test, [*key, "reject"]]
    primary = primary.rename(columns={"reject": "flagged"})
    table = table.merge(primary, on=key, how="left")
    table["flagged"] = table["flagged"].fillna(False).astype(bool)
    return table


def _run_safely(
    test: stats.PairwiseTest, x: np.ndarray, y: np.ndarray, alternative: str
) -> stats.TestResult:
    """A test with too few runs (n < 2, or a paired test on < 2 pairs) is undefined: NaN."""
    if len(x) < 2 or len(y) < 2:
        return stats.TestResult(math.nan, math.nan)
    return test.run(x, y, alternative)


def _check_declared(
    results: pd.DataFrame, declared: Sequence[Comparison], family_by: Sequence[str]
) -> None:
    known = set(results[CONDITION].astype(str))
    families = {label for label, _, _ in iter_families(results, family_by)}
    for comp in declared:
        if comp.family is not None and comp.family not in families:
            raise SpecError(
                f"report comparison {comp.model_1!r} vs {comp.model_2!r}: family "
                f"{comp.family!r} is not in the results table (known: {sorted(families)})"
            )
        for model in (comp.model_1, comp.model_2):
            if model not in known:
                raise SpecError(
                    f"report comparison {comp.model_1!r} vs {comp.model_2!r}: condition "
                    f"{model!r} is not in the results table (known: {sorted(known)})"
                )
