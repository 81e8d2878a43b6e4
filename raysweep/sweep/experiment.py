"""One experiment, end to end: pretrain -> evaluate -> search -> results table -> report.

Every stage is idempotent, so running the same spec again (after a crash, a Ctrl-C or a
resubmitted ``ray job submit``) finishes only what is missing and then prints the same paths.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from raysweep.artefacts import atomic_write_json, atomic_write_text, provenance
from raysweep.config import ExperimentSpec, dump_spec
from raysweep.sweep.results import ResultsStore


@dataclass(frozen=True)
class RunSummary:
    """What ``raysweep run`` / ``raysweep demo`` print at the end."""

    experiment_dir: Path
    results: Path
    report: Path | None
    n_rows: int
    n_new_rows: int
    n_pretrain_runs: int
    seconds: float

    def one_line(self) -> str:
        report = f", report: {self.report}" if self.report else ""
        return (f"done in {self.seconds:.0f} s: {self.n_rows} result rows ({self.n_new_rows} new), "
                f"{self.n_pretrain_runs} pretrain runs; results: {self.results}{report}")


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect to the cluster in ``RAY_ADDRESS`` (``ray job submit`` sets it), or start a
    local Ray instance bound to 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return
    # Workers log at WARNING: Ray Train's per-epoch INFO lines would drown Tune's progress table.
    quiet = ray.LoggingConfig(log_level=os.environ.get("RAYSWEEP_RAY_LOG_LEVEL", "WARNING"))
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_config=quiet)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 logging_config=quiet)


def record_experiment(spec: ExperimentSpec) -> None:
    """``experiment.yaml`` (the validated spec) and ``provenance.json`` in the experiment dir."""
    spec.directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(spec.directory / "experiment.yaml", dump_spec(spec))
    atomic_write_json(spec.directory / "provenance.json", provenance(spec))


def run_evaluate_stage(spec: ExperimentSpec) -> None:
    """Fit the evaluate stage's Tuner (restored when interrupted before)."""
    from raysweep.sweep.evaluate_stage import build_tuner

    if spec.evaluate is None:
        return
    results = build_tuner(spec).fit()
    errors = [r.error for r in results if r.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} evaluation trial(s) failed; first: {errors[0]}")


def write_experiment_report(spec: ExperimentSpec) -> Path | None:
    """The report stage: ``report.html`` from ``results.parquet`` (None when no rows)."""
    from raysweep.report import write_report
    from raysweep.sweep.report_stage import report_settings

    if not ResultsStore(spec.directory).parquet_path.is_file() and not spec.search:
        return None
    paths = write_report(spec.directory, settings=report_settings(spec.report))
    return Path(paths.html)


def run_experiment(spec: ExperimentSpec) -> RunSummary:
    """Run every stage of ``spec`` that is not finished yet."""
    from raysweep.sweep.pretrain_stage import run_pretrain_stage
    from raysweep.sweep.search import run_search_stage

    started = time.perf_counter()
    record_experiment(spec)
    store = ResultsStore(spec.directory)
    rows_before = len(store.rows())
    ensure_ray()
    pretrained = run_pretrain_stage(spec)
    run_evaluate_stage(spec)
    run_search_stage(spec)
    table = store.consolidate()
    report = write_experiment_report(spec) if len(table) or spec.search else None
    return RunSummary(experiment_dir=spec.directory, results=store.parquet_path, report=report,
                      n_rows=len(table), n_new_rows=len(table) - rows_before,
                      n_pretrain_runs=len(pretrained), seconds=time.perf_counter() - started)
