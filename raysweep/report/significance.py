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
- Seeds are paired across conditions by design (the same seed index means the same draws), so
  when every run of both conditions has its partner, the effect size behind "seeds needed" is
  the paired one (Cohen's d_z, statsmodels' ``TTestPower``: seeds for a paired t-test) and the
  bootstrap resamples seed indices; otherwise both treat the runs as independent (Cohen's d,
  ``TTestIndPower``; each condition resampled on its own). Cohen's d is reported either way.
- A comparison across families (the spec's ``protocol_1`` / ``protocol_2``: e.g. a probe
  against a fine-tuning) pairs runs by seed in the same way; all of them form one family of
  their own for the correction (``across protocols``).

The comparisons are the experiment spec's own :class:`raysweep.config.Comparison`; a comparison's
``protocol`` (or ``protocol_1`` / ``protocol_2``) names the family label it is tested in, which
with the default ``family_by=("protocol",)`` is the protocol itself.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from raysweep.config import Comparison, ReportSpec
from raysweep.errors import DataError, SpecError
from raysweep.report import stats
from raysweep.seeding import numpy_rng

CONDITION = "condition"
SEED = "seed"


def cross_family(family_by: Sequence[str]) -> str:
    """The family label of every comparison across families (``protocol_1`` != ``protocol_2``):
    ``across protocols`` with the default ``family_by``, else ``across families``."""
    return "across protocols" if tuple(family_by) == ("protocol",) else "across families"


def is_across(comp: Comparison) -> bool:
    """Whether the two sides of ``comp`` come from different families."""
    return comp.protocol_1 is not None and comp.protocol_1 != comp.protocol_2


def declared_family(comp: Comparison) -> str | None:
    """The one family a comparison within a family is tested in (None: every family holding
    both conditions)."""
    return comp.protocol or comp.protocol_1


def side_label(comp: Comparison, side: int) -> str:
    """``model_1`` / ``model_2`` (``side`` 1 or 2), with its family when the comparison is
    across families (``simclr-100 (probe)``)."""
    model, family = ((comp.model_1, comp.protocol_1) if side == 1
                     else (comp.model_2, comp.protocol_2))
    return f"{model} ({family})" if is_across(comp) else model


def null_hypothesis(alternative: str) -> str:
    """The null hypothesis of ``alternative`` in the paper's words (Tables 13, 14)."""
    return "Model 1 <= Model 2" if alternative == "greater" else "Model 1 = Model 2"


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
                and declared_family(c) in (None, family)]
    return [Comparison(a, b, "two-sided") for a, b in itertools.combinations(conditions, 2)]


def check_unique_runs(results: pd.DataFrame, family_by: Sequence[str]) -> None:
    """One row per (family, condition, seed), or a :class:`DataError` naming the duplicate."""
    keys = [*family_by, CONDITION, SEED]
    dup = results.duplicated(keys, keep=False)
    if dup.any():
        row = results.loc[dup, keys].iloc[0].to_dict()
        raise DataError(f"results table has more than one row for {row}")


