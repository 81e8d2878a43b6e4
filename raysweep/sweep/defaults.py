"""Operational defaults of the sweep, in one place: how often Tune retries a trial, how often
a fine-tuning run checkpoints, when an experiment's lock is stale, and where Ray Train's log
level can be overridden. The numbers of a study (epochs, batch sizes, seeds, ...) are spec
fields, not here.

Three of them can be overridden by environment variables, read once at import (the tests and
the chaos benchmark shorten them; a long job may lengthen them):

- ``RAYSWEEP_CHECKPOINT_INTERVAL_S``: :data:`CHECKPOINT_INTERVAL_S`;
- ``RAYSWEEP_LOCK_STALE_S``: :data:`LOCK_STALE_S`;
- ``RAYSWEEP_RAY_LOG_LEVEL``: the level of Ray Train's worker logs, read at every call
  (:func:`raysweep.console.ray_log_level`; default WARNING, INFO with ``--verbose``).
"""

from __future__ import annotations

import os

#: Environment variable overriding :data:`CHECKPOINT_INTERVAL_S`.
CHECKPOINT_INTERVAL_ENV = "RAYSWEEP_CHECKPOINT_INTERVAL_S"
#: Environment variable overriding :data:`LOCK_STALE_S`.
LOCK_STALE_ENV = "RAYSWEEP_LOCK_STALE_S"
#: Environment variable naming the level of Ray Train's worker logs.
RAY_LOG_LEVEL_ENV = "RAYSWEEP_RAY_LOG_LEVEL"

#: Times Tune restarts a failed evaluation trial before the stage fails (a trial is
#: idempotent: a restart recomputes only its missing rows, from its newest checkpoint).
TRIAL_MAX_FAILURES = 2

#: Minimum seconds between two epoch checkpoints of a fine-tuning run (a ResNet-50 with its
#: Adam state is ~300 MB: checkpoint long runs, not the short ones).
CHECKPOINT_INTERVAL_S = float(os.environ.get(CHECKPOINT_INTERVAL_ENV, "120"))

#: Seconds between two heartbeats of an experiment lock's holder.
LOCK_HEARTBEAT_S = 10.0
#: A lock whose heartbeat is older than this is stale (6 missed heartbeats; generous for NFS
#: attribute caching and clock skew between nodes).
LOCK_STALE_S = float(os.environ.get(LOCK_STALE_ENV, "60"))
