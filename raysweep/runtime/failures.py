"""Failures inside Ray workers and Tune trials, as one line for the user.

Ray wraps an exception raised in a trial or a Ray Train worker (``RayTaskError``,
``TrainingFailedError`` with per-rank ``worker_failures``, ``ControllerError``) and its text is
the remote traceback. :func:`root_cause` finds the exception the code raised; :func:`trial_error`
turns it into a :class:`~raysweep.errors.TrialError` whose one line is the cause's own message
(for a :class:`~raysweep.errors.RaysweepError`: exactly the text the user would have seen
locally), the trial's name and its log path. The Ray error stays the ``__cause__``, so
``raysweep --debug`` prints the whole chain.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ray.exceptions import RayTaskError

from raysweep.errors import RaysweepError, TrialError
from raysweep.plan.trials import EvalTrial

__all__ = ["evaluation_failure", "root_cause", "train_failure", "trial_error", "wrapped_errors"]


def wrapped_errors(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the exceptions it wraps, outermost first (breadth-first, no repeats)."""
    queue: list[Any] = [error]
    seen: set[int] = set()
    while queue:
        current = queue.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        queue.append(getattr(current, "cause", None))  # RayTaskError
        failures = getattr(current, "worker_failures", None)  # Ray Train: rank -> error
        if isinstance(failures, dict):
            queue.extend(failures[rank] for rank in sorted(failures))
        queue.append(getattr(current, "controller_failure", None))
        queue.append(current.__cause__)


def _is_ray_wrapper(error: BaseException) -> bool:
    return isinstance(error, RayTaskError) or type(error).__module__.startswith("ray.")


def root_cause(error: BaseException) -> BaseException:
    """The exception the code raised inside Ray: the first :class:`RaysweepError` among those
    ``error`` wraps, else the outermost one that is not a Ray wrapper (of the lowest rank for
    Ray Train), else ``error``."""
    plain = [e for e in wrapped_errors(error) if not _is_ray_wrapper(e)]
    for candidate in plain:
        if isinstance(candidate, RaysweepError):
            return candidate
    return plain[0] if plain else error


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else ""


def trial_error(error: BaseException, *, what: str, log: str | Path | None,
                others: int = 0) -> TrialError:
    """One-line :class:`TrialError` for ``error`` raised by ``what`` (e.g. ``evaluation trial
    rand-probe-seeds0-4``); ``log``: where its full log / error file is; ``others``: how many
    more trials failed."""
    cause = root_cause(error)
    user_error = isinstance(cause, RaysweepError)
    if user_error:
        text = " ".join(str(cause).split())
    else:
        detail = _first_line(cause)
        text = f"{type(cause).__name__}: {detail}" if detail else type(cause).__name__
    more = f" ({others} more failed)" if others else ""
    where = f"; log: {log}" if log else ""
    failure = TrialError(f"{what} failed: {text}{more}{where}", user_error=user_error)
    failure.__cause__ = error
    return failure


def _trial_log(path: str | None) -> str | None:
    if not path:
        return None
    error_file = Path(path) / "error.txt"
    return str(error_file if error_file.is_file() else Path(path))


def _trial_name(result: Any) -> str:
    config = getattr(result, "config", None) or {}
    trial = config.get("trial") if isinstance(config, dict) else None
    if isinstance(trial, dict):

        try:
            return EvalTrial(**trial).trial_name
        except TypeError:
            pass
    return Path(str(getattr(result, "path", "") or "trial")).name


def evaluation_failure(results: Iterable[Any]) -> TrialError | None:
    """The :class:`TrialError` of the first failed Tune trial among ``results`` (a
    ``ResultGrid`` or its ``Result`` objects), or None when every trial succeeded."""
    failed = [r for r in results if getattr(r, "error", None) is not None]
    if not failed:
        return None
    first = failed[0]
    return trial_error(first.error, what=f"evaluation trial {_trial_name(first)}",
                       log=_trial_log(getattr(first, "path", None)), others=len(failed) - 1)


def train_failure(error: BaseException, run_name: str, log: str | Path) -> TrialError:
    """The :class:`TrialError` of a Ray Train pre-training run that failed."""
    return trial_error(error, what=f"pretrain run {run_name}", log=log)
