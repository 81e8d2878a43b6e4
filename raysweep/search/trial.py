"""One search trial: a Ray Tune function trainable that pre-trains and then scores an encoder.

The trial (the Tune *driver* of its trial, holding one CPU) builds the pre-training
``TorchTrainer`` for its sampled parameters (:func:`raysweep.runtime.pretrain_driver.run_pretrain`; the
workers get their own CPUs / GPUs). With ASHA, a Ray Train callback (:class:`ProxyPruning`, run
by the run's controller) reports each epoch's downstream proxy to the trial's Optuna trial and
stops the run when ASHA says so (:mod:`raysweep.search.pruning`). A trial that ran all
its epochs scores the encoder (:func:`raysweep.search.objective.score_encoder`; in a Ray
task holding a GPU share when the cluster has GPUs, in the trial's own process otherwise) and
reports the objective to Tune, once: the only Tune report of a trial. (Forwarding the epochs
to Tune as well, through Ray's ``TuneReportCallback``, can deadlock: the forwarded epoch and the
trial's own report then meet in Tune's one-slot result queue and wait on each other.)

Run directories are content-addressed (``<search dir>/pretrain/<name>-<hash of the run>``), not
named by the random Tune trial id: a trial whose parameters were trained before (a rerun, a
re-asked trial, a duplicate draw, a search over evaluation settings only) reuses or continues
that run. A file lock keeps two concurrent trials from training one run directory at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray.tune
from filelock import FileLock
from ray.train import UserCallback

from raysweep.config import SearchSpec
from raysweep.data.cache import cache_root
from raysweep.plan.run_identity import run_directory
from raysweep.runtime.failures import wrapped_errors
from raysweep.runtime.pretrain_driver import run_pretrain
from raysweep.search.objective import score_encoder
from raysweep.search.pruning import ProxyPruned, ProxyPruner, quiet_pruned_errors
from raysweep.search.searcher import (
    EPOCHS_DONE,
    MEAN_PREFIX,
    OBJECTIVE,
    TRIAL_ROLE,
    VALUES_PER_SEED,
)
from raysweep.search.space import trial_run, trial_settings
from raysweep.storage.paths import AnyPath, storage_path

__all__ = ["ProxyPruning", "TrialContext", "last_logged", "search_trial"]


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one search shares (shipped to the trials by ``tune.with_parameters``).

    ``base_weights``: the base encoder's ``pretrain:NAME`` resolved to ``file:PATH`` (else None);
    ``run_root``: the search's folder (local or in an object store), whose ``pretrain/`` holds the
    trials' runs; ``proxy``: the metric ASHA stops on (None without early stopping); ``pruner``: the ASHA
    settings, its trial number filled in per trial; ``probe_cpus`` / ``probe_gpus``: the scoring
    task's resources (0 GPUs: score in the trial's process).
    """

    search: SearchSpec
    run_root: AnyPath
    base_weights: str | None
    proxy: str | None
    pruner: ProxyPruner | None
    probe_cpus: float
    probe_gpus: float


class ProxyPruning(UserCallback):
    """Ray Train callback: each reported epoch carrying ``proxy`` goes to ``pruner`` (ASHA),
    which stops the run by raising :class:`~raysweep.search.pruning.ProxyPruned`."""

    def __init__(self, proxy: str, pruner: ProxyPruner) -> None:
        self._proxy = proxy
        self._pruner = pruner

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Any) -> None:
        first = metrics[0] if metrics else {}
        if self._proxy in first:
            quiet_pruned_errors()
            # epochs done, 1-based, the frozen epochs included: ASHA's time axis
            self._pruner.check(int(first["epoch"]) + 1, float(first[self._proxy]))


def last_logged(metrics_path: str | AnyPath, key: str) -> float:
    """The last value of ``key`` in a run's ``metrics.jsonl`` (NaN when never logged)."""
    value = math.nan
    path = storage_path(metrics_path)
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and key in record:
                value = float(record[key])
    return value


def _pruned(error: BaseException) -> ProxyPruned | None:
    """The :class:`ProxyPruned` that stopped a run, among the errors ``error`` wraps."""

    return next((e for e in wrapped_errors(error) if isinstance(e, ProxyPruned)), None)


def run_lock_path(run_dir: AnyPath) -> Path:
    """The file lock that keeps two trials from training ``run_dir`` at once: beside it in a
    local (or shared) folder; for a run in an object store, which has no locks, in the local
    cache (then it guards the trials of this node only)."""
    if isinstance(run_dir, Path):
        return run_dir.parent / f"{run_dir.name}.lock"


    key = hashlib.sha256(str(run_dir).encode()).hexdigest()[:16]
    return cache_root() / "search-run-locks" / f"{run_dir.name}-{key}.lock"


def search_trial(config: dict[str, Any], context: TrialContext) -> None:
    """Tune function trainable of one search trial (``config`` from the searcher:
    ``{"role", "number", "params"}``)."""


    search, params, role = context.search, config["params"], config["role"]
    run = trial_run(search, params)
    if context.base_weights:
        run = run.replace(**{"encoder.weights": context.base_weights})
    settings = trial_settings(search, params)
    run_dir = run_directory(run, context.run_root)
    callbacks = None
    # The default configuration is never stopped early: it is the reference of the report.
    if context.proxy and context.pruner is not None and role == TRIAL_ROLE:
        callbacks = [ProxyPruning(context.proxy, dataclasses.replace(
            context.pruner, trial_number=config["number"], pretrain_run=run_dir.name))]
    lock = run_lock_path(run_dir)
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(lock)):
            pretrained = run_pretrain(run, storage_dir=context.run_root, callbacks=callbacks)
    except Exception as error:
        if _pruned(error) is None:
            raise
        return  # stopped by ASHA: the study trial says so (search_pruning)
    if context.probe_gpus > 0:
        task = ray.remote(score_encoder).options(num_cpus=context.probe_cpus,  # RAY
                                                 num_gpus=context.probe_gpus)
        score = ray.get(task.remote(search, str(pretrained.encoder_path), settings))  # RAY
    else:
        score = score_encoder(search, pretrained.encoder_path, settings)
    final: dict[str, Any] = {
        OBJECTIVE: score.objective, VALUES_PER_SEED: list(score.values),
        "seeds": list(score.seeds), "pretrain_run": pretrained.run_dir.name,
        EPOCHS_DONE: (run.frozen_epochs if run.further else 0) + run.epochs,
        **{MEAN_PREFIX + metric: value for metric, value in score.means.items()},
    }
    if context.proxy:
        final[context.proxy] = last_logged(pretrained.metrics_path, context.proxy)
    ray.tune.report(final)  # RAY
