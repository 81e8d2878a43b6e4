"""Every shipped paper spec declares exactly the paper's comparisons: the report built from a
results table of the spec's conditions has the paper's rows, with the paper's nulls, in the
paper's order (docs/protocol.md "The tables raysweep reproduces")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats as sps
from statsmodels.stats.multitest import multipletests

from raysweep.config import load_spec
from raysweep.plan.trials import condition_settings, eval_trials
from raysweep.report import write_report

SEARCH_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
LE, EQ = "Model 1 <= Model 2", "Model 1 = Model 2"

# Haggerty & Chandra, Table 13 (fine-tuning; further pre-training on IUD), rows 1-8.
TABLE_13 = [
    ("SSL", "SL", LE), ("SSL-IUD-SSL", "SSL", LE), ("SSL-IUD-SSL_p", "SSL", LE),
    ("SL-IUD-SSL", "SL", LE), ("SL-IUD-SSL_p", "SL", LE),
    ("SSL-IUD-SSL", "SSL-IUD-SSL_p", EQ), ("SL-IUD-SSL", "SL-IUD-SSL_p", EQ),
    ("SL-IUD-SSL_p", "SSL-IUD-SSL_p", EQ),
]
# Table 14 (linear probe), every null "Model 1 <= Model 2": the claims of sections 4.2 and
# 4.4, in their order (the table's rows are not in the paper's text).
TABLE_14 = ([("SSL", "SL", LE)]
            + [(f"SL-{d}-SSL_p", "SL", LE) for d in ("IUD", "IU", "I")]
            + [(f"SL-{d}-SSL_p", "SSL", LE) for d in ("IUD", "IU", "I")]
            + [(f"SSL-{d}-SSL_p", "SSL", LE) for d in ("IUD", "IU", "I")])
# Tables 7 and 8, linear probe against fine-tuning (a family of their own): the SSL encoder's
# probe against the SL encoder's fine-tuning (section 4.2), then the encoders further
# pre-trained on I with SSL_p, each probed against its own fine-tuning (section 4.4).
TABLE_7_8 = [("SSL (probe)", "SL (finetune)", EQ),
             ("SSL-I-SSL_p (probe)", "SSL-I-SSL_p (finetune)", EQ),
             ("SL-I-SSL_p (probe)", "SL-I-SSL_p (finetune)", EQ)]
# Section 4.5 on Table 10 (oral cancer), in its order.
ORAL = [("SSL", "SL", LE), ("SL-oral-SSL_p", "SSL", EQ), ("SL-oral-SSL_p", "SL", LE)]
# Chaves et al.: self-supervised beats supervised at 100, 10 and 1 % of the labels; then SCL
# against the supervised baseline and against UCL (SimCLR), two-sided, per budget.
BUDGETS = ("100pct", "10pct", "1pct")
CHAVES_SSL = ("simclr", "barlow_twins", "simclr_imagenet", "swav", "byol", "moco_v2", "infomin")
CHAVES = ([(f"{method}-{budget}", f"supervised-{budget}", LE)
           for budget in BUDGETS for method in CHAVES_SSL]
          + [(f"supcon-{budget}", f"{other}-{budget}", EQ)
             for budget in BUDGETS for other in ("supervised", "simclr")])
CHAVES_TEST_SETS = ("test", "derm7pt_dermoscopic", "derm7pt_clinical", "isic2020",
                    "pad_ufes_20")


def thesis_rows() -> dict[str, list[tuple[str, str, str]]]:
    """Jiang's Tables 7.1 and 7.6 (per set and budget: frozen, then unfrozen backbone against
    the baseline; no frozen backbone with all labels), then Tables 7.2 and 7.3 (tau_short,
    tau_nov against the standard sequence, per backbone), then section 7.6.1 (unbalanced 100
    labels against 25 per class), split into the report's families."""
    families: dict[str, list[tuple[str, str, str]]] = {
        "across protocols": [], "finetune": [], "probe": []}
    for dataset in ("path", "derma", "blood", "tissue", "oct"):
        for labels in ("100", "250", "1000", "all"):
            baseline = f"supervised-baseline-standard-{dataset}-{labels}"
            if labels != "all":
                families["across protocols"].append(
                    (f"frozen-standard-{dataset}-{labels} (probe)", f"{baseline} (finetune)",
                     LE))
            families["finetune"].append((f"unfrozen-standard-{dataset}-{labels}", baseline, LE))
    for sequence in ("short", "novel"):
        for dataset in ("path", "derma", "blood"):
            for labels in ("100", "250", "1000", "all"):
                families["probe"].append((f"frozen-{sequence}-{dataset}-{labels}",
                                          f"frozen-standard-{dataset}-{labels}", EQ))
                families["finetune"].append((f"unfrozen-{sequence}-{dataset}-{labels}",
                                             f"unfrozen-standard-{dataset}-{labels}", EQ))
    families["finetune"].append(("unfrozen-standard-derma-100",
                                 "unfrozen-standard-derma-25-per-class", LE))
    return families


