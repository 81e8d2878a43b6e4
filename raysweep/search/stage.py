"""The search stage: Optuna searches inside Ray Tune over pre-training knobs (Barlow Twins
lambda, sparsity alpha, lr_max, augmentation strength, ...), persisted and resumable.

For each ``search:`` of a spec (``raysweep search SPEC``, and a stage of ``raysweep run``):

1. open its Optuna study in ``<experiment>/search/<name>/study.journal``
   (:mod:`.search_study`; for an experiment in an object store through a local working copy,
   downloaded first and uploaded after every finished trial: :mod:`.search_journal`), recover
   the trials of a killed run, and count what is left of ``num_samples``; a finished search
   does nothing more;
2. run the rest as one fresh ``ray.tune.Tuner`` (no ``Tuner.restore``: the study is the state)
   whose searcher asks the study (:class:`~raysweep.search.searcher.StudySearcher`) and
   whose trials pre-train and score an encoder
   (:func:`~raysweep.search.trial.search_trial`), as many at once as can hold all their
   resources (:mod:`.search_plan`); with ``scheduler: asha`` (the default) ASHA stops trials
   whose per-epoch downstream proxy lags (:mod:`.search_pruning`). With ``compare_default``
   (the default) the base run as written is scored once too, outside the study and never
   stopped early, by the same protocol over the same seeds, so that the report can test the
   best configuration against it;
3. write ``trials.parquet`` / ``.csv``, ``best.json`` and ``best.yaml`` (:mod:`.search_outputs`).

Every artefact (the study, the trials' pre-training runs, Tune's state, the outputs) lives in
the experiment's storage, a local folder or an object store (:mod:`raysweep.storage.paths`).
``raysweep search`` holds the experiment's lock (:mod:`raysweep.store.lock`) as ``raysweep
run`` does, so a search and a run of one experiment never run at once; a search whose trials
all fail ends with one line naming the first failure and its log
(:mod:`raysweep.runtime.failures`).

Using the result: ``raysweep search`` ends by printing ``best.yaml``; paste its ``pretrain:``
keys into a pretrain run (or ``pretrain.base``) of a spec and its ``evaluate:`` keys into
``evaluate.settings``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from raysweep.config import ExperimentSpec, SearchSpec, pretrain_reference
from raysweep.errors import SpecError
from raysweep.plan.resources import ClusterResources
from raysweep.plan.run_identity import pretrain_run_dir
from raysweep.plan.searches import (
    DRIVER_CPUS,
    check_fits,
    search_concurrency,
    search_resources,
    total_epochs,
)
from raysweep.runtime.failures import trial_error
from raysweep.search.journal import StudyJournal, check_journal
from raysweep.search.outputs import (
    TRIALS_PARQUET,
    best_yaml,
    read_default,
    write_default,
    write_outputs,
)
from raysweep.search.pruning import ProxyPruner
from raysweep.search.searcher import OBJECTIVE, StudySearcher
from raysweep.search.space import distributions, proxy_metric
from raysweep.search.study import finished_trials, open_study, recover_interrupted, study_name
from raysweep.search.trial import TrialContext, search_trial
from raysweep.storage.paths import AnyPath, ray_storage
from raysweep.store.run_dirs import is_finished
from raysweep.store.searches import search_directory
from raysweep.tracking.stage import search_callbacks, track_search_runs

__all__ = ["SearchOutcome", "build_search_tuner", "check_search_fits", "run_search",
           "run_search_stage", "search_failure"]


@dataclass(frozen=True)
class SearchOutcome:
    """What one search run did and left."""

    search: SearchSpec
    directory: AnyPath
    study_name: str
    record: dict[str, Any]  # best.json
    n_new: int  # trials finished by this run
    seconds: float

    @property
    def trials_path(self) -> AnyPath:
        return self.directory / TRIALS_PARQUET

    @property
    def journal(self) -> AnyPath:
        """The study's journal in the experiment's storage."""
        return StudyJournal.of(self.directory).home

    def best_yaml(self) -> str:
        return best_yaml(self.search, self.record["best"], self.record["default"])

    def one_line(self) -> str:
        states = self.record["states"]
        finished = sum(states.get(s, 0) for s in ("complete", "pruned", "fail"))
        best, default = self.record["best"], self.record["default"]
        scores = ""
        if best is not None:
            scores = f"; best {self.search.metric} {best['value']:.4f} (trial {best['trial']})"
            if default is not None:
                scores += f", default {default['value']:.4f}"
        return (f"search {self.search.name}: {finished}/{self.search.num_samples} trials "
                f"finished ({self.n_new} in {self.seconds:.0f} s), "
                f"{states.get('pruned', 0)} stopped early by ASHA, {states.get('fail', 0)} "
                f"failed{scores}; trials: {self.trials_path}")


def resolve_base_weights(spec: ExperimentSpec, search: SearchSpec) -> tuple[str | None,
                                                                             str | None]:
    """``(file:PATH, sha256)`` of the base encoder when it starts from this experiment's run
    ``pretrain:NAME`` (which must have finished), else ``(None, None)``."""

    target = pretrain_reference(search.pretrain.encoder.weights)
    if target is None:
        return None, None
    if target not in {run.name for run in spec.pretrain}:
        raise SpecError(f"search {search.name}: pretrain.encoder.weights: no pretrain run "
                        f"named {target!r}")


    parent = next(run for run in spec.pretrain if run.name == target)
    run_dir = pretrain_run_dir(spec, parent)
    if not is_finished(run_dir):
        raise SpecError(f"search {search.name}: its base starts from pretrain run {target!r}, "
                        "which has not finished: run the pretrain stage first")
    encoder = run_dir / "encoder.pt"
    return f"file:{encoder}", hashlib.sha256(encoder.read_bytes()).hexdigest()


def check_search_fits(spec: ExperimentSpec, search: SearchSpec) -> None:
    """On a local Ray instance (which never grows; an autoscaler may), refuse a search whose
    trial can never get all it needs at once, before anything is written."""

    if not os.environ.get("RAY_ADDRESS"):
        cluster = ClusterResources.detect()
        check_fits(search, search_resources(spec, search, cluster), cluster)


def build_search_tuner(spec: ExperimentSpec, search: SearchSpec, study: Any, *,
                       n_trials: int, include_default: bool, base_weights: str | None = None,
                       journal: StudyJournal | None = None):
    """The ``ray.tune.Tuner`` running ``n_trials`` more trials of ``study`` (and the default
    first when ``include_default``); ``journal``: where ``study`` is kept (default: in the
    search's folder)."""


    directory = search_directory(spec, search)
    journal = journal or StudyJournal.of(directory)
    cluster = ClusterResources.detect()
    resources = search_resources(spec, search, cluster)
    check_search_fits(spec, search)
    proxy = proxy_metric(search)
    pruner = None
    if proxy is not None:
        epochs = total_epochs(search)
        # A working copy is on this node's disk: reports from other nodes' controllers go here.
        node = ray.get_runtime_context().get_node_id() if journal.is_copy else None  # RAY
        pruner = ProxyPruner(journal=str(journal.local), study_name=study.study_name,
                             trial_number=-1, min_resource=epochs - search.pretrain.epochs
                             + search.grace_period, reduction_factor=search.reduction_factor,
                             total_epochs=epochs, maximize=search.mode == "max", node_id=node)

    def on_default(result: dict[str, Any] | None, error: bool) -> None:

        if not error and result and OBJECTIVE in result:
            write_default(directory, study.study_name, search, result)

    searcher = StudySearcher(study, distributions(search.space), n_trials=n_trials,
                             include_default=include_default, on_default=on_default,
                             on_finished=journal.upload)
    context = TrialContext(search=search, run_root=directory, base_weights=base_weights,
                           proxy=proxy, pruner=pruner, probe_cpus=resources.probe.cpu,
                           probe_gpus=resources.probe.gpu)
    trainable = tune.with_resources(tune.with_parameters(search_trial, context=context),
                                    {"cpu": DRIVER_CPUS})
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=n_trials + int(include_default),
            max_concurrent_trials=search_concurrency(resources, cluster,
                                                     search.max_concurrent_trials)),
        run_config=tune.RunConfig(name="tune", **ray_storage(directory),
                                  callbacks=search_callbacks(spec, search.name)),
    )


