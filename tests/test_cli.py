"""The ``raysweep`` command: exit statuses and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from raysweep.cli import main


def test_validate_accepts_a_good_spec(tmp_path: Path, capsys):
    spec = tmp_path / "ok.yaml"
    spec.write_text(yaml.safe_dump({"name": "exp", "evaluate": {
        "data": {"sources": [{"kind": "digits"}]},
        "encoders": [{"name": "rand", "encoder": {"name": "small_resnet"}}]}}))
    assert main(["validate", str(spec)]) == 0
    assert "ok: " in capsys.readouterr().out


def test_validate_exits_2_with_one_line(tmp_path: Path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"name": "exp", "pretrain": [
        {"name": "a", "data": {"sources": [{"kind": "digits"}]}, "alpha": -0.1}]}))
    proc = subprocess.run([sys.executable, "-m", "raysweep.cli", "validate", str(spec)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {spec}: pretrain[0].alpha: must be >= 0, got -0.1"]


def test_report_from_stats_reproduces_the_authors_p_value(tmp_path: Path, capsys):
    stats = tmp_path / "stats.csv"
    stats.write_text("model,mean,std,n\nM1,0.69112,0.011,35\nM2,0.65701,0.021,35\n")
    comparisons = tmp_path / "comparisons.csv"
    comparisons.write_text("model_1,model_2,alternative\nM1,M2,greater\n")
    assert main(["report", "--from-stats", str(stats), "--comparisons", str(comparisons)]) == 0
    out = capsys.readouterr().out
    assert "1.0986e-11" in out and "Model 1 ≤ Model 2" in out


def test_report_of_a_missing_directory_exits_2(tmp_path: Path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1


def test_augment_preview_writes_a_png(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "views.png"
    assert main(["augment", "preview", "--pipeline", "barlow_twins", "--source", "digits",
                 "--out", str(out), "--image-size", "16", "-n", "3"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_augment_preview_of_unknown_source_exits_2(tmp_path: Path, capsys):
    assert main(["augment", "preview", "--pipeline", "barlow_twins", "--source",
                 str(tmp_path / "nothing.txt"), "--out", str(tmp_path / "v.png")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert not (tmp_path / "v.png").exists()


def test_run_dry_run_prints_the_plan_and_every_missing_file(tmp_path: Path, capsys,
                                                            monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no data, no hub weights there
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home" / ".cache" / "torch"))
    spec = Path(__file__).resolve().parents[1] / "search_spaces" / "paper_isic.yaml"
    data = yaml.safe_load(spec.read_text())
    data["storage"] = str(tmp_path / "runs")
    copy = tmp_path / "paper_isic.yaml"
    copy.write_text(yaml.safe_dump(data, sort_keys=False))  # axis order names the runs
    assert main(["run", str(copy), "--dry-run"]) == 2
    captured = capsys.readouterr()
    out = captured.out
    assert "stage pretrain: 8 Ray Train runs" in out
    assert "stage evaluate: 373 Tune trials, 645 result rows" in out
    assert "SSL-I-SSL_p" in out and "random-160" in out
    # every problem at once, one line each: three manifests, one folder, two hub files
    errors = captured.err.splitlines()
    assert len(errors) == 6 and all(line.startswith(f"error: {copy}: ") for line in errors)
    assert sum("manifest not found" in line for line in errors) == 3
    assert any("barlowtwins_resnet50.pth not found" in line for line in errors)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "home").exists()


def test_run_dry_run_of_a_runnable_spec_exits_0(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    spec = tmp_path / "ok.yaml"
    spec.write_text(yaml.safe_dump({"name": "exp", "storage": str(tmp_path / "runs"),
                                    "evaluate": {"data": {"sources": [{"kind": "digits"}]},
                                                 "encoders": [{"name": "rand", "encoder": {
                                                     "name": "small_resnet"}}]}}))
    assert main(["run", str(spec), "--dry-run"]) == 0
    assert "stage evaluate: 36 Tune trials" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.yaml"]


def test_dry_run_verbose_prints_resolved_fields_that_differ_from_defaults(tmp_path: Path,
                                                                          capsys, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    spec = tmp_path / "grid.yaml"
    digits = {"sources": [{"kind": "digits"}], "image_size": 16}
    pretrain_data = {**digits, "sources": [{**digits["sources"][0], "split": "train"}]}  # never the test images
    spec.write_text(yaml.safe_dump({
        "name": "exp", "storage": str(tmp_path / "runs"),
        "pretrain": {"base": {"data": pretrain_data, "encoder": {"name": "small_resnet"},
                              "projector": [64, 64], "batch_size": 32},
                     "product": {"init": {"R": {"encoder.weights": "random"}}},
                     "extra": [{"name": "X", "epochs": 3}]},
        "evaluate": {"data": digits, "seeds": 3, "encoders": [
            {"name": "R", "encoder": {"name": "small_resnet", "weights": "pretrain:R"},
             "overrides": {"epochs": 2}}]}}, sort_keys=False))
    assert main(["run", str(spec), "--dry-run"]) == 0
    assert "projector" not in capsys.readouterr().out
    assert main(["run", str(spec), "--dry-run", "--verbose"]) == 0
    out = capsys.readouterr().out
    block = out.split("wave 1: X:")[1].split("stage evaluate")[0]
    # the extra run X starts from the base: its projector and batch, its own epochs
    assert "projector: [64, 64]" in block and "batch_size: 32" in block
    assert "epochs: 3" in block and "lr_max" not in block and "method" not in block
    condition = out.split("  R: small_resnet:pretrain:R")[1]
    assert "settings.epochs: 2" in condition and "settings.batch_size" not in condition
    assert not (tmp_path / "runs").exists()


def test_argument_errors_are_one_line_from_the_real_command(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "raysweep.cli", "augment", "preview",
                           "--pipeline", "barlow_twins", "--source", "digits", "-n", "0",
                           "--out", str(tmp_path / "v.png")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: raysweep augment preview: argument -n: must be in [1, 64], got '0'"]
    assert list(tmp_path.iterdir()) == []


def test_report_honours_correction_and_alpha_for_an_experiment(tmp_path: Path, capsys):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(3)
    rows = [{"protocol": "probe", "condition": c, "seed": s,
             "accuracy": 0.6 + 0.01 * i + rng.normal(0, 0.02),
             "f1_weighted": 0.6 + rng.normal(0, 0.02)}
            for i, c in enumerate(("A", "B", "C")) for s in range(5)]
    experiment = tmp_path / "exp"
    experiment.mkdir()
    pd.DataFrame(rows).to_parquet(experiment / "results.parquet")
    assert main(["report", str(experiment), "--correction", "none", "--alpha", "0.4"]) == 0
    tests = pd.read_csv(experiment / "report" / "significance.csv")
    tests = tests[tests["metric"] == "accuracy"]
    assert len(tests) and np.allclose(tests["p_adjusted"], tests["p_value"])  # no correction
    assert (tests["reject"] == (tests["p_value"] <= 0.4)).all()
    holm = main(["report", str(experiment), "--out", str(tmp_path / "holm")])
    assert holm == 0
    default = pd.read_csv(tmp_path / "holm" / "significance.csv")
    default = default[(default["metric"] == "accuracy") & (default["test"] == "welch")]
    assert (default["p_adjusted"] >= default["p_value"]).all()
    assert (default["p_adjusted"] > default["p_value"]).any()  # Holm, the default, adjusts


def test_warnings_reach_the_console_as_one_line(tmp_path: Path, capsys, monkeypatch):
    import warnings

    from raysweep import cli

    def warn(args):
        warnings.warn("skipped 2 corrupt image(s) in x.csv:\n a.png, b.png", UserWarning,
                      stacklevel=1)
        return cli.EXIT_OK

    parser = cli.build_parser()
    parser.set_defaults(handler=warn)  # every sub-command now just warns
    for action in parser._subparsers._group_actions:
        for sub in action.choices.values():
            sub.set_defaults(handler=warn)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    previous = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["validate", str(tmp_path / "x.yaml")]) == 0
    assert capsys.readouterr().err == "warning: skipped 2 corrupt image(s) in x.csv: a.png, b.png\n"
    assert warnings.showwarning is previous  # restored for the caller
