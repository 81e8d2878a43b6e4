"""Experiment tracking, read back with each tracker's own client: MLflow's ``MlflowClient``,
TensorBoard's event reader and W&B's offline run files (``readers.py``).

One small experiment (one pre-training run, two conditions x two probe seeds, a one-trial
search) runs once with all three trackers on; the tests below check what each holds against
``results.parquet``, ``metrics.jsonl`` and ``trials.csv``. The other tests need no Ray.
"""

from __future__ import annotations

import json
import math
import socket
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from readers import tensorboard_scalars, wandb_offline_run  # noqa: E402

from raysweep import api  # noqa: E402
from raysweep.errors import Problems  # noqa: E402
from raysweep.search.searcher import OBJECTIVE  # noqa: E402
from raysweep.tracking import TrackedRecord, Trackers, TrackingWarning  # noqa: E402

DIGITS = {"sources": [{"kind": "digits", "classes": ["5", "6", "7"]}], "image_size": 16,
          "test_fraction": 0.3, "val_fraction": 0.2, "label_count": 30}
PRETRAIN_DATA = {**DIGITS, "sources": [{**DIGITS["sources"][0], "split": "train"}]}  # never the test images


def tiny_spec(storage: Path, tracking: dict, *, pretrain: bool = True,
              search: bool = True) -> dict:
    """Pre-training (2 epochs), 2 conditions x 2 probe seeds, a one-trial search."""
    run = {"data": PRETRAIN_DATA, "encoder": {"name": "small_resnet"}, "further": False,
           "frozen_epochs": 0, "batch_size": 32, "projector": [32, 32], "lr_max": 1e-3}
    encoders = [{"name": "random", "encoder": {"name": "small_resnet"},
                 "keys": {"init": "random"}}]
    if pretrain:
        encoders.insert(0, {"name": "ssl", "encoder": {"name": "small_resnet",
                                                       "weights": "pretrain:ssl"},
                            "keys": {"init": "ssl"}})
    spec: dict = {
        "name": "tracked", "storage": str(storage),
        "pretrain": [{"name": "ssl", "epochs": 2, **run}] if pretrain else [],
        "evaluate": {"data": DIGITS, "seeds": 2, "protocols": ["probe"],
                     "settings": {"epochs": 1, "batch_size": 16, "lr_max": 1e-3,
                                  "tta_views": 0},
                     "encoders": encoders},
        "report": {"bootstrap_resamples": 200},
        "tracking": tracking,
    }
    if search:
        spec["search"] = [{
            "name": "bt", "pretrain": {"name": "bt", "epochs": 1, **run},
            "evaluate": {"data": DIGITS, "seeds": 1,
                         "settings": {"epochs": 1, "batch_size": 16, "lr_finder_iters": 5,
                                      "tta_views": 0}},
            "space": {"pretrain.lambda_offdiag": {"type": "loguniform", "low": 1e-3,
                                                  "high": 1e-1}},
            "num_samples": 1, "scheduler": "none", "compare_default": False}]
    return spec


@pytest.fixture(scope="module")
def tracked(ray_session, tmp_path_factory):
    """The tiny experiment, run once with MLflow, W&B (offline) and TensorBoard on."""
    root = tmp_path_factory.mktemp("tracked")
    patch = pytest.MonkeyPatch()
    patch.setenv("RAYSWEEP_CACHE", str(root / "cache"))
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        spec = api.load(tiny_spec(root / "runs", {"mlflow": {}, "wandb": {},
                                                  "tensorboard": {}}))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TrackingWarning)
            api.run(spec)
    finally:
        patch.undo()
    dropped = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert not dropped, dropped  # every tracker held out to the end
    return spec


