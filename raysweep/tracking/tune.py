"""Tracking inside Ray Tune's run loop: callbacks on the driver, where Tune runs them.

- Search trials go to MLflow and W&B through Ray's own logger callbacks
  (``ray.air.integrations.mlflow.MLflowLoggerCallback``: one MLflow run per trial, its config
  as parameters, each reported result as metrics; ``ray.air.integrations.wandb
  .WandbLoggerCallback``: one W&B run per trial, logged from a zero-CPU actor on the driver's
  node), each behind a :class:`GuardedCallback`, so that a tracker that fails drops out with a
  warning instead of failing the Tuner.
- :class:`TrackOnTrialEnd` turns a finished trial into records (the evaluation rows it
  stored, a search trial for TensorBoard) and sends them to :class:`~raysweep.tracking.Trackers`
  while the stage runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ray.tune import Callback  # RAY

from raysweep.tracking.backends import backend_location, mlflow_uri
from raysweep.tracking.records import TrackedRecord
from raysweep.tracking.trackers import (
    Trackers,
    open_trackers,
    tracking_dir,
    tracking_folder_fallback,
    warn_failed,
)

__all__ = ["GuardedCallback", "TrackOnTrialEnd", "ray_logger_callbacks"]

#: The ``ray.tune.Callback`` hooks a :class:`GuardedCallback` forwards.
HOOKS = ("setup", "on_step_begin", "on_step_end", "on_trial_start", "on_trial_restore",
         "on_trial_save", "on_trial_result", "on_trial_complete", "on_trial_recover",
         "on_trial_error", "on_checkpoint", "on_experiment_end")


class GuardedCallback(Callback):  # RAY
    """Forwards every Tune callback hook to ``inner`` until one raises; then warns once
    (naming the tracker) and forwards nothing more."""

    def __init__(self, name: str, where: str, inner: Callback) -> None:
        self.name, self.where = name, where
        self.inner: Callback | None = inner

    def _forward(self, hook: str, *args: Any, **kwargs: Any) -> None:
        if self.inner is None:
            return
        try:
            getattr(self.inner, hook)(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - a tracker's failure never fails the Tuner
            self.inner = None
            warn_failed(self.name, self.where, err)


def _forwarding(hook: str) -> Callable[..., None]:
    def forward(self: GuardedCallback, *args: Any, **kwargs: Any) -> None:
        self._forward(hook, *args, **kwargs)

    forward.__name__ = hook
    return forward


for _hook in HOOKS:
    setattr(GuardedCallback, _hook, _forwarding(_hook))


class TrackOnTrialEnd(Callback):  # RAY
    """When a trial finishes, ``records_of(config, last_result)`` gives its records, which go to
    the trackers of ``spec`` (or those of them named in ``only``). Holds no open tracker
    (Tune pickles its callbacks): :func:`~raysweep.tracking.open_trackers` finds them."""

    def __init__(self, spec: Any,
                 records_of: Callable[[dict[str, Any], dict[str, Any]], list[TrackedRecord]],
                 *, only: tuple[str, ...] | None = None) -> None:
        self.spec, self.records_of, self.only = spec, records_of, only

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        try:
            records = self.records_of(dict(trial.config), dict(trial.last_result or {}))
        except Exception as err:  # noqa: BLE001 - e.g. a row that cannot be read back
            warn_failed("tracking", "the trial's stored results", err)
            return
        open_trackers(self.spec).track(records, only=self.only)


def ray_logger_callbacks(spec: Any, trackers: Trackers, *, group: str) -> list[Callback]:
    """Ray's MLflow and W&B logger callbacks for those trackers of ``spec`` that are open,
    each guarded; their runs are tagged (MLflow) or grouped (W&B) by ``group``, e.g.
    ``search/<name>``."""
    folder = tracking_dir(spec) or tracking_folder_fallback()
    callbacks: list[Callback] = []
    if "mlflow" in trackers.names:
        # imports mlflow (~1 s): only where a spec tracks its searches with MLflow
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        settings = spec.tracking.mlflow
        mlflow_callback = MLflowLoggerCallback(  # RAY: one MLflow run per trial
            tracking_uri=mlflow_uri(settings, folder),
            experiment_name=settings.experiment or spec.name,
            tags={"raysweep.kind": "search", "raysweep.group": group})
        callbacks.append(GuardedCallback(
            "mlflow", backend_location("mlflow", settings, folder), mlflow_callback))
    if "wandb" in trackers.names:
        # imports wandb (~1 s): only where a spec tracks its searches with W&B
        from ray.air.integrations.wandb import WandbLoggerCallback

        settings = spec.tracking.wandb
        # Ray asks for an API key unless WANDB_MODE says offline (the mode argument alone
        # reaches only the logging actor's wandb.init).
        os.environ["WANDB_MODE"] = settings.mode
        wandb_callback = WandbLoggerCallback(  # RAY: one W&B run per trial, by an actor
            project=settings.project or spec.name, group=group, mode=settings.mode,
            entity=settings.entity, dir=str(folder), job_type="search")
        callbacks.append(GuardedCallback(
            "wandb", backend_location("wandb", settings, folder), wandb_callback))
    return callbacks
