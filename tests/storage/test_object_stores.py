"""Storage URIs: local folders, ``file://`` URIs and object stores through one layer.

The object-store tests run against moto's S3-compatible server (``moto[server]``, in the dev
extra; fixtures ``s3_base`` and ``s3`` of ``tests/conftest.py``) and, those taking ``store``,
also against a Google Cloud Storage emulator (``gcp-storage-emulator``, in the dev extra;
``gcs_base``), each started on 127.0.0.1 for the session; they are skipped, with the reason,
where it is not installed.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pandas as pd
import pytest
import yaml

from raysweep.errors import SpecError
from raysweep.storage.atomic import atomic_write_bytes, copy_tree
from raysweep.storage.paths import StoragePath, relative_to, storage_path, walk_files
from raysweep.store.lock import ExperimentLock, ExperimentLocked, read_holder
from raysweep.store.results import ResultsStore, RowKey, RowRef


def test_local_locations_are_paths(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert storage_path("~/runs") == tmp_path / "runs"
    assert storage_path(f"file://{tmp_path}/runs") == tmp_path / "runs"
    assert storage_path(str(tmp_path / "x")) == tmp_path / "x"
    with pytest.raises(SpecError, match="names a local folder"):
        storage_path("file://otherhost/runs")


def test_object_store_paths_behave_like_paths(store: StoragePath, tmp_path: Path):
    rows = store / "rows" / "c" / "probe"
    (rows / "seed-0001-aa.json").write_text('{"a": 1}')
    (rows / "seed-0002-bb.json").write_text('{"a": 2}')
    (store / "results.parquet").write_bytes(b"PAR1")
    assert store.is_dir() and (store / "results.parquet").is_file()
    assert not (store / "missing").exists() and not rows.is_file()
    assert [p.name for p in rows.glob("seed-0001*.json")] == ["seed-0001-aa.json"]
    assert [p.parts[-4:] for p in store.rglob("*.json")] == [
        ("rows", "c", "probe", "seed-0001-aa.json"), ("rows", "c", "probe", "seed-0002-bb.json")]
    assert sorted(p.name for p in store.iterdir()) == ["results.parquet", "rows"]
    assert (store / "results.parquet").stat().st_size == 4
    assert str(rows / "x.json").startswith(("s3://raysweep-test/runs/",
                                             "gs://raysweep-test/runs/"))
    assert "rows/c/probe/x.json?endpoint_override=" in str(rows / "x.json")
    # A path built from its own URI string is still below the folder it came from.
    reopened = storage_path(str(rows / "x.json"))
    assert reopened.relative_to(store) == PurePosixPath("rows/c/probe/x.json")
    with pytest.raises(ValueError, match="not below"):
        store.relative_to(rows)
    # Round trip through a local folder.
    assert copy_tree(store, tmp_path / "copy") == 3
    assert (tmp_path / "copy" / "rows" / "c" / "probe" / "seed-0002-bb.json").read_text() == \
        '{"a": 2}'
    assert copy_tree(tmp_path / "copy", store / "again") == 3
    assert sorted(parts for parts, _ in walk_files(store / "again")) == sorted(
        parts for parts, _ in walk_files(tmp_path / "copy"))
    (rows / "seed-0001-aa.json").unlink()
    with pytest.raises(FileNotFoundError):
        (rows / "seed-0001-aa.json").read_bytes()
    (store / "rows").rmtree()
    assert not (store / "rows").exists()


def test_results_and_lock_in_an_object_store(store: StoragePath):
    results = ResultsStore(store)
    ref = RowRef(RowKey("SL", "probe", 3), "abcd")
    results.write({"condition": "SL", "protocol": "probe", "seed": 3, "row_id": "abcd",
                 "accuracy": 0.5})
    assert results.has(ref) and not results.has(RowRef(ref.key, "other"))
    assert results.status([RowRef(ref.key, "other")]).stale  # stored under another identity
    table = results.consolidate([ref], {"SL": {"init": "x"}})
    stored = pd.read_parquet(io.BytesIO(results.parquet_path.read_bytes()))
    assert stored.to_dict("records") == table.to_dict("records") == [
        {"accuracy": 0.5, "condition": "SL", "protocol": "probe", "row_id": "abcd", "seed": 3,
         "init": "x"}]

    lock = ExperimentLock(store).acquire()
    try:
        with pytest.raises(ExperimentLocked, match="another raysweep run holds"):
            ExperimentLock(store).acquire()
        holder = read_holder(store / ".raysweep.lock")
        assert holder is not None and holder.token == lock.token
    finally:
        lock.release()
    assert not (store / ".raysweep.lock").exists()


def test_listings_in_an_object_store_sort_by_name(s3: StoragePath, tmp_path: Path):
    """Object-store paths have no order of their own: a key's stored rows (several identities
    and a pre-identity file) and a run's checkpoints come sorted by name, as locally."""
    from raysweep.experiment.status import _checkpoints

    key = RowKey("SL", "probe", 3)
    names = {}
    for root in (s3, tmp_path):
        store = ResultsStore(root)
        for row_id in ("ff", "aa"):
            store.write({"condition": "SL", "protocol": "probe", "seed": 3, "row_id": row_id})
        (store.rows_dir / "SL" / "probe" / "seed-0003.json").write_text("{}")
        assert store.status([RowRef(key, "other")]).stale
        for epoch in (10, 2):
            atomic_write_bytes(root / "run" / "train" / f"checkpoint_{epoch:06d}" / "state.pt", b"")
        names[root] = ([p.name for p in store.stored_for(key)],
                       [p.name for p in _checkpoints(root / "run")])
    assert names[s3] == names[tmp_path] == (
        ["seed-0003-aa.json", "seed-0003-ff.json", "seed-0003.json"],
        ["checkpoint_000002", "checkpoint_000010"])


