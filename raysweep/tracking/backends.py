"""The three trackers, each through its own client: MLflow's ``MlflowClient``, ``wandb.init``
runs, and tensorboardX's ``SummaryWriter`` (the TensorBoard writer Ray Tune itself uses).

Every backend has the same small interface: ``name``, ``where`` (said in warnings, secrets
left out), ``is_tracked(record)`` (from what the tracker already holds, read once when it is
opened) and ``write(record)``. The libraries are imported when a backend is opened: they are
optional extras (``raysweep[mlflow]``, ``raysweep[wandb]``) and heavy to import.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from raysweep.tracking.records import TrackedRecord

__all__ = ["Backend", "MlflowBackend", "TensorboardBackend", "WandbBackend", "backend_location",
           "mlflow_uri", "open_backend", "unreachable_server"]

#: The MLflow tag that carries a record's key (how a rerun knows what is tracked already).
KEY_TAG = "raysweep.key"
KIND_TAG = "raysweep.kind"
#: Seconds a tracking server has to answer before it counts as down.
REACH_TIMEOUT_S = 5.0
#: MLflow's request settings raysweep sets unless the environment does: a server that goes
#: down mid-run costs seconds per request, not MLflow's default minutes of retries.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
_MLFLOW_NAME = re.compile(r"[^\w./\- ]")
_LOG_BATCH_METRICS = 1000  # MLflow's limits per log_batch request
_LOG_BATCH_PARAMS = 100


class Backend(Protocol):
    name: str
    where: str

    def is_tracked(self, record: TrackedRecord) -> bool: ...

    def write(self, record: TrackedRecord) -> None: ...


def redacted_uri(uri: str) -> str:
    """``uri`` without a password or a query string (where tokens would be)."""
    parts = urlsplit(uri)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc, query="").geturl() if parts.netloc else uri


def unreachable_server(uri: str, timeout_s: float = REACH_TIMEOUT_S) -> str | None:
    """Why the HTTP(S) server at ``uri`` cannot be reached within ``timeout_s`` (None when it
    answers, with any status, or when ``uri`` names no server)."""
    if urlsplit(uri).scheme not in ("http", "https"):
        return None
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return f"no answer within {timeout_s:g} s ({' '.join(str(reason).split())[:200]})"


class MlflowBackend:
    """Runs of one MLflow experiment; a record's key is its ``raysweep.key`` tag."""

    name = "mlflow"

    def __init__(self, uri: str, experiment: str, artifact_location: str | None) -> None:
        for key, value in MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        down = unreachable_server(uri)
        self.where = redacted_uri(uri)
        if down:
            raise ConnectionError(down)
        from mlflow import MlflowClient  # optional extra, heavy: imported when used

        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (found.experiment_id if found is not None else
                              self.client.create_experiment(
                                  experiment, artifact_location=artifact_location))
        self.known = self._tracked_keys()

    def _tracked_keys(self) -> set[str]:
        keys: set[str] = set()
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=1000,
                                           page_token=token)
            keys.update(run.data.tags[KEY_TAG] for run in page if KEY_TAG in run.data.tags)
            token = page.token
            if not token:
                return keys

    def is_tracked(self, record: TrackedRecord) -> bool:
        return record.key in self.known

    def write(self, record: TrackedRecord) -> None:
        from mlflow.entities import Metric, Param

        tags = {**record.tags, KEY_TAG: record.key, KIND_TAG: record.kind}
        run_id = self.client.create_run(self.experiment_id, run_name=record.name,
                                        tags=tags).info.run_id
        now = int(time.time() * 1000)
        params = [Param(mlflow_name(k), v) for k, v in record.params.items()]
        metrics = [Metric(mlflow_name(k), v, now, step)
                   for step, values in record.steps for k, v in values.items()]
        for start in range(0, len(params), _LOG_BATCH_PARAMS):
            self.client.log_batch(run_id, params=params[start:start + _LOG_BATCH_PARAMS])
        for start in range(0, len(metrics), _LOG_BATCH_METRICS):
            self.client.log_batch(run_id, metrics=metrics[start:start + _LOG_BATCH_METRICS])
        self.client.set_terminated(run_id)
        self.known.add(record.key)


def mlflow_name(key: str) -> str:
    """A metric or parameter name MLflow accepts (letters, digits, ``_ - . / `` and spaces)."""
    return _MLFLOW_NAME.sub("_", key)


def wandb_run_id(key: str) -> str:
    """The W&B run id of a record: a digest of its key (W&B ids allow few characters)."""
    return hashlib.sha256(key.encode()).hexdigest()[:24]


