"""Resources, concurrency and the dry-run description of a search.

A running search trial holds its Tune driver's CPU *while* its ``TorchTrainer`` workers need
theirs (then, with GPUs, while its scoring task needs its share). Trials are therefore only
started as many at once as can hold all of that together: with 2 CPUs, a trial of one
single-CPU worker needs 2, so one runs at a time. Counting only the drivers would let two
drivers take both CPUs and wait forever for their workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from raysweep.config import ExperimentSpec, SearchSpec
from raysweep.errors import SpecError
from raysweep.plan.resources import (
    ClusterResources,
    PretrainResources,
    TrialResources,
    evaluation_trial_resources,
    pretrain_resources,
)
from raysweep.store.searches import STUDY_FILE, search_directory

__all__ = ["DRIVER_CPUS", "SearchResources", "asha_rungs", "describe_searches",
           "search_concurrency", "search_resources", "total_epochs"]

#: CPUs of a search trial's Tune driver (it also scores the encoder on CPU-only clusters).
DRIVER_CPUS = 1.0


@dataclass(frozen=True)
class SearchResources:
    """What one running trial holds: the driver, then its trainer, then (GPUs) its probe."""

    pretrain: PretrainResources
    probe: TrialResources

    @property
    def cpus(self) -> float:
        return DRIVER_CPUS + max(self.pretrain.total_cpus, self.probe.cpu)

    @property
    def gpus(self) -> float:
        return max(float(self.pretrain.total_gpus), self.probe.gpu)


def search_resources(spec: ExperimentSpec, search: SearchSpec,
                     cluster: ClusterResources) -> SearchResources:
    probe = evaluation_trial_resources(spec.resources, cluster)
    if probe.gpu <= 0:  # no GPU: the driver scores on its own CPU
        probe = TrialResources(cpu=0.0, gpu=0.0)
    return SearchResources(pretrain=pretrain_resources(search.pretrain, cluster), probe=probe)


def search_concurrency(resources: SearchResources, cluster: ClusterResources,
                       cap: int | None = None) -> int:
    """Trials that fit at once, all their resources held together (at least 1; at most
    ``cap``)."""
    limits = [math.floor(cluster.cpus / resources.cpus + 1e-9)]
    if resources.gpus > 0:
        limits.append(math.floor(cluster.gpus / resources.gpus + 1e-9))
    fit = max(1, min(limits))
    return min(fit, cap) if cap else fit


def check_fits(search: SearchSpec, resources: SearchResources,
               cluster: ClusterResources) -> None:
    """A trial that can never get all it needs would wait forever: refuse it up front."""
    if resources.cpus > cluster.cpus + 1e-9:
        raise SpecError(
            f"search {search.name}: a trial needs {resources.cpus:g} CPUs ({DRIVER_CPUS:g} for "
            f"its Tune driver + {resources.pretrain.total_cpus:g} for its pre-training workers) "
            f"but the cluster has {cluster.cpus:g}; lower pretrain.resources_per_worker or "
            "num_workers")
    if resources.gpus > cluster.gpus + 1e-9:
        raise SpecError(f"search {search.name}: a trial needs {resources.gpus:g} GPUs but the "
                        f"cluster has {cluster.gpus:g}")


def total_epochs(search: SearchSpec) -> int:
    """Epochs of one full trial (the frozen epochs count when the base is further
    pre-training)."""
    run = search.pretrain
    return (run.frozen_epochs if run.further else 0) + run.epochs


def asha_rungs(search: SearchSpec) -> list[int]:
    """The epochs (``epochs_done``) at which ASHA may stop a trial: ``min_resource *
    reduction_factor**k`` before the last epoch, ``min_resource`` = the frozen epochs +
    ``grace_period`` (Optuna's ``SuccessiveHalvingPruner`` rungs)."""
    last = total_epochs(search)
    step = last - search.pretrain.epochs + search.grace_period
    rungs = []
    while step < last:
        rungs.append(step)
        step *= search.reduction_factor
    return rungs


def describe_searches(spec: ExperimentSpec, cluster: ClusterResources) -> list[str]:
    """The ``stage search`` lines of ``raysweep run --dry-run``."""
    lines = [f"stage search: {len(spec.search)} search(es)"]
    for search in spec.search:
        res = search_resources(spec, search, cluster)
        at_once = search_concurrency(res, cluster, search.max_concurrent_trials)
        epochs = total_epochs(search)
        if search.scheduler == "asha":
            rungs = asha_rungs(search)
            pruning = (f"ASHA on proxy_{search.pretrain.proxy}_acc after epoch(s) "
                       f"{', '.join(map(str, rungs))} (keeps 1/{search.reduction_factor})"
                       if rungs else "ASHA: no rung before the last epoch")
        else:
            pruning = "no early stopping"
        default = " + the default configuration" if search.compare_default else ""
        lines.append(f"  {search.name}: Optuna TPE (seed {search.seed}), {search.num_samples} "
                     f"trials{default}; objective {search.mode} mean "
                     f"{search.metric} of {search.evaluate.seeds}-seed linear probes on the "
                     f"validation split; {pruning}")
        for key, param in search.space.items():
            where = (", ".join(map(repr, param.choices or ())) if param.type == "choice"
                     else f"[{param.low:g}, {param.high:g}]")
            lines.append(f"    {key}: {param.type} {where}")
        runs = search.num_samples + int(search.compare_default)
        lines.append(f"    budget: at most {runs} x {epochs} pre-training "
                     f"epochs ({search.pretrain.method}, {search.pretrain.encoder.name}, "
                     f"batch {search.pretrain.batch_size}) and {runs} x "
                     f"{search.evaluate.seeds} probes of {search.evaluate.settings.epochs} "
                     "epochs")
        device = (f"{res.pretrain.num_workers} GPU" if res.pretrain.use_gpu else "no GPU")
        probe = (f"; scoring {res.probe.cpu:g} CPU + {res.probe.gpu:g} GPU" if res.probe.gpu
                 else "; scoring on the driver's CPU")
        lines.append(f"    resources per trial: {DRIVER_CPUS:g} CPU (Tune driver) + "
                     f"{res.pretrain.num_workers} worker(s) x {res.pretrain.cpu_per_worker:g} "
                     f"CPU, {device}{probe}; up to {at_once} trial(s) at once")
        lines.append(f"    Optuna study {search.name}-<hash> in "
                     f"{search_directory(spec, search) / STUDY_FILE}")
    return lines
