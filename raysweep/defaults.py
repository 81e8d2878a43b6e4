"""Operational defaults of the sweep, in one place: how often Tune retries a trial, how often
a fine-tuning run checkpoints, when an experiment's lock is stale, and where Ray Train's log
level can be overridden. The numbers of a study (epochs, batch sizes, seeds, ...) are spec
fields, not here.

Three of them can be overridden by environment variables, read when used through the one
parser of :mod:`raysweep.environment` (type and range checked; an unusable value is a one-line
error naming the variable; the tests and the chaos benchmark shorten them, a long job may
lengthen them):

- ``RAYSWEEP_CHECKPOINT_INTERVAL_S``: :func:`checkpoint_interval_s` (default
  :data:`CHECKPOINT_INTERVAL_S`, 0 to a week);
- ``RAYSWEEP_LOCK_STALE_S``: :func:`lock_stale_s` (default :data:`LOCK_STALE_S`; at least two
  heartbeats, so that a live runner's lock never reads as stale, at most a week);
- ``RAYSWEEP_RAY_LOG_LEVEL``: the level of Ray Train's worker logs
  (:func:`raysweep.console.ray_log_level`; default WARNING, INFO with ``--verbose``).
"""

from __future__ import annotations

from raysweep.environment import seconds

#: Environment variable overriding :data:`CHECKPOINT_INTERVAL_S`.
CHECKPOINT_INTERVAL_ENV = "RAYSWEEP_CHECKPOINT_INTERVAL_S"
#: Environment variable overriding :data:`LOCK_STALE_S`.
LOCK_STALE_ENV = "RAYSWEEP_LOCK_STALE_S"
#: Environment variable naming the level of Ray Train's worker logs.
RAY_LOG_LEVEL_ENV = "RAYSWEEP_RAY_LOG_LEVEL"

#: Times Tune restarts a failed evaluation trial before the stage fails (a trial is
#: idempotent: a restart recomputes only its missing rows, from its newest checkpoint).
TRIAL_MAX_FAILURES = 2

#: Default least seconds between two epoch checkpoints of a fine-tuning run (a ResNet-50 with
#: its Adam state is ~300 MB: checkpoint long runs, not the short ones).
CHECKPOINT_INTERVAL_S = 120.0

#: Seconds between two heartbeats of an experiment lock's holder.
LOCK_HEARTBEAT_S = 10.0
#: By default a lock whose heartbeat is older than this is stale (6 missed heartbeats; generous
#: for NFS attribute caching and clock skew between nodes).
LOCK_STALE_S = 60.0


def checkpoint_interval_s() -> float:
    """:data:`CHECKPOINT_INTERVAL_S`, or ``RAYSWEEP_CHECKPOINT_INTERVAL_S`` when set."""
    return seconds(CHECKPOINT_INTERVAL_ENV, CHECKPOINT_INTERVAL_S)


def lock_stale_s() -> float:
    """:data:`LOCK_STALE_S`, or ``RAYSWEEP_LOCK_STALE_S`` when set."""
    return seconds(LOCK_STALE_ENV, LOCK_STALE_S)
