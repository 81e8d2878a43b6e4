"""``raysweep status EXPERIMENT_DIR``: finished, running and missing, from storage alone, while
another runner holds the experiment, writing nothing."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from raysweep.cli import main
from raysweep.config import dump_spec, spec_from_data
from raysweep.experiment.status import experiment_status
from raysweep.plan.identity import identify_trials, planned_refs
from raysweep.plan.run_identity import pretrain_run_dir
from raysweep.store.lock import LOCK_FILE, ExperimentLock
from raysweep.store.results import ResultsStore
from raysweep.store.run_dirs import ENCODER_FILE, META_FILE, METRICS_FILE

DIGITS = {"sources": [{"kind": "digits", "classes": ["0", "1"]}], "image_size": 16}


def study(storage: Path, data: dict = DIGITS) -> dict:
    run = {"data": data, "encoder": {"name": "small_resnet"}, "batch_size": 16,
           "projector": [32, 32], "epochs": 3, "further": False}
    return {
        "name": "study", "storage": str(storage),
        "pretrain": [{**run, "name": "A"}, {**run, "name": "B"}, {**run, "name": "C"}],
        "evaluate": {"data": data, "seeds": 3, "protocols": ["finetune"], "encoders": [
            {"name": "A", "encoder": {"name": "small_resnet", "weights": "pretrain:A"}},
            {"name": "B", "encoder": {"name": "small_resnet", "weights": "pretrain:B"}},
            {"name": "rnd", "encoder": {"name": "small_resnet", "weights": "random"}}]}}


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root``: modification time and content digest."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns,
                                       hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def experiment(tmp_path: Path, monkeypatch) -> Path:
    """Run A finished, B with a checkpoint (2 of 3 epochs logged), C never started; rows of A:
    seeds 0 and 1 done, seed 2 stored under an older identity; rnd: seed 0 done; B's rows
    wait for its encoder."""
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    spec = spec_from_data(study(tmp_path / "runs"))
    spec.directory.mkdir(parents=True)
    (spec.directory / "experiment.yaml").write_text(dump_spec(spec))
    a_dir = pretrain_run_dir(spec, spec.pretrain[0], save_digests=False)
    a_dir.mkdir(parents=True)
    (a_dir / ENCODER_FILE).write_bytes(b"encoder A")
    (a_dir / METRICS_FILE).write_text('{"epoch": 0}\n{"epoch": 1}\n{"epoch": 2}\n')
    (a_dir / META_FILE).write_text(json.dumps({"status": "finished", "epochs_trained": 3}))
    b_dir = pretrain_run_dir(spec, spec.pretrain[1], save_digests=False)
    (b_dir / "train" / "checkpoint_000001").mkdir(parents=True)
    (b_dir / "train" / "checkpoint_manager_snapshot.json").write_text("{}")  # Ray Train's
    (b_dir / METRICS_FILE).write_text('{"epoch": 0}\n{"epoch": 1}\n')
    store = ResultsStore(spec.directory)
    refs = {(r.key.condition, r.key.seed): r
            for r in planned_refs(identify_trials(spec, save_digests=False))}
    for key in (("A", 0), ("A", 1), ("rnd", 0)):
        ref = refs[key]
        store.write({"condition": key[0], "protocol": "finetune", "seed": key[1],
                     "row_id": ref.row_id, "accuracy": 0.5})
    store.write({"condition": "A", "protocol": "finetune", "seed": 2,
                 "row_id": "0123456789abcdef", "accuracy": 0.4})
    return spec.directory


def test_status_while_another_runner_holds_the_experiment_writes_nothing(
        experiment: Path, tmp_path: Path, capsys):
    before = snapshot(tmp_path)
    with ExperimentLock(experiment, command="raysweep run study.yaml"):
        locked = snapshot(tmp_path)
        assert main(["status", str(experiment)]) == 0
        assert snapshot(tmp_path) == locked  # no lock taken, no digest remembered, nothing
    out = capsys.readouterr().out
    assert snapshot(tmp_path) == before
    assert "running: " in out and "raysweep run study.yaml" in out
    assert "pretrain: 1 of 3 runs finished, 1 with checkpoints, 1 not started" in out
    pretrain_block = out.split("rows:")[0]
    lines = {line.split()[0]: line for line in pretrain_block.splitlines()
             if line.startswith("  ")}
    assert "finished (3 epoch(s) trained)" in lines["A"]
    assert "checkpoints (newest checkpoint_000001; 2 of 3 epochs logged)" in lines["B"]
    assert " none" in lines["C"]
    # 9 rows: A 2 done + 1 stale; B 3 waiting for its encoder; rnd 1 done + 2 new
    assert "rows: 3 done, 1 stale, 6 missing (9 in all); 3 of the missing wait" in out
    assert "A finetune    2 done, 1 stale, 0 missing" in out
    assert "B finetune    0 done, 0 stale, 3 missing" in out
    assert "rnd finetune  1 done, 0 stale, 2 missing" in out
    assert "results: not written yet" in out and "report: not written yet" in out


def test_status_of_a_moved_directory_and_of_a_dead_runner(experiment: Path, tmp_path: Path):
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(experiment, moved)
    # a lock left by a runner of this host whose pid is gone
    (moved / LOCK_FILE).write_text(json.dumps({
        "host": __import__("socket").gethostname(), "pid": 2**22 + 12345, "since": "then",
        "command": "raysweep run", "token": "x"}))
    status = experiment_status(moved)
    assert status.directory == moved and not status.running and status.holder_stale
    assert [r.state for r in status.pretrain] == ["finished", "checkpoints", "none"]
    assert len(status.rows.done) == 3 and status.unidentified is None
    assert "a stale lock of" in status.describe()


def test_status_without_the_data_matches_runs_by_name(experiment: Path, tmp_path: Path):
    # Record a spec whose data is a file this machine cannot read, over the same storage.
    missing = {"sources": [{"kind": "medmnist", "path": str(tmp_path / "gone.npz")}],
               "image_size": 16}
    spec = spec_from_data(study(tmp_path / "runs", data=missing))
    (experiment / "experiment.yaml").write_text(dump_spec(spec))
    status = experiment_status(experiment)
    assert "cannot be read here" in status.unidentified
    assert [r.state for r in status.pretrain] == ["finished", "checkpoints", "none"]
    assert len(status.rows.done) == 4  # A 0, A 1, A 2 (whatever their identity) and rnd 0
    assert "matched by name" in status.describe()


def test_status_of_a_folder_that_is_no_experiment_exits_2(tmp_path: Path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path}: no experiment.yaml here: not an experiment directory, " \
                  "or no run of it has started yet"
    assert list(tmp_path.iterdir()) == []
