"""What each stage sends to the experiment trackers (``tracking:``; :mod:`raysweep.tracking`),
and when.

- pretrain: each run once it has finished (also one that finished before, if a tracker does
  not hold it yet), from its ``metrics.jsonl`` and ``meta.json``;
- evaluate: the rows of each trial as it finishes (a Tune callback on the driver), then, after
  the stage, every row of the current spec that a tracker does not hold yet (rows computed
  before tracking was turned on, or while a tracker was down);
- search: each trial through Ray's MLflow / W&B logger callbacks and, for TensorBoard, when it
  finishes; after the search, its finished pre-training runs.

Nothing here decides anything: every call returns at once when no tracker is on, and a
tracker's failure is a warning (:class:`~raysweep.tracking.TrackingWarning`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from raysweep.config import ExperimentSpec
from raysweep.storage.paths import AnyPath
from raysweep.store.results import ResultsStore, RowRef
from raysweep.store.run_dirs import META_FILE, METRICS_FILE, is_finished
from raysweep.tracking import (
    TrackedRecord,
    open_trackers,
    pretrain_record,
    row_record,
    search_trial_record,
)
from raysweep.tracking.tune import TrackOnTrialEnd, ray_logger_callbacks

__all__ = ["evaluate_callbacks", "search_callbacks", "track_pretrain_run", "track_rows",
           "track_search_runs"]

Labels = Mapping[str, Mapping[str, Any]]


def _row_records(spec: ExperimentSpec, labels: Labels,
                 refs: Iterable[RowRef]) -> list[TrackedRecord]:
    """The stored rows among ``refs`` as records, labelled like the results table."""
    store = ResultsStore(spec.directory)
    rows = [store.read(ref) for ref in refs if store.has(ref)]
    return [row_record(row, labels.get(str(row["condition"]), {})) for row in rows]


def track_rows(spec: ExperimentSpec, labels: Labels, refs: Iterable[RowRef]) -> int:
    """Track every stored row of ``refs`` that a tracker does not hold yet; how many runs
    were written."""
    trackers = open_trackers(spec)
    return trackers.track(_row_records(spec, labels, refs)) if trackers else 0


def evaluate_callbacks(spec: ExperimentSpec, labels: Labels,
                       refs_of: Callable[[dict[str, Any]], list[RowRef]]) -> list[Any]:
    """The evaluate Tuner's tracking callback (none when no tracker is on): each finished
    trial's rows (``refs_of(trial config)``) are tracked at once."""
    trackers = open_trackers(spec)
    if not trackers:
        return []

    return [TrackOnTrialEnd(
        spec, lambda config, result: _row_records(spec, labels, refs_of(config)))]


def track_pretrain_run(spec: ExperimentSpec, run_dir: AnyPath, *,
                       group: str = "pretrain") -> int:
    """Track a finished pre-training run (its epochs, its spec); 0 when it is not finished,
    no tracker is on, or every tracker holds it already."""
    trackers = open_trackers(spec)
    if not trackers or not is_finished(run_dir):
        return 0
    return trackers.track([pretrain_record(run_dir, METRICS_FILE, META_FILE, group=group)])


def search_callbacks(spec: ExperimentSpec, search: str) -> list[Any]:
    """The search Tuner's tracking callbacks: Ray's MLflow / W&B logger callbacks, and the
    trial records for TensorBoard (none when no tracker is on)."""
    trackers = open_trackers(spec)
    if not trackers:
        return []

    group = f"search/{search}"
    callbacks = ray_logger_callbacks(spec, trackers, group=group)
    if "tensorboard" in trackers.names:
        callbacks.append(TrackOnTrialEnd(
            spec, lambda config, result: [search_trial_record(search, config, result)],
            only=("tensorboard",)))
    return callbacks


def track_search_runs(spec: ExperimentSpec, search: str, directory: AnyPath) -> int:
    """Track the finished pre-training runs of search ``search`` (in ``directory/pretrain``)."""
    trackers = open_trackers(spec)
    root = directory / "pretrain"
    if not trackers or not root.is_dir():
        return 0
    return sum(track_pretrain_run(spec, run_dir, group=f"search/{search}")
               for run_dir in root.iterdir() if run_dir.is_dir())
