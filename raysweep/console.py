"""What a run prints while it works: progress lines on stderr, at one of three verbosities.

Progress lines (one per pre-training epoch, one per finished evaluation trial, stage summaries)
go through the standard ``logging`` logger ``raysweep``: INFO for the normal lines, DEBUG for
the extra detail of ``--verbose``. Unless the application configured that logger itself, the
first line installs a handler that writes bare lines to ``sys.stderr`` (looked up at every
line, so redirected streams are honoured), so a notebook sees the same lines as the console.

``raysweep --quiet`` / ``--verbose`` call :func:`set_verbosity`; the same verbosity turns Ray
Tune's own status table off (it is replaced by raysweep's lines) or on, and chooses the level
of Ray Train's worker logs (:func:`ray_log_level`).
"""

from __future__ import annotations

import logging
import sys

from raysweep.environment import choice

__all__ = ["NORMAL", "QUIET", "VERBOSE", "detail", "format_duration", "plural", "ray_log_level",
           "say", "set_verbosity", "tune_verbosity", "verbosity"]

QUIET, NORMAL, VERBOSE = 0, 1, 2

LOGGER = logging.getLogger("raysweep")

_LEVELS = {QUIET: logging.WARNING, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler bound to whatever ``sys.stderr`` is when a line is written."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property wins
        pass


def _ensure_handler() -> None:
    if any(isinstance(h, _StderrHandler) for h in LOGGER.handlers):
        return
    if LOGGER.handlers:  # the application configured the logger itself
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    LOGGER.addHandler(handler)
    LOGGER.propagate = False
    if LOGGER.level == logging.NOTSET:
        LOGGER.setLevel(_LEVELS[NORMAL])


def set_verbosity(level: int) -> None:
    """``QUIET`` (warnings and errors only), ``NORMAL`` or ``VERBOSE`` for this process."""
    if level not in _LEVELS:
        raise ValueError(f"verbosity must be one of {sorted(_LEVELS)}, got {level!r}")
    _ensure_handler()
    LOGGER.setLevel(_LEVELS[level])


def verbosity() -> int:
    """The current verbosity (``NORMAL`` until :func:`set_verbosity` says otherwise)."""
    level = LOGGER.getEffectiveLevel() if LOGGER.level != logging.NOTSET else logging.INFO
    if level <= logging.DEBUG:
        return VERBOSE
    return NORMAL if level <= logging.INFO else QUIET


def say(line: str) -> None:
    """A progress line (shown unless ``--quiet``)."""
    _ensure_handler()
    LOGGER.info(line)


def detail(line: str) -> None:
    """Extra detail (shown with ``--verbose`` only)."""
    _ensure_handler()
    LOGGER.debug(line)


def tune_verbosity() -> int:
    """Ray Tune's ``RunConfig(verbose=...)``: its status table only with ``--verbose`` (raysweep
    prints one line per finished trial instead)."""
    return 1 if verbosity() >= VERBOSE else 0


def ray_log_level() -> str:
    """Level of Ray Train's console logs: ``RAYSWEEP_RAY_LOG_LEVEL`` when set
    (checked by :mod:`raysweep.environment`), else INFO with ``--verbose`` and WARNING otherwise
    (its per-epoch INFO lines would drown the progress)."""
    return choice("RAYSWEEP_RAY_LOG_LEVEL") or ("INFO" if verbosity() >= VERBOSE else "WARNING")


def plural(count: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min`` (rounded to whole seconds / minutes)."""
    whole = int(round(max(0.0, float(seconds))))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min"
