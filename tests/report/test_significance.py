"""Pairwise tests over a results table: equality with scipy/statsmodels on the raw arrays,
pairing by seed, and a planted difference found exactly after correction."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from raysweep.config import Comparison, ReportSpec
from raysweep.errors import DataError, SpecError
from raysweep.report import stats
from raysweep.report.significance import (
    apply_correction,
    is_across,
    pairwise_tests,
    side_label,
)

CONDITIONS = tuple("ABCDEFGH")
PLANTED = "H"


def planted_table(seed: int, shift: float = 0.03, n_seeds: int = 35) -> pd.DataFrame:
    """8 conditions x 35 seeds, accuracy ~ N(0.7, 0.01) except condition H shifted by +shift;
    f1_weighted null everywhere. Rows shuffled so nothing relies on row order."""
    rng = np.random.default_rng(seed)
    rows = []
    for condition in CONDITIONS:
        acc = rng.normal(0.7, 0.01, n_seeds) + (shift if condition == PLANTED else 0.0)
        f1 = rng.normal(0.7, 0.01, n_seeds)
        rows += [{"protocol": "probe", "condition": condition, "seed": s, "accuracy": acc[s],
                  "f1_weighted": f1[s]} for s in range(n_seeds)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def planted() -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Seed 0: the 21 null pairs hold raw false positives, and every Holm-adjusted null p is
    far from alpha (min 0.38 over all tests and metrics), so the assertions are not luck."""
    table = planted_table(seed=0)
    holm = pairwise_tests(table, ReportSpec(correction="holm", bootstrap_resamples=200))
    out = {"holm": holm}
    for correction in ("fdr_bh", "none"):  # the same tests, corrected differently
        out[correction] = apply_correction(holm.drop(columns=["p_adjusted", "reject", "flagged"]),
                                           correction, 0.05, "welch")
    return table, out


def _pairs(frame: pd.DataFrame) -> set[frozenset[str]]:
    """Unordered pairs: without declared comparisons the order is that of first appearance."""
    return {frozenset(p) for p in zip(frame.model_1, frame.model_2, strict=True)}


def _rejected(tests: pd.DataFrame, metric: str, test: str) -> set[frozenset[str]]:
    return _pairs(tests[(tests.metric == metric) & (tests.test == test) & tests.reject])


def test_planted_difference_is_exactly_what_is_flagged(planted) -> None:
    _, out = planted
    expected = {frozenset((c, PLANTED)) for c in CONDITIONS if c != PLANTED}
    # without correction the 21 null pairs of this draw contain false positives...
    assert _rejected(out["none"], "accuracy", "welch") - expected
    # ...which Holm and Benjamini-Hochberg remove, for every test, keeping all planted pairs
    for correction in ("holm", "fdr_bh"):
        for test in ("welch", "paired_t", "wilcoxon", "mannwhitney"):
            assert _rejected(out[correction], "accuracy", test) == expected, (correction, test)
            assert _rejected(out[correction], "f1_weighted", test) == set()
        flagged = out[correction][out[correction].flagged]
        assert _pairs(flagged) == expected
        assert set(flagged.metric) == {"accuracy"}


def test_p_values_equal_scipy_and_corrections_equal_statsmodels(planted) -> None:
    table, out = planted
    tests = out["holm"]
    assert len(tests) == 2 * 28 * 4  # metrics x pairs x tests
    scipy_tests = {
        "welch": lambda a, b: sps.ttest_ind(a, b, equal_var=False).pvalue,
        "paired_t": lambda a, b: sps.ttest_rel(a, b).pvalue,
        "wilcoxon": lambda a, b: sps.wilcoxon(a, b).pvalue,
        "mannwhitney": lambda a, b: sps.mannwhitneyu(a, b).pvalue,
    }
    by_seed = table.pivot(index="seed", columns="condition")
    for metric, (name, ref) in itertools.product(("accuracy", "f1_weighted"),
                                                 scipy_tests.items()):
        part = tests[(tests.metric == metric) & (tests.test == name)]
        expected = [ref(by_seed[(metric, m1)].to_numpy(), by_seed[(metric, m2)].to_numpy())
                    for m1, m2 in zip(part.model_1, part.model_2, strict=True)]
        np.testing.assert_allclose(part.p_value, expected, rtol=1e-12)
        reject, adjusted, _, _ = multipletests(expected, alpha=0.05, method="holm")
        np.testing.assert_allclose(part.p_adjusted, adjusted, rtol=1e-12)
        np.testing.assert_array_equal(part.reject, reject)


