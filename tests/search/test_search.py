"""Searches end to end on a 2-CPU Ray instance: the demo search as a stage of ``raysweep run``
(ASHA stops trials early, more trials than slots, a rerun does nothing), and a search whose
driver is SIGKILLed mid-trial continuing in the same study without retraining."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from raysweep.cli import main
from raysweep.config import load_spec
from raysweep.experiment.demo import demo_search_spec
from raysweep.experiment.runner import run_experiment, run_searches
from raysweep.plan.searches import total_epochs
from raysweep.search.study import open_storage
from raysweep.store.run_dirs import is_finished
from raysweep.store.searches import STUDY_FILE

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def load_study(folder: Path):
    record = json.loads((folder / "best.json").read_text())
    return optuna.load_study(study_name=record["study_name"],
                             storage=open_storage(folder / STUDY_FILE))


def finished_runs(folder: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in folder.glob("pretrain/*/meta.json")}


def test_demo_search_in_run_prunes_with_more_trials_than_slots(ray_session, tmp_path: Path,
                                                               monkeypatch, capsys):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    storage = str(tmp_path / "runs")
    spec = demo_search_spec(smoke=True, storage=storage)
    search = spec.search[0]
    # 2 CPUs: a trial holds its driver's CPU and its worker's, so one runs at a time
    assert ray_session.cluster_resources()["CPU"] == 2
    assert search.num_samples >= 4 and search.max_concurrent_trials is None
    summary = run_experiment(spec)  # the search stage of `raysweep run`
    folder = spec.directory / "search" / search.name
    study = load_study(folder)
    trials = study.get_trials()
    assert len(trials) == search.num_samples
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "ASHA stopped no trial"
    for trial in pruned:  # stopped before the last epoch, its run left unfinished
        assert max(trial.intermediate_values) < total_epochs(search)
        assert not is_finished(folder / "pretrain" / trial.user_attrs["pretrain_run"])
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete
    for trial in complete:
        values = trial.user_attrs["values_per_seed"]
        assert len(values) == search.evaluate.seeds
        assert trial.value == pytest.approx(np.mean(values))
        assert sorted(trial.intermediate_values) == list(range(1, total_epochs(search) + 1))
    table = pd.read_parquet(folder / "trials.parquet")
    assert table["state"].tolist() == [t.state.name.lower() for t in trials]
    best = json.loads((folder / "best.json").read_text())
    assert best["best"]["trial"] == study.best_trial.number
    assert best["default"]["seeds"] == best["best"]["seeds"]
    assert summary.report is not None and "Search barlow_twins" in summary.report.read_text()
    runs, journal = finished_runs(folder), (folder / STUDY_FILE).read_bytes()

    # `raysweep demo --search` again: nothing trains, the study is unchanged
    assert main(["demo", "--search", "--smoke", "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert f"{search.num_samples}/{search.num_samples} trials finished (0 in" in out
    assert yaml.safe_load(out[out.index("# best of search"):]) == yaml.safe_load(
        (folder / "best.yaml").read_text())
    assert finished_runs(folder) == runs
    assert (folder / STUDY_FILE).read_bytes() == journal


SPEC = """
name: killed
storage: {storage}
datasets:
  digits: &digits {{sources: [{{kind: digits, classes: ["0", "1", "2"]}}], image_size: 16,
                   test_fraction: 0.3, val_fraction: 0.2, label_count: 45}}
search:
  - name: bt
    pretrain: {{name: bt, data: *digits, encoder: {{name: small_resnet}}, further: false,
               epochs: 3, batch_size: 64, lr_max: 1e-3, projector: [32, 32]}}
    evaluate: {{data: *digits, seeds: 2, settings: {{epochs: 2, batch_size: 16,
               lr_finder_iters: 5, tta_views: 0}}}}
    space:
      pretrain.lambda_offdiag: {{type: loguniform, low: 1e-3, high: 1e-1}}
    num_samples: 2
    scheduler: none
    compare_default: false
"""


def test_killed_search_continues_in_the_same_study(ray_session, tmp_path: Path):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(storage=tmp_path / "runs"))
    spec = load_spec(path)
    folder = spec.directory / "search" / "bt"
    env = {**os.environ, "RAYSWEEP_CACHE": str(tmp_path / "cache"),
           "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen([sys.executable, "-m", "raysweep.cli", "search", str(path)],
                             env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    # Kill once trial 0 is complete and trial 1 has registered a checkpoint, mid-run.
    deadline = time.monotonic() + 600
    while True:
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the first run did not get far enough"
        try:
            states = [t.state for t in load_study_by_name(folder).get_trials(deepcopy=False)]
        except ValueError:  # no study in the journal yet
            states = []
        if states:
            unfinished = [d for d in folder.glob("pretrain/*/train/checkpoint_manager_snapshot.json")
                          if not is_finished(d.parents[1])]
            if states[:2] == [TrialState.COMPLETE, TrialState.RUNNING] and unfinished:
                break
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    log.close()
    before = load_study_by_name(folder).get_trials()
    runs = finished_runs(folder)  # trial 0's
    assert len(runs) == 1

    outcomes, _ = run_searches(spec)  # the rerun, in this process
    study = load_study_by_name(folder)
    trials = study.get_trials()
    assert study.study_name == outcomes[0].study_name
    assert trials[0].params == before[0].params and trials[0].value == before[0].value
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL,
                                         TrialState.COMPLETE]
    retry = trials[2]
    assert retry.params == before[1].params and retry.user_attrs["retry_of"] == 1
    assert {k: v for k, v in finished_runs(folder).items() if k in runs} == runs  # no retraining
    assert len(finished_runs(folder)) == len(runs) + 1
    meta = json.loads((folder / "pretrain" / retry.user_attrs["pretrain_run"]
                       / "meta.json").read_text())
    assert meta["resumed_from_epochs"]  # continued from the killed run's checkpoint
    assert not (folder / "default.json").exists()  # compare_default: false
    table = pd.read_parquet(folder / "trials.parquet")
    assert table["state"].tolist() == ["complete", "interrupted", "complete"]
    assert outcomes[0].record["states"] == {"complete": 2, "interrupted": 1}


def load_study_by_name(folder: Path):
    storage = open_storage(folder / STUDY_FILE)
    (name,) = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    return optuna.load_study(study_name=name, storage=storage)
