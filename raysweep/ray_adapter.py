"""The two things raysweep needs from Ray that Ray 2.60 offers through private modules only.

Everything else raysweep does with Ray goes through its public API (``ray``, ``ray.train``,
``ray.tune``, ``ray.exceptions``). These two do not, so they live here, each behind a function
that degrades to "not known" instead of failing, and ``tests/test_ray_adapter.py`` fails as soon
as an installed Ray changes what they rely on (a Ray upgrade is checked there first):

- :func:`gcs_cluster_config`: the autoscaling config the connected cluster published to its GCS
  (``ray._private.state.state.get_cluster_config()``), the same source Ray Train V2 reads to
  decide whether a cluster can grow; raysweep uses it to plan for the node types an autoscaler
  may add (:mod:`raysweep.plan.resources`).
- :func:`train_report_logger_name`: the name of the logger through which Ray Train 2.60 logs
  every ``ray.train.report`` at INFO. It is named after its file's path
  (``ray/train/v2/_internal/execution/context.py``: ``logging.getLogger(__file__)``), so the
  ``RunConfig``'s log level, which filters ``ray.train.*`` loggers only, misses it; the
  pre-training loop gives it the run's level (:mod:`raysweep.ssl.pretrain.loop`).
"""

from __future__ import annotations

import importlib
from typing import Any

import ray

__all__ = ["TRAIN_REPORT_CONTEXT_MODULE", "gcs_cluster_config", "train_report_logger_name"]

#: The private module whose logger logs every ``ray.train.report``.
TRAIN_REPORT_CONTEXT_MODULE = "ray.train.v2._internal.execution.context"
#: The private module holding the GCS state accessor.
STATE_MODULE = "ray._private.state"


def gcs_cluster_config() -> Any:
    """The connected cluster's autoscaling config from its GCS, or None (Ray not initialised,
    no config published, or a Ray without the accessor)."""
    if not ray.is_initialized():
        return None
    try:
        return importlib.import_module(STATE_MODULE).state.get_cluster_config()
    except Exception:  # noqa: BLE001 - a Ray without it (see the test): no view
        return None


def train_report_logger_name() -> str | None:
    """The name of Ray Train's per-report INFO logger (its module's file path), or None when
    the installed Ray has no such module."""
    try:
        return importlib.import_module(TRAIN_REPORT_CONTEXT_MODULE).__file__
    except ImportError:
        return None