def test_effect_sizes_and_means_per_comparison(planted) -> None:
    table, out = planted
    tests = out["holm"]
    row = tests[(tests.metric == "accuracy") & (tests.model_1 + tests.model_2).isin(["AH", "HA"])]
    row = row.iloc[0]
    sign = 1.0 if row.model_1 == PLANTED else -1.0  # orient as "H minus A"
    a = table.loc[table.condition == "A", "accuracy"]
    h = table.loc[table.condition == "H", "accuracy"]
    assert sign * row["diff"] == pytest.approx(h.mean() - a.mean())
    assert row.ci_low < row["diff"] < row.ci_high and 0 < sign * row.ci_low < sign * row.ci_high
    assert sign * row.cohens_d > 2 and sign * row.cliffs_delta > 0.8
    assert row.null == "Model 1 = Model 2" and row.seeds_needed <= 6


def test_paired_tests_join_on_seed() -> None:
    """Rows in any order, some seeds missing on each side: paired tests use the common seeds,
    aligned by seed; unpaired tests use every run."""
    rng = np.random.default_rng(0)
    a = pd.DataFrame({"condition": "A", "seed": np.arange(0, 12), "accuracy": rng.random(12)})
    b = pd.DataFrame({"condition": "B", "seed": np.arange(3, 15), "accuracy": rng.random(12)})
    table = pd.concat([a, b.iloc[::-1]]).assign(protocol="probe")
    tests = pairwise_tests(table, ReportSpec(metrics=("accuracy",), bootstrap_resamples=200))
    common = a.merge(b, on="seed")
    paired = tests.set_index("test").loc["paired_t"]
    assert paired.n_pairs == 9
    assert paired.p_value == pytest.approx(
        sps.ttest_rel(common.accuracy_x, common.accuracy_y).pvalue, rel=1e-12)
    assert tests.set_index("test").loc["welch"].p_value == pytest.approx(
        sps.ttest_ind(a.accuracy, b.accuracy, equal_var=False).pvalue, rel=1e-12)


def test_declared_one_sided_comparisons() -> None:
    table = planted_table(seed=1)
    settings = ReportSpec(comparisons=(Comparison("H", "A", "greater"),
                                       Comparison("A", "B", "two-sided")),
                          bootstrap_resamples=200)
    tests = pairwise_tests(table, settings)
    welch = tests[(tests.test == "welch") & (tests.metric == "accuracy")].set_index("model_1")
    assert list(welch.index) == ["H", "A"]
    assert welch.loc["H", "null"] == "Model 1 <= Model 2"
    h = table.loc[table.condition == "H", "accuracy"]
    a = table.loc[table.condition == "A", "accuracy"]
    assert welch.loc["H", "p_value"] == pytest.approx(
        sps.ttest_ind(h, a, equal_var=False, alternative="greater").pvalue, rel=1e-12)
    assert welch.loc["H", "flagged"] and not welch.loc["A", "flagged"]


def test_families_are_corrected_separately() -> None:
    table = pd.concat([planted_table(seed=1).assign(protocol="probe"),
                       planted_table(seed=2, shift=0.0).assign(protocol="finetune")])
    settings = ReportSpec(metrics=("accuracy",), tests=("welch",), bootstrap_resamples=200)
    tests = pairwise_tests(table, settings)
    assert set(tests.family) == {"probe", "finetune"}
    part = tests[(tests.family == "finetune") & (tests.metric == "accuracy")
                 & (tests.test == "welch")]
    np.testing.assert_allclose(part.p_adjusted,
                               multipletests(part.p_value, method="holm")[1], rtol=1e-12)
    assert not tests[tests.family == "finetune"].flagged.any()
    # a comparison declared for one family is tested there only
    declared = ReportSpec(metrics=("accuracy",), tests=("welch",), bootstrap_resamples=200,
                          comparisons=(Comparison("H", "A", "greater", "probe"),
                                       Comparison("B", "C")))
    tests = pairwise_tests(table, declared)
    assert sorted(zip(tests.family, tests.model_1, strict=True)) == [
        ("finetune", "B"), ("probe", "B"), ("probe", "H")]
    with pytest.raises(SpecError, match="family 'logistic' is not in the results table"):
        pairwise_tests(table, ReportSpec(comparisons=(Comparison("H", "A", "greater",
                                                                 "logistic"),)))


