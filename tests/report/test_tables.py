"""Summary tables equal pandas' groupby; Markdown and LaTeX layouts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raysweep.report.summary import per_class_f1, protocol_table, summary_table
from raysweep.report.tables import (
    fmt_mean_std,
    fmt_p,
    latex_escape,
    latex_table,
    markdown_table,
    per_class_display,
    summary_display,
)


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for protocol in ("finetune", "probe"):
        for condition, initial in (("SSL+I+SSL_p", "SSL"), ("SL", "SL"), ("SSL", "SSL")):
            for seed in range(5):
                rows.append({
                    "protocol": protocol, "condition": condition, "initial": initial,
                    "seed": seed, "accuracy": rng.normal(0.7, 0.01),
                    "f1_weighted": rng.normal(0.68, 0.01), "f1/melanoma": rng.random(),
                    "f1/nevus": rng.random(), "support/melanoma": 30, "support/nevus": 70,
                })
    frame = pd.DataFrame(rows)
    frame.loc[3, "accuracy"] = np.nan  # a missing value must not count towards n
    return frame


def test_summary_equals_groupby(results: pd.DataFrame) -> None:
    summary = summary_table(results, ("accuracy", "f1_weighted"))
    ref = results.groupby(["protocol", "condition"])[["accuracy", "f1_weighted"]]
    for row in summary.itertuples():
        key = (row.protocol, row.condition)
        assert row.accuracy_mean == pytest.approx(ref.mean().loc[key, "accuracy"], rel=1e-12)
        assert row.accuracy_std == pytest.approx(ref.std().loc[key, "accuracy"], rel=1e-12)
        assert row.f1_weighted_std == pytest.approx(ref.std().loc[key, "f1_weighted"], rel=1e-12)
        assert row.accuracy_n == ref.count().loc[key, "accuracy"]
        assert row.initial == ("SL" if row.condition == "SL" else "SSL")
    assert summary.loc[0, "accuracy_n"] == 4  # the NaN run
    assert list(summary.condition[:3]) == ["SSL+I+SSL_p", "SL", "SSL"]  # order of appearance


def test_protocol_table_side_by_side(results: pd.DataFrame) -> None:
    table = protocol_table(results, "f1_weighted").set_index("condition")
    ref = results.groupby(["condition", "protocol"])["f1_weighted"]
    for condition in ("SL", "SSL", "SSL+I+SSL_p"):
        for protocol in ("finetune", "probe"):
            assert table.loc[condition, f"{protocol}_mean"] == pytest.approx(
                ref.mean().loc[(condition, protocol)], rel=1e-12)
            assert table.loc[condition, f"{protocol}_std"] == pytest.approx(
                ref.std().loc[(condition, protocol)], rel=1e-12)


def test_per_class_f1(results: pd.DataFrame) -> None:
    long = per_class_f1(results)
    probe = long[long.protocol == "probe"]
    row = probe[(probe.condition == "SL") & (probe["class"] == "nevus")].iloc[0]
    ref = results[(results.protocol == "probe") & (results.condition == "SL")]["f1/nevus"]
    assert row.f1_mean == pytest.approx(ref.mean()) and row.support == 70
    display = per_class_display(probe)
    assert list(display.columns) == ["Class", "SSL+I+SSL_p", "SL", "SSL", "Support"]
    assert display.set_index("Class").loc["nevus", "SL"] == f"{ref.mean():.3f}"
    assert per_class_f1(results.drop(columns=["f1/melanoma", "f1/nevus"])).empty


def test_formats_like_the_paper() -> None:
    assert fmt_mean_std(0.592811, 0.010967) == "0.59281 ± 0.01097"
    assert fmt_mean_std(0.6, float("nan")) == "0.60000"
    assert fmt_p(1.0986009e-11) == "1.0986e-11"
    assert fmt_p(0.604691) == "0.60469"


def test_markdown_table_layout(results: pd.DataFrame) -> None:
    summary = summary_table(results, ("accuracy",))
    md = markdown_table(summary_display(summary, ("accuracy",), ("initial",))).splitlines()
    assert md[0] == "| Condition | Initial | n | Accuracy |"
    assert md[1] == "|---|---|---|---|"
    assert len(md) == 2 + len(summary)
    expected = fmt_mean_std(summary.accuracy_mean[1], summary.accuracy_std[1])
    assert md[3] == f"| SL | SL | 5 | {expected} |"
    assert markdown_table(pd.DataFrame({"a|b": ["x|y"]})).splitlines()[2] == "| x\\|y |"


def test_latex_table_escapes_and_balances() -> None:
    display = pd.DataFrame({"Condition": ["SSL+I+SSL_p"], "Accuracy": ["0.5 ± 0.1"],
                            "Null": ["Model 1 ≤ Model 2"], "95% CI": ["[1, 2]"]})
    tex = latex_table(display, "Tests & more", "t1")
    assert r"SSL+I+SSL\_p & 0.5 $\pm$ 0.1 & Model 1 $\leq$ Model 2 & [1, 2] \\" in tex
    assert r"95\% CI" in tex and r"\caption{Tests \& more}" in tex
    assert tex.count(r"\begin{") == tex.count(r"\end{") == 2
    assert r"\begin{tabular}{llll}" in tex
    assert latex_escape("a_b#c$") == r"a\_b\#c\$"
