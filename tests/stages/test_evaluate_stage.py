"""The evaluate stage on Ray Tune: one row per (condition, protocol, seed), exactly once, also
when the driver is killed in the middle and the sweep is run again, and computed again exactly
where a changed spec needs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raysweep.config import spec_from_data
from raysweep.storage.atomic import current_umask

pytestmark = pytest.mark.ray

TARGET = {"sources": [{"kind": "digits", "classes": ["5", "6", "7", "8", "9"]}],
          "image_size": 16, "test_fraction": 0.3, "label_count": 40}


def evaluate_only_spec(storage: Path, *, seeds: int, protocols: list[str]) -> dict:
    return {
        "name": "evalonly", "storage": str(storage),
        "evaluate": {
            "data": TARGET, "seeds": seeds, "protocols": protocols,
            "settings": {"epochs": 1, "batch_size": 32, "lr_finder_iters": 8, "tta_views": 2},
            "encoders": [{"name": "random-a", "encoder": {"name": "small_resnet"}},
                         {"name": "random-b", "encoder": {"name": "small_resnet"},
                          "overrides": {"head_lr": 3e-3}}],
        },
        "resources": {"cpus_per_trial": 1},
    }


def stored_rows(experiment_dir: Path) -> list[dict]:
    """Every row file under ``rows/`` (current and stale)."""
    return [json.loads(p.read_text()) for p in sorted((experiment_dir / "rows").rglob("*.json"))]


@pytest.mark.slow
def test_evaluate_stage_fills_the_table_once(ray_session, tmp_path: Path, monkeypatch, capsys):
    from raysweep import api

    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    data = evaluate_only_spec(tmp_path, seeds=2, protocols=["finetune", "probe"])
    spec = spec_from_data(data)
    parquet = api.evaluate(spec)
    table = pd.read_parquet(parquet)
    assert len(table) == 2 * 2 * 2  # 2 conditions x 2 protocols x 2 seeds
    assert not table.duplicated(["condition", "protocol", "seed"]).any()
    assert set(table["condition"]) == {"random-a", "random-b"}
    assert {"accuracy", "f1_weighted", "spec_hash", "git_commit", "packages",
            "row_id"} <= set(table.columns)
    # Rows written by the Tune workers and the table honour the umask (0644 under 022).
    mode = 0o666 & ~current_umask()
    assert {p.stat().st_mode & 0o777 for p in (spec.directory / "rows").rglob("*.json")} == {mode}
    assert parquet.stat().st_mode & 0o777 == mode
    run_ids = dict(zip(table["run_id"], table["seed"], strict=True))
    again = pd.read_parquet(api.evaluate(spec))  # a rerun trains nothing
    assert dict(zip(again["run_id"], again["seed"], strict=True)) == run_ids

    # A changed setting of one condition: its 4 rows are computed again, the others reused.
    capsys.readouterr()
    data["evaluate"]["encoders"][1]["overrides"] = {"head_lr": 1e-2}
    changed = pd.read_parquet(api.evaluate(spec_from_data(data)))
    assert "4 stored rows no longer match the spec" in capsys.readouterr().out
    kept = changed["run_id"].isin(table["run_id"])
    assert set(changed.loc[kept, "condition"]) == {"random-a"} and kept.sum() == 4
    assert len(changed) == 8 and len(stored_rows(spec.directory)) == 12


@pytest.mark.slow
def test_killed_sweep_resumes_without_retraining(tmp_path: Path, monkeypatch):
    data = evaluate_only_spec(tmp_path / "runs", seeds=3, protocols=["finetune"])
    data["evaluate"]["settings"]["epochs"] = 3
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    # Checkpoint every epoch, so that a trial cut by the kill resumes mid-way.
    env = {**os.environ, "RAYSWEEP_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "RAYSWEEP_CHECKPOINT_INTERVAL_S": "0"}
    command = [sys.executable, "-m", "raysweep.cli", "run", str(spec_file)]
    experiment = tmp_path / "runs" / "evalonly"

    driver = subprocess.Popen(command, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while (len(stored_rows(experiment)) < 2 and time.monotonic() < deadline
           and driver.poll() is None):
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started, mid-stage
    driver.wait()
    before = {(r["condition"], r["seed"]): r["run_id"] for r in stored_rows(experiment)}
    assert 2 <= len(before) < 6, "the kill must land in the middle of the evaluate stage"

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400,
                           start_new_session=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    rows = stored_rows(experiment)
    keys = [(r["condition"], r["protocol"], r["seed"]) for r in rows]
    assert sorted(keys) == sorted({(c, "finetune", s) for c in ("random-a", "random-b")
                                   for s in range(3)})
    after = {(r["condition"], r["seed"]): r["run_id"] for r in rows}
    assert all(after[key] == run_id for key, run_id in before.items()), "a finished run was retrained"
    assert not list((experiment / "checkpoints").glob("*.pt")), "a finished row keeps its checkpoint"
    table = pd.read_parquet(experiment / "results.parquet")
    assert len(table) == 6 and not table.duplicated(["condition", "protocol", "seed"]).any()
    assert "results: " in rerun.stdout
    # Whether a trial ran whole, restarted, or resumed from an epoch checkpoint, its row is the
    # row of an uninterrupted run (CPU runs are bit-reproducible from (spec, seed)).
    from raysweep.plan.trials import EvalTrial
    from raysweep.stages.evaluate import evaluate_trial_rows

    data["storage"] = str(tmp_path / "reference")
    reference = spec_from_data(data)
    monkeypatch.setenv("RAYSWEEP_CACHE", env["RAYSWEEP_CACHE"])
    for row in rows:
        [expected] = evaluate_trial_rows(
            reference, EvalTrial(row["condition"], "finetune", (row["seed"],)))
        for metric in ("accuracy", "f1_weighted", "lr_max", "confusion_matrix", "lr_finder"):
            assert row[metric] == expected[metric], (row["condition"], row["seed"], metric)