def test_bad_inputs_name_the_fault() -> None:
    table = planted_table(seed=1, n_seeds=4)
    with pytest.raises(SpecError, match="'Z'"):
        pairwise_tests(table, ReportSpec(comparisons=(Comparison("A", "Z", "greater"),)))
    with pytest.raises(DataError, match="more than one row"):
        pairwise_tests(pd.concat([table, table.iloc[:1]]), ReportSpec())
    with pytest.raises(DataError, match="auc_ovr"):
        pairwise_tests(table, ReportSpec(metrics=("auc_ovr",)))
    disjoint = table[table.condition.isin(["A", "B"])].copy()
    disjoint.loc[disjoint.condition == "B", "seed"] += 100
    with pytest.raises(DataError, match="share no seed"):
        pairwise_tests(disjoint, ReportSpec(bootstrap_resamples=200))
    with pytest.raises(SpecError, match="alternative: must be one of 'greater', 'two-sided'"):
        ReportSpec(comparisons=({"model_1": "A", "model_2": "B", "alternative": "less"},))


def test_cross_protocol_comparison_pairs_rows_by_seed() -> None:
    """SimCLR probed against a baseline fine-tuned: the two sides come from different families,
    rows in any order, some seeds on one side only; paired tests use the common seeds aligned
    by seed, and the comparison is corrected in a family of its own."""
    rng = np.random.default_rng(5)
    seed_effect = rng.normal(0, 0.02, 14)
    rows = []
    for protocol, condition, seeds, shift in (("probe", "simclr", range(0, 12), 0.01),
                                              ("finetune", "simclr", range(0, 12), 0.0),
                                              ("finetune", "baseline", range(2, 14), 0.0),
                                              ("probe", "other", range(0, 12), 0.0)):
        rows += [{"protocol": protocol, "condition": condition, "seed": s,
                  "accuracy": 0.7 + shift + seed_effect[s] + rng.normal(0, 0.003)}
                 for s in seeds]
    table = pd.DataFrame(rows).sample(frac=1.0, random_state=1).reset_index(drop=True)
    settings = ReportSpec(metrics=("accuracy",), bootstrap_resamples=500, comparisons=(
        Comparison("simclr", "baseline", "greater", protocol_1="probe", protocol_2="finetune"),
        Comparison("simclr", "simclr", "two-sided", protocol_1="probe", protocol_2="finetune")))
    tests = pairwise_tests(table, settings)
    assert set(tests.family) == {"across protocols"}  # only cross comparisons declared
    first = tests[(tests.model_2 == "baseline")].set_index("test")
    a = table[(table.protocol == "probe") & (table.condition == "simclr")]
    b = table[(table.protocol == "finetune") & (table.condition == "baseline")]
    common = a.merge(b, on="seed").sort_values("seed")
    assert first.loc["paired_t", "n_pairs"] == 10
    assert first.loc["paired_t", "p_value"] == pytest.approx(sps.ttest_rel(
        common.accuracy_x, common.accuracy_y, alternative="greater").pvalue, rel=1e-12)
    assert first.loc["welch", "p_value"] == pytest.approx(sps.ttest_ind(
        a.accuracy, b.accuracy, equal_var=False, alternative="greater").pvalue, rel=1e-12)
    assert first.loc["welch", "design"] == "independent"  # 2 seeds on each side lack a partner
    assert (first.family_1.unique().tolist(), first.family_2.unique().tolist()) == (
        ["probe"], ["finetune"])
    # the same condition under two protocols, every seed paired: the paired design
    own = tests[(tests.model_2 == "simclr") & (tests.test == "welch")].iloc[0]
    b = table[(table.protocol == "finetune") & (table.condition == "simclr")]
    diff = a.sort_values("seed").accuracy.to_numpy() - b.sort_values("seed").accuracy.to_numpy()
    assert own.design == "paired" and own.n_1 == own.n_2 == 12
    assert own.cohens_dz == pytest.approx(diff.mean() / diff.std(ddof=1), rel=1e-12)
    from statsmodels.stats.power import TTestPower

    assert own.seeds_needed == math.ceil(TTestPower().solve_power(
        effect_size=abs(own.cohens_dz), alpha=0.05, power=0.8, alternative="two-sided"))
    assert own.ci_low < diff.mean() < own.ci_high
    p = tests[tests.test == "welch"].sort_values("p_value").p_value.to_numpy()
    adjusted = tests[tests.test == "welch"].sort_values("p_value").p_adjusted.to_numpy()
    np.testing.assert_allclose(adjusted, multipletests(p, method="holm")[1], rtol=1e-12)

    with pytest.raises(SpecError, match="no runs in family 'probe'"):
        pairwise_tests(table, ReportSpec(metrics=("accuracy",), comparisons=(
            Comparison("baseline", "simclr", protocol_1="probe", protocol_2="finetune"),)))


