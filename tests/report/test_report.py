"""End to end: an experiment directory -> report.md, a self-contained report.html, tables
and PNG figures whose numbers equal the input's."""

from __future__ import annotations

import base64
import json
import struct
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raysweep.cli import main
from raysweep.config import Comparison, ReportSpec
from raysweep.errors import DataError
from raysweep.report import write_report
from raysweep.report.stats import TESTS

CONDITIONS = ("SL", "SSL", "SSL+I+SSL_p")
SETTINGS = ReportSpec(bootstrap_resamples=200)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_experiment(root: Path, *, optional_parts: bool = True) -> Path:
    rng = np.random.default_rng(7)
    lrs = np.geomspace(1e-6, 1.0, 12)
    rows = []
    for protocol in ("finetune", "probe"):
        for i, condition in enumerate(CONDITIONS):
            for seed in range(6):
                rows.append({
                    "protocol": protocol, "condition": condition, "seed": seed,
                    "initial": condition.split("+")[0], "accuracy": 0.6 + 0.03 * i
                    + rng.normal(0, 0.01), "f1_weighted": 0.62 + rng.normal(0, 0.01),
                    "f1/melanoma": rng.random(), "f1/nevus": rng.random(),
                    "support/melanoma": 30, "support/nevus": 70, "lr_max": 1e-3,
                    "lr_finder": json.dumps({"lrs": lrs.tolist(),
                                             "losses": (2 - 0.1 * np.log10(lrs)).tolist(),
                                             "suggestion": 1e-3}),
                })
    root.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(root / "results.parquet")
    if optional_parts:
        run = root / "pretrain" / "0a1b2c"
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text(
            "".join(json.dumps({"epoch": e, "loss": 5.0 - e}) + "\n" for e in range(4))
            + '{"epoch": 4, "lo')  # a run killed mid-line: the partial last line is skipped
        (run / "meta.json").write_text(json.dumps({"name": "SL+I+SSL_p"}))
        search = root / "search" / "lambda"
        search.mkdir(parents=True)
        pd.DataFrame({"trial": range(6), "value": rng.random(6), "lambda": rng.random(6)}
                     ).to_csv(search / "trials.csv", index=False)
    return root


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    experiment = make_experiment(tmp_path_factory.mktemp("r") / "exp")
    return experiment, write_report(experiment, settings=SETTINGS, dpi=40)


def test_html_is_self_contained_and_complete(report) -> None:
    experiment, paths = report
    html = paths.html.read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(html)
    images = [attrs for tag, attrs in parser.tags if tag == "img"]
    # 2 metrics box plots, 2 per-class, 2 LR finder, pre-training loss, search history
    assert len(images) == len(paths.figures) == 8
    embedded = set()
    for attrs in images:
        src = attrs["src"] or ""
        assert src.startswith("data:image/png;base64,")
        embedded.add(base64.b64decode(src.split(",", 1)[1]))
    assert embedded == {p.read_bytes() for p in paths.figures}  # every figure, byte for byte
    lowered = html.lower()
    assert "http://" not in lowered and "https://" not in lowered
    assert all(tag not in ("link", "script", "iframe") for tag, _ in parser.tags)
    assert not [a for t, a in parser.tags if t == "a" and not (a.get("href") or "").startswith("#")]
    text = " ".join(parser.text)
    for name in (*CONDITIONS, *(t.label for t in TESTS.values()), "Holm", "Cohen's d",
                 "Cliff's δ", "Model 1 = Model 2"):
        assert name in text, name
    assert "git commit" in text and "statsmodels" in text  # provenance footer


def test_pngs_are_valid_and_named(report) -> None:
    _, paths = report
    names = sorted(p.name for p in paths.figures)
    assert names == sorted([
        "box-accuracy.png", "box-f1-weighted.png", "per-class-f1-finetune.png",
        "per-class-f1-probe.png", "lr-finder-finetune.png", "lr-finder-probe.png",
        "pretrain-loss.png", "search-lambda.png",
    ])
    for path in paths.figures:
        width, height = _png_size(path.read_bytes())
        assert 100 < width < 2000 and 100 < height < 2000


def test_tables_equal_the_input(report) -> None:
    experiment, paths = report
    results = pd.read_parquet(experiment / "results.parquet")
    ref = results.groupby(["protocol", "condition"])[["accuracy", "f1_weighted"]]
    for protocol in ("finetune", "probe"):
        csv = pd.read_csv(paths.tables[f"summary-{protocol}"]["csv"])
        baselines = csv[csv.row == "baseline"].set_index("condition")
        # 70 of 100 test images are nevus: always answering it scores accuracy 0.7 and nevus
        # F1 2 x 0.7 / 1.7 (weighted by 0.7); chance by frequency 0.3^2 + 0.7^2
        assert baselines.loc["majority class 'nevus'", "accuracy_mean"] == pytest.approx(0.7)
        assert baselines.loc["majority class 'nevus'", "f1_weighted_mean"] == pytest.approx(
            0.7 * 1.4 / 1.7)
        assert baselines.loc["stratified chance", "accuracy_mean"] == pytest.approx(0.58)
        for row in csv[csv.row == "condition"].itertuples():
            key = (protocol, row.condition)
            assert row.accuracy_mean == pytest.approx(ref.mean().loc[key, "accuracy"], rel=1e-12)
            assert row.f1_weighted_std == pytest.approx(ref.std().loc[key, "f1_weighted"],
                                                        rel=1e-12)
            assert row.accuracy_n == 6
        md = paths.tables[f"summary-{protocol}"]["md"].read_text()
        mean, std = ref.mean().loc[(protocol, "SSL"), "accuracy"], ref.std().loc[
            (protocol, "SSL"), "accuracy"]
        assert f"{mean:.5f} ± {std:.5f}" in md
        assert f"{mean:.5f} $\\pm$ {std:.5f}" in paths.tables[f"summary-{protocol}"]["tex"].read_text()
    tests = pd.read_csv(paths.significance_csv)
    assert len(tests) == 2 * 2 * 3 * len(TESTS)  # families x metrics x pairs x tests
    report_md = paths.markdown.read_text()
    assert "![Accuracy per condition](figures/box-accuracy.png)" in report_md
    assert "(tables/tests-probe.csv)" in report_md
    assert json.loads(paths.provenance.read_text())["git_commit"]