def paired_values(
    frame: pd.DataFrame, model_1: str, model_2: str, metric: str,
    frame_2: pd.DataFrame | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The metric of both conditions on their common seeds (inner join on ``seed``), sorted by
    seed; ``model_2``'s runs come from ``frame_2`` when given (a comparison across families).
    Raises :class:`DataError` when the two conditions share no seed."""
    frame_2 = frame if frame_2 is None else frame_2
    a = frame.loc[frame[CONDITION].astype(str) == model_1, [SEED, metric]].dropna()
    b = frame_2.loc[frame_2[CONDITION].astype(str) == model_2, [SEED, metric]].dropna()
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


def seed_pairs(
    frame_1: pd.DataFrame, frame_2: pd.DataFrame, model_1: str, model_2: str, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`paired_values`, but empty arrays instead of an error when no seed is
    shared."""
    try:
        return paired_values(frame_1, model_1, model_2, metric, frame_2)
    except DataError:
        return np.empty(0), np.empty(0)


def is_paired_design(a: np.ndarray, b: np.ndarray, pairs: tuple[np.ndarray, np.ndarray]) -> bool:
    """Every run of both conditions has its partner of the same seed (and n >= 2): then the
    effect size, power and bootstrap are the paired ones."""
    return len(pairs[0]) >= 2 and len(pairs[0]) == len(a) == len(b)


def pairwise_tests(results: pd.DataFrame, settings: ReportSpec) -> pd.DataFrame:
    """Run every planned comparison in every family, for each metric and test; then every
    declared comparison across families (family :func:`cross_family`: ``across protocols``).

    Returns a long DataFrame with columns ``family``, the ``family_by`` columns (empty for
    comparisons across families), ``family_1``, ``family_2`` (the families the two sides come
    from), ``metric``, ``model_1``, ``model_2``, ``alternative``, ``null``, ``n_1``, ``n_2``,
    ``mean_1``, ``mean_2``, ``diff`` (mean_1 - mean_2), ``design`` (``paired`` when every run
    of both conditions pairs with the other's run of the same seed, else ``independent``),
    ``ci_low``, ``ci_high`` (95% percentile bootstrap of the mean difference: resampled seed
    indices when paired, each condition's runs independently otherwise), ``cohens_d`` (pooled
    sd), ``cohens_dz`` (paired design only), ``cliffs_delta``, ``seeds_needed`` (at
    ``settings.power``: a paired t-test at d_z when paired, a two-sample t-test at d
    otherwise), ``test``, ``test_label``, ``n_pairs`` (paired tests), ``statistic``, ``df``,
    ``p_value``, ``correction``, ``p_adjusted``, ``reject`` and ``flagged`` (the primary test
    rejects, repeated on every test's row of that comparison).
    """
    missing = [m for m in settings.chosen_metrics if m not in results.columns]
    if missing:
        raise DataError(f"results table has no metric column(s) {missing}")
    check_unique_runs(results, settings.family_by)
    _check_declared(results, settings.comparisons, settings.family_by)

    within = [c for c in settings.comparisons if not is_across(c)]
    across = [c for c in settings.comparisons if is_across(c)]
    families = list(iter_families(results, settings.family_by))
    rows: list[dict[str, object]] = []
    for label, key, frame in families:
        plan = (plan_comparisons(conditions_in_order(frame), within, label)
                if within or not across else [])
        for metric, comp in itertools.product(settings.chosen_metrics, plan):
            rows += _compare(frame, frame, comp, metric, label, key, label, label, settings)
    frames = {label: frame for label, _, frame in families}
    empty_key = dict.fromkeys(settings.family_by)
    for metric, comp in itertools.product(settings.chosen_metrics, across):
        family_1, family_2 = comp.protocol_1, comp.protocol_2
        assert family_1 is not None and family_2 is not None  # is_across; Comparison.problems
        rows += _compare(frames[family_1], frames[family_2], comp, metric,
                         cross_family(settings.family_by), empty_key, family_1, family_2,
                         settings)
    columns = [
        "family", *settings.family_by, "family_1", "family_2", "metric", "model_1", "model_2",
        "alternative", "null", "n_1", "n_2", "mean_1", "mean_2", "diff", "design", "ci_low",
        "ci_high", "cohens_d", "cohens_dz", "cliffs_delta", "seeds_needed", "test",
        "test_label", "n_pairs", "statistic", "df", "p_value",
    ]
    table = pd.DataFrame(rows, columns=columns)
    return apply_correction(table, settings.correction, settings.alpha, settings.primary_test)


def _compare(
    frame_1: pd.DataFrame, frame_2: pd.DataFrame, comp: Comparison, metric: str, family: str,
    key: dict, family_1: str, family_2: str, settings: ReportSpec,
) -> list[dict[str, object]]:
    """The rows (one per test) of one comparison: ``model_1``'s runs in ``frame_1`` against
    ``model_2``'s in ``frame_2``."""

    a = condition_values(frame_1, comp.model_1, metric)
    b = condition_values(frame_2, comp.model_2, metric)
    pairs = seed_pairs(frame_1, frame_2, comp.model_1, comp.model_2, metric)
    paired_design = is_paired_design(a, b, pairs)
    sides = (comp.model_1, comp.model_2) if family_1 == family_2 else (
        comp.model_1, family_1, comp.model_2, family_2)
    rng = numpy_rng(settings.bootstrap_seed, "bootstrap", family, metric, *sides)
    if paired_design:
        ci_low, ci_high = stats.paired_bootstrap_diff_ci(
            *pairs, resamples=settings.bootstrap_resamples, rng=rng)
        dz = stats.cohens_dz(*pairs)
    else:
        ci_low, ci_high = stats.bootstrap_diff_ci(
            a, b, resamples=settings.bootstrap_resamples, rng=rng)
        dz = math.nan
    d = stats.cohens_d(a, b)
    common = {
        "family": family, **key, "family_1": family_1, "family_2": family_2, "metric": metric,
        "model_1": comp.model_1, "model_2": comp.model_2,
        "alternative": comp.alternative, "null": null_hypothesis(comp.alternative),
        "n_1": len(a), "n_2": len(b),
        "mean_1": a.mean() if len(a) else math.nan,
        "mean_2": b.mean() if len(b) else math.nan,
        "design": "paired" if paired_design else "independent",
        "ci_low": ci_low, "ci_high": ci_high,
        "cohens_d": d, "cohens_dz": dz, "cliffs_delta": stats.cliffs_delta(a, b),
        "seeds_needed": stats.seeds_needed(
            dz if paired_design else d, alpha=settings.alpha, power=settings.power,
            alternative=comp.alternative, paired=paired_design,
        ),
    }
    common["diff"] = common["mean_1"] - common["mean_2"]
    rows = []
    for name in settings.tests:
        test = stats.TESTS[name]
        if test.paired:
            if not len(pairs[0]):  # raises the "share no seed" error
                paired_values(frame_1, comp.model_1, comp.model_2, metric, frame_2)
            x, y = pairs
        else:
            x, y = a, b
        result = _run_safely(test, x, y, comp.alternative)
        rows.append({
            **common, "test": name, "test_label": test.label,
            "n_pairs": len(x) if test.paired else math.nan,
            "statistic": result.statistic, "df": result.df, "p_value": result.pvalue,
        })
    return rows


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
    key += [c for c in ("family_1", "family_2") if c in table.columns]
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
    members = {label: set(frame[CONDITION].astype(str))
               for label, _, frame in iter_families(results, family_by)}
    families = set(members)
    for comp in declared:
        for family in (comp.protocol, comp.protocol_1, comp.protocol_2):
            if family is not None and family not in families:
                raise SpecError(
                    f"report comparison {comp.model_1!r} vs {comp.model_2!r}: family "
                    f"{family!r} is not in the results table (known: {sorted(families)})"
                )
        for model in (comp.model_1, comp.model_2):
            if model not in known:
                raise SpecError(
                    f"report comparison {comp.model_1!r} vs {comp.model_2!r}: condition "
                    f"{model!r} is not in the results table (known: {sorted(known)})"
                )
        if is_across(comp):
            for model, family in ((comp.model_1, comp.protocol_1),
                                  (comp.model_2, comp.protocol_2)):
                if model not in members[family]:
                    raise SpecError(
                        f"report comparison {side_label(comp, 1)} vs {side_label(comp, 2)}: condition "
                        f"{model!r} has no runs in family {family!r}"
                    )
