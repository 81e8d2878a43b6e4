"""The pre-training driver: one Ray Train ``TorchTrainer`` per run, idempotent.

:func:`run_pretrain` is what ``raysweep pretrain SPEC`` and ``raysweep.api.pretrain`` call:

1. the run directory ``<storage>/pretrain/<name>-<hash>`` (:mod:`.run_dir`); if its
   ``meta.json`` says ``finished``, return its artefacts at once (no Ray Train started);
2. otherwise build a ``TorchTrainer`` over ``num_workers`` workers (gloo on CPUs, nccl on GPUs),
   with ``RunConfig(storage_path=<run dir>, name="train")``: rerunning an unfinished spec reuses
   that name, and Ray Train V2 then hands the newest reported checkpoint to
   ``ray.train.get_checkpoint()``, as it does after a worker failure
   (``FailureConfig(max_failures)``);
3. from the final checkpoint write ``encoder.pt``, ``metrics.jsonl`` and, last, ``meta.json``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from raysweep import console
from raysweep.config import PretrainSpec, to_dict
from raysweep.errors import DataProblems, SpecError
from raysweep.plan.preflight import pretrain_data_problems, pretrain_gpu_problem
from raysweep.plan.resources import ClusterResources, gpu_wait, gpus_per_worker, pretrain_resources
from raysweep.plan.run_identity import run_directory, weights_digest
from raysweep.runtime.failures import train_failure
from raysweep.runtime.ray_session import ensure_ray
from raysweep.ssl.pretrain import checkpoint as ckpt
from raysweep.ssl.pretrain.loop import StepHook, ray_train_loop
from raysweep.ssl.pretrain.progress import EpochProgress
from raysweep.storage.atomic import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    file_sha256,
    to_jsonable,
)
from raysweep.storage.paths import AnyPath, ray_storage
from raysweep.storage.provenance import provenance
from raysweep.store.run_dirs import ENCODER_FILE, META_FILE, METRICS_FILE, RAY_RUN_NAME, is_finished

if TYPE_CHECKING:
    from raysweep.plan.resources import ClusterResources

__all__ = ["PretrainResult", "cluster_resources", "preflight", "resolve_use_gpu",
           "run_pretrain", "write_artefacts"]


@dataclass(frozen=True)
class PretrainResult:
    """The artefacts of a finished run (``skipped``: it had finished before this call)."""

    encoder_path: AnyPath
    metrics_path: AnyPath
    meta_path: AnyPath
    run_dir: AnyPath
    skipped: bool = False

    @property
    def weights(self) -> str:
        """The encoder as a weight source for :func:`raysweep.models.build_encoder`."""
        return f"file:{self.encoder_path}"


def _result(run_dir: AnyPath, skipped: bool) -> PretrainResult:
    return PretrainResult(run_dir / ENCODER_FILE, run_dir / METRICS_FILE, run_dir / META_FILE,
                          run_dir, skipped)


def cluster_resources() -> ClusterResources:
    """What the Ray cluster (connected, or started here) offers now, and what its autoscaler
    can add (:class:`~raysweep.plan.resources.ClusterResources`)."""

    ensure_ray()  # joins RAY_ADDRESS, or starts a local instance
    return ClusterResources.detect()


def resolve_use_gpu(spec: PretrainSpec, cluster: ClusterResources) -> bool:
    """Whether ``spec`` trains on GPUs: as the spec says (``use_gpu``, or a ``GPU`` in
    ``resources_per_worker``), else when the cluster has or can add GPUs."""

    return pretrain_resources(spec, cluster).use_gpu


def preflight(spec: PretrainSpec, gpu: bool, cluster: ClusterResources | None = None) -> None:
    """Errors a user can cause, raised on the driver before any worker starts (inside a worker
    they would be retried ``max_failures`` times): an indivisible batch, too little data, GPUs
    asked of a cluster that has none and cannot add any. GPUs an autoscaler can add are waited
    for (one line says so)."""

    problems = pretrain_data_problems(spec)  # the batch's divisibility is the spec's own check
    if problems:
        raise DataProblems(problems)
    if not gpu:
        return
    cluster = cluster or cluster_resources()
    problem = pretrain_gpu_problem(spec, cluster)
    if problem:
        raise SpecError(problem)

    needed = spec.num_workers * gpus_per_worker(spec)
    if gpu_wait(needed, cluster) == "autoscaler":
        print(f"raysweep: pretrain {spec.name}: waiting for {needed} GPUs; the cluster has "
              f"{cluster.gpus:g} now and its autoscaler adds GPU nodes", flush=True)


def write_artefacts(spec: PretrainSpec, run_dir: AnyPath, checkpoint_dir: Path,
                    extra: dict[str, Any]) -> PretrainResult:
    """``encoder.pt``, ``metrics.jsonl``, then ``meta.json`` (the finished marker) from the
    final checkpoint's state."""
    state = ckpt.load_state(checkpoint_dir)
    atomic_torch_save({k: v.clone() for k, v in state.encoder.items()}, run_dir / ENCODER_FILE)
    atomic_write_text(run_dir / METRICS_FILE,
                      "".join(json.dumps(m) + "\n" for m in state.history))
    meta = {
        **provenance(spec),
        "status": "finished",
        "result_hash": run_dir.name.rsplit("-", 1)[-1],
        "encoder_sha256": file_sha256(run_dir / ENCODER_FILE),
        "initial_weights_sha256": weights_digest(spec.encoder.weights, spec.encoder.name),
        "name": spec.name,
        "keys": dict(spec.keys),
        "lr_max": state.lr_max,
        "lr_finder": state.lr_finder,
        "epochs_trained": state.next_epoch,
        "resumed_from_epochs": state.resumed_from,
        "final_metrics": state.history[-1] if state.history else None,
        "worker": {k: v for k, v in state.meta.items() if k != "provenance"},
        **extra,
    }
    atomic_write_json(run_dir / META_FILE, meta)
    return _result(run_dir, skipped=False)


