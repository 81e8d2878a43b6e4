"""The fast loop's end-to-end runs (``pytest -m "not slow"``), in this process on the session's
Ray instance: one tiny experiment through ``raysweep run`` (a real 1-worker Ray Train
pre-training run of one epoch, its encoder evaluated by a probe on Ray Tune, the report) and a
one-trial search (Optuna on Tune, the trial's Ray Train run reporting its per-epoch proxy to
ASHA, the scoring); a rerun of either trains nothing. The slow tests run the same stages at the
sizes of the demo and the searches (tests/experiment/test_demo.py, test_search.py); these keep every
stage in the everyday loop."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from raysweep import api
from raysweep.config import spec_from_data
from raysweep.experiment.runner import run_searches

pytestmark = pytest.mark.ray

DIGITS = {"sources": [{"kind": "digits", "classes": ["0", "1", "2"]}], "image_size": 16,
          "test_fraction": 0.3, "label_count": 30}
PRETRAIN_DATA = {**DIGITS, "sources": [{**DIGITS["sources"][0], "split": "train"}]}  # never the test images


def tiny_experiment(storage: Path) -> dict:
    return {
        "name": "quick", "storage": str(storage),
        "pretrain": [{"name": "ssl", "data": PRETRAIN_DATA, "encoder": {"name": "small_resnet"},
                      "further": False, "frozen_epochs": 0, "epochs": 1, "batch_size": 64,
                      "projector": [32, 32], "lr_max": 1e-3}],
        "evaluate": {"data": DIGITS, "seeds": 1, "protocols": ["probe"],
                     "settings": {"epochs": 1, "batch_size": 16, "lr_max": 1e-3,
                                  "tta_views": 0},
                     "encoders": [{"name": "ssl", "encoder": {"name": "small_resnet",
                                                             "weights": "pretrain:ssl"}}]},
        "report": {"bootstrap_resamples": 100},
    }


def test_a_tiny_run_pretrains_on_ray_train_evaluates_on_tune_and_reruns_nothing(
        ray_session, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    spec = spec_from_data(tiny_experiment(tmp_path / "runs"))
    summary = api.run(spec)
    assert (summary.n_rows, summary.n_new_rows, summary.n_pretrain_runs) == (1, 1, 1)
    [run_dir] = list((spec.directory / "pretrain").iterdir())
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["epochs_trained"] == 1
    assert list((run_dir / "train").glob("checkpoint_*"))  # Ray Train's own checkpoints
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(m["epoch"], m["phase"]) for m in metrics] == [(0, "train")]
    assert metrics[0]["loss"] > 0 and metrics[0]["images_per_s"] > 0
    table = pd.read_parquet(summary.results)
    assert table[["condition", "protocol", "seed"]].values.tolist() == [["ssl", "probe", 0]]
    assert 0 <= table["accuracy"].iloc[0] <= 1
    assert summary.report is not None and "ssl" in summary.report.read_text(encoding="utf-8")
    encoder_stamp = (run_dir / "encoder.pt").stat().st_mtime_ns

    again = api.run(spec)
    assert (again.n_rows, again.n_new_rows, again.n_pretrain_runs) == (1, 0, 1)
    assert (run_dir / "encoder.pt").stat().st_mtime_ns == encoder_stamp  # nothing retrained
    assert pd.read_parquet(again.results)["run_id"].tolist() == table["run_id"].tolist()


def tiny_search(storage: Path) -> dict:
    return {"name": "quick-search", "storage": str(storage), "search": [{
        "name": "bt",
        "pretrain": {"name": "bt", "data": DIGITS, "encoder": {"name": "small_resnet"},
                     "further": False, "epochs": 1, "batch_size": 64, "lr_max": 1e-3,
                     "projector": [32, 32]},
        "evaluate": {"data": DIGITS, "seeds": 1,
                     "settings": {"epochs": 1, "batch_size": 16, "lr_finder_iters": 5,
                                  "tta_views": 0}},
        "space": {"pretrain.lambda_offdiag": {"type": "loguniform", "low": 1e-3,
                                              "high": 1e-1}},
        "num_samples": 1, "compare_default": False, "grace_period": 1}]}


def test_a_one_trial_search_reports_each_epoch_to_asha_and_reruns_nothing(
        ray_session, tmp_path: Path, monkeypatch) -> None:
    import optuna

    from raysweep.search.study import open_storage
    from raysweep.store.searches import STUDY_FILE

    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    spec = spec_from_data(tiny_search(tmp_path / "runs"))
    [outcome], report = run_searches(spec)
    assert outcome.n_new == 1 and outcome.record["states"] == {"complete": 1}
    folder = spec.directory / "search" / "bt"
    [trial] = optuna.load_study(study_name=outcome.study_name,
                                storage=open_storage(folder / STUDY_FILE)).get_trials()
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [1]  # the epoch's proxy went to ASHA
    assert trial.value == pytest.approx(outcome.record["best"]["value"])
    [meta] = list((folder / "pretrain").glob("*/meta.json"))  # beside it: the run's file lock
    run_dir = meta.parent
    assert json.loads(meta.read_text())["status"] == "finished"
    table = pd.read_parquet(folder / "trials.parquet")
    assert table["state"].tolist() == ["complete"]
    assert report is not None and "Search bt" in report.read_text()
    stamp = (run_dir / "encoder.pt").stat().st_mtime_ns

    [again], _ = run_searches(spec)
    assert again.n_new == 0 and again.record["states"] == {"complete": 1}
    assert list((folder / "pretrain").glob("*/meta.json")) == [meta]
    assert (run_dir / "encoder.pt").stat().st_mtime_ns == stamp  # nothing retrained
