"""Statistics for the significance report: pure functions over 1-d arrays of per-run metrics.

The paper (Haggerty & Chandra, appendix A.3, Tables 13 and 14) compares two conditions with
Welch's t-test on the 35 per-run values, one-sided with the null "Model 1 <= Model 2" or
two-sided with the null "Model 1 = Model 2". Here ``alternative="greater"`` always means
H1: Model 1 > Model 2, i.e. the paper's one-sided null, for every test.

Every p-value comes from ``scipy.stats``; corrections from statsmodels' ``multipletests``;
the power analysis from statsmodels' ``TTestIndPower`` (independent runs) and ``TTestPower``
(runs paired by seed: a one-sample t-test on the differences). What is hand-written (Cohen's d
and d_z, Cliff's delta, the percentile bootstraps) is a one-line formula each, tested against
independent computations.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower

from raysweep.errors import RaysweepError

Array = np.ndarray


@dataclasses.dataclass(frozen=True)
class TestResult:
    """A test statistic, its p-value and (for t-tests) the degrees of freedom."""

    statistic: float
    pvalue: float
    df: float = math.nan


@dataclasses.dataclass(frozen=True)
class PairwiseTest:
    """A registered two-sample test. ``paired`` tests get arrays aligned run by run (by seed)."""

    name: str
    label: str
    paired: bool
    run: Callable[[Array, Array, str], TestResult]


def _check_alternative(alternative: str) -> str:
    if alternative not in ("greater", "two-sided"):
        raise RaysweepError(f"alternative {alternative!r} is not 'greater' or 'two-sided'")
    return alternative


def welch(a: Array, b: Array, alternative: str = "two-sided") -> TestResult:
    """Welch's unequal-variance t-test (the paper's), ``scipy.stats.ttest_ind(equal_var=False)``."""
    res = sps.ttest_ind(a, b, equal_var=False, alternative=_check_alternative(alternative))
    return TestResult(float(res.statistic), float(res.pvalue), float(res.df))


def paired_t(a: Array, b: Array, alternative: str = "two-sided") -> TestResult:
    """Paired t-test on runs aligned by seed, ``scipy.stats.ttest_rel``."""
    res = sps.ttest_rel(a, b, alternative=_check_alternative(alternative))
    return TestResult(float(res.statistic), float(res.pvalue), float(res.df))


def wilcoxon(a: Array, b: Array, alternative: str = "two-sided") -> TestResult:
    """Wilcoxon signed-rank test on runs aligned by seed, ``scipy.stats.wilcoxon`` (scipy's
    defaults: zero differences dropped, exact distribution for small samples). All-zero
    differences give NaN (the test is undefined)."""
    _check_alternative(alternative)
    if np.all(np.asarray(a) == np.asarray(b)):
        return TestResult(math.nan, math.nan)
    res = sps.wilcoxon(a, b, alternative=alternative)
    return TestResult(float(res.statistic), float(res.pvalue))


def mannwhitney(a: Array, b: Array, alternative: str = "two-sided") -> TestResult:
    """Mann-Whitney U test, ``scipy.stats.mannwhitneyu`` (statistic = U of ``a``)."""
    res = sps.mannwhitneyu(a, b, alternative=_check_alternative(alternative))
    return TestResult(float(res.statistic), float(res.pvalue))


#: The registry of pairwise tests (docs/design.md principle 7); keys are the names used in settings.
TESTS: dict[str, PairwiseTest] = {
    "welch": PairwiseTest("welch", "Welch's t-test", False, welch),
    "paired_t": PairwiseTest("paired_t", "paired t-test", True, paired_t),
    "wilcoxon": PairwiseTest("wilcoxon", "Wilcoxon signed-rank test", True, wilcoxon),
    "mannwhitney": PairwiseTest("mannwhitney", "Mann-Whitney U test", False, mannwhitney),
}


def welch_from_stats(
    mean_1: float, std_1: float, n_1: int, mean_2: float, std_2: float, n_2: int,
    alternative: str = "two-sided",
) -> TestResult:
    """Welch's t-test from published means and standard deviations, exactly as the authors
    computed it: ``scipy.stats.ttest_ind_from_stats(..., equal_var=False)``.

    The degrees of freedom are Welch-Satterthwaite's (:func:`welch_df`).
    """
    res = sps.ttest_ind_from_stats(
        mean_1, std_1, n_1, mean_2, std_2, n_2,
        equal_var=False, alternative=_check_alternative(alternative),
    )
    return TestResult(float(res.statistic), float(res.pvalue),
                      welch_df(std_1, n_1, std_2, n_2))


def welch_df(std_1: float, n_1: int, std_2: float, n_2: int) -> float:
    """Welch-Satterthwaite degrees of freedom (scipy's ``ttest_ind_from_stats`` does not
    return them): (v1 + v2)^2 / (v1^2 / (n1 - 1) + v2^2 / (n2 - 1)), v = s^2 / n."""
    v_1, v_2 = std_1**2 / n_1, std_2**2 / n_2
    denominator = v_1**2 / (n_1 - 1) + v_2**2 / (n_2 - 1)
    return (v_1 + v_2) ** 2 / denominator if denominator > 0 else math.nan


def correct(pvalues: Array, method: str = "holm", alpha: float = 0.05) -> tuple[Array, Array]:
    """Multiple-testing correction across one family: ``(reject, p_adjusted)``.

    ``method`` is a ``statsmodels.stats.multitest.multipletests`` name (``"holm"``,
    ``"fdr_bh"``, ``"bonferroni"``) or ``"none"`` (raw p-values, ``reject = p <= alpha``).
    NaN p-values (an undefined test) stay NaN, are never rejected and do not count towards the
    family size.
    """

    p = np.asarray(pvalues, dtype=float)
    reject = np.zeros(p.shape, dtype=bool)
    adjusted = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if not ok.any():
        return reject, adjusted
    if method == "none":
        adjusted[ok] = p[ok]
        reject[ok] = p[ok] <= alpha
        return reject, adjusted
    if method == "holm":
        rej, adj = holm(p[ok], alpha)
    else:
        rej, adj, _, _ = multipletests(p[ok], alpha=alpha, method=method)
    reject[ok] = rej
    adjusted[ok] = adj
    return reject, adjusted


def holm(pvalues: Array, alpha: float = 0.05) -> tuple[Array, Array]:
    """Holm's step-down correction (Holm 1979), ``(reject, p_adjusted)``, computed as
    ``statsmodels``' ``multipletests(method="holm")`` computes it (equal to it bit for bit,
    ``tests/report/test_stats.py``), without the full garbage collection statsmodels runs on
    every call (a second per call in a large process): sorted ascending, the i-th of m
    p-values (i from 0) is adjusted to ``max_{j <= i} (m - j) p_(j)`` (at most 1) and rejected
    while every p_(j), j <= i, is at most ``alpha / (m - j)``."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    ordered = p[order]
    factors = np.arange(len(p), 0, -1)
    stop = np.flatnonzero(ordered > alpha / factors)
    reject_sorted = np.arange(len(p)) < (stop[0] if stop.size else len(p))
    adjusted_sorted = np.minimum(np.maximum.accumulate(ordered * factors), 1.0)
    reject, adjusted = np.empty(len(p), dtype=bool), np.empty(len(p))
    reject[order], adjusted[order] = reject_sorted, adjusted_sorted
    return reject, adjusted


