"""Every shipped paper spec declares exactly the paper's comparisons: the report built from a
results table of the spec's conditions has the paper's rows, with the paper's nulls, in the
paper's order (docs/protocol.md "The tables raysweep reproduces")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raysweep.config import load_spec
from raysweep.report import write_report
from raysweep.sweep.plan import condition_settings, eval_trials

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
# Section 4.5 on Table 10 (oral cancer), in its order.
ORAL = [("SSL", "SL", LE), ("SL-oral-SSL_p", "SSL", EQ), ("SL-oral-SSL_p", "SL", LE)]
# Chaves et al.: self-supervised beats supervised at 100, 10 and 1 % of the labels.
CHAVES = [(f"{method}-{budget}", f"supervised-{budget}", LE)
          for budget in ("100pct", "10pct", "1pct") for method in ("simclr", "barlow_twins")]
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
    assert tables == {"tests-finetune": TABLE_13, "tests-probe": TABLE_14}
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


def test_oral_cancer_declares_section_4_5_in_order(tmp_path: Path):
    spec = load_spec(SEARCH_SPACES / "oral_cancer.yaml")
    assert report_rows(tmp_path, spec, results_of(spec, n_seeds=4)) == {"tests-finetune": ORAL}


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
