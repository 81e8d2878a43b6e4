"""The notebook surface of raysweep.

Every function takes a spec as a path to a YAML file, a plain mapping, or an
:class:`~raysweep.config.ExperimentSpec`, validates it, and runs or returns what the matching CLI
command would::

    from raysweep import api
    spec = api.load("search_spaces/paper_isic.yaml")
    print(api.plan(spec).describe())      # raysweep run --dry-run
    tuner = api.build_tuner(spec)         # the evaluate stage's ray.tune.Tuner
    summary = api.run(spec)               # raysweep run
    api.report(spec.directory)            # raysweep report
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raysweep.config import ExperimentSpec, ReportSpec, load_spec, spec_from_data
from raysweep.errors import OutputError
from raysweep.experiment.demo import demo_search_spec, demo_spec
from raysweep.experiment.runner import (
    consolidate_results,
    ensure_ray,
    holding,
    run_evaluate_stage,
    run_experiment,
    run_searches,
)
from raysweep.plan.preflight import check as check_files
from raysweep.plan.preflight import directory_problem, experiment_links_problem
from raysweep.plan.trials import make_plan
from raysweep.report import report_from_stats as _from_stats
from raysweep.report.from_stats import from_stats_display
from raysweep.report.tables import markdown_table
from raysweep.stages.evaluate import build_tuner as _build_tuner
from raysweep.stages.pretrain import run_pretrain_stage
from raysweep.stages.report import write_report_at
from raysweep.storage.paths import AnyPath, StoragePath, storage_path
from raysweep.store.results import ResultsStore

SpecLike = ExperimentSpec | Mapping[str, Any] | str | os.PathLike[str] | StoragePath


def load(spec: SpecLike) -> ExperimentSpec:
    """A validated :class:`ExperimentSpec` from a path, a mapping or a spec."""
    if isinstance(spec, ExperimentSpec):
        return spec
    if isinstance(spec, Mapping):
        return spec_from_data(spec)
    return load_spec(spec)


def source_of(spec: SpecLike) -> str:
    """How messages name ``spec``: its file, else ``<spec NAME>`` / ``<spec>``."""
    if isinstance(spec, ExperimentSpec):
        return f"<spec {spec.name}>"
    if isinstance(spec, Mapping):
        return "<spec>"
    return str(spec)


def check(spec: SpecLike) -> ExperimentSpec:
    """The validated spec, after checking the files it names (data, weights, storage).

    Raises :class:`~raysweep.errors.Problems` listing every problem, one line each, before
    anything is written or trained (``raysweep validate`` and the start of every stage)."""

    experiment = load(spec)
    check_files(experiment, source_of(spec))
    return experiment


def plan(spec: SpecLike):
    """The plan (stages, trials, resources) without running anything."""

    return make_plan(load(spec))


def build_tuner(spec: SpecLike):
    """A fresh ``ray.tune.Tuner`` over the evaluate stage's trials that still have rows to
    compute (all of them the first time; only the missing ones after an interruption or a
    change of the spec).

    Its pretrain runs must have finished (``pretrain(spec)``) when it evaluates their encoders.
    Unlike :func:`run`, fitting it does not take the experiment's lock.
    """

    ensure_ray()
    return _build_tuner(load(spec))


def run(spec: SpecLike):
    """Run every unfinished stage; returns a :class:`~raysweep.experiment.runner.RunSummary`."""

    return run_experiment(check(spec))


def pretrain(spec: SpecLike, *, only: list[str] | None = None) -> list:
    """Run (or skip, when finished) the pretrain stage; one result per run."""

    experiment = check(spec)
    with holding(experiment):
        ensure_ray()
        return run_pretrain_stage(experiment, only=only)


def evaluate(spec: SpecLike) -> AnyPath:
    """Run the evaluate stage and consolidate ``results.parquet``; returns its path."""

    experiment = check(spec)
    with holding(experiment):
        ensure_ray()
        outcome = run_evaluate_stage(experiment)
        consolidate_results(experiment, outcome.refs)
    return ResultsStore(experiment.directory).parquet_path


def report(experiment_dir: str | os.PathLike[str], *, out_dir: str | None = None,
           spec: SpecLike | None = None, correction: str | None = None,
           alpha: float | None = None):
    """Write the significance report of an experiment directory; returns its paths.

    The report settings come from ``spec`` when given, else from the ``experiment.yaml`` that
    ``run`` stored in the directory, else the defaults; ``correction`` and ``alpha``, when
    given, replace theirs.
    """

    directory = storage_path(experiment_dir)
    links = experiment_links_problem(directory)  # neither read nor write through a link out
    if links:
        raise OutputError(links)
    stored = directory / "experiment.yaml"
    experiment = load(spec) if spec is not None else (load(stored) if stored.is_file() else None)
    settings = experiment.report if experiment is not None else ReportSpec()
    changes = {k: v for k, v in (("correction", correction), ("alpha", alpha)) if v is not None}
    settings = settings.replace(**changes) if changes else settings
    out = storage_path(out_dir) if out_dir is not None else directory / "report"
    problem = directory_problem(out, "report directory") if directory.is_dir() else None
    if problem:
        raise OutputError(problem)
    return write_report_at(directory, out_dir=out, settings=settings, spec=experiment)


def report_from_stats(table_csv: str | Path, *, comparisons: str | None = None,
                      correction: str = "holm", alpha: float = 0.05,
                      out: str | None = None) -> str:
    """Welch tests from published means and standard deviations (the authors' computation),
    as a Markdown table laid out like the paper's Tables 13-14."""

    frame = _from_stats(table_csv, comparisons=comparisons, correction=correction, alpha=alpha,
                        out=out)
    return markdown_table(from_stats_display(frame))


def demo(*, smoke: bool = False, storage: str | None = None, search: bool = False):
    """Run the embedded demo study (``raysweep demo``), or with ``search`` the demo search
    (``raysweep demo --search``: returns what :func:`search` returns)."""

    if search:

        return run_searches(demo_search_spec(smoke=smoke, storage=storage))
    return run(demo_spec(smoke=smoke, storage=storage))


def search(spec: SpecLike, *, only: list[str] | None = None):
    """Run the spec's Optuna searches (what is missing of them) and write the report; returns
    ``(outcomes, report path or None)``, one :class:`~raysweep.search.stage.SearchOutcome` per
    search (``best_yaml()``, ``one_line()``, ``record`` = ``best.json``)."""

    return run_searches(check(spec), only=only)
