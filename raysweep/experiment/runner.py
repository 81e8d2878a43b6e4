"""One experiment, end to end: pretrain -> evaluate -> search -> results table -> report.

Every stage is idempotent, so running the same spec again (after a crash, a Ctrl-C or a
resubmitted ``ray job submit``) finishes only what is missing and then prints the same paths.
After a change of the spec, exactly the rows (and pre-training runs) it affects are computed
again (:mod:`raysweep.plan.identity`). One runner at a time holds the experiment
(:mod:`raysweep.store.lock`); it starts by removing what killed writers left behind.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from raysweep.config import ExperimentSpec, dump_spec
from raysweep.errors import OutputError, SpecError
from raysweep.plan.identity import identify_trials, planned_refs, unidentified_refs
from raysweep.plan.leakage import record_overlaps
from raysweep.plan.preflight import check_resources, experiment_links_problem
from raysweep.plan.run_identity import pretrain_run_dir
from raysweep.plan.trials import eval_trials, make_plan
from raysweep.runtime.failures import evaluation_failure
from raysweep.runtime.ray_session import ensure_ray
from raysweep.search.stage import (
    SearchOutcome,
    _selected,
    check_search_fits,
    check_stored_journal,
    run_search,
    run_search_stage,
)
from raysweep.stages.evaluate import condition_labels, evaluation_tuners, remove_old_tune_state
from raysweep.stages.pretrain import run_pretrain_stage
from raysweep.stages.report import write_report_at
from raysweep.stages.representation import run_representation_stage
from raysweep.storage.atomic import atomic_write_json, atomic_write_text, remove_stale_temporaries
from raysweep.storage.paths import AnyPath
from raysweep.storage.provenance import provenance
from raysweep.storage.redact import strip_credentials
from raysweep.store.lock import ExperimentLock
from raysweep.store.results import ResultsStore, RowRef, RowStatus
from raysweep.store.run_dirs import is_finished
from raysweep.tracking.stage import track_rows


@dataclass(frozen=True)
class RunSummary:
    """What ``raysweep run`` / ``raysweep demo`` print at the end."""

    experiment_dir: AnyPath
    results: AnyPath
    report: AnyPath | None
    n_rows: int
    n_new_rows: int
    n_pretrain_runs: int
    seconds: float

    def one_line(self) -> str:
        report = f", report: {self.report}" if self.report else ""
        return (f"done in {self.seconds:.0f} s: {self.n_rows} result rows ({self.n_new_rows} new), "
                f"{self.n_pretrain_runs} pretrain runs; results: {self.results}{report}")


def record_experiment(spec: ExperimentSpec) -> None:
    """``experiment.yaml`` (the validated spec), ``provenance.json`` and ``test_overlap.json``
    (the test images pre-training is allowed to see: :mod:`raysweep.plan.leakage`) in the
    experiment dir; the storage URI is recorded without credentials
    (:func:`raysweep.storage.redact.strip_credentials`: they come from the environment of whoever reads
    the experiment)."""

    spec.directory.mkdir(parents=True, exist_ok=True)
    recorded = spec.replace(storage=strip_credentials(spec.storage))
    atomic_write_text(spec.directory / "experiment.yaml", dump_spec(recorded))
    atomic_write_json(spec.directory / "provenance.json", provenance(recorded))
    for overlap in record_overlaps(spec):
        print(f"raysweep: {overlap.statement()}", flush=True)


@contextlib.contextmanager
def holding(spec: ExperimentSpec) -> Iterator[None]:
    """Hold the experiment's lock (one runner at a time; :class:`ExperimentLocked` otherwise),
    clean up after killed writers, and record the spec, for the duration of a run. A symbolic
    link out of the experiment directory is refused first (nothing is written through one)."""

    problem = experiment_links_problem(spec.directory)
    if problem:
        raise OutputError(problem)
    with ExperimentLock(spec.directory):
        if isinstance(spec.directory, Path):  # an object store has no half-written files
            remove_stale_temporaries(spec.directory)
        record_experiment(spec)
        yield


@dataclass(frozen=True)
class EvaluateOutcome:
    """The rows of the current spec, and how many of them this run computed."""

    refs: tuple[RowRef, ...]
    computed: int


def run_evaluate_stage(spec: ExperimentSpec) -> EvaluateOutcome:
    """Compute the evaluate stage's missing rows with a fresh Tuner (the caller holds the
    lock), then the missing representation analyses; say how many stored rows no longer match
    the spec."""

    if spec.evaluate is None:
        return EvaluateOutcome((), 0)
    store = ResultsStore(spec.directory)
    trials = identify_trials(spec)
    refs = tuple(planned_refs(trials))
    before = store.status(refs)
    if before.stale:
        print(f"raysweep: {len(before.stale)} stored rows no longer match the spec (its "
              "settings, data or encoder weights changed): computing them again; the old rows "
              f"stay in {store.rows_dir} but are left out of the results", flush=True)
    if before.missing:
        remove_old_tune_state(spec)
        for tuner in evaluation_tuners(spec, trials):  # a measuring pass first, when needed
            if (failure := evaluation_failure(tuner.fit())) is not None:
                raise failure  # one line: the trial's error, its name and log (--debug: all)
    run_representation_stage(spec)  # once per encoder; writes representations.json
    track_rows(spec, condition_labels(spec), refs)  # what the trackers miss (tracking: on)
    return EvaluateOutcome(refs, len(before.missing) - len(store.status(refs).missing))


def consolidate_results(spec: ExperimentSpec, refs: tuple[RowRef, ...]) -> pd.DataFrame:
    """``results.parquet`` / ``.csv`` of the current spec's rows, labelled by the spec."""

    labels = condition_labels(spec) if spec.evaluate is not None else {}
    return ResultsStore(spec.directory).consolidate(refs, labels)


