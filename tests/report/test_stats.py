"""raysweep.report.stats against scipy, statsmodels, hand-computed values and textbook tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower

from raysweep.report import stats

SCIPY_EQUIVALENT = {
    "welch": lambda a, b, alt: sps.ttest_ind(a, b, equal_var=False, alternative=alt),
    "paired_t": lambda a, b, alt: sps.ttest_rel(a, b, alternative=alt),
    "wilcoxon": lambda a, b, alt: sps.wilcoxon(a, b, alternative=alt),
    "mannwhitney": lambda a, b, alt: sps.mannwhitneyu(a, b, alternative=alt),
}


@pytest.fixture(scope="module")
def samples() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.normal(0.70, 0.01, 35), rng.normal(0.69, 0.015, 35)


def test_registry_covers_the_issue_tests() -> None:
    assert set(stats.TESTS) == set(SCIPY_EQUIVALENT)
    assert {n for n, t in stats.TESTS.items() if t.paired} == {"paired_t", "wilcoxon"}


@pytest.mark.parametrize("name", sorted(stats.TESTS))
@pytest.mark.parametrize("alternative", ["greater", "two-sided"])
def test_every_test_equals_scipy(name: str, alternative: str, samples) -> None:
    a, b = samples
    ours = stats.TESTS[name].run(a, b, alternative)
    ref = SCIPY_EQUIVALENT[name](a, b, alternative)
    assert ours.pvalue == pytest.approx(float(ref.pvalue), rel=1e-12)
    assert ours.statistic == pytest.approx(float(ref.statistic), rel=1e-12)


@pytest.mark.parametrize("name", sorted(stats.TESTS))
def test_contract_greater_means_model_1_better(name: str, samples) -> None:
    """Registry contract: "greater" is H1 model_1 > model_2 (the paper's null "M1 <= M2"); the
    one-sided p in the observed direction is half the two-sided p; swapping the models moves
    the one-sided p to the other tail."""
    a, b = samples
    b = b - 0.01  # make model 1 clearly better
    test = stats.TESTS[name]
    greater = test.run(a, b, "greater").pvalue
    two_sided = test.run(a, b, "two-sided").pvalue
    reverse = test.run(b, a, "greater").pvalue
    assert 0.0 <= greater < 0.01 < 0.99 < reverse <= 1.0
    assert greater == pytest.approx(two_sided / 2, rel=1e-6)


def test_unknown_alternative_is_an_error(samples) -> None:
    with pytest.raises(ValueError, match="less"):
        stats.welch(*samples, alternative="less")


def test_from_stats_reproduces_the_protocol_test_vector() -> None:
    """docs/protocol.md: 0.69112 +- 0.011 vs 0.65701 +- 0.021, n = 35 each, one-sided."""
    res = stats.welch_from_stats(0.69112, 0.011, 35, 0.65701, 0.021, 35, "greater")
    assert f"{res.pvalue:.4e}" == "1.0986e-11"


def test_from_stats_equals_welch_on_the_raw_runs(samples) -> None:
    a, b = samples
    raw = stats.welch(a, b, "two-sided")
    summary = stats.welch_from_stats(a.mean(), a.std(ddof=1), len(a),
                                     b.mean(), b.std(ddof=1), len(b), "two-sided")
    assert summary.pvalue == pytest.approx(raw.pvalue, rel=1e-9)
    assert summary.df == pytest.approx(raw.df, rel=1e-9)  # hand-written Welch df vs scipy's


@pytest.mark.parametrize("method", ["holm", "fdr_bh", "bonferroni"])
def test_correct_equals_multipletests(method: str) -> None:
    p = np.random.default_rng(0).uniform(0, 0.1, 12) ** 2
    reject, adjusted = stats.correct(p, method, 0.05)
    ref_reject, ref_adjusted, _, _ = multipletests(p, alpha=0.05, method=method)
    np.testing.assert_array_equal(reject, ref_reject)
    np.testing.assert_allclose(adjusted, ref_adjusted, rtol=0, atol=0)


def test_correct_ignores_undefined_tests() -> None:
    p = np.array([0.001, np.nan, 0.02, 0.04])
    reject, adjusted = stats.correct(p, "holm", 0.05)
    ref_reject, ref_adjusted, _, _ = multipletests(p[[0, 2, 3]], alpha=0.05, method="holm")
    assert np.isnan(adjusted[1]) and not reject[1]
    np.testing.assert_allclose(adjusted[[0, 2, 3]], ref_adjusted)
    np.testing.assert_array_equal(reject[[0, 2, 3]], ref_reject)


def test_cohens_d_pooled_hand_computed() -> None:
    # means 2.5 and 3; variances 5/3 and 2; pooled sd = sqrt((3 * 5/3 + 1 * 2) / 4) = sqrt(1.75)
    d = stats.cohens_d(np.array([1.0, 2, 3, 4]), np.array([2.0, 4]))
    assert d == pytest.approx(-0.5 / math.sqrt(1.75), rel=1e-12)
    assert stats.cohens_d(np.array([1.0, 2, 3]), np.array([2.0, 3, 4])) == pytest.approx(-1.0)


def test_cliffs_delta_hand_computed() -> None:
    # a=1: <,<,< (-3); a=2: =,=,< (-1); a=3: >,>,< (+1)  ->  -3 / 9
    assert stats.cliffs_delta(np.array([1.0, 2, 3]), np.array([2.0, 2, 4])) == pytest.approx(-1 / 3)
    assert stats.cliffs_delta(np.array([5.0, 6]), np.array([1.0, 2, 3])) == 1.0


def test_cliffs_delta_equals_mann_whitney_relation(samples) -> None:
    """delta = 2 U / (n1 n2) - 1, with U of the first sample counting ties as 1/2."""
    a, b = np.round(samples[0], 3), np.round(samples[1], 3)  # rounding creates ties
    u = sps.mannwhitneyu(a, b).statistic
    assert stats.cliffs_delta(a, b) == pytest.approx(2 * u / (len(a) * len(b)) - 1, rel=1e-12)


def test_bootstrap_ci_is_seeded_and_matches_scipy(samples) -> None:
    a, b = samples
    ci = stats.bootstrap_diff_ci(a, b, resamples=4000, rng=np.random.default_rng(1))
    again = stats.bootstrap_diff_ci(a, b, resamples=4000, rng=np.random.default_rng(1))
    assert ci == again
    ref = sps.bootstrap((a, b), lambda x, y, axis: x.mean(axis) - y.mean(axis),
                        n_resamples=4000, method="percentile", confidence_level=0.95,
                        rng=np.random.default_rng(2)).confidence_interval
    width = ref.high - ref.low
    assert ci[0] == pytest.approx(ref.low, abs=0.08 * width)
    assert ci[1] == pytest.approx(ref.high, abs=0.08 * width)
    assert ci[0] < a.mean() - b.mean() < ci[1]


def test_seeds_needed_matches_cohens_power_table() -> None:
    """Cohen (1988), Table 2.4.1: two-sided alpha 0.05, power 0.8 -> n = 64 per group for
    d = 0.5 and 26 for d = 0.8."""
    assert stats.seeds_needed(0.5, alpha=0.05, power=0.8) == 64
    assert stats.seeds_needed(-0.8, alpha=0.05, power=0.8) == 26


def test_seeds_needed_is_the_smallest_sufficient_n() -> None:
    power = TTestIndPower()
    for d in (0.3, 1.7, 4.0):
        n = int(stats.seeds_needed(d, alternative="greater"))
        assert power.power(d, nobs1=n, alpha=0.05, alternative="larger") >= 0.8
        if n > 2:
            assert power.power(d, nobs1=n - 1, alpha=0.05, alternative="larger") < 0.8


def test_seeds_needed_edge_cases() -> None:
    assert stats.seeds_needed(-0.5, alternative="greater") == math.inf  # wrong direction
    assert stats.seeds_needed(0.0) == math.inf
    assert math.isnan(stats.seeds_needed(math.nan))


def test_cohens_dz_is_mean_over_sd_of_the_differences() -> None:
    a, b = np.array([0.70, 0.72, 0.69, 0.75]), np.array([0.68, 0.69, 0.69, 0.70])
    diff = np.array([0.02, 0.03, 0.0, 0.05])
    assert stats.cohens_dz(a, b) == pytest.approx(diff.mean() / diff.std(ddof=1), rel=1e-9)
    assert stats.cohens_dz(b, a) == pytest.approx(-stats.cohens_dz(a, b))
    assert stats.cohens_dz(a + 1, a) == math.inf  # identical non-zero differences
    assert math.isnan(stats.cohens_dz(a, a)) and math.isnan(stats.cohens_dz(a[:1], b[:1]))


@pytest.mark.parametrize("alternative", ["greater", "two-sided"])
def test_paired_power_equals_statsmodels_ttestpower_on_the_differences(alternative) -> None:
    """Seeds needed for a paired design: d_z of the per-seed differences and statsmodels'
    one-sample TTestPower; the answer is the smallest n reaching the power."""
    from statsmodels.stats.power import TTestPower

    rng = np.random.default_rng(11)
    base = rng.normal(0.7, 0.02, 10)  # a seed effect shared by both conditions
    a, b = base + rng.normal(0.006, 0.006, 10), base + rng.normal(0, 0.006, 10)
    diff = a - b
    dz = diff.mean() / diff.std(ddof=1)
    sm_alt = "larger" if alternative == "greater" else "two-sided"
    n = stats.seeds_needed(stats.cohens_dz(a, b), alpha=0.05, power=0.8,
                           alternative=alternative, paired=True)
    solved = TTestPower().solve_power(effect_size=abs(dz), alpha=0.05, power=0.8,
                                      alternative=sm_alt)
    assert n == math.ceil(solved)
    power = TTestPower().power
    assert power(abs(dz), n, 0.05, alternative=sm_alt) >= 0.8 > power(abs(dz), n - 1, 0.05,
                                                                       alternative=sm_alt)
    # the shared seed effect makes the paired design need far fewer seeds than independent runs
    assert n < stats.seeds_needed(stats.cohens_d(a, b), alternative=alternative)
    assert stats.seeds_needed(math.inf, paired=True) == 2


def test_paired_bootstrap_resamples_seed_indices() -> None:
    a, b = np.array([1.0, 2.0, 4.0, 8.0]), np.array([0.5, 2.5, 3.0, 9.0])
    low, high = stats.paired_bootstrap_diff_ci(a, b, resamples=500,
                                               rng=np.random.default_rng(4))
    index = np.random.default_rng(4).integers(0, 4, size=(500, 4))
    means = (a[index] - b[index]).mean(axis=1)  # both runs of a drawn seed together
    assert (low, high) == tuple(np.quantile(means, [0.025, 0.975]))
