"""Searches and the experiment's storage: the Optuna journal of an object-store experiment (a
local working copy, downloaded and uploaded), ASHA reports routed to the journal's node, and the
experiment lock that a search holds like ``raysweep run``."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from raysweep.config import spec_from_data
from raysweep.search.journal import StudyJournal, complete_lines
from raysweep.search.pruning import ProxyPruned, ProxyPruner
from raysweep.search.study import open_study, study_name
from raysweep.storage.paths import StoragePath
from raysweep.store.lock import ExperimentLock
from raysweep.store.searches import STUDY_FILE

optuna.logging.set_verbosity(optuna.logging.WARNING)

DIGITS = {"sources": [{"kind": "digits", "classes": ["0", "1", "2"]}], "image_size": 16,
          "test_fraction": 0.3, "label_count": 45}
PRETRAIN_DATA = {**DIGITS, "sources": [{**DIGITS["sources"][0], "split": "train"}]}  # never the test images


def experiment(storage: str, **search) -> dict:
    return {"name": "stored", "storage": storage, "search": [{
        "name": "bt",
        "pretrain": {"name": "bt", "data": PRETRAIN_DATA, "encoder": {"name": "small_resnet"},
                     "further": False, "epochs": 2, "batch_size": 64, "lr_max": 1e-3,
                     "projector": [32, 32]},
        "evaluate": {"data": DIGITS, "seeds": 2,
                     "settings": {"epochs": 2, "batch_size": 16, "lr_finder_iters": 5,
                                  "tta_views": 0}},
        "space": {"pretrain.lambda_offdiag": {"type": "loguniform", "low": 1e-3,
                                              "high": 1e-1}},
        **search}]}


def _tell(study: optuna.Study, value: float) -> None:
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    study.tell(trial, value)


def test_an_object_store_journal_is_a_working_copy_downloaded_and_uploaded(
        s3: StoragePath, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    search = spec_from_data(experiment(str(tmp_path / "runs"))).search[0]
    journal = StudyJournal.of(s3 / "search" / "bt")
    assert journal.is_copy and journal.home == s3 / "search" / "bt" / STUDY_FILE
    assert journal.local.is_relative_to(tmp_path / "cache") and journal.local.name == STUDY_FILE

    stale = b'{"op_code": 0, "worker_id": "x", "study_name": "old"}\n'
    journal.local.parent.mkdir(parents=True)
    journal.local.write_bytes(stale)  # a copy left by an experiment since deleted
    assert journal.download() is False and not journal.local.exists()  # the store is the truth

    study = open_study(journal.local.parent, search, study_name(search))
    _tell(study, 0.25)
    _tell(study, 0.75)
    written = journal.local.read_bytes()
    with journal.local.open("ab") as handle:  # another process mid-way through a line
        handle.write(b'{"op_code": 5, "trial_')
    journal.upload()
    assert journal.home.read_bytes() == written  # complete lines only

    journal.local.unlink()  # another machine, or a cleared cache
    assert journal.download() is True
    reopened = open_study(journal.local.parent, search, study_name(search))
    assert [t.value for t in reopened.get_trials()] == [0.25, 0.75]
    assert reopened.best_value == 0.75


def test_a_local_journal_is_used_where_it_is_stored(tmp_path: Path):
    journal = StudyJournal.of(tmp_path / "search" / "bt")
    assert not journal.is_copy and journal.local == journal.home
    assert journal.download() is False
    journal.local.parent.mkdir(parents=True)
    journal.local.write_bytes(b"partial")
    journal.upload()  # nothing to upload: the file is the journal
    assert journal.local.read_bytes() == b"partial"


def test_complete_lines():
    assert complete_lines(b"a\nb\nc") == b"a\nb\n"
    assert complete_lines(b"a\n") == b"a\n"
    assert complete_lines(b"abc") == b""


@pytest.mark.slow
def test_asha_reports_go_to_the_journal_node(ray_session, tmp_path: Path):
    """With ``node_id`` set (a working copy on the driver's node), a controller's report runs as
    a task pinned to that node, and its decision comes back: the second trial, behind the first
    at the rung, is stopped and the study says so."""
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / STUDY_FILE)))
    study = optuna.create_study(study_name="study", storage=storage, direction="maximize")
    first, second = study.ask(), study.ask()
    node = ray_session.get_runtime_context().get_node_id()
    base = ProxyPruner(journal=str(tmp_path / STUDY_FILE), study_name="study", trial_number=0,
                       min_resource=1, reduction_factor=2, total_epochs=4, node_id=node)
    base.check(1, 0.9)  # the first at the rung: kept
    behind = ProxyPruner(**{**base.__dict__, "trial_number": second.number,
                            "pretrain_run": "bt-abc"})
    with pytest.raises(ProxyPruned) as stopped:
        behind.check(1, 0.2)
    assert stopped.value.epochs_done == 1 and math.isclose(stopped.value.proxy, 0.2)
    trials = optuna.load_study(study_name="study", storage=storage).get_trials()
    assert trials[first.number].intermediate_values == {1: 0.9}
    assert trials[second.number].intermediate_values == {1: 0.2}
    assert trials[second.number].user_attrs == {"pretrain_run": "bt-abc", "pruned_at_epoch": 1}


def test_a_search_is_refused_while_another_runner_holds_the_experiment(
        ray_session, tmp_path: Path, capsys):
    import yaml

    from raysweep.cli import main

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(experiment(str(tmp_path / "runs"))))
    directory = tmp_path / "runs" / "stored"
    with ExperimentLock(directory, command="raysweep run spec.yaml"):
        code = main(["search", str(spec_file)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "another raysweep run holds this experiment" in err[0]
    assert "raysweep run spec.yaml" in err[0] and "pid" in err[0]
    assert not (directory / "search").exists()  # nothing of the search was started


class _Stop(Exception):
    pass


def test_a_run_is_refused_while_a_search_holds_the_experiment(ray_session, tmp_path: Path,
                                                              monkeypatch):
    """``raysweep search`` holds the lock while its searches run: a ``raysweep run`` of the
    same experiment started meanwhile is refused, naming the search."""
    import raysweep.experiment.runner as runner
    from raysweep import api
    from raysweep.store.lock import ExperimentLocked

    data = experiment(str(tmp_path / "runs"))
    refusals = []

    def run_meanwhile(spec, search):
        with pytest.raises(ExperimentLocked) as refused:
            api.run(data)
        refusals.append(str(refused.value))
        raise _Stop  # no search needs to run for this test

    monkeypatch.setattr(runner, "run_search", run_meanwhile)
    monkeypatch.setattr("sys.argv", ["raysweep", "search", "spec.yaml"])
    with pytest.raises(_Stop):
        api.search(data)
    [refusal] = refusals
    assert "another raysweep run holds this experiment" in refusal
    assert "raysweep search spec.yaml" in refusal and "\n" not in refusal
    assert not (tmp_path / "runs" / "stored" / ".raysweep.lock").exists()  # released


@pytest.mark.ray
@pytest.mark.slow
def test_a_search_runs_in_an_object_store(ray_session, s3_base, s3, tmp_path: Path, monkeypatch):
    """A one-trial search with ASHA's reports in S3: the journal, the trial's run (Ray Train's
    checkpoints too), Tune's state and the outputs are in the bucket, nothing in a local folder
    but the cache; a rerun from an empty cache finds the finished trial in the stored study and
    trains nothing."""
    import io
    import json

    import pandas as pd

    from raysweep.experiment.runner import run_searches

    cache = tmp_path / "cache"
    monkeypatch.setenv("RAYSWEEP_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    base = s3_base.replace("/runs?", f"/{s3.name}?")
    spec = spec_from_data(experiment(base, num_samples=1, compare_default=False,
                                     grace_period=1))
    assert isinstance(spec.directory, StoragePath)
    [outcome], report = run_searches(spec)
    folder = spec.directory / "search" / "bt"
    assert outcome.directory == folder and outcome.n_new == 1
    assert outcome.record["states"] == {"complete": 1}

    names = {p.name for p in folder.iterdir()}
    assert {STUDY_FILE, "trials.parquet", "trials.csv", "best.json", "best.yaml", "pretrain",
            "tune"} <= names
    [run_dir] = list((folder / "pretrain").iterdir())
    assert (run_dir / "meta.json").is_file() and list((run_dir / "train").glob("checkpoint_*"))
    record = json.loads((folder / "best.json").read_text())
    table = pd.read_parquet(io.BytesIO((folder / "trials.parquet").read_bytes()))
    assert table["state"].tolist() == ["complete"]
    assert table["value"].iloc[0] == pytest.approx(record["best"]["value"])
    assert report is not None and "Search bt" in report.read_text()
    assert not (spec.directory / ".raysweep.lock").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]

    # the stored journal holds the trial, its per-epoch proxy reported through the node task
    local = tmp_path / "downloaded" / STUDY_FILE
    local.parent.mkdir()
    local.write_bytes((folder / STUDY_FILE).read_bytes())
    stored = optuna.load_study(study_name=record["study_name"], storage=optuna.storages.
                               JournalStorage(optuna.storages.journal.JournalFileBackend(
                                   str(local))))
    [trial] = stored.get_trials()
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [1, 2]

    import shutil

    shutil.rmtree(cache / "search-journals")  # another machine: only the store knows the study
    [again], _ = run_searches(spec)
    assert again.n_new == 0 and again.record["states"] == {"complete": 1}
    assert [p.name for p in (folder / "pretrain").iterdir()] == [run_dir.name]
