"""A tiny imbalanced study (BreastMNIST's real test labels: 114 of 156 images, 73%, one class):
the report's baseline rows equal scores computed here independently (scikit-learn on constant
and frequency-weighted answers), a classifier that always answers the majority class is flagged
as indistinguishable from it, degenerate rows and logistic C at a grid edge are counted right,
the imbalance-aware metrics join an unset ``report.metrics``, and each condition gets a mean
confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
)

from raysweep.config import ReportSpec
from raysweep.evaluate import classification_metrics
from raysweep.report import write_report
from raysweep.report.tables import NO_KEY, summary_display

CLASSES = ("malignant", "normal")  # BreastMNIST: 0 malignant, 1 normal / benign
SEEDS = range(5)


def breast_test_labels(npz: Path) -> np.ndarray:
    with np.load(npz) as data:
        return data["test_labels"].ravel().astype(np.int64)


def answers(labels: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """Class probabilities (N, 2) of one run: ``constant`` always the majority class;
    ``good`` right for ~85% of the images; ``collapsing`` constant for seeds 0-2 and good
    for the others."""
    rng = np.random.default_rng(seed)
    if kind == "collapsing":
        kind = "constant" if seed < 3 else "good"
    if kind == "constant":
        return np.tile([0.2, 0.8], (len(labels), 1))
    right = rng.random(len(labels)) < 0.85
    predicted = np.where(right, labels, 1 - labels)
    score = np.clip(0.5 + 0.4 * (2 * predicted - 1) + rng.normal(0, 0.05, len(labels)), 0, 1)
    return np.stack([1 - score, score], axis=1)


def study_rows(labels: np.ndarray) -> pd.DataFrame:
    rows = []
    for kind, protocol in [("good", "finetune"), ("constant", "finetune"),
                           ("collapsing", "finetune"), ("good", "logistic")]:
        for seed in SEEDS:
            row = classification_metrics(labels, answers(labels, kind, seed), CLASSES)
            row.update(condition=kind, protocol=protocol, seed=seed,
                       initial="random" if kind == "constant" else "SSL")
            if protocol == "logistic":
                scores = [0.1, 0.3, 0.2] if seed < 3 else [0.5, 0.2, 0.1]  # best: middle / first
                row["logistic_val_scores"] = json.dumps(scores)  # a row without the flag
                if seed == 4:
                    row["logistic_c_at_edge"] = True
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame.loc[frame.condition == "constant", "initial"] = None  # a random encoder: no initial
    return frame


def independent_baselines(labels: np.ndarray) -> dict[str, dict[str, float]]:
    """The majority class's scores (scikit-learn on a constant answer) and stratified chance's
    (scikit-learn on every (true, answer) pair weighted by the answer's frequency: the expected
    confusion matrix)."""
    majority = np.full(len(labels), np.bincount(labels).argmax())
    p = np.bincount(labels) / len(labels)
    true = np.repeat(labels, 2)
    said = np.tile([0, 1], len(labels))
    weight = p[said]
    return {
        "majority": {
            "accuracy": accuracy_score(labels, majority),
            "f1_weighted": f1_score(labels, majority, average="weighted", zero_division=0),
            "f1_macro": f1_score(labels, majority, average="macro", zero_division=0),
            "balanced_accuracy": balanced_accuracy_score(labels, majority), "auc_ovr": 0.5},
        "stratified": {
            "accuracy": accuracy_score(true, said, sample_weight=weight),
            "f1_weighted": f1_score(true, said, average="weighted", sample_weight=weight),
            "f1_macro": f1_score(true, said, average="macro", sample_weight=weight),
            "balanced_accuracy": balanced_accuracy_score(true, said, sample_weight=weight),
            "auc_ovr": 0.5}}


@pytest.fixture(scope="module")
def study(tmp_path_factory, breastmnist_npz: Path):
    labels = breast_test_labels(breastmnist_npz)
    assert np.bincount(labels).tolist() == [42, 114]  # 73% normal
    root = tmp_path_factory.mktemp("imbalanced")
    study_rows(labels).to_parquet(root / "results.parquet")
    paths = write_report(root, settings=ReportSpec(bootstrap_resamples=100), dpi=30)
    return labels, paths


def test_baseline_rows_equal_an_independent_computation(study) -> None:
    labels, paths = study
    expected = independent_baselines(labels)
    table = pd.read_csv(paths.tables["summary-finetune"]["csv"])
    baselines = table[table.row == "baseline"].set_index("condition")
    assert list(baselines.index) == ["majority class 'normal'", "stratified chance"]
    for metric in ("accuracy", "f1_weighted", "balanced_accuracy", "f1_macro", "auc_ovr"):
        assert baselines.loc["majority class 'normal'", f"{metric}_mean"] == pytest.approx(
            expected["majority"][metric], abs=1e-12), metric
        assert baselines.loc["stratified chance", f"{metric}_mean"] == pytest.approx(
            expected["stratified"][metric], abs=1e-12), metric
    assert f"{expected['majority']['accuracy']:.5f}" in paths.tables["baselines"]["md"].read_text()
    assert "156 images (malignant: 42, normal: 114)" in paths.markdown.read_text()


def test_the_constant_classifier_is_flagged_and_the_good_one_is_not(study) -> None:
    _, paths = study
    table = pd.read_csv(paths.tables["summary-finetune"]["csv"])
    above = table[table.row == "condition"].set_index("condition")["above_majority/accuracy"]
    assert above.to_dict() == {"good": True, "constant": False, "collapsing": False}
    md = paths.tables["summary-finetune"]["md"].read_text()
    constant_line = next(line for line in md.splitlines() if line.startswith("| constant |"))
    good_line = next(line for line in md.splitlines() if line.startswith("| good |"))
    assert "†" in constant_line and "†" not in good_line
    report = paths.markdown.read_text()
    warning = next(line for line in report.splitlines() if line.startswith("Warning: 2 of 4"))
    assert ("conditions (condition × protocol) are not significantly above always answering "
            "the majority class 'normal' (73.1% of the test images) on Accuracy") in warning
    assert "constant (finetune)" in warning and "collapsing (finetune)" in warning


def test_degenerate_rows_and_grid_edges_are_counted(study) -> None:
    _, paths = study
    table = pd.read_csv(paths.tables["degenerate"]["csv"]).set_index("condition")
    finetune = table[table.protocol == "finetune"]
    assert finetune["degenerate"].to_dict() == {"good": 0, "constant": 5, "collapsing": 3}
    assert finetune.loc["constant", "top_share_mean"] == pytest.approx(1.0)
    report = paths.markdown.read_text()
    assert ("Warning: 8 of 20 runs give one class to more than 95% of the test images "
            "(constant (finetune): 5 of 5, collapsing (finetune): 3 of 5)") in report
    # seeds 3 (best score first) and 4 (flagged) of the logistic rows: 2 of 5 at an edge
    assert ("chose its regularisation C at an edge of its grid in 2 of 5 runs (good: 2 of 5)"
            in report)


def test_an_imbalanced_test_set_adds_balanced_metrics_and_confusion_matrices(study) -> None:
    _, paths = study
    report = paths.markdown.read_text()
    assert ("Imbalanced: its largest class 'normal' holds 73.1% of its 156 images; Balanced "
            "accuracy, F1 (macro), AUC (one-vs-rest) are tabled and tested.") in report
    assert "metrics accuracy, f1_weighted, balanced_accuracy, f1_macro, auc_ovr." in report
    tests = pd.read_csv(paths.significance_csv)
    assert set(tests.metric) == {"accuracy", "f1_weighted", "balanced_accuracy", "f1_macro",
                                 "auc_ovr"}
    assert any(p.name.startswith("confusion-finetune") for p in paths.figures)


def test_an_explicit_metric_list_wins(tmp_path: Path, breastmnist_npz: Path) -> None:
    study_rows(breast_test_labels(breastmnist_npz)).to_parquet(tmp_path / "results.parquet")
    paths = write_report(tmp_path, settings=ReportSpec(metrics=("accuracy",),
                                                       bootstrap_resamples=100), dpi=20)
    assert set(pd.read_csv(paths.significance_csv).metric) == {"accuracy"}
    assert "report.metrics leaves out balanced accuracy" in paths.markdown.read_text()


def test_a_random_encoders_initial_reads_a_dash() -> None:
    summary = pd.DataFrame({"condition": ["SL", "random"], "initial": ["SL", np.nan],
                            "accuracy_n": [5, 5], "accuracy_mean": [0.7, 0.5],
                            "accuracy_std": [0.01, 0.02]})
    display = summary_display(summary, ["accuracy"], ["initial"])
    assert display["Initial"].tolist() == ["SL", NO_KEY]