class WandbBackend:
    """One W&B run per record (``wandb.init``), offline by default: each in
    ``<directory>/wandb/offline-run-<time>-<id>``; the runs already there are tracked."""

    name = "wandb"

    def __init__(self, project: str, entity: str | None, mode: Literal["offline", "online"],
                 directory: Path) -> None:
        import wandb  # optional extra, heavy: imported when used

        self._wandb = wandb
        self.project, self.entity, self.mode = project, entity, mode
        self.directory = directory
        self.where = str(directory / "wandb") if mode == "offline" else f"project {project}"
        directory.mkdir(parents=True, exist_ok=True)
        self.known = {path.name.rsplit("-", 1)[-1]
                      for path in (directory / "wandb").glob("*run-*-*") if path.is_dir()}

    def is_tracked(self, record: TrackedRecord) -> bool:
        return wandb_run_id(record.key) in self.known

    def write(self, record: TrackedRecord) -> None:
        run_id = wandb_run_id(record.key)
        run = self._wandb.init(
            project=self.project, entity=self.entity, mode=self.mode, dir=str(self.directory),
            id=run_id, name=record.name, group=record.kind, job_type=record.kind,
            config={**record.params, **{f"tag.{k}": v for k, v in record.tags.items()},
                    "raysweep.key": record.key},
            reinit="create_new",
            settings=self._wandb.Settings(silent=True, console="off", x_disable_stats=True))
        try:
            for step, metrics in record.steps:
                run.log(metrics, step=step)
        finally:
            run.finish()
        self.known.add(run_id)


class TensorboardBackend:
    """Event files, one folder per record under ``logdir`` (``pretrain/<run>``,
    ``rows/<condition>/<protocol>/seed-NNNN-<row id>``, ``search/<search>/<trial>``): its
    metrics as scalars per step, and its parameters with its final metrics for TensorBoard's
    HParams table."""

    name = "tensorboard"

    def __init__(self, logdir: Path) -> None:
        from tensorboardX import SummaryWriter  # installed with ray[tune]

        self._writer = SummaryWriter
        logdir.mkdir(parents=True, exist_ok=True)
        self.logdir, self.where = logdir, str(logdir)
        self.known = {path.parent.relative_to(logdir).as_posix()
                      for path in logdir.rglob("events.out.tfevents.*")}

    def is_tracked(self, record: TrackedRecord) -> bool:
        return record.path in self.known

    def write(self, record: TrackedRecord) -> None:
        from tensorboardX.summary import hparams

        with self._writer(logdir=str(self.logdir / record.path)) as writer:
            for step, metrics in record.steps:
                for key, value in metrics.items():
                    writer.add_scalar(key, value, step)
            final = record.final_metrics
            if record.params and final:
                for summary in hparams(dict(record.params), final):
                    writer.file_writer.add_summary(summary)
        self.known.add(record.path)


def mlflow_uri(settings: Any, tracking_dir: Path) -> str:
    """The MLflow tracking URI: the spec's, else ``$MLFLOW_TRACKING_URI``, else a SQLite store
    in the tracking folder (MLflow 3's local store; its plain-file store is retired)."""
    return (settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{tracking_dir / 'mlflow.db'}")


def tensorboard_logdir(settings: Any, tracking_dir: Path) -> Path:
    return (Path(os.path.expanduser(settings.logdir)) if settings.logdir
            else tracking_dir / "tensorboard")


def backend_location(name: str, settings: Any, tracking_dir: Path) -> str:
    """Where tracker ``name`` writes, as warnings name it (no secrets)."""
    if name == "mlflow":
        return redacted_uri(mlflow_uri(settings, tracking_dir))
    if name == "wandb":
        return (str(tracking_dir / "wandb") if settings.mode == "offline"
                else f"project {settings.project}")
    return str(tensorboard_logdir(settings, tracking_dir))


def open_backend(name: str, settings: Any, *, experiment: str, tracking_dir: Path) -> Backend:
    """Open tracker ``name`` (``mlflow``, ``wandb``, ``tensorboard``) with its spec settings;
    raises whatever the tracker raises when it cannot be opened."""
    if name == "mlflow":
        uri = mlflow_uri(settings, tracking_dir)
        local = uri.startswith("sqlite:")  # artefacts beside the store, not in the cwd
        artifacts = (tracking_dir / "mlflow-artifacts").as_uri() if local else None
        return MlflowBackend(uri, settings.experiment or experiment, artifacts)
    if name == "wandb":
        return WandbBackend(settings.project or experiment, settings.entity, settings.mode,
                            tracking_dir)
    return TensorboardBackend(tensorboard_logdir(settings, tracking_dir))
