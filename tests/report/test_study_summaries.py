"""The report's summaries of the studies' axes: each condition across its test sets (in vs out
of distribution), and each arm against its label budget with the 95% confidence interval of the
mean, checked against values worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from raysweep.report.summary import across_test_sets, budget_table

#: Student's t quantile t(0.975, 2 degrees of freedom), from tables.
T_975_2 = 4.302652729911275


def study(values: dict[tuple[str, int, str], list[float]]) -> pd.DataFrame:
    """A results table of (arm, n_labels, test set) -> the metric of seeds 0, 1, 2, ..."""
    rows = []
    for (arm, n_labels, test_set), accuracies in values.items():
        for seed, accuracy in enumerate(accuracies):
            rows.append({"condition": f"{arm}-{n_labels}", "protocol": "finetune",
                         "seed": seed, "test_set": test_set, "arm": arm, "n_labels": n_labels,
                         "accuracy": accuracy})
    return pd.DataFrame(rows)


def test_budget_table_has_each_arms_mean_and_t_interval_per_budget():
    results = study({("simclr", 1480, "test"): [0.70, 0.72, 0.74],
                     ("simclr", 148, "test"): [0.60, 0.60, 0.63],
                     ("simclr", 1480, "isic2020"): [0.50, 0.55, 0.60]})
    table = budget_table(results, "accuracy")
    # per test set, the arm's budgets in increasing order
    assert list(zip(table.test_set, table.n_labels, strict=True)) == [
        ("test", 148), ("test", 1480), ("isic2020", 1480)]
    row = table.iloc[1]
    assert row["mean"] == pytest.approx(0.72) and row["n"] == 3
    assert row["std"] == pytest.approx(0.02)  # sample std of 0.70, 0.72, 0.74
    half = T_975_2 * 0.02 / math.sqrt(3)
    assert (row.ci_low, row.ci_high) == pytest.approx((0.72 - half, 0.72 + half))
    low = table.iloc[0]
    assert low["mean"] == pytest.approx(0.61) and low["std"] == pytest.approx(math.sqrt(0.0003))
    # no label budgets: no table
    assert budget_table(results.drop(columns=["n_labels", "arm"]), "accuracy").empty


def test_across_test_sets_puts_each_conditions_test_sets_side_by_side():
    results = study({("simclr", 148, "test"): [0.6, 0.8], ("simclr", 148, "pad"): [0.4, 0.5],
                     ("supervised", 148, "test"): [0.5, 0.5],
                     ("supervised", 148, "pad"): [0.3, 0.2]})
    table = across_test_sets(results, "accuracy")
    assert list(table.condition) == ["simclr-148", "supervised-148"]
    assert list(table.columns[2:]) == ["test_mean", "test_std", "test_n",
                                       "pad_mean", "pad_std", "pad_n"]
    assert list(table.test_mean) == pytest.approx([0.7, 0.5])
    assert list(table.pad_mean) == pytest.approx([0.45, 0.25])
    assert list(table.test_std) == pytest.approx([math.sqrt(0.02), 0.0])
    assert list(table.pad_n) == [2, 2]