def run_search(spec: ExperimentSpec, search: SearchSpec) -> SearchOutcome:
    """Run what is missing of one search (nothing when it has finished); write its outputs."""
    started = time.perf_counter()
    directory = search_directory(spec, search)
    base_weights, digest = resolve_base_weights(spec, search)
    journal = StudyJournal.of(directory)
    journal.download()
    try:
        study = open_study(journal.local.parent, search, study_name(search, digest))
        recovered = recover_interrupted(study)
        if recovered:
            print(f"search {search.name}: trial(s) {', '.join(map(str, recovered))} were "
                  "interrupted; their parameters are asked again", file=sys.stderr)
        done_before = len(finished_trials(study))
        remaining = max(0, search.num_samples - done_before)
        include_default = (search.compare_default
                           and read_default(directory, study.study_name) is None)
        if remaining or include_default:
            grid = build_search_tuner(spec, search, study, n_trials=remaining,
                                      include_default=include_default,
                                      base_weights=base_weights, journal=journal).fit()
            if grid.num_errors and grid.num_errors == len(grid):
                raise search_failure(search, grid)
        record = write_outputs(directory, study, search)
        track_search_runs(spec, search.name, directory)  # tracking: the trials' pre-training
    finally:
        journal.upload()  # also after an error or a Ctrl-C: every finished trial is kept
    return SearchOutcome(search=search, directory=directory, study_name=study.study_name,
                         record=record, n_new=len(finished_trials(study)) - done_before,
                         seconds=time.perf_counter() - started)


def search_failure(search: SearchSpec, grid: Any):
    """The one-line :class:`~raysweep.errors.TrialError` of a search whose every trial
    failed: the first trial's own error, and its log."""

    first = next(r for r in grid if r.error is not None)
    return trial_error(first.error, what=f"every trial of search {search.name}",
                       log=getattr(first, "path", None))


def run_search_stage(spec: ExperimentSpec, *, only: list[str] | None = None
                     ) -> list[SearchOutcome]:
    """Every ``search:`` of ``spec`` (or those named in ``only``), one after the other (the
    caller holds the experiment's lock)."""
    return [run_search(spec, search) for search in _selected(spec, only)]


def _selected(spec: ExperimentSpec, only: list[str] | None) -> list[SearchSpec]:
    """The searches of ``spec`` named in ``only`` (all when None); SpecError for an unknown
    name."""
    if only:
        unknown = sorted(set(only) - {s.name for s in spec.search})
        if unknown:
            raise SpecError(f"{spec.name}: no search named {unknown[0]!r}")
    return [search for search in spec.search if not only or search.name in only]


def check_stored_journal(spec: ExperimentSpec, search: SearchSpec) -> None:
    """:class:`~raysweep.storage.reading.StoredFileError` when the local journal of ``search`` exists
    but is not one Optuna replays (:func:`~raysweep.search.journal.check_journal`); an
    object-store journal is checked once downloaded (:func:`raysweep.search.study.open_storage`)."""
    journal = StudyJournal.of(search_directory(spec, search))
    if not journal.is_copy and os.path.lexists(journal.local):
        check_journal(journal.local, root=Path(spec.directory))


