"""``raysweep status EXPERIMENT_DIR``: what is finished, running and missing, from storage alone.

Everything comes from the experiment directory (on shared storage, usually) and the files its
recorded spec names; nothing talks to Ray. It reads:

- ``experiment.yaml``, the spec the last run recorded (so the status is that of the study as
  last submitted, wherever the command runs);
- the lock (:func:`raysweep.store.lock.read_holder`): a live holder is the runner at work
  ("running"); a lock whose holder is gone is reported as stale;
- each pre-training run's directory: ``finished`` (its ``meta.json`` says so), ``checkpoints``
  (Ray Train has saved some: a rerun resumes from the newest), or ``none``;
- the result rows of the recorded spec, identified as a run would identify them
  (:func:`raysweep.plan.identity.identify_trials`), as done, stale (stored under an older
  identity) or missing; and ``results.parquet`` and the report when they exist.

Every file is read back through :mod:`raysweep.storage.reading`: a lock, row, ``meta.json`` or
``results.parquet`` that is unreadable, of the wrong shape, or a symbolic link out of the
experiment is never followed and is named in a ``warning:`` line saying how it was counted
(an unreadable row is missing, not stale). It is read-only and takes no lock, so it can run
while a job holds the experiment: identities
are computed without remembering file digests (``save_digests=False``), nothing is created,
nothing is written. When the data cannot be read where the command runs (a laptop looking at
the cluster's storage), pre-training runs are matched by name and rows counted per key, which
the output says.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from raysweep.config import ExperimentSpec, load_spec
from raysweep.errors import RaysweepError
from raysweep.plan.identity import identify_trials, planned_refs, unidentified_refs
from raysweep.plan.run_identity import pretrain_run_dir
from raysweep.plan.trials import eval_trials
from raysweep.storage.paths import AnyPath, escaping_links, relative_to, storage_path
from raysweep.storage.reading import StoredFileError, check_within, display, read_bytes, read_text
from raysweep.store.lock import LOCK_FILE, ExperimentLocked, Holder, is_stale, read_holder
from raysweep.store.results import ResultsStore, RowRef, RowStatus
from raysweep.store.run_dirs import METRICS_FILE, RAY_RUN_NAME, is_finished, read_meta

__all__ = ["ExperimentStatus", "PretrainRunState", "experiment_status"]

SPEC_FILE = "experiment.yaml"


@dataclass(frozen=True)
class PretrainRunState:
    """One pre-training run: ``finished``, ``checkpoints`` (unfinished, resumable) or
    ``none``; where it lives and how far it got."""

    name: str
    state: str
    run_dir: AnyPath | None
    detail: str = ""


@dataclass(frozen=True)
class ConditionRows:
    """The rows of one (condition, protocol): how many are done, stale and missing."""

    condition: str
    protocol: str
    done: int
    stale: int
    missing: int


@dataclass(frozen=True)
class ExperimentStatus:
    directory: AnyPath
    spec: ExperimentSpec
    holder: Holder | None
    holder_stale: bool
    pretrain: tuple[PretrainRunState, ...]
    rows: RowStatus | None
    by_condition: tuple[ConditionRows, ...]
    unidentified: str | None  # why identities could not be computed here (data unreadable)
    results_rows: int | None
    report: AnyPath | None
    lock_problem: str | None = None  # the lock is a folder or a link out: not read
    results_problem: str | None = None  # why results.parquet could not be read

    @property
    def running(self) -> bool:
        return self.holder is not None and not self.holder_stale

    def describe(self) -> str:
        lines = [f"experiment {self.spec.name!r} in {self.directory} (spec: {SPEC_FILE})"]
        if self.lock_problem:
            lines.append(f"running: unknown ({self.lock_problem})")
        elif self.holder is None:
            lines.append("running: nothing (no runner holds the experiment)")
        elif self.holder_stale:
            lines.append(f"running: nothing; a stale lock of {self.holder.describe()} remains "
                         "(the next run takes it over)")
        else:
            lines.append(f"running: {self.holder.describe()}")
        if self.unidentified:
            lines.append(f"note: {self.unidentified}")
        if self.pretrain:
            counts = {state: sum(r.state == state for r in self.pretrain)
                      for state in ("finished", "checkpoints", "none")}
            lines.append(f"pretrain: {counts['finished']} of {len(self.pretrain)} runs finished, "
                         f"{counts['checkpoints']} with checkpoints, {counts['none']} not started")
            width = max(len(r.name) for r in self.pretrain)
            for run in self.pretrain:
                where = f"  {relative_to(run.run_dir, self.directory)}" if run.run_dir else ""
                detail = f" ({run.detail})" if run.detail else ""
                lines.append(f"  {run.name:<{width}}  {run.state}{detail}{where}")
        if self.rows is not None:
            rows = self.rows
            total = len(rows.done) + len(rows.missing)
            line = (f"rows: {len(rows.done)} done, {len(rows.stale)} stale, "
                    f"{len(rows.missing)} missing ({total} in all)")
            if rows.pending:
                line += f"; {len(rows.pending)} of the missing wait for their encoders' pre-training"
            lines.append(line)
            width = max((len(f"{c.condition} {c.protocol}") for c in self.by_condition), default=0)
            for cond in self.by_condition:
                label = f"{cond.condition} {cond.protocol}"
                lines.append(f"  {label:<{width}}  {cond.done} done, {cond.stale} stale, "
                             f"{cond.missing} missing")
        store = ResultsStore(self.directory)
        if self.results_problem:
            lines.append(f"results: {self.results_problem}")
        else:
            lines.append(f"results: {store.parquet_path} ({self.results_rows} rows)"
                         if self.results_rows is not None else "results: not written yet")
        lines.append(f"report: {self.report}" if self.report else "report: not written yet")
        return "\n".join(lines)


def _recorded_spec(directory: AnyPath) -> ExperimentSpec:
    """The spec recorded in ``directory``, pointed at ``directory`` wherever it now lives."""
    if not directory.is_dir():
        raise RaysweepError(f"{directory}: no such experiment directory")
    if not (directory / SPEC_FILE).is_file():
        raise RaysweepError(f"{directory}: no {SPEC_FILE} here: not an experiment directory, "
                            "or no run of it has started yet")
    check_within(directory / SPEC_FILE, directory)
    spec = load_spec(directory / SPEC_FILE)
    here = spec.directory
    moved = (here.resolve() != directory.resolve() if isinstance(here, Path)
             and isinstance(directory, Path) else str(here) != str(directory))
    if moved:  # copied or mounted elsewhere
        spec = spec.replace(storage=str(directory.parent), name=directory.name)
    return spec


def _checkpoints(run_dir: AnyPath) -> list[AnyPath]:

    train = run_dir / RAY_RUN_NAME
    if not train.is_dir():
        return []
    # By name: object-store paths have no order of their own (all share ``train``).
    return sorted((p for p in train.glob("checkpoint_[0-9]*") if p.is_dir()),
                  key=lambda p: p.name)


def _epochs_logged(run_dir: AnyPath) -> int:

    try:
        text = read_text(run_dir / METRICS_FILE, root=run_dir)
    except (FileNotFoundError, StoredFileError):
        return 0
    return sum(1 for line in text.splitlines() if line.strip())


def _run_state(name: str, total_epochs: int, run_dir: AnyPath | None) -> PretrainRunState:

    if run_dir is None or not run_dir.is_dir():
        return PretrainRunState(name, "none", None)
    if is_finished(run_dir):
        trained = read_meta(run_dir).get("epochs_trained")
        epochs = (f"{trained} epoch(s) trained" if isinstance(trained, int)
                  and not isinstance(trained, bool) else "")
        return PretrainRunState(name, "finished", run_dir, epochs)
    checkpoints = _checkpoints(run_dir)
    if checkpoints:
        return PretrainRunState(name, "checkpoints", run_dir,
                                f"newest {checkpoints[-1].name}; {_epochs_logged(run_dir)} of "
                                f"{total_epochs} epochs logged")
    return PretrainRunState(name, "none", run_dir, "started, no checkpoint yet")


def _by_name(spec: ExperimentSpec, name: str) -> AnyPath | None:
    """The newest run directory named ``<name>-<hash>`` (when identities are unknown)."""
    root = spec.directory / "pretrain"
    if not root.is_dir():
        return None
    candidates = [p for p in root.glob(f"{name}-*")
                  if p.is_dir() and len(p.name) == len(name) + 13]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


def _pretrain_states(spec: ExperimentSpec, identified: bool) -> tuple[PretrainRunState, ...]:

    states = []
    for run in spec.pretrain:
        total = run.epochs + (run.frozen_epochs if run.further else 0)
        run_dir = (pretrain_run_dir(spec, run, save_digests=False) if identified
                   else _by_name(spec, run.name))
        states.append(_run_state(run.name, total, run_dir))
    return tuple(states)


def _row_status(spec: ExperimentSpec, identified: bool) -> RowStatus | None:

    if spec.evaluate is None:
        return None
    store = ResultsStore(spec.directory)
    if identified:
        return store.status(planned_refs(identify_trials(spec, save_digests=False)))
    # Identities unknown: a key with any stored row counts as done.
    done: list[RowRef] = []
    new: list[RowRef] = []
    for ref in unidentified_refs(eval_trials(spec)):
        (done if store.stored_for(ref.key) else new).append(ref)
    return RowStatus(done=tuple(done), new=tuple(new))


def _by_condition(rows: RowStatus) -> tuple[ConditionRows, ...]:
    order: dict[tuple[str, str], list[int]] = {}
    for index, group in enumerate((rows.done, rows.stale, rows.new + rows.pending)):
        for ref in group:
            counts = order.setdefault((ref.key.condition, ref.key.protocol), [0, 0, 0])
            counts[index] += 1
    return tuple(ConditionRows(c, p, *counts) for (c, p), counts in order.items())


def _results_rows(store: ResultsStore) -> tuple[int | None, str | None]:
    """How many rows ``results.parquet`` holds (None when not written yet), or why it cannot be
    read (a warning says so too)."""

    path = store.parquet_path
    try:
        data = read_bytes(path, root=store.experiment_dir)
        return int(pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows), None
    except FileNotFoundError:
        return None, None
    except StoredFileError as err:
        problem = str(err)
    except Exception as err:  # noqa: BLE001 - pyarrow raises many kinds for a damaged file
        problem = str(StoredFileError(path, f"not Parquet: {' '.join(str(err).split())[:100]}",
                                      root=store.experiment_dir))
    warnings.warn(f"{problem}: the results are counted as not written", stacklevel=2)
    return None, problem


def _lock_state(where: AnyPath) -> tuple[Holder | None, str | None]:
    """The lock's holder, or why the lock cannot be read at all; warns about a lock that is
    not a lock record."""
    try:
        holder = read_holder(where / LOCK_FILE)
    except ExperimentLocked as err:  # a folder or a link out of the experiment
        warnings.warn(str(err), stacklevel=2)
        return None, f"{display(where / LOCK_FILE, where)} is no lock file"
    if holder is not None and holder.unreadable:
        warnings.warn(f"{where / LOCK_FILE} is unreadable ({holder.unreadable}): it counts as "
                      "held by an unknown runner until its heartbeat is stale", stacklevel=2)
    return holder, None


def experiment_status(directory: str | os.PathLike[str]) -> ExperimentStatus:
    """The status of the experiment in ``directory`` (see the module docstring); raises
    :class:`RaysweepError` when it is no experiment directory."""
    where = storage_path(directory)
    if isinstance(where, Path):
        where = where.absolute()  # the recorded spec's paths are absolute
    spec = _recorded_spec(where)
    for link in escaping_links(where):
        warnings.warn(f"{where}: {link} is a symbolic link out of the experiment: raysweep "
                      "neither reads nor writes through it", stacklevel=2)
    holder, lock_problem = _lock_state(where)
    unidentified = None
    try:
        pretrain = _pretrain_states(spec, identified=True)
        rows = _row_status(spec, identified=True)
    except RaysweepError as err:  # the data cannot be read here
        unidentified = (f"the recorded spec's data cannot be read here ({err}): pre-training "
                        "runs are matched by name and rows counted per key, without checking "
                        "that they match the spec")
        pretrain = _pretrain_states(spec, identified=False)
        rows = _row_status(spec, identified=False)
    results_rows, results_problem = _results_rows(ResultsStore(where))
    report = where / "report" / "report.html"
    return ExperimentStatus(
        directory=where, spec=spec, holder=holder,
        holder_stale=holder is not None and is_stale(holder), pretrain=pretrain, rows=rows,
        by_condition=_by_condition(rows) if rows is not None else (),
        unidentified=unidentified, results_rows=results_rows,
        report=report if report.is_file() else None, lock_problem=lock_problem,
        results_problem=results_problem)