def test_paired_design_within_a_family_uses_paired_power_and_bootstrap() -> None:
    table = planted_table(seed=3, n_seeds=8)
    tests = pairwise_tests(table, ReportSpec(metrics=("accuracy",), tests=("welch",),
                                                 bootstrap_resamples=300))
    assert set(tests.design) == {"paired"}
    row = tests[(tests.model_1 + tests.model_2).isin(["AH", "HA"])].iloc[0]
    one = table[table.condition == row.model_1].sort_values("seed").accuracy.to_numpy()
    two = table[table.condition == row.model_2].sort_values("seed").accuracy.to_numpy()
    assert row.cohens_dz == pytest.approx((one - two).mean() / (one - two).std(ddof=1),
                                          rel=1e-12)
    # unequal seed sets: independent design, Cohen's d and TTestIndPower
    partial = table[~((table.condition == "A") & (table.seed == 0))]
    tests = pairwise_tests(partial, ReportSpec(metrics=("accuracy",), tests=("welch",),
                                                   bootstrap_resamples=300))
    row = tests[(tests.model_1 + tests.model_2).isin(["AH", "HA"])].iloc[0]
    assert row.design == "independent" and math.isnan(row.cohens_dz)
    assert row.seeds_needed == stats.seeds_needed(row.cohens_d)


def test_cross_protocol_comparisons_in_the_spec() -> None:
    spec = ReportSpec(comparisons=(Comparison(
        model_1="simclr-100", protocol_1="probe", model_2="supervised-baseline-100",
        protocol_2="finetune"),))
    [comp] = spec.comparisons
    assert is_across(comp) and side_label(comp, 1) == "simclr-100 (probe)"
    assert side_label(comp, 2) == "supervised-baseline-100 (finetune)"
    # one protocol for both sides is a comparison within that protocol's family
    within = Comparison(model_1="a", model_2="b", protocol_1="probe", protocol_2="probe")
    assert not is_across(within) and side_label(within, 1) == "a"
    with pytest.raises(SpecError, match="protocol_2: give protocol_1 and protocol_2 together"):
        Comparison(model_1="a", model_2="b", protocol_1="probe")
    with pytest.raises(SpecError, match="not both"):
        Comparison(model_1="a", model_2="b", protocol="probe", protocol_1="probe",
                       protocol_2="finetune")
    with pytest.raises(SpecError, match="itself"):
        Comparison(model_1="a", model_2="a", protocol_1="probe", protocol_2="probe")
    with pytest.raises(SpecError, match="family_by"):
        ReportSpec(family_by=("protocol", "initial"), comparisons=spec.comparisons)
    # a side whose condition is not evaluated under its protocol, named in one line
    from raysweep.config import spec_from_data

    data = {"name": "x", "evaluate": {
        "data": {"sources": [{"kind": "digits"}], "image_size": 16},
        "encoders": [{"name": "simclr-100", "encoder": {"name": "small_resnet"}},
                     {"name": "supervised-baseline-100", "encoder": {"name": "small_resnet"},
                      "protocols": ["finetune"]}]},
        "report": {"comparisons": [{"model_1": "supervised-baseline-100", "protocol_1": "probe",
                                    "model_2": "simclr-100", "protocol_2": "finetune"}]}}
    with pytest.raises(SpecError, match=r"comparisons\[0\]\.protocol_1: condition "
                                        "'supervised-baseline-100' is not evaluated with"):
        spec_from_data(data)