def stored_state(spec: ExperimentSpec) -> str:
    """What ``raysweep run --dry-run`` adds to the plan: how many pre-training runs have
    finished, and how many of the spec's rows are done, stale or new. Writes nothing."""

    lines = []
    if spec.pretrain:
        finished = 0
        if (spec.directory / "pretrain").is_dir():
            finished = sum(is_finished(pretrain_run_dir(spec, run, save_digests=False))
                           for run in spec.pretrain)
        lines.append(f"pretrain: {finished} of {len(spec.pretrain)} runs finished")
    if spec.evaluate is not None:
        store = ResultsStore(spec.directory)
        if store.rows_dir.is_dir():
            refs = planned_refs(identify_trials(spec, save_digests=False))
            status = store.status(refs)
        else:  # nothing stored: no need to fingerprint the data
            status = RowStatus(new=tuple(unidentified_refs(eval_trials(spec))))
        lines.append(status.describe())
    return "\n".join(lines)


def write_experiment_report(spec: ExperimentSpec) -> AnyPath | None:
    """The report stage: ``report.html`` from ``results.parquet`` (None when no rows)."""

    if not ResultsStore(spec.directory).parquet_path.is_file() and not spec.search:
        return None
    return write_report_at(spec.directory, settings=spec.report).html


def run_experiment(spec: ExperimentSpec) -> RunSummary:
    """Run every stage of ``spec`` that is not finished yet."""

    started = time.perf_counter()
    ExperimentLock(spec.directory).refuse_if_held()  # at once, before Ray starts
    ensure_ray()
    plan = make_plan(spec)
    check_resources(plan.unreachable)  # GPUs the cluster can never offer: before any write
    for search in spec.search:  # a search trial that can never fit: before any write too
        check_search_fits(spec, search)
    with holding(spec):
        for note in plan.notes:  # e.g. requests that wait for the autoscaler's GPU nodes
            print(f"raysweep: {note}", flush=True)
        pretrained = run_pretrain_stage(spec)
        outcome = run_evaluate_stage(spec)
        run_search_stage(spec)
        table = consolidate_results(spec, outcome.refs)
        report = write_experiment_report(spec) if len(table) or spec.search else None
    return RunSummary(experiment_dir=spec.directory,
                      results=ResultsStore(spec.directory).parquet_path, report=report,
                      n_rows=len(table), n_new_rows=outcome.computed,
                      n_pretrain_runs=len(pretrained), seconds=time.perf_counter() - started)


def run_searches(spec: ExperimentSpec, *, only: list[str] | None = None
                 ) -> tuple[list[SearchOutcome], AnyPath | None]:
    """``raysweep search``: run the spec's searches, then write the report, holding the
    experiment's lock as ``raysweep run`` does; returns the outcomes and the report's path
    (None when there is nothing to report)."""

    if not spec.search:
        raise SpecError(f"{spec.name}: no search to run (the spec has no `search:`)")
    selected = _selected(spec, only)
    ExperimentLock(spec.directory).refuse_if_held()  # at once, before Ray starts
    for search in selected:  # a damaged journal: refused before Ray starts
        check_stored_journal(spec, search)
    ensure_ray()
    for search in selected:  # a search that can never run: refused before anything is written
        check_search_fits(spec, search)
    with holding(spec):
        outcomes = [run_search(spec, search) for search in selected]
        return outcomes, write_experiment_report(spec)