def test_relative_to_local_and_object_store_paths(s3: StoragePath, tmp_path: Path):
    assert relative_to(s3 / "pretrain" / "run-1", s3) == PurePosixPath("pretrain/run-1")
    assert relative_to(tmp_path / "pretrain" / "run-1", tmp_path) == Path("pretrain/run-1")
    for path, root in ((s3 / "a", tmp_path), (tmp_path / "a", s3), (s3, s3 / "a")):
        with pytest.raises(ValueError, match="not below"):
            relative_to(path, root)


def test_file_uri_storage(tmp_path: Path, monkeypatch):
    from raysweep.config import spec_from_data
    from raysweep.experiment.runner import consolidate_results
    from raysweep.plan.identity import identify_trials, planned_refs
    from raysweep.plan.resources import ClusterResources
    from raysweep.plan.trials import make_plan
    from raysweep.stages.evaluate import evaluate_trial_rows

    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    uri = f"file://{tmp_path}/runs"
    spec = spec_from_data({"name": "uri", "storage": uri, "evaluate": {
        "data": {"sources": [{"kind": "digits", "classes": ["5", "6"]}], "image_size": 16,
                 "label_count": 20},
        "seeds": 2, "protocols": ["probe"],
        "settings": {"epochs": 1, "batch_size": 16, "lr_max": 1e-3, "tta_views": 0},
        "encoders": [{"name": "r", "encoder": {"name": "small_resnet"}}]}})
    assert spec.directory == tmp_path / "runs" / "uri"
    text = make_plan(spec, ClusterResources(cpus=2, gpus=0)).describe()
    assert f"experiment 'uri' -> {uri}/uri" in text.splitlines()[0]
    trials = identify_trials(spec)
    for trial in trials:
        evaluate_trial_rows(spec, trial)
    table = consolidate_results(spec, tuple(planned_refs(trials)))
    assert len(table) == 2
    assert len(pd.read_parquet(tmp_path / "runs" / "uri" / "results.parquet")) == 2


@pytest.mark.slow
def test_an_experiment_runs_in_an_object_store(store_base, tmp_path: Path):
    """Pre-training (Ray Train checkpoints included), rows, results, report and the lock all in
    S3 or GCS; a rerun computes nothing; nothing lands in a local folder."""
    base, credentials = store_base
    root = storage_path(base)
    assert isinstance(root, StoragePath)
    digits = {"sources": [{"kind": "digits", "classes": ["5", "6", "7"]}], "image_size": 16,
              "label_count": 30}
    pretrain_data = {**digits, "sources": [{**digits["sources"][0], "split": "train"}]}  # never the test images
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": "in-store", "storage": base,
        "pretrain": [{"name": "ssl", "data": pretrain_data, "encoder": {"name": "small_resnet"},
                      "further": False, "frozen_epochs": 0, "epochs": 1, "batch_size": 32,
                      "projector": [32, 32], "lr_max": 1e-3}],
        "evaluate": {"data": digits, "seeds": 2, "protocols": ["probe"],
                     "settings": {"epochs": 1, "batch_size": 16, "lr_max": 1e-3,
                                  "tta_views": 0},
                     "encoders": [{"name": "ssl", "encoder": {"name": "small_resnet",
                                                             "weights": "pretrain:ssl"}},
                                  {"name": "random", "encoder": {"name": "small_resnet"}}]},
        "report": {"bootstrap_resamples": 200},
    }))
    env = {**os.environ, **credentials, "RAYSWEEP_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "raysweep.cli", "run", str(spec_file)]
    first = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "4 result rows (4 new), 1 pretrain runs" in first.stdout

    for key, value in credentials.items():
        os.environ.setdefault(key, value)
    experiment = root / "in-store"
    table = pd.read_parquet(io.BytesIO((experiment / "results.parquet").read_bytes()))
    assert len(table) == 4 and set(table["condition"]) == {"ssl", "random"}
    assert len(list((experiment / "rows").rglob("*.json"))) == 4
    [run_dir] = list((experiment / "pretrain").iterdir())
    assert {"encoder.pt", "meta.json", "metrics.jsonl"} <= {p.name for p in run_dir.iterdir()}
    assert list((run_dir / "train").glob("checkpoint_*"))  # Ray Train's checkpoints, in S3
    assert "<html" in (experiment / "report" / "report.html").read_text()
    assert not (experiment / ".raysweep.lock").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "spec.yaml"]

    again = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 result rows (0 new)" in again.stdout
    status = subprocess.run([sys.executable, "-m", "raysweep.cli", "status",
                             str(experiment)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert status.returncode == 0, status.stderr[-2000:]
    assert "4 done" in status.stdout