def pooled_std(std_1: float, n_1: int, std_2: float, n_2: int) -> float:
    """sqrt(((n1-1) s1^2 + (n2-1) s2^2) / (n1 + n2 - 2)), the pooled sample standard deviation."""
    return math.sqrt(((n_1 - 1) * std_1**2 + (n_2 - 1) * std_2**2) / (n_1 + n_2 - 2))


def cohens_d_from_stats(
    mean_1: float, std_1: float, n_1: int, mean_2: float, std_2: float, n_2: int
) -> float:
    """Cohen's d with the pooled standard deviation (Cohen 1988, "d_s"; no Hedges correction):
    (mean_1 - mean_2) / pooled_std. Positive when Model 1 is better. NaN if the pooled sd is 0."""
    sd = pooled_std(std_1, n_1, std_2, n_2)
    return (mean_1 - mean_2) / sd if sd > 0 else math.nan


def cohens_d(a: Array, b: Array) -> float:
    """Cohen's d of two samples (pooled sd with ddof=1, see :func:`cohens_d_from_stats`)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    return cohens_d_from_stats(
        a.mean(), a.std(ddof=1), len(a), b.mean(), b.std(ddof=1), len(b)
    )


def cohens_dz(a: Array, b: Array) -> float:
    """Cohen's d_z of runs paired by seed (Cohen 1988; Lakens 2013): mean(a - b) / sd(a - b)
    (ddof=1), the effect size of a paired t-test. Positive when Model 1 is better; +-inf when
    every difference is the same non-zero number, NaN when all are zero or n < 2."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    if len(diff) < 2:
        return math.nan
    mean, sd = diff.mean(), diff.std(ddof=1)
    if sd > 0:
        return float(mean / sd)
    return math.nan if mean == 0 else math.copysign(math.inf, mean)


