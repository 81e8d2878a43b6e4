"""Progress of a Ray Tune stage on the console: one line per finished trial, then a summary.

::

    evaluate: 12/29 trials done  SL-probe-seeds0-4  accuracy 0.221  f1_weighted 0.123  ETA 41 s
    evaluate: 29/29 trials done in 2 min 03 s (0 failed)

:class:`StageProgress` is a ``ray.tune.Callback`` (it runs in the driver, inside
``Tuner.fit()``); ``build_tuner`` adds it to the ``RunConfig``. Ray Tune's own status table is
turned off unless ``--verbose`` (:func:`raysweep.console.tune_verbosity`). The ETA divides the
trials still to run by the rate at which trials finished in this process (trials restored as
finished do not count), so it accounts for however many trials run at once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ray.tune import Callback

from raysweep import console

__all__ = ["StageProgress", "trial_line"]

#: Metrics shown on a trial's line when its final result has them.
SHOWN_METRICS = ("accuracy", "f1_weighted")


def trial_line(stage: str, done: int, total: int, name: str, result: Mapping[str, Any],
               eta_s: float | None) -> str:
    """The line of one finished trial (``result``: its last reported metrics)."""
    parts = [f"{stage}: {done}/{total} trials done", name]
    parts += [f"{key} {float(result[key]):.3f}" for key in SHOWN_METRICS if key in result]
    if eta_s is not None and done < total:
        parts.append(f"ETA {console.format_duration(eta_s)}")
    return "  ".join(parts)


def _finished(trials: Sequence[Any], current: Any = None) -> tuple[int, int]:
    """(trials terminated, trials errored) among ``trials``, counting ``current`` as
    terminated (Tune calls ``on_trial_complete`` before it marks the trial so)."""
    statuses = [trial.status for trial in trials if trial is not current]
    terminated, errored = statuses.count("TERMINATED"), statuses.count("ERROR")
    if current is not None:
        if current.status == "ERROR":
            errored += 1
        else:
            terminated += 1
    return terminated, errored


class StageProgress(Callback):
    """Print a line as each trial of a Tune stage finishes, and a summary at the end."""

    def __init__(self, stage: str = "evaluate") -> None:
        self.stage = stage
        self._total: int | None = None
        self._started: float | None = None
        self._finished_before = 0  # trials already finished when this process started
        self._finished_here = 0

    def _begin(self, trials: Sequence[Any]) -> None:
        if self._started is None:
            self._started = time.monotonic()
            self._finished_before = sum(_finished(trials))

    def _total_of(self, trials: Sequence[Any]) -> int:
        return max(self._total or 0, len(trials))

    def eta(self, done: int, total: int, now: float | None = None) -> float | None:
        """Seconds until ``total`` trials are done, from this process's finishing rate."""
        if self._started is None or self._finished_here == 0:
            return None
        elapsed = (time.monotonic() if now is None else now) - self._started
        return (total - done) * elapsed / self._finished_here

    # -- ray.tune.Callback hooks (called in the driver by Tune's controller) -------------------

    def setup(self, stop: Any = None, num_samples: int | None = None,
              total_num_samples: int | None = None, **info: Any) -> None:
        self._total = total_num_samples
        self._started = None
        self._finished_here = 0

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._begin(trials)
        console.detail(f"{self.stage}: started {trial}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._begin(trials)
        self._finished_here += 1
        done, failed = _finished(trials, current=trial)
        total = self._total_of(trials)
        console.say(trial_line(self.stage, done + failed, total, str(trial),
                               trial.last_result or {}, self.eta(done + failed, total)))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._begin(trials)
        self._finished_here += 1
        done, failed = _finished(trials, current=trial)
        error = getattr(trial, "error_file", None) or "see Ray Tune's log"
        console.say(f"{self.stage}: {done + failed}/{self._total_of(trials)} trials done  "
                    f"{trial} FAILED ({error})")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._begin(trials)
        done, failed = _finished(trials)
        total = self._total_of(trials)
        elapsed = time.monotonic() - (self._started or time.monotonic())
        reused = (f", {self._finished_before} finished before" if self._finished_before
                  else "")
        console.say(f"{self.stage}: {done}/{total} trials done in "
                    f"{console.format_duration(elapsed)} ({failed} failed{reused})")
