"""The ``RAYSWEEP_*`` environment variables, read through one parser.

Each variable has a type and a range (:data:`VARIABLES`); its value is read when it is used
(so a test or a job script may set it at any time) and an unusable value is a
:class:`EnvironmentProblem` naming the variable, the value (credentials redacted) and what it
must be, in one line. ``raysweep`` checks every variable that is set before it runs a command
(:func:`problems`), so a bad value is refused before anything is read, written or started; an
empty value counts as unset.

=================================== ============================================================
``RAYSWEEP_CACHE``                  the local folder of the decode cache (``~`` expanded; not a
                                    URI, not a file); default ``~/.cache/raysweep``
``RAYSWEEP_LOCK_STALE_S``           seconds after which an experiment lock's heartbeat is stale:
                                    at least two heartbeats (20 s), at most a week; default 60
``RAYSWEEP_CHECKPOINT_INTERVAL_S``  least seconds between two fine-tuning checkpoints: 0 (every
                                    epoch) to a week; default 120
``RAYSWEEP_RAY_LOG_LEVEL``          the level of Ray Train's worker logs: DEBUG, INFO, WARNING,
                                    ERROR or CRITICAL (any case)
``RAYSWEEP_AUTOSCALER_CONFIG``      a cluster-launcher YAML naming the autoscaler's node types
                                    (an existing file)
``RAYSWEEP_DECODE_WORKERS``         processes decoding images: 1 to 1024
``RAYSWEEP_STORE_TIMEOUT_S``        seconds an object store has to answer raysweep's first
                                    request before it counts as unreachable: 1 to 3600; default
                                    20
=================================== ============================================================
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from raysweep.errors import RaysweepError
from raysweep.storage.redact import redact

__all__ = ["CACHE_ENV", "STORE_TIMEOUT_ENV", "VARIABLES", "EnvironmentProblem", "Variable",
           "cache_folder", "choice", "problems", "seconds", "store_timeout_s"]

CACHE_ENV = "RAYSWEEP_CACHE"
STORE_TIMEOUT_ENV = "RAYSWEEP_STORE_TIMEOUT_S"
#: A week: the longest of the durations a variable may give.
WEEK_S = 7 * 24 * 3600.0


class EnvironmentProblem(RaysweepError):
    """A ``RAYSWEEP_*`` variable holds a value raysweep cannot use."""


@dataclass(frozen=True)
class Variable:
    """One variable: its name, what it must be (for messages) and its parser (the raw text to
    the value; ``ValueError`` with the reason when unusable)."""

    name: str
    expected: str
    parse: Callable[[str], object]


def _finite(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError("not a number") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise ValueError(f"outside [{low:g}, {high:g}]")
        return value
    return parse


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError("not an integer") from None
        if not low <= value <= high:
            raise ValueError(f"outside [{low}, {high}]")
        return value
    return parse


def _level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("not a log level")
    return level


def _local_folder(text: str) -> Path:
    scheme = urlsplit(text).scheme
    if len(scheme) > 1 and scheme not in ("file",):
        raise ValueError("a URI; the decode cache is a local folder (memory-mapped)")
    path = Path(os.path.expanduser(urlsplit(text).path if scheme == "file" else text))
    if path.exists() and not path.is_dir():
        raise ValueError("a file, not a folder")
    return path


def _existing_file(text: str) -> Path:
    path = Path(os.path.expanduser(text))
    if not path.is_file():
        raise ValueError("a folder, not a file" if path.is_dir() else "no such file")
    return path


#: Every variable raysweep reads (the launch scripts read a few more of their own).
VARIABLES = {v.name: v for v in (
    Variable(CACHE_ENV, "a local folder", _local_folder),
    Variable("RAYSWEEP_LOCK_STALE_S", "seconds in [20, 604800]", _finite(20.0, WEEK_S)),
    Variable("RAYSWEEP_CHECKPOINT_INTERVAL_S", "seconds in [0, 604800]", _finite(0.0, WEEK_S)),
    Variable("RAYSWEEP_RAY_LOG_LEVEL", "DEBUG, INFO, WARNING, ERROR or CRITICAL", _level),
    Variable("RAYSWEEP_AUTOSCALER_CONFIG", "a cluster-launcher YAML file", _existing_file),
    Variable("RAYSWEEP_DECODE_WORKERS", "an integer in [1, 1024]", _integer(1, 1024)),
    Variable(STORE_TIMEOUT_ENV, "seconds in [1, 3600]", _finite(1.0, 3600.0)),
)}


def value(name: str) -> object | None:
    """The parsed value of variable ``name`` (None when unset or empty); raises
    :class:`EnvironmentProblem` when it is unusable."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    variable = VARIABLES[name]
    try:
        return variable.parse(text)
    except ValueError as err:
        shown = redact(text)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise EnvironmentProblem(f"{name}={shown!r}: {err}; expected {variable.expected}"
                                 ) from None


def seconds(name: str, default: float) -> float:
    """A duration variable's value, else ``default``."""
    found = value(name)
    return default if found is None else float(found)  # type: ignore[arg-type]


def choice(name: str, default: str | None = None) -> str | None:
    found = value(name)
    return default if found is None else str(found)


def cache_folder() -> Path | None:
    """``RAYSWEEP_CACHE`` as a local folder (None when unset)."""
    found = value(CACHE_ENV)
    return found if isinstance(found, Path) else None


def store_timeout_s() -> float:
    return seconds(STORE_TIMEOUT_ENV, 20.0)


def problems() -> list[str]:
    """One line per ``RAYSWEEP_*`` variable that is set to an unusable value."""
    found = []
    for name in VARIABLES:
        try:
            value(name)
        except EnvironmentProblem as err:
            found.append(str(err))
    return found
