"""The trackers a spec turns on (``tracking:``), opened once per experiment and guarded.

Tracking never decides anything. A tracker that cannot be opened (a server that does not
answer within seconds, a store that refuses) or that fails while writing is dropped for the
rest of the run with one :class:`TrackingWarning` naming it; every row, run and report is
written as usual, and the next run tracks what is missing (each tracker is asked once what it
holds already). A tracker whose library is not installed is a spec problem instead, found
before anything runs (:func:`tracking_problems`): the run stops with a one-line error naming
the extra to install.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from raysweep.storage.atomic import stable_hash, to_jsonable
from raysweep.tracking.backends import Backend, backend_location, open_backend
from raysweep.tracking.records import TrackedRecord

__all__ = ["EXTRAS", "Trackers", "TrackingWarning", "open_trackers", "tracking_dir",
           "tracking_folder_fallback", "tracking_problems", "warn_failed"]

#: Per tracker: the module it needs and the extra that installs it.
EXTRAS = {"mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb"),
          "tensorboard": ("tensorboardX", "tensorboard")}


class TrackingWarning(UserWarning):
    """A tracker could not be reached or failed: it tracks nothing more in this run."""


def tracking_dir(spec: Any) -> Path | None:
    """The local folder of the trackers' files: ``tracking.dir``, else ``<experiment>/tracking``
    for an experiment in a local folder; None for one in an object store without a
    ``tracking.dir``."""
    if spec.tracking.dir:
        return Path(os.path.expanduser(spec.tracking.dir))
    directory = spec.directory
    return directory / "tracking" if isinstance(directory, Path) else None


def _needs_local_files(spec: Any) -> list[str]:
    """The trackers of ``spec`` that keep files in the tracking folder."""
    tracking = spec.tracking
    needs = []
    if tracking.mlflow is not None and not (tracking.mlflow.tracking_uri
                                            or os.environ.get("MLFLOW_TRACKING_URI")):
        needs.append("mlflow")
    if tracking.wandb is not None:
        needs.append("wandb")
    if tracking.tensorboard is not None and not tracking.tensorboard.logdir:
        needs.append("tensorboard")
    return needs


def tracking_problems(spec: Any) -> list[tuple[str, str]]:
    """``(key, reason)`` for each tracker that cannot work: its library is missing, or it
    needs a local folder that an experiment in an object store does not have."""
    problems = []
    for name in spec.tracking.enabled:
        module, extra = EXTRAS[name]
        if importlib.util.find_spec(module) is None:
            problems.append((f"tracking.{name}", f"{module} is not installed (pip install "
                                                 f"'raysweep[{extra}]')"))
    needs = _needs_local_files(spec)
    if needs and tracking_dir(spec) is None:
        problems.append(("tracking.dir", f"{' and '.join(needs)} keep files in a local folder "
                                         "and the experiment is in an object store: set "
                                         "tracking.dir"))
    return problems


class Trackers:
    """The open trackers of one experiment. :meth:`track` sends records to each (what a tracker
    holds already is skipped); a failing tracker is dropped with a warning. Thread-safe
    (pre-training runs finish in several threads at once)."""

    def __init__(self, backends: list[Backend]) -> None:
        self._backends = list(backends)
        self._lock = threading.Lock()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(backend.name for backend in self._backends)

    def __bool__(self) -> bool:
        return bool(self._backends)

    def track(self, records: Iterable[TrackedRecord | None], *,
              only: tuple[str, ...] | None = None) -> int:
        """Send ``records`` (None entries are skipped) to every tracker (or those in
        ``only``); returns how many runs were written in all."""
        wanted = [record for record in records if record is not None]
        written = 0
        with self._lock:
            for backend in list(self._backends):
                if only is not None and backend.name not in only:
                    continue
                try:
                    for record in wanted:
                        if not backend.is_tracked(record):
                            backend.write(record)
                            written += 1
                except Exception as err:  # noqa: BLE001 - any failure of a tracker
                    self.drop(backend.name, backend.where, err)
        return written

    def drop(self, name: str, where: str, err: BaseException) -> None:
        """Stop using tracker ``name`` in this run, with one warning."""
        self._backends = [b for b in self._backends if b.name != name]
        warn_failed(name, where, err)


def warn_failed(name: str, where: str, err: BaseException) -> None:
    reason = " ".join(str(err).split())[:300]
    warnings.warn(f"tracking: {name} at {where} failed ({type(err).__name__}: {reason}); it "
                  "tracks nothing more in this run (the results are stored as usual)",
                  TrackingWarning, stacklevel=3)


_OPEN: dict[tuple[str, str, str], Trackers] = {}
_OPEN_LOCK = threading.Lock()


def open_trackers(spec: Any) -> Trackers:
    """The trackers ``spec`` turns on, opened once per experiment and process (later calls
    return the same object, with the trackers dropped so far left out)."""
    if not spec.tracking.enabled:
        return Trackers([])
    key = (stable_hash(to_jsonable(spec.tracking)), spec.name, str(spec.directory))
    with _OPEN_LOCK:
        if key not in _OPEN:
            _OPEN[key] = Trackers(_open_each(spec))
        return _OPEN[key]


def tracking_folder_fallback() -> Path:
    """The tracking folder's stand-in when there is none (an experiment in an object store
    whose trackers all write elsewhere: :func:`tracking_problems` refuses the others)."""
    return Path.cwd() / "tracking"


def _open_each(spec: Any) -> list[Backend]:
    folder = tracking_dir(spec) or tracking_folder_fallback()
    backends = []
    for name in spec.tracking.enabled:
        settings = getattr(spec.tracking, name)
        try:
            backends.append(open_backend(name, settings, experiment=spec.name,
                                         tracking_dir=folder))
        except Exception as err:  # noqa: BLE001 - any failure to open a tracker
            warn_failed(name, backend_location(name, settings, folder), err)
    return backends