def cliffs_delta(a: Array, b: Array) -> float:
    """Cliff's delta = (#{a_i > b_j} - #{a_i < b_j}) / (n_a n_b), in [-1, 1] (Cliff 1993).

    Positive when values of ``a`` tend to exceed those of ``b``.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) == 0 or len(b) == 0:
        return math.nan
    return float(np.sign(a[:, None] - b[None, :]).mean())


def bootstrap_diff_ci(
    a: Array, b: Array, *, resamples: int, rng: np.random.Generator, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(a) - mean(b).

    Each resample draws ``len(a)`` runs of ``a`` and ``len(b)`` runs of ``b`` with replacement,
    independently (the two conditions' runs as independent samples, as in Welch's test).
    The interval is the (1-confidence)/2 and (1+confidence)/2 quantiles of the resampled
    differences (numpy's default linear interpolation).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan
    mean_a = a[rng.integers(0, len(a), size=(resamples, len(a)))].mean(axis=1)
    mean_b = b[rng.integers(0, len(b), size=(resamples, len(b)))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(mean_a - mean_b, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_bootstrap_diff_ci(
    a: Array, b: Array, *, resamples: int, rng: np.random.Generator, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(a - b) for runs paired by seed (``a[i]``, ``b[i]`` of
    the same seed): each resample draws ``n`` seed *indices* with replacement and takes both
    conditions' runs of those seeds, so the pairing is kept. Quantiles as
    :func:`bootstrap_diff_ci`."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    if len(diff) == 0:
        return math.nan, math.nan
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


#: Beyond this many seeds per condition the "seeds needed" answer is reported as infinite.
MAX_SEEDS = 10**7


def seeds_needed(
    effect_size: float, *, alpha: float = 0.05, power: float = 0.8, alternative: str = "two-sided",
    paired: bool = False,
) -> float:
    """Smallest number of seeds per condition for which a t-test at level ``alpha`` detects a
    true standardised difference ``effect_size`` with probability ``power``: a two-sample
    t-test and Cohen's d (independent runs), or with ``paired`` a paired t-test and Cohen's
    d_z (:func:`cohens_dz`; seeds paired across the two conditions).

    Uses statsmodels' ``TTestIndPower.power`` (the exact noncentral-t power of the pooled
    two-sample t-test, equal group sizes) or ``TTestPower.power`` (the one-sample t-test on
    the paired differences), and searches the smallest integer n >= 2 with power(n) >=
    ``power`` (``solve_power`` returns a non-integer n and fails to converge for very large
    effects). For ``alternative="greater"`` a non-positive effect can never be detected in that
    direction: the answer is ``inf``; two-sided uses its absolute value. Returns ``inf`` beyond
    :data:`MAX_SEEDS` or for an effect of 0, 2 for an infinite effect (identical non-zero
    paired differences), NaN for an undefined effect.
    """

    _check_alternative(alternative)
    if effect_size is None or math.isnan(effect_size):
        return math.nan
    d = abs(effect_size) if alternative == "two-sided" else effect_size
    if d <= 0:
        return math.inf
    if math.isinf(d):
        return 2.0
    sm_alternative = "larger" if alternative == "greater" else "two-sided"

    def achieved(n: int) -> float:
        if paired:
            return float(TTestPower().power(effect_size=d, nobs=n, alpha=alpha,
                                            alternative=sm_alternative))
        return float(TTestIndPower().power(effect_size=d, nobs1=n, alpha=alpha, ratio=1.0,
                                           alternative=sm_alternative))

    if achieved(2) >= power:
        return 2.0
    low, high = 2, 4
    while achieved(high) < power:  # exponential search for an upper bound
        low, high = high, high * 2
        if high > MAX_SEEDS:
            return math.inf
    while high - low > 1:  # power(low) < target <= power(high)
        mid = (low + high) // 2
        if achieved(mid) >= power:
            high = mid
        else:
            low = mid
    return float(high)