def run_pretrain(
    spec: PretrainSpec,
    *,
    storage_dir: str | os.PathLike[str] | AnyPath,
    use_gpu: bool | None = None,
    callbacks: list[Any] | None = None,
    _after_step: StepHook | None = None,
    _views: Any = None,
) -> PretrainResult:
    """Pre-train ``spec`` on the connected Ray cluster (``ray.init`` first, or Ray starts a
    local one) and return its artefacts; a finished run is returned without training.

    Args:
        spec: the run.
        storage_dir: storage root; the run lives in ``<storage_dir>/pretrain/<name>-<hash>``.
            Must be shared storage for multi-node clusters.
        use_gpu: overrides the spec (``None``: as the spec says, and under ``auto`` GPUs iff
            the cluster has them or its autoscaler can add them).
        callbacks: extra ``RunConfig.callbacks`` (e.g. Tune's ``TuneReportCallback`` when a
            Tune trial drives this run).
        _after_step: test-only step hook run on every worker (a picklable callable, e.g.
            :class:`~raysweep.ssl.pretrain.faults.KillOnce`).
        _views: test-only replacement of the spec's augmentation on every worker (a picklable
            callable, see :func:`~raysweep.ssl.pretrain.loop.pretrain_worker`'s ``transform``).
    """
    run_dir = run_directory(spec, storage_dir)
    if is_finished(run_dir):
        console.say(f"pretrain {spec.name}: finished before, reusing {run_dir / ENCODER_FILE}")
        return _result(run_dir, skipped=True)
    cluster = None
    gpu = use_gpu
    if gpu is None:
        cluster = cluster_resources()
        gpu = resolve_use_gpu(spec, cluster)
    preflight(spec, gpu, cluster)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "spec": to_jsonable(to_dict(spec)),
        "metrics_path": str(run_dir / METRICS_FILE),
        "after_step": _after_step,
        "log_level": console.ray_log_level(),
        "transform": _views,
    }
    started = time.time()
    checkpoint = _fit(_trainer(spec, run_dir, gpu, config, callbacks), spec, run_dir, gpu)
    with checkpoint.as_directory() as directory:
        written = write_artefacts(spec, run_dir, Path(directory), {
            "use_gpu": bool(gpu), "num_workers": spec.num_workers,
            "fit_time_s": time.time() - started,
            "ray_run_dir": str(run_dir / RAY_RUN_NAME),
            "torch_version": torch.__version__,
        })
    console.say(f"pretrain {spec.name}: done in {console.format_duration(time.time() - started)}"
                f", encoder: {written.encoder_path}")
    return written


def _trainer(spec: PretrainSpec, run_dir: AnyPath, gpu: bool, config: dict[str, Any],
             callbacks: list[Any] | None) -> Any:
    """The run's ``TorchTrainer``: DDP over ``num_workers`` ranks, Ray Train's run directory
    ``RAY_RUN_NAME`` inside ``run_dir`` (so a rerun resumes from its newest checkpoint)."""

    return TorchTrainer(  # RAY: one worker group, DDP over num_workers ranks
        ray_train_loop,
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=spec.num_workers, use_gpu=bool(gpu),
            resources_per_worker=dict(spec.resources_per_worker) or None),
        run_config=RunConfig(
            name=RAY_RUN_NAME,
            **ray_storage(run_dir),
            failure_config=FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
            # Per-epoch "checkpoint created" INFO lines would drown the progress output.
            # mypy resolves ray.train.RunConfig to ray.air's (no logging_config); ray.train
            # exports the v2 RunConfig, which has it, at run time.
            logging_config=LoggingConfig(  # type: ignore[call-arg]
                log_level=console.ray_log_level()),
        ),
    )


def _fit(trainer: Any, spec: PretrainSpec, run_dir: AnyPath, gpu: bool) -> Any:
    """Run ``trainer`` with a progress line per epoch; its final checkpoint. A worker's error
    (after ``max_failures`` restarts) becomes one line."""
    total_epochs = (spec.frozen_epochs if spec.further else 0) + spec.epochs
    with EpochProgress(spec.name, run_dir / METRICS_FILE, total_epochs) as progress:
        resumed = (f", resuming after epoch {progress.resumed_after}"
                   if progress.resumed_after else "")
        workers = console.plural(spec.num_workers, "GPU worker" if gpu else "CPU worker")
        console.say(f"pretrain {spec.name}: {console.plural(total_epochs, 'epoch')} on "
                    f"{workers}{resumed}")
        try:
            result = trainer.fit()  # RAY: raises once max_failures is exhausted
        except Exception as err:  # the worker's own error, in one line (raysweep --debug: all)
            raise train_failure(err, spec.name, str(run_dir / RAY_RUN_NAME)) from err
    if result.checkpoint is None:
        raise RuntimeError(f"pretrain {spec.name}: Ray Train finished without a checkpoint")
    return result.checkpoint