def small_data_rows() -> dict[str, list[tuple[str, str, str]]]:
    """Jiang's Table 7.4 (per label budget: each setup against the supervised baseline, then the
    colon-pathology encoder's probe against the two that tune f on retina fundus) and Table 7.5
    (further pre-training on dermatology against the colon-pathology encoder, then 100 labels
    per class against 100 unbalanced ones), split into the report's families."""
    families: dict[str, list[tuple[str, str, str]]] = {
        "across protocols": [], "finetune": [], "probe": []}
    for labels in ("100", "250", "1000"):
        baseline = f"supervised-baseline-retina-{labels}"
        families["across protocols"].append(
            (f"frozen-path-retina-{labels} (probe)", f"{baseline} (finetune)", LE))
        for pretrain in ("retina", "path+retina"):
            families["across protocols"].append(
                (f"frozen-{pretrain}-retina-{labels} (probe)", f"{baseline} (finetune)", EQ))
        for pretrain in ("path", "retina", "path+retina"):
            families["finetune"].append((f"unfrozen-{pretrain}-retina-{labels}", baseline, EQ))
    for labels in ("100", "250", "1000"):
        for other in ("retina", "path+retina"):
            families["probe"].append((f"frozen-path-retina-{labels}",
                                      f"frozen-{other}-retina-{labels}", LE))
    for per_class in ("10", "25", "100"):
        for model, family in (("frozen", "probe"), ("unfrozen", "finetune")):
            families[family].append((f"{model}-path+derma-derma-{per_class}-per-class",
                                     f"{model}-path-derma-{per_class}-per-class", EQ))
    for pretrain in ("path+derma", "path"):
        families["finetune"].append(("unfrozen-derma-derma-100",
                                     f"unfrozen-{pretrain}-derma-100-per-class", LE))
    return families


def results_of(spec, test_sets=(None,), n_seeds: int | None = None) -> pd.DataFrame:
    """A results table of every condition x protocol x seed (x test set) of ``spec``, with
    random metric values."""
    rng = np.random.default_rng(0)
    stage = spec.evaluate
    rows = []
    for cond in stage.encoders:
        for protocol in cond.protocols or stage.protocols:
            for seed in stage.condition_seeds(cond)[:n_seeds]:
                for test_set in test_sets:
                    row = {"condition": cond.name, "protocol": protocol, "seed": seed,
                           **{m: rng.uniform(0.4, 0.9) for m in spec.report.chosen_metrics}}
                    if test_set is not None:
                        row["test_set"] = test_set
                    rows.append(row)
    return pd.DataFrame(rows)