def _mlflow_runs(spec, kind: str):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{spec.directory / 'tracking' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(spec.name)
    return [run for run in client.search_runs([experiment.experiment_id])
            if run.data.tags.get("raysweep.kind") == kind]


@pytest.mark.ray
@pytest.mark.slow
def test_mlflow_holds_every_row_pretrain_run_and_search_trial(tracked):
    table = pd.read_parquet(tracked.directory / "results.parquet")
    runs = {run.data.tags["row_id"]: run for run in _mlflow_runs(tracked, "row")}
    assert sorted(runs) == sorted(table["row_id"])
    for row in table.to_dict("records"):
        run = runs[row["row_id"]]
        assert run.info.run_name == f"{row['condition']}/probe/seed-{row['seed']:04d}"
        assert run.data.params["init"] == row["init"]  # the condition's key
        assert run.data.params["condition"] == row["condition"]
        assert run.data.params["seed"] == str(row["seed"])
        for metric in ("accuracy", "f1_weighted", "f1_macro", "balanced_accuracy"):
            assert run.data.metrics[metric] == row[metric]
        assert run.info.status == "FINISHED"

    [pretrain_dir] = (tracked.directory / "pretrain").iterdir()
    epochs = [json.loads(line) for line in (pretrain_dir / "metrics.jsonl").read_text()
              .splitlines()]
    pretrain = {run.info.run_name: run for run in _mlflow_runs(tracked, "pretrain")}
    assert set(pretrain) >= {pretrain_dir.name}
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tracked.directory / 'tracking' / 'mlflow.db'}")
    history = client.get_metric_history(pretrain[pretrain_dir.name].info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(e["epoch"], e["loss"]) for e in epochs]
    assert pretrain[pretrain_dir.name].data.params["lambda_offdiag"] == str(
        tracked.pretrain[0].lambda_offdiag)

    # The search trial, through Ray's MLflowLoggerCallback: its parameter and objective.
    trials = pd.read_csv(tracked.directory / "search" / "bt" / "trials.csv")
    [trial] = _mlflow_runs(tracked, "search")
    [stored] = trials.to_dict("records")
    assert float(trial.data.params["params/pretrain.lambda_offdiag"]) == pytest.approx(
        stored["pretrain.lambda_offdiag"], rel=1e-12)
    assert trial.data.metrics[OBJECTIVE] == pytest.approx(stored["value"], rel=1e-12)
    # ... and its pre-training run, tracked after the search.
    assert any(name.startswith("bt-") for name in pretrain)


@pytest.mark.ray
@pytest.mark.slow
def test_tensorboard_loss_curve_equals_metrics_jsonl(tracked):
    logdir = tracked.directory / "tracking" / "tensorboard"
    [pretrain_dir] = (tracked.directory / "pretrain").iterdir()
    epochs = [json.loads(line) for line in (pretrain_dir / "metrics.jsonl").read_text()
              .splitlines()]
    scalars = tensorboard_scalars(logdir / "pretrain" / pretrain_dir.name)
    for term in ("loss", "invariance", "redundancy", "lr"):
        assert [step for step, _ in scalars[term]] == [e["epoch"] for e in epochs]
        assert [value for _, value in scalars[term]] == pytest.approx(
            [e[term] for e in epochs], rel=1e-6)  # event files hold float32
    table = pd.read_parquet(tracked.directory / "results.parquet")
    for row in table.to_dict("records"):
        path = logdir / "rows" / row["condition"] / "probe" / \
            f"seed-{row['seed']:04d}-{row['row_id']}"
        assert tensorboard_scalars(path)["accuracy"] == [(0, pytest.approx(row["accuracy"]))]
    trial_dir = logdir / "search" / "bt" / "trial-0000"
    objective = pd.read_csv(tracked.directory / "search" / "bt" / "trials.csv")["value"]
    assert tensorboard_scalars(trial_dir)[OBJECTIVE] == [(0, pytest.approx(objective[0]))]


@pytest.mark.ray
@pytest.mark.slow
def test_wandb_offline_runs_hold_the_metrics(tracked):
    folder = tracked.directory / "tracking" / "wandb"
    runs = [wandb_offline_run(path) for path in sorted(folder.glob("offline-run-*"))]
    by_name = {run["name"]: run for run in runs}
    table = pd.read_parquet(tracked.directory / "results.parquet")
    for row in table.to_dict("records"):
        run = by_name[f"{row['condition']}/probe/seed-{row['seed']:04d}"]
        [step] = run["history"]
        assert step["accuracy"] == row["accuracy"]
        assert run["config"]["init"] == row["init"]
    [pretrain_dir] = (tracked.directory / "pretrain").iterdir()
    epochs = [json.loads(line) for line in (pretrain_dir / "metrics.jsonl").read_text()
              .splitlines()]
    history = by_name[pretrain_dir.name]["history"]
    assert [(h["_step"], h["loss"]) for h in history] == [(e["epoch"], e["loss"]) for e in epochs]
    # The search trial, through Ray's WandbLoggerCallback (its actor's own offline run).
    objective = pd.read_csv(tracked.directory / "search" / "bt" / "trials.csv")["value"][0]
    assert any(math.isclose(h.get(OBJECTIVE, math.nan), objective, rel_tol=1e-12)
               for run in runs for h in run["history"]), [
        (run["name"], sorted({k for h in run["history"] for k in h})) for run in runs]