def test_optional_parts_absent(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path / "exp", optional_parts=False)
    results = pd.read_parquet(experiment / "results.parquet")
    results.drop(columns=["lr_finder", "f1/melanoma", "f1/nevus"]).to_parquet(
        experiment / "results.parquet")
    paths = write_report(experiment, out_dir=tmp_path / "out",
                         settings=ReportSpec(metrics=("accuracy",), tests=("welch",),
                                             bootstrap_resamples=200), dpi=30)
    assert [p.name for p in paths.figures] == ["box-accuracy.png"]
    assert not any(slug.startswith("per-class") for slug in paths.tables)
    assert "Per-class" not in paths.markdown.read_text()


def test_cli_errors_name_the_file(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "results.parquet").write_bytes(b"not parquet")
    assert main(["report", str(tmp_path / "exp")]) == 2
    assert "results.parquet" in capsys.readouterr().err
    assert not (tmp_path / "exp" / "report").exists()
    bad = make_experiment(tmp_path / "bad")
    (bad / "pretrain" / "0a1b2c" / "metrics.jsonl").write_text("{oops\n{}\n")
    with pytest.raises(DataError, match="metrics.jsonl line 1"):
        write_report(bad, settings=ReportSpec(tests=("welch",), bootstrap_resamples=200))
    assert not (bad / "report").exists()  # inputs are read before anything is written


def representations_file(root: Path) -> list[dict]:
    rng = np.random.default_rng(2)
    entries = []
    for i, condition in enumerate(CONDITIONS):
        labels = rng.integers(0, 2, 30)
        entries.append({
            "condition": condition, "encoder": "small_resnet", "knn_accuracy": 0.5 + 0.1 * i,
            "linear_separability": 0.61 + 0.1 * i, "silhouette": -0.05 + 0.1 * i,
            "n_train": 100, "n_test": 30, "feature_dim": 64,
            "class_names": ["melanoma", "nevus"], "settings": {"knn_k": 20},
            "embedding": {"labels": labels.tolist(), "pca": rng.normal(size=(30, 2)).tolist(),
                          "tsne": rng.normal(size=(30, 2)).tolist(),
                          "pca_explained_variance": [0.3, 0.2]}})
    (root / "representations.json").write_text(json.dumps({"conditions": entries}))
    return entries


def test_logistic_protocol_representations_and_cross_protocol_comparison(tmp_path) -> None:
    experiment = make_experiment(tmp_path / "exp", optional_parts=False)
    results = pd.read_parquet(experiment / "results.parquet")
    logistic = results[results.protocol == "probe"].assign(protocol="logistic")
    logistic["accuracy"] += 0.05
    pd.concat([results, logistic]).to_parquet(experiment / "results.parquet")
    entries = representations_file(experiment)
    settings = ReportSpec(bootstrap_resamples=200, tests=("welch", "paired_t"), comparisons=(
        Comparison("SSL", "SL", "greater"),
        Comparison("SSL", "SL", "greater", protocol_1="logistic", protocol_2="finetune")))
    paths = write_report(experiment, settings=settings, dpi=30)
    markdown = paths.markdown.read_text(encoding="utf-8")
    # the logistic protocol beside the paper's
    protocols = pd.read_csv(paths.tables["protocols-accuracy"]["csv"])
    assert {"finetune_mean", "probe_mean", "logistic_mean"} <= set(protocols.columns)
    ssl = results[(results.condition == "SSL") & (results.protocol == "probe")]
    assert protocols.set_index("condition").loc["SSL", "logistic_mean"] == pytest.approx(
        ssl.accuracy.mean() + 0.05)
    assert "finetune vs probe vs logistic" in markdown
    # representations: the table equals the file, one PCA / t-SNE figure per encoder
    table = pd.read_csv(paths.tables["representations"]["csv"]).set_index("condition")
    for entry in entries:
        for key in ("knn_accuracy", "linear_separability", "silhouette"):
            assert table.loc[entry["condition"], key] == pytest.approx(entry[key])
    assert "## Representations" in markdown
    names = {p.name for p in paths.figures}
    assert {"embedding-sl.png", "embedding-ssl.png", "embedding-ssl-i-ssl-p.png"} <= names
    # the comparison across protocols: its own table, each side named with its protocol
    cross = paths.tables["tests-across-protocols"]["md"].read_text(encoding="utf-8")
    assert "SSL (logistic)" in cross and "SL (finetune)" in cross and "paired (n=6)" in cross
    tests = pd.read_csv(paths.significance_csv)
    assert set(tests.family) == {"finetune", "probe", "logistic", "across protocols"}
    assert "SSL (logistic) vs SL (finetune) (across protocols, Accuracy)" in markdown

    bad = make_experiment(tmp_path / "bad", optional_parts=False)
    (bad / "representations.json").write_text(json.dumps({"conditions": [{"condition": "SL"}]}))
    with pytest.raises(DataError, match="representations.json: entry 0 has no knn_accuracy"):
        write_report(bad, settings=SETTINGS)
    assert not (bad / "report").exists()