def report_rows(tmp_path: Path, spec, results: pd.DataFrame) -> dict[str, list[tuple]]:
    """The comparison tables the report writes: slug -> [(Model 1, Model 2, Null)], one row
    per comparison in the table's order (the spec's first metric and primary test only, to
    keep the test fast: every metric and test has the same rows)."""
    results.to_parquet(tmp_path / "results.parquet", index=False)
    settings = spec.report.replace(bootstrap_resamples=100, metrics=spec.report.chosen_metrics[:1],
                                   tests=[spec.report.primary_test])
    paths = write_report(tmp_path, settings=settings, dpi=20)
    tables = {}
    for slug, files in paths.tables.items():
        if not slug.startswith("tests-"):
            continue
        data = pd.read_csv(files["csv"])
        primary = data[(data.test == settings.primary_test)
                       & (data.metric == settings.metrics[0])]
        tables[slug] = [
            (f"{r.model_1} ({r.family_1})" if r.family_1 != r.family_2 else r.model_1,
             f"{r.model_2} ({r.family_2})" if r.family_1 != r.family_2 else r.model_2, r.null)
            for r in primary.itertuples()]
        shown = (Path(files["md"]).read_text().splitlines()[2:])  # the display, same order
        assert len(shown) == len(tables[slug]) * len(settings.metrics), slug
    return tables


def test_paper_isic_declares_tables_13_and_14_in_order(tmp_path: Path):
    spec = load_spec(SEARCH_SPACES / "paper_isic.yaml")
    tables = report_rows(tmp_path, spec, results_of(spec, n_seeds=4))
    assert tables == {"tests-finetune": TABLE_13, "tests-probe": TABLE_14,
                      "tests-across-protocols": TABLE_7_8}
    # Table 5: the random baseline fine-tuned for 40 / 80 / 160 epochs, 5 runs each (seeds
    # 0-4, paired with the first five of the other conditions' 35)
    random = {}
    for trial in eval_trials(spec):
        if trial.condition.startswith("random-"):
            random.setdefault(trial.condition, []).extend(trial.seeds)
    assert random == {f"random-{e}": [0, 1, 2, 3, 4] for e in (40, 80, 160)}
    for epochs in (40, 80, 160):
        cond = next(c for c in spec.evaluate.encoders if c.name == f"random-{epochs}")
        assert condition_settings(spec.evaluate.settings, cond).epochs == epochs
    assert {len(spec.evaluate.condition_seeds(c)) for c in spec.evaluate.encoders
            if not c.name.startswith("random-")} == {35}


def test_table_8_is_tested_across_protocols_on_a_stored_results_table(tmp_path: Path):
    """The paper's Table 8 claim on a stored results table (no training): a planted
    difference between probe and fine-tuning is flagged, planted equality is not, and the
    p-values are Welch's on the stored values (Holm-corrected over the three comparisons
    across protocols)."""
    spec = load_spec(SEARCH_SPACES / "paper_isic.yaml")
    results = results_of(spec, n_seeds=12)
    rng = np.random.default_rng(8)
    planted = {("SSL-I-SSL_p", "probe"): 0.694, ("SSL-I-SSL_p", "finetune"): 0.694,
               ("SL-I-SSL_p", "probe"): 0.676, ("SL-I-SSL_p", "finetune"): 0.72,
               ("SSL", "probe"): 0.663, ("SL", "finetune"): 0.663}
    for (condition, protocol), mean in planted.items():
        rows = (results.condition == condition) & (results.protocol == protocol)
        results.loc[rows, "accuracy"] = mean + rng.normal(0, 0.006, rows.sum())
    results.to_parquet(tmp_path / "results.parquet", index=False)
    settings = spec.report.replace(bootstrap_resamples=100, metrics=["accuracy"],
                                   tests=["welch"])
    paths = write_report(tmp_path, settings=settings, dpi=20)
    table = pd.read_csv(paths.tables["tests-across-protocols"]["csv"])
    assert table.family.unique().tolist() == ["across protocols"]
    stored = pd.read_parquet(tmp_path / "results.parquet")

    def values(condition: str, protocol: str) -> np.ndarray:
        return stored[(stored.condition == condition)
                      & (stored.protocol == protocol)].accuracy.to_numpy()

    expected = [sps.ttest_ind(values(r.model_1, r.family_1), values(r.model_2, r.family_2),
                              equal_var=False).pvalue for r in table.itertuples()]
    np.testing.assert_allclose(table.p_value, expected, rtol=1e-10)
    np.testing.assert_allclose(table.p_adjusted, multipletests(expected, method="holm")[1],
                               rtol=1e-10)
    flagged = {r.model_1: bool(r.flagged) for r in table.itertuples()}
    assert flagged == {"SSL": False, "SSL-I-SSL_p": False, "SL-I-SSL_p": True}
    assert (table.design == "paired").all() and (table.n_1 == 12).all()
    report = paths.markdown.read_text()
    assert "SL-I-SSL_p (probe) vs SL-I-SSL_p (finetune)" in report