# ------------------------------------------------------------------------- no Ray needed


class _Failing:
    name, where = "failing", "nowhere"

    def is_tracked(self, record):
        return False

    def write(self, record):
        raise OSError("disk full")


def _records() -> list[TrackedRecord]:
    return [TrackedRecord(kind="row", key=f"r{i}", name=f"c/probe/seed-{i:04d}",
                          path=f"rows/c/probe/seed-{i:04d}-r{i}", params={"init": "x"},
                          tags={"row_id": f"r{i}"}, steps=((0, {"accuracy": 0.5 + i / 10}),))
            for i in range(2)]


@pytest.mark.slow  # wandb.init and MLflow's SQLite store: ~30 s under load
def test_each_tracker_tracks_a_record_once_and_a_failing_one_is_dropped(tmp_path: Path):
    from raysweep.tracking.backends import MlflowBackend, TensorboardBackend, WandbBackend

    def open_all():
        return [MlflowBackend(f"sqlite:///{tmp_path / 'mlflow.db'}", "e", None),
                WandbBackend("p", None, "offline", tmp_path),
                TensorboardBackend(tmp_path / "tb")]

    trackers = Trackers([*open_all(), _Failing()])
    with pytest.warns(TrackingWarning, match=r"failing at nowhere failed \(OSError: disk full"):
        assert trackers.track(_records()) == 6
    assert trackers.names == ("mlflow", "wandb", "tensorboard")
    assert trackers.track(_records()) == 0  # held already
    assert Trackers(open_all()).track(_records()) == 0  # also after reopening (a rerun)


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends


@pytest.mark.ray
@pytest.mark.slow
def test_a_tracker_that_is_down_is_a_warning_and_no_row_is_lost(ray_session, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    uri = f"http://127.0.0.1:{_dead_port()}"
    spec = api.load(tiny_spec(tmp_path / "runs", {"mlflow": {"tracking_uri": uri},
                                                  "tensorboard": {}},
                              pretrain=False, search=False))
    with pytest.warns(TrackingWarning, match=rf"tracking: mlflow at {uri} failed"):
        summary = api.run(spec)
    assert summary.n_rows == 2
    table = pd.read_parquet(spec.directory / "results.parquet")
    rows = spec.directory / "tracking" / "tensorboard" / "rows" / "random" / "probe"
    assert sorted(p.name for p in rows.iterdir()) == sorted(
        f"seed-{s:04d}-{r}" for s, r in zip(table["seed"], table["row_id"], strict=True))


def test_a_missing_extra_is_a_one_line_error(tmp_path: Path, monkeypatch, capsys):
    import importlib.util

    from raysweep.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    data = tiny_spec(tmp_path / "runs", {"wandb": {}}, pretrain=False, search=False)
    with pytest.raises(Problems, match=r"tracking.wandb: wandb is not installed \(pip "
                                       r"install 'raysweep\[wandb\]'\)"):
        api.check(data)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["validate", str(path)]) == 2
    [line] = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert "raysweep[wandb]" in line and not (tmp_path / "runs").exists()


def test_an_experiment_in_an_object_store_needs_a_tracking_dir():
    spec = api.load({"name": "x", "storage": "s3://bucket/runs?endpoint_override=127.0.0.1:1"
                                             "&scheme=http",
                     "tracking": {"tensorboard": {}}})
    from raysweep.tracking import tracking_problems

    assert tracking_problems(spec) == [("tracking.dir", "tensorboard keep files in a local "
                                        "folder and the experiment is in an object store: "
                                        "set tracking.dir")]
    assert tracking_problems(spec.replace(**{"tracking.dir": "/tmp/t"})) == []
