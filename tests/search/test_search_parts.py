"""The parts of a search, without a Ray cluster: spec checks, the space, content-addressed trial
runs, resources, ASHA rungs and decisions, the validation split, the searcher's bookkeeping in
the study, recovery of a killed run, the outputs, the dry run and the report section."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState
from scipy import stats as sps

from raysweep.config import spec_from_data
from raysweep.errors import SpecError
from raysweep.plan.resources import ClusterResources
from raysweep.plan.run_identity import run_directory
from raysweep.plan.searches import (
    asha_rungs,
    check_fits,
    search_concurrency,
    search_resources,
)
from raysweep.search.outputs import read_default, write_default, write_outputs
from raysweep.search.pruning import ProxyPruned, ProxyPruner
from raysweep.search.searcher import StudySearcher
from raysweep.search.space import distributions, trial_run, trial_settings
from raysweep.search.study import (
    SearchBusyError,
    finished_trials,
    open_study,
    recover_interrupted,
    study_name,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

DIGITS = {"sources": [{"kind": "digits", "classes": ["0", "1", "2"]}], "image_size": 16,
          "test_fraction": 0.3, "label_count": 60}
SPACE = {"pretrain.lambda_offdiag": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
         "pretrain.epochs": {"type": "int", "low": 1, "high": 3},
         "pretrain.augmentation": {"type": "choice", "choices": ["barlow_twins", "simclr"]},
         "evaluate.lr_max": {"type": "uniform", "low": 0.01, "high": 0.1}}


def experiment(tmp_path: Path, **search) -> dict:
    return {"name": "s", "storage": str(tmp_path), "search": [{
        "name": "bt",
        "pretrain": {"name": "bt", "data": DIGITS, "encoder": {"name": "small_resnet"},
                     "further": False, "epochs": 4, "batch_size": 32, "lr_max": 1e-3,
                     "projector": [32, 32]},
        "evaluate": {"data": DIGITS, "seeds": 3},
        "space": SPACE, **search}]}


def one_search(tmp_path: Path, **search):
    spec = spec_from_data(experiment(tmp_path, **search))
    return spec, spec.search[0]


@pytest.mark.parametrize(("space", "message"), [
    ({"pretrain.lamda_offdiag": {"type": "uniform", "low": 0, "high": 1}},
     "space.pretrain.lamda_offdiag: cannot be searched: PretrainSpec has no field "
     "'lamda_offdiag' (did you mean 'lambda_offdiag'?)"),
    ({"pretrain.strength": {"type": "uniform", "low": 0.5, "high": 3}},
     "space.pretrain.strength: value 3.0: must be in [0.0, 2.0], got 3.0"),
    ({"pretrain.alpha": {"type": "uniform", "low": -1, "high": 1}},
     "space.pretrain.alpha: value -1.0: must be >= 0, got -1.0"),
    ({"pretrain.epochs": {"type": "uniform", "low": 1, "high": 3}},
     "space.pretrain.epochs: is an integer field: use type int or choice"),
    ({"pretrain.data": {"type": "choice", "choices": [1, 2]}},
     "space.pretrain.data: cannot be searched: 'data' is not a single value"),
    ({"pretrain.name": {"type": "choice", "choices": ["a", "b"]}},
     "space.pretrain.name: cannot be searched: it names the run"),
    ({"lambda": {"type": "uniform", "low": 0, "high": 1}},
     "space.lambda: cannot be searched: use pretrain.<field> or evaluate.<setting>"),
    ({"evaluate.augmentation": {"type": "choice", "choices": ["supervised", "flip"]}},
     "space.evaluate.augmentation: value 'flip': unknown pipeline 'flip'"),
])
def test_a_bad_space_is_one_line_naming_the_key(tmp_path: Path, space: dict,
                                                message: str) -> None:
    data = experiment(tmp_path)
    data["search"][0]["space"] = space
    with pytest.raises(SpecError) as err:
        spec_from_data(data, source="spec.yaml")
    assert str(err.value).startswith(f"spec.yaml: search[0].{message}")
    assert "\n" not in str(err.value)


def test_nested_fields_and_evaluation_settings_are_searchable(tmp_path: Path) -> None:
    data = experiment(tmp_path)
    data["search"][0]["space"] = {
        "pretrain.data.image_size": {"type": "int", "low": 8, "high": 16}, **SPACE}
    search = spec_from_data(data).search[0]
    params = {"pretrain.data.image_size": 8, "pretrain.lambda_offdiag": 0.02,
              "pretrain.epochs": 2, "pretrain.augmentation": "simclr", "evaluate.lr_max": 0.05}
    run = trial_run(search, params)
    assert (run.data.image_size, run.lambda_offdiag, run.epochs, run.augmentation) == (
        8, 0.02, 2, "simclr")
    assert trial_settings(search, params).lr_max == 0.05
    assert search.pretrain.data.image_size == 16  # the base is unchanged


def test_distributions_follow_the_spec(tmp_path: Path) -> None:
    _, search = one_search(tmp_path)
    dists = distributions(search.space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    draws = [study.ask(dists).params for _ in range(200)]
    lam = np.array([d["pretrain.lambda_offdiag"] for d in draws])
    assert lam.min() >= 1e-3 and lam.max() <= 1e-1
    # log-uniform: about half of the draws below the geometric mean 1e-2
    assert 0.4 < np.mean(lam < 1e-2) < 0.6
    assert {d["pretrain.epochs"] for d in draws} == {1, 2, 3}  # both bounds included
    assert {d["pretrain.augmentation"] for d in draws} == {"barlow_twins", "simclr"}
    assert all(0.01 <= d["evaluate.lr_max"] <= 0.1 for d in draws)


def test_trial_runs_are_named_by_content_not_by_tune_trial(tmp_path: Path) -> None:
    _, search = one_search(tmp_path)
    _, plain = one_search(tmp_path, scheduler="none")
    a = {"pretrain.lambda_offdiag": 0.01, "pretrain.epochs": 2,
         "pretrain.augmentation": "barlow_twins", "evaluate.lr_max": 0.05}
    b = {**a, "pretrain.lambda_offdiag": 0.02}
    evaluation_only = {**a, "evaluate.lr_max": 0.07}
    directory = run_directory(trial_run(search, a), tmp_path)
    assert directory == run_directory(trial_run(search, dict(a)), tmp_path)
    assert directory != run_directory(trial_run(search, b), tmp_path)
    # evaluation settings and the ASHA proxy do not change what is pre-trained
    assert directory == run_directory(trial_run(search, evaluation_only), tmp_path)
    assert directory == run_directory(trial_run(plain, a), tmp_path)
    asha_run = trial_run(search, a)
    assert asha_run.proxy_every == 1 and asha_run.proxy_data == search.evaluate.data
    assert trial_run(plain, a).proxy_every == 0
    assert directory.name.startswith("bt-")


def test_concurrency_counts_each_driver_cpu(tmp_path: Path) -> None:
    spec, search = one_search(tmp_path)
    two = ClusterResources(cpus=2, gpus=0)
    res = search_resources(spec, search, two)
    assert res.cpus == 2  # the Tune driver's CPU + one single-CPU worker
    assert search_concurrency(res, two) == 1
    assert search_concurrency(res, ClusterResources(cpus=9, gpus=0)) == 4
    assert search_concurrency(res, ClusterResources(cpus=9, gpus=0), cap=3) == 3
    wide_search = search.replace(**{"pretrain.num_workers": 2,
                                    "pretrain.resources_per_worker": {"CPU": 2}})
    wide_res = search_resources(spec, wide_search, ClusterResources(cpus=16, gpus=0))
    assert wide_res.cpus == 5 and search_concurrency(wide_res, ClusterResources(16, 0)) == 3
    with pytest.raises(SpecError, match="needs 5 CPUs"):
        check_fits(wide_search, wide_res, ClusterResources(cpus=4, gpus=0))
    # GPUs: whole GPUs per DDP worker; the scoring task's share is not held at the same time
    gpu = search.replace(**{"pretrain.num_workers": 2, "pretrain.use_gpu": True})
    gpu_res = search_resources(spec, gpu, ClusterResources(cpus=32, gpus=4))
    assert (gpu_res.gpus, gpu_res.probe.gpu) == (2, 0.25)
    assert search_concurrency(gpu_res, ClusterResources(cpus=32, gpus=4)) == 2


def test_asha_rungs(tmp_path: Path) -> None:
    _, search = one_search(tmp_path)  # 4 epochs from scratch, grace 1, reduction 3
    assert asha_rungs(search) == [1, 3]
    further = search.replace(**{"pretrain.further": True, "pretrain.frozen_epochs": 1,
                                "pretrain.epochs": 20, "grace_period": 2})
    assert asha_rungs(further) == [3, 9]  # the frozen epoch counts; 27 >= 21 epochs
    assert asha_rungs(search.replace(reduction_factor=4)) == [1]


def _journal_study(tmp_path: Path, search, name: str = "study"):
    return open_study(tmp_path, search, name)


def test_asha_stops_a_trial_behind_the_best_at_its_rung(tmp_path: Path) -> None:
    _, search = one_search(tmp_path, reduction_factor=2)
    study = _journal_study(tmp_path, search)
    base = ProxyPruner(journal=str(tmp_path / "study.journal"), study_name="study",
                       trial_number=-1, min_resource=1, reduction_factor=2, total_epochs=4)
    numbers = [study.ask(distributions(search.space)).number for _ in range(4)]

    def check(number: int, epochs: int, proxy: float) -> bool:
        try:
            dataclasses.replace(base, trial_number=number).check(epochs, proxy)
        except ProxyPruned as stop:
            assert (stop.epochs_done, stop.proxy) == (epochs, proxy)
            return True
        return False

    assert not check(numbers[0], 1, 0.80)  # first at the rung: promoted
    assert check(numbers[1], 1, 0.70)      # behind the best of fewer than 2 values
    assert not check(numbers[2], 1, 0.90)  # the best so far
    # 4 values at rung 1 -> the top half (0.85, 0.90) go on
    assert not check(numbers[3], 1, 0.85)
    assert not check(numbers[0], 2, 0.10)  # rung 2 is epoch 2: first there
    assert not check(numbers[2], 4, 0.0)   # never stopped at its last epoch
    trial = study.get_trials(deepcopy=False)[numbers[1]]
    assert trial.intermediate_values == {1: 0.70}
    # a minimising study sees 1 - accuracy, so a higher accuracy is still better
    assert dataclasses.replace(base, maximize=False).intermediate(0.8) == pytest.approx(0.2)


def test_searcher_records_complete_pruned_failed_and_leaves_interrupted(tmp_path: Path) -> None:
    _, search = one_search(tmp_path)
    study = _journal_study(tmp_path, search)
    defaults = []
    searcher = StudySearcher(study, distributions(search.space), n_trials=4,
                             include_default=True,
                             on_default=lambda result, error: defaults.append(result))
    assert searcher.suggest("d")["role"] == "default"
    configs = [searcher.suggest(f"t{i}") for i in range(4)]
    assert searcher.suggest("t4") is searcher.FINISHED
    assert [c["number"] for c in configs] == [0, 1, 2, 3]
    assert all(set(c["params"]) == set(search.space) for c in configs)
    # ASHA stops trial 1 from inside its run (another process), after trial 0 led the rung
    pruner = ProxyPruner(journal=str(tmp_path / "study.journal"), study_name="study",
                         trial_number=0, min_resource=1, reduction_factor=2, total_epochs=4,
                         pretrain_run="bt-def")
    pruner.check(1, 0.9)
    with pytest.raises(ProxyPruned):
        dataclasses.replace(pruner, trial_number=1).check(1, 0.3)
    searcher.on_trial_complete("d", {"objective": 0.5, "values_per_seed": [0.4, 0.6]})
    assert defaults == [{"objective": 0.5, "values_per_seed": [0.4, 0.6]}]
    searcher.on_trial_complete("t0", {"objective": 0.7, "values_per_seed": [0.6, 0.8],
                                      "seeds": [0, 1], "epochs_done": 4, "mean_accuracy": 0.75,
                                      "pretrain_run": "bt-abc"})
    searcher.on_trial_complete("t1", {"epochs_done": 1, "proxy_knn_acc": 0.3})
    searcher.on_trial_complete("t2", None, error=True)
    searcher.on_trial_complete("t3", {"epochs_done": 2, "proxy_knn_acc": 0.5})  # Ctrl-C
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED,
                                         TrialState.FAIL, TrialState.RUNNING]
    assert trials[0].value == 0.7
    assert trials[0].user_attrs["values_per_seed"] == [0.6, 0.8]
    assert trials[0].user_attrs["metric_means"] == {"accuracy": 0.75}
    assert trials[0].user_attrs["pretrain_run"] == "bt-abc"
    assert trials[1].user_attrs["epochs_done"] == 1
    assert trials[1].user_attrs["pretrain_run"] == "bt-def"
    assert trials[1].intermediate_values == {1: 0.3}
    assert [t.number for t in finished_trials(study)] == [0, 1, 2]


def test_a_killed_runs_trials_are_asked_again(tmp_path: Path) -> None:
    _, search = one_search(tmp_path)
    study = _journal_study(tmp_path, search)
    done = study.ask(distributions(search.space))
    study.tell(done, 0.5)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    killed = study.ask(distributions(search.space))
    killed.set_user_attr("runner", {"host": socket.gethostname(), "pid": int(dead.stdout),
                                    "since": "then"})
    reopened = open_study(tmp_path, search, "study")  # a new process opening the journal
    assert recover_interrupted(reopened) == [killed.number]
    assert reopened.get_trials(deepcopy=False)[killed.number].state == TrialState.FAIL
    retry = reopened.ask(distributions(search.space))
    assert retry.params == killed.params and retry.user_attrs["retry_of"] == killed.number
    assert [t.number for t in finished_trials(reopened)] == [done.number]
    # a runner that is still alive on this host is refused, not recovered
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        try:
            retry.set_user_attr("runner", {"host": socket.gethostname(), "pid": live.pid,
                                           "since": "now"})
            with pytest.raises(SearchBusyError, match=f"pid {live.pid}"):
                recover_interrupted(open_study(tmp_path, search, "study"))
        finally:
            live.kill()


def test_a_resumed_sampler_does_not_repeat_the_first_draws(tmp_path: Path) -> None:
    _, search = one_search(tmp_path, seed=5)
    first = _journal_study(tmp_path, search)
    drawn = [first.ask(distributions(search.space)) for _ in range(2)]
    for trial in drawn:
        first.tell(trial, 0.5)
    resumed = open_study(tmp_path, search, "study")
    again = resumed.ask(distributions(search.space)).params
    assert all(again != t.params for t in drawn)
    fresh = open_study(tmp_path / "other", search, "study")
    assert fresh.ask(distributions(search.space)).params == drawn[0].params  # same seed


def test_study_name_follows_what_the_values_mean(tmp_path: Path) -> None:
    _, search = one_search(tmp_path)
    name = study_name(search)
    assert name.startswith("bt-") and name == study_name(search)
    for same in ({"num_samples": 50}, {"max_concurrent_trials": 2}, {"scheduler": "none"},
                 {"seed": 9}):
        assert study_name(search.replace(**same)) == name
    for other in ({"metric": "accuracy"}, {"evaluate.seeds": 5},
                  {"pretrain.batch_size": 64}):
        assert study_name(search.replace(**other)) != name
    assert study_name(search, weights_digest="ab") != name


def test_validation_split_keeps_the_test_split_apart(tmp_path: Path, monkeypatch) -> None:
    from raysweep.config import DatasetSpec
    from raysweep.data import load_dataset
    from raysweep.ssl.pretrain.proxy import HOLDOUT_FRACTION, validation_split

    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    dataset = load_dataset(DatasetSpec(**DIGITS), progress=False)
    fit, fit_labels, val, val_labels = validation_split(dataset)
    test = set(dataset.indices("test").tolist())
    assert not (set(val) | set(fit)) & test
    assert not set(val) & set(fit)
    assert set(val) | set(fit) == set(dataset.train_labelled.tolist())
    per_class = np.bincount(dataset.labels[dataset.train_labelled])
    assert np.bincount(val_labels).tolist() == [
        int(np.floor(HOLDOUT_FRACTION * n + 0.5)) for n in per_class]
    assert np.array_equal(val_labels, dataset.labels[val])
    again = validation_split(load_dataset(DatasetSpec(**DIGITS), progress=False))
    assert np.array_equal(again[2], val)
    # data with a validation split of its own: that split, whole
    with_val = load_dataset(DatasetSpec(**{**DIGITS, "val_fraction": 0.2}), progress=False)
    _, _, own_val, _ = validation_split(with_val)
    labelled_val = with_val.indices("val")
    assert np.array_equal(np.sort(own_val), labelled_val)


def _filled_study(tmp_path: Path, search):
    """A study of 4 trials (3 complete with per-seed values, 1 pruned) and the default."""
    study = open_study(tmp_path, search, study_name(search))
    dists = distributions(search.space)
    values = [[0.60, 0.62, 0.64], [0.70, 0.74, 0.72], [0.50, 0.52, 0.51]]
    for per_seed in values:
        trial = study.ask(dists)
        trial.set_user_attr("values_per_seed", per_seed)
        trial.set_user_attr("seeds", [0, 1, 2])
        trial.report(0.8, step=1)
        study.tell(trial, float(np.mean(per_seed)))
    pruned = study.ask(dists)
    pruned.report(0.3, step=1)
    study.tell(pruned, state=TrialState.PRUNED)
    write_default(tmp_path, study.study_name, search,
                  {"objective": 0.62, "values_per_seed": [0.61, 0.63, 0.62], "seeds": [0, 1, 2]})
    return study, values


def test_outputs_describe_the_whole_study(tmp_path: Path) -> None:
    _, search = one_search(tmp_path)
    study, values = _filled_study(tmp_path, search)
    record = write_outputs(tmp_path, study, search)
    table = pd.read_parquet(tmp_path / "trials.parquet")
    assert table["state"].tolist() == ["complete", "complete", "complete", "pruned"]
    assert table["value"].iloc[:3].tolist() == pytest.approx([np.mean(v) for v in values])
    assert math.isnan(table["value"].iloc[3])
    assert table[["value_seed0", "value_seed1", "value_seed2"]].iloc[1].tolist() == values[1]
    assert table["proxy_last"].tolist() == [0.8, 0.8, 0.8, 0.3]
    assert (table["duration_s"] >= 0).all()
    assert pd.read_csv(tmp_path / "trials.csv")["state"].tolist() == table["state"].tolist()
    best = json.loads((tmp_path / "best.json").read_text())
    assert best == json.loads(json.dumps(record))
    assert best["best"]["trial"] == 1 and best["best"]["values_per_seed"] == values[1]
    assert best["states"] == {"complete": 3, "pruned": 1}
    assert best["default"]["value"] == 0.62 and best["study_name"] == study.study_name
    pasted = yaml.safe_load((tmp_path / "best.yaml").read_text())
    trial = study.best_trial
    assert pasted == {
        "pretrain": {k.split(".", 1)[1]: v for k, v in trial.params.items()
                     if k.startswith("pretrain.")},
        "evaluate": {"lr_max": trial.params["evaluate.lr_max"]}}
    assert read_default(tmp_path, "another-study") is None


def test_search_report_section(tmp_path: Path) -> None:
    from raysweep.report import write_report
    from raysweep.report.search_section import paired_comparison

    spec, search = one_search(tmp_path)
    folder = spec.directory / "search" / search.name
    study, values = _filled_study(folder, search)
    write_outputs(folder, study, search)
    paths = write_report(spec.directory)  # an experiment of searches only
    html = paths.html.read_text(encoding="utf-8")
    assert "Search bt" in html and "Best vs default" in html and "stopped early by ASHA" in html
    assert {p.name for p in paths.figures} == {"search-bt-history.png",
                                                "search-bt-importance.png",
                                                "search-bt-slice.png"}
    test = pd.read_csv(paths.tables["search-bt-paired-test"]["csv"])
    best, default = np.array(values[1]), np.array([0.61, 0.63, 0.62])
    reference = sps.ttest_rel(best, default)
    diff = best - default
    half = sps.t.ppf(0.975, 2) * diff.std(ddof=1) / np.sqrt(3)
    assert test.loc[0, "p_paired_t"] == pytest.approx(reference.pvalue)
    assert test.loc[0, "mean_diff"] == pytest.approx(diff.mean())
    assert (test.loc[0, "ci_low"], test.loc[0, "ci_high"]) == pytest.approx(
        (diff.mean() - half, diff.mean() + half))
    assert math.isnan(paired_comparison(np.ones(3), np.ones(3))["p_paired_t"])
    importances = pd.read_csv(paths.tables["search-bt-importances"]["csv"])
    assert set(importances["parameter"]) <= set(search.space)
    assert importances["importance"].sum() == pytest.approx(1.0)


def test_dry_run_describes_each_search(tmp_path: Path) -> None:
    from raysweep.plan.trials import make_plan

    spec, _ = one_search(tmp_path, num_samples=6)
    text = make_plan(spec, ClusterResources(cpus=2, gpus=0)).describe()
    assert "bt: Optuna TPE (seed 0), 6 trials + the default configuration" in text
    assert "ASHA on proxy_knn_acc after epoch(s) 1, 3 (keeps 1/3)" in text
    assert "pretrain.lambda_offdiag: loguniform [0.001, 0.1]" in text
    assert "pretrain.augmentation: choice 'barlow_twins', 'simclr'" in text
    assert "budget: at most 7 x 4 pre-training epochs" in text
    assert "1 CPU (Tune driver) + 1 worker(s) x 1 CPU" in text
    assert "up to 1 trial(s) at once" in text
    assert not (tmp_path / "s").exists()  # a dry run writes nothing


def test_proxy_is_reported_in_the_frozen_epochs_too(tmp_path: Path, monkeypatch) -> None:
    from raysweep.config import DatasetSpec, EncoderSpec, PretrainSpec
    from raysweep.ssl.pretrain import LocalHooks, pretrain_worker
    from raysweep.ssl.pretrain.loop import TrainingData

    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    spec = PretrainSpec(name="p", data=DatasetSpec(**DIGITS),
                        encoder=EncoderSpec(name="small_resnet"), projector=(16, 16),
                        batch_size=8, further=True, frozen_epochs=1, epochs=2, lr_max=1e-3,
                        proxy_every=1, proxy_data=DatasetSpec(**DIGITS))
    images = np.random.default_rng(0).integers(0, 256, (8, 1, 16, 16), dtype=np.uint8)
    hooks = LocalHooks(tmp_path / "run")
    pretrain_worker(spec, hooks, data=TrainingData(images, np.arange(8)),
                    transform=lambda x, generator: (x, x.flip(-1)))
    assert [r["phase"] for r in hooks.reported] == ["frozen", "train", "train"]
    assert all(0 <= r["proxy_knn_acc"] <= 1 for r in hooks.reported)
    every_other = spec.replace(proxy_every=2, epochs=3)
    hooks = LocalHooks(tmp_path / "run2")
    pretrain_worker(every_other, hooks, data=TrainingData(images, np.arange(8)),
                    transform=lambda x, generator: (x, x.flip(-1)))
    # every 2nd epoch counting the frozen one, and always the last
    assert ["proxy_knn_acc" in r for r in hooks.reported] == [False, True, False, True]


def test_search_cli_prints_the_best_yaml_last(tmp_path: Path, monkeypatch, capsys) -> None:
    import raysweep.api as api_module
    from raysweep.cli import main
    from raysweep.search.stage import SearchOutcome

    spec, search = one_search(tmp_path)
    folder = spec.directory / "search" / search.name
    study, _ = _filled_study(folder, search)
    record = write_outputs(folder, study, search)
    outcome = SearchOutcome(search=search, directory=folder, study_name=study.study_name,
                            record=record, n_new=0, seconds=1.0)
    monkeypatch.setattr(api_module, "run_searches", lambda spec, only=None: ([outcome], None))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(experiment(tmp_path)))
    assert main(["search", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("search bt: 4/20 trials finished (0 in 1 s), "
                                          "1 stopped early by ASHA, 0 failed; best f1_weighted")
    tail = out[out.index("# best of search bt"):]
    assert yaml.safe_load(tail) == yaml.safe_load((folder / "best.yaml").read_text())
    assert os.path.exists(folder / "best.yaml")


def test_a_search_whose_every_trial_failed_ends_in_one_line(tmp_path: Path) -> None:
    """The first trial's own error (found inside Ray's wrapper), the search and its log."""
    from raysweep.errors import DataError, TrialError
    from raysweep.search.stage import search_failure

    _, search = one_search(tmp_path)
    wrapped = RuntimeError("Traceback (most recent call last):\n  ... many lines")
    wrapped.__cause__ = DataError("digits: image 3 cannot be decoded")
    results = [dataclasses.make_dataclass("Result", ["error", "path"])(None, "/t/ok"),
               dataclasses.make_dataclass("Result", ["error", "path"])(wrapped, "/t/trial_1")]
    failure = search_failure(search, results)
    assert isinstance(failure, TrialError) and failure.user_error
    assert str(failure) == ("every trial of search bt failed: digits: image 3 cannot be "
                            "decoded; log: /t/trial_1")
    assert failure.__cause__ is wrapped


def test_a_search_from_a_pretrain_run_starts_from_its_finished_encoder(tmp_path: Path) -> None:
    import hashlib

    from raysweep.plan.run_identity import pretrain_run_dir
    from raysweep.search.stage import resolve_base_weights
    from raysweep.store.run_dirs import ENCODER_FILE, META_FILE, METRICS_FILE

    data = experiment(tmp_path)
    data["pretrain"] = [{"name": "base", "data": DIGITS, "encoder": {"name": "small_resnet"},
                         "further": False, "epochs": 1, "batch_size": 32, "projector": [32, 32]}]
    data["search"][0]["pretrain"]["encoder"] = {"name": "small_resnet", "weights": "pretrain:base"}
    spec = spec_from_data(data)
    with pytest.raises(SpecError, match="pretrain run 'base', which has not finished"):
        resolve_base_weights(spec, spec.search[0])
    run_dir = pretrain_run_dir(spec, spec.pretrain[0])
    run_dir.mkdir(parents=True)
    (run_dir / ENCODER_FILE).write_bytes(b"encoder bytes")
    (run_dir / METRICS_FILE).write_text("{}\n")
    (run_dir / META_FILE).write_text(json.dumps({"status": "finished"}))
    assert resolve_base_weights(spec, spec.search[0]) == (
        f"file:{run_dir / ENCODER_FILE}", hashlib.sha256(b"encoder bytes").hexdigest())