def test_oral_cancer_declares_section_4_5_in_order(tmp_path: Path):
    spec = load_spec(SEARCH_SPACES / "oral_cancer.yaml")
    assert report_rows(tmp_path, spec, results_of(spec, n_seeds=4)) == {"tests-finetune": ORAL}


@pytest.mark.slow
def test_chaves_declares_ssl_over_supervised_per_budget_on_every_test_set(tmp_path: Path):
    spec = load_spec(SEARCH_SPACES / "chaves_isic2019.yaml")
    assert [t.name for t in spec.evaluate.test_sets] == list(CHAVES_TEST_SETS[1:])
    tables = report_rows(tmp_path, spec, results_of(spec, CHAVES_TEST_SETS, n_seeds=4))
    assert tables == {f"tests-finetune-{t.replace('_', '-')}": CHAVES for t in CHAVES_TEST_SETS}
    # the label-budget and out-of-distribution sections are there too
    written = (tmp_path / "report" / "report.md").read_text()
    assert "## In and out of distribution" in written
    assert "AUC (one-vs-rest) on every test set" in written


@pytest.mark.slow
def test_the_thesis_declares_its_table_comparisons_in_order(tmp_path: Path):
    spec = load_spec(SEARCH_SPACES / "medmnist_simclr.yaml")
    expected = {f"tests-{family.replace(' ', '-')}": rows
                for family, rows in thesis_rows().items()}
    assert report_rows(tmp_path, spec, results_of(spec, n_seeds=3)) == expected


def test_the_thesis_small_data_spec_declares_tables_7_4_and_7_5(tmp_path: Path):
    spec = load_spec(SEARCH_SPACES / "medmnist_small_data.yaml")
    expected = {f"tests-{family.replace(' ', '-')}": rows
                for family, rows in small_data_rows().items()}
    assert report_rows(tmp_path, spec, results_of(spec, n_seeds=3)) == expected
    # the unfrozen backbones and the baseline train on non-augmented images (section 3.2.3),
    # the frozen ones as every probe does
    for cond in spec.evaluate.encoders:
        settings = condition_settings(spec.evaluate.settings, cond)
        assert settings.train_augmentation == (cond.protocols == ("probe",)), cond.name
    budgets = {c.name: (c.data.label_count, c.data.label_per_class)
               for c in spec.evaluate.encoders}
    assert budgets["unfrozen-path-retina-250"] == (250, None)
    assert budgets["frozen-path+derma-derma-25-per-class"] == (None, 25)
    runs = {run.name: run for run in spec.pretrain}
    assert {name: (run.epochs, run.encoder.weights) for name, run in runs.items()} == {
        "simclr-path": (201, "random"), "simclr-retina": (10_000, "random"),
        "simclr-derma": (2_000, "random"),
        "simclr-path+retina": (10_000, "pretrain:simclr-path"),
        "simclr-path+derma": (2_000, "pretrain:simclr-path")}
    assert {run.augmentation for run in runs.values()} == {"simclr_medical"}  # tau_nov


def test_the_vicreg_spec_declares_section_5s_two_claims(tmp_path: Path):
    """Section 5: VICReg ResNet-50 "performed identically to Barlow Twins"; the ResNet-200
    (2x) "performance was the same as for the ResNet-50" (both two-sided)."""
    spec = load_spec(SEARCH_SPACES / "paper_isic_vicreg.yaml")
    assert report_rows(tmp_path, spec, results_of(spec, n_seeds=4)) == {
        "tests-finetune": [("VICReg", "SSL", EQ), ("VICReg-200x2", "VICReg", EQ)]}
    encoders = {c.name: (c.encoder.name, c.encoder.weights) for c in spec.evaluate.encoders}
    assert encoders == {"SSL": ("resnet50", "barlowtwins"), "VICReg": ("resnet50", "vicreg"),
                        "VICReg-200x2": ("resnet200x2", "vicreg")}
