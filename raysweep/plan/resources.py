"""Packing trials onto the cluster, from what the spec asks and what the cluster can become.

Explicit requests are always made: ``resources.gpus_per_trial``, a pre-training run's
``use_gpu: true`` or a ``GPU`` in its ``resources_per_worker``. Ray then queues what does not fit
yet, and an autoscaler adds the nodes the queued requests need (a cluster of CPU nodes whose GPU
workers start at ``min_workers: 0`` gets them). Only ``auto`` (the field unset) looks at the
cluster: GPUs are used when the cluster has some now *or its autoscaler can add GPU nodes*.

Single-process evaluation trials request a *fraction* of a GPU, so several share one device:
``resources.gpus_per_trial`` when given, else sized from the measured peak memory of the
trial's kind (:mod:`raysweep.plan.gpu_memory`; the kind's first trial measures on a whole
GPU), else 0.25 (four fine-tunes of a ResNet-50 at batch 64 fit an 80 GB card). DDP pre-training runs request whole GPUs per worker and never share
one: two NCCL ranks on one GPU break. ``max_concurrent_trials`` follows from the resources the
cluster can reach (its current nodes, or its autoscaler's node types at their maximum counts), so
that pending trials ask the autoscaler for the nodes they need.

Where the autoscaler's node types come from (:func:`autoscaler_view`), first found wins:

1. ``RAYSWEEP_AUTOSCALER_CONFIG``: a cluster-launcher YAML naming the node types an autoscaler
   can add (``available_node_types`` with ``resources`` and ``max_workers``), for platforms that
   publish them nowhere else (e.g. KubeRay);
2. the autoscaling config Ray keeps in the GCS (``ray._private.state.state.get_cluster_config``,
   the node groups Ray Train checks a worker group against before it waits for one), when the
   platform reports it;
3. ``~/ray_bootstrap_config.yaml``: the cluster launcher's config on the head node of a
   ``ray up`` cluster, which Ray's autoscaler reads (and Ray Tune takes as the sign of an
   autoscaling cluster); a submitted job's driver runs on that head node.

Without any of them the cluster's current resources are all it can offer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch

from raysweep.config import PretrainSpec, ResourcesSpec
from raysweep.environment import value
from raysweep.errors import SpecError
from raysweep.ray_adapter import gcs_cluster_config
from raysweep.storage.reading import StoredFileError, read_yaml

DEFAULT_GPU_FRACTION = 0.25
#: The basis of the whole GPU a kind's first trial gets while it measures its peak memory.
MEASURING = "measuring"

#: The cluster launcher's config on the head node of a ``ray up`` cluster.
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
#: Environment variable naming a cluster-launcher YAML of the autoscaler's node types.
AUTOSCALER_CONFIG_ENV = "RAYSWEEP_AUTOSCALER_CONFIG"


# ------------------------------------------------------------------------ the autoscaler


@dataclass(frozen=True)
class NodeType:
    """One kind of node an autoscaler can run: its resources and how many it may run at most
    (``math.inf``: no limit)."""

    name: str
    cpus: float
    gpus: float
    max_count: float

    def describe(self) -> str:
        count = "unlimited" if math.isinf(self.max_count) else f"up to {self.max_count:g}"
        return f"{self.name} ({count} x {self.cpus:g} CPU, {self.gpus:g} GPU)"


@dataclass(frozen=True)
class AutoscalerView:
    """The node types an autoscaler can run, where they were read, and the cluster-wide caps
    (``max_cpus`` / ``max_gpus``, ``math.inf`` when none)."""

    source: str
    node_types: tuple[NodeType, ...]
    max_cpus: float = math.inf
    max_gpus: float = math.inf

    def capacity(self, resource: str) -> float:
        """The most of ``resource`` (``"CPU"`` or ``"GPU"``) the cluster can reach."""
        per_node = (lambda t: t.cpus) if resource == "CPU" else (lambda t: t.gpus)
        total = 0.0
        for node_type in self.node_types:
            amount = per_node(node_type)
            if amount > 0 and node_type.max_count > 0:
                total += amount * node_type.max_count  # inf stays inf
        cap = self.max_cpus if resource == "CPU" else self.max_gpus
        return min(total, cap)

    def describe(self) -> str:
        types = ", ".join(t.describe() for t in self.node_types) or "no node types"
        return f"{types} (from {self.source})"


def view_from_cluster_config(config: Any) -> AutoscalerView | None:
    """An :class:`AutoscalerView` of Ray's GCS autoscaling config (an
    ``autoscaler_pb2.ClusterConfig``: node groups with ``resources``, ``max_count`` (-1: no
    limit) and ``max_resources`` caps); None when it names no node group."""
    if config is None or not config.node_group_configs:
        return None
    types = tuple(
        NodeType(name=group.name or f"group{index}",
                 cpus=float(group.resources.get("CPU", 0)),
                 gpus=float(group.resources.get("GPU", 0)),
                 max_count=math.inf if group.max_count < 0 else float(group.max_count))
        for index, group in enumerate(config.node_group_configs))
    caps = config.max_resources
    return AutoscalerView(
        source="Ray's autoscaling config in the GCS", node_types=types,
        max_cpus=float(caps["CPU"]) if "CPU" in caps else math.inf,
        max_gpus=float(caps["GPU"]) if "GPU" in caps else math.inf)


def view_from_launcher_config(config: Mapping[str, Any], source: str) -> AutoscalerView | None:
    """An :class:`AutoscalerView` of a cluster-launcher config (the YAML of ``ray up``): every
    entry of ``available_node_types`` with its ``resources`` and ``max_workers`` (default: the
    cluster's ``max_workers``); the head node type counts one more node (the head itself).
    The cluster's ``max_workers`` caps the worker nodes of all types together. None when the
    config names no node type."""
    node_types = config.get("available_node_types") if isinstance(config, Mapping) else None
    if not isinstance(node_types, Mapping) or not node_types:
        return None
    try:
        cluster_max = _count(config.get("max_workers"), math.inf)
    except ValueError as err:
        raise SpecError(f"{source}: {err}") from None
    head_type = config.get("head_node_type")
    types, workers = [], []
    for name, entry in node_types.items():
        entry = entry if isinstance(entry, Mapping) else {}
        resources = entry.get("resources")
        if not isinstance(resources, Mapping):
            resources = {}
        try:
            max_workers = min(_count(entry.get("max_workers"), cluster_max), cluster_max)
            cpus, gpus = _amount(resources.get("CPU")), _amount(resources.get("GPU"), "GPU")
        except ValueError as err:
            raise SpecError(f"{source}: available_node_types.{name}: {err}") from None
        node = NodeType(name=str(name), cpus=cpus, gpus=gpus,
                        max_count=max_workers + (1 if name == head_type else 0))
        types.append(node)
        workers.append(NodeType(node.name, node.cpus, node.gpus, max_workers))
    head = [t for t in types if t.name == head_type]
    caps = {resource: sum(_amount_of(t, resource) for t in head)
            + _largest(workers, resource, cluster_max) for resource in ("CPU", "GPU")}
    return AutoscalerView(source=source, node_types=tuple(types), max_cpus=caps["CPU"],
                          max_gpus=caps["GPU"])


def _count(value: Any, default: float) -> float:
    """A ``max_workers``: an integer >= 0 (``default`` when absent); anything else, a
    negative count included (which Ray's launcher refuses too), is a :class:`ValueError`."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"max_workers {value!r} is not a whole number >= 0")
    return float(value)


def _amount(value: Any, name: str = "CPU") -> float:
    """A node's ``CPU`` / ``GPU`` count: a number >= 0 (0 when absent)."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e9:
        raise ValueError(f"{name} {value!r} is not a number of {name}s >= 0")
    return float(value)


def _amount_of(node_type: NodeType, resource: str) -> float:
    return node_type.cpus if resource == "CPU" else node_type.gpus


def _largest(workers: Iterable[NodeType], resource: str, node_budget: float) -> float:
    """The most of ``resource`` that ``node_budget`` worker nodes of these types hold (richest
    types first)."""
    total, left = 0.0, node_budget
    for node_type in sorted(workers, key=lambda t: -_amount_of(t, resource)):
        take = min(node_type.max_count, left)
        amount = _amount_of(node_type, resource)
        if take <= 0 or amount <= 0:
            continue
        total += amount * take
        left -= take
    return total


def _read_launcher_config(path: Path, source: str) -> AutoscalerView | None:
    """The view of the cluster-launcher YAML at ``path``; raises :class:`SpecError` when it
    cannot be read (:func:`raysweep.storage.reading.read_yaml`: binary, not YAML, numbers too large),
    names no node type, or gives a negative or non-numeric count."""

    try:
        data = read_yaml(path, limit=2**20)
    except (FileNotFoundError, StoredFileError) as err:
        reason = getattr(err, "reason", None) or "no such file"
        raise SpecError(f"{source}: cannot read the autoscaler's node types: {reason}") from None
    view = view_from_launcher_config(data, source) if isinstance(data, Mapping) else None
    if view is None:
        raise SpecError(f"{source}: names no node type (expected available_node_types with "
                        "resources and max_workers, as in launch/cluster.yaml)")
    return view




def autoscaler_view() -> AutoscalerView | None:
    """The node types an autoscaler can add to this cluster (see the module docstring for the
    sources, in order), or None when none is known."""
    override = value(AUTOSCALER_CONFIG_ENV)  # an existing file, else a one-line error
    if isinstance(override, Path):
        return _read_launcher_config(override, f"{AUTOSCALER_CONFIG_ENV}={override}")
    view = view_from_cluster_config(gcs_cluster_config())
    if view is not None:
        return view
    bootstrap = Path(os.path.expanduser(BOOTSTRAP_CONFIG))
    if bootstrap.is_file():
        try:
            return _read_launcher_config(bootstrap,
                                         f"the cluster launcher's {BOOTSTRAP_CONFIG}")
        except SpecError:  # Ray's own file, in a shape not understood here: no view
            return None
    return None


# --------------------------------------------------------------------------- the cluster


@dataclass(frozen=True)
class ClusterResources:
    """What the cluster (or this machine, before Ray starts) offers now, and what its
    autoscaler can add (``autoscaler``: None when no autoscaler's node types are known)."""

    cpus: float
    gpus: float
    autoscaler: AutoscalerView | None = None
    source: str = "given"

    @property
    def max_cpus(self) -> float:
        """The most CPUs the cluster can reach (now, or once scaled up)."""
        scaled = self.autoscaler.capacity("CPU") if self.autoscaler else 0.0
        return max(self.cpus, scaled)

    @property
    def max_gpus(self) -> float:
        """The most GPUs the cluster can reach (now, or once scaled up)."""
        scaled = self.autoscaler.capacity("GPU") if self.autoscaler else 0.0
        return max(self.gpus, scaled)

    def describe(self) -> str:
        text = f"{self.cpus:g} CPUs, {self.gpus:g} GPUs now ({self.source})"
        if self.autoscaler is None:
            return text + "; no autoscaler known: these are all it has"
        return (f"{text}; autoscaler: {self.autoscaler.describe()}, up to "
                f"{_quantity(self.max_cpus)} CPUs, {_quantity(self.max_gpus)} GPUs")

    @classmethod
    def detect(cls) -> ClusterResources:
        """From the running Ray cluster when connected, else from this machine; with the
        autoscaler's node types where they are known (:func:`autoscaler_view`)."""

        view = autoscaler_view()
        if ray.is_initialized():
            total = ray.cluster_resources()
            return cls(cpus=float(total.get("CPU", 0)), gpus=float(total.get("GPU", 0)),
                       autoscaler=view, source="the running Ray cluster")
        gpus = 0
        try:
            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        except Exception:  # noqa: BLE001 - a broken CUDA install means "no GPU"
            gpus = 0
        return cls(cpus=float(os.cpu_count() or 1), gpus=float(gpus), autoscaler=view,
                   source="this machine; Ray not started")


def _quantity(value: float) -> str:
    return "unlimited" if math.isinf(value) else f"{value:g}"


# ---------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class TrialResources:
    """CPU and GPU share of one single-process trial; ``basis`` says where the GPU share
    came from (the spec, or ``auto`` and why)."""

    cpu: float
    gpu: float
    basis: str = field(default="", compare=False)
    cpu_basis: str = field(default="", compare=False)

    def as_ray(self) -> dict[str, float]:
        """The mapping ``tune.with_resources`` takes."""
        return {"cpu": self.cpu, "gpu": self.gpu}

    @property
    def measures_itself(self) -> bool:
        """Whether this is a whole GPU given to a kind's first trial to measure its peak."""
        return self.basis.startswith(MEASURING)


def evaluation_trial_resources(spec: ResourcesSpec, cluster: ClusterResources,
                               measured: tuple[float, str] | None = None) -> TrialResources:
    """CPU and GPU share of one single-process evaluation trial.

    GPU: ``gpus_per_trial`` as given (0 = CPU only), else (``auto``) none when the cluster has
    no GPU and cannot add any, else ``measured`` (the share sized from the trial kind's
    measured peak memory, and its description: :mod:`raysweep.plan.gpu_memory`), else
    :data:`DEFAULT_GPU_FRACTION`. The basis starts with where the share came from: ``spec:``,
    ``measured:``, ``default:`` or ``auto:`` (no GPU). CPU: ``cpus_per_trial`` as given, else
    (``auto``) the GPU share of a GPU node's CPUs (:func:`auto_cpus_per_trial`), so that the
    CPUs of a node never run out before its GPUs are full."""
    if spec.gpus_per_trial is not None:
        gpu, basis = spec.gpus_per_trial, "spec: resources.gpus_per_trial"
    elif cluster.max_gpus <= 0:
        gpu, basis = 0.0, "auto: the cluster has no GPU and cannot add any"
    elif measured is not None:
        gpu, basis = measured
    else:
        gpu, basis = DEFAULT_GPU_FRACTION, f"default: {_gpu_reason(cluster)}"
    if spec.cpus_per_trial is not None:
        wanted, cpu_basis = spec.cpus_per_trial, "resources.cpus_per_trial in the spec"
    else:
        wanted = auto_cpus_per_trial(gpu, cluster)
        per_gpu = cpus_per_gpu(cluster) if gpu > 0 else None
        cpu_basis = (f"auto: {per_gpu:g} CPUs per GPU x {gpu:.4g} GPU" if per_gpu
                     else "auto: one per CPU-only trial")
    return TrialResources(cpu=min(wanted, max(cluster.max_cpus, 1.0)), gpu=gpu, basis=basis,
                          cpu_basis=cpu_basis)


def measuring_trial_resources(spec: ResourcesSpec, cluster: ClusterResources) -> TrialResources:
    """A whole GPU (and its node's CPUs per GPU) for the first trial of a kind whose peak GPU
    memory is not measured yet."""
    return evaluation_trial_resources(spec, cluster, measured=(
        1.0, f"{MEASURING}: the first trial of its kind, alone on a GPU, measures its peak "
             "memory; the others are packed by it"))


def cpus_per_gpu(cluster: ClusterResources) -> float | None:
    """CPUs that come with one GPU on this cluster's GPU nodes: the smallest ratio among the
    autoscaler's GPU node types when known, else the current cluster's CPUs over its GPUs;
    None without GPUs."""
    view = cluster.autoscaler
    ratios = [t.cpus / t.gpus for t in view.node_types if t.gpus > 0 and t.max_count > 0] \
        if view else []
    if cluster.gpus > 0:
        ratios.append(cluster.cpus / cluster.gpus)
    return min(ratios) if ratios else None


def auto_cpus_per_trial(gpu: float, cluster: ClusterResources) -> float:
    """CPUs of a trial that holds ``gpu`` of a GPU: that share of a GPU node's CPUs, rounded
    down, at least 1 (16 CPUs and 4 GPUs at 0.25 GPU a trial: 1 CPU, 16 trials fill the
    node); 1 for a CPU-only trial."""
    per_gpu = cpus_per_gpu(cluster) if gpu > 0 else None
    if not per_gpu:
        return 1.0
    return float(max(1, math.floor(per_gpu * gpu + 1e-9)))


def _gpu_reason(cluster: ClusterResources) -> str:
    if cluster.gpus > 0:
        return f"the cluster has {cluster.gpus:g} GPUs"
    return "the autoscaler can add GPU nodes"


def _fit(total: float, each: float) -> float:
    """How many ``each`` fit in ``total`` (``math.inf`` when unlimited)."""
    return math.inf if math.isinf(total) else math.floor(total / each + 1e-9)


def max_concurrent_trials(trial: TrialResources, cluster: ClusterResources,
                          cap: int | None = None, n_trials: int | None = None) -> int:
    """How many such trials fit at once on the cluster at its largest (at least 1), capped by
    ``cap`` and by the number of trials ``n_trials`` (needed when the autoscaler is unlimited)."""
    limits = [_fit(cluster.max_cpus, trial.cpu)] if trial.cpu > 0 else []
    if trial.gpu > 0:
        limits.append(_fit(cluster.max_gpus, trial.gpu))
    for bound in (cap, n_trials):
        if bound:
            limits.append(bound)
    fit = min(limits, default=1)
    return 1 if math.isinf(fit) else max(1, int(fit))


# ---------------------------------------------------------------------------- pretraining


@dataclass(frozen=True)
class PretrainResources:
    """Resources of one Ray Train run: ``num_workers`` x (``cpu_per_worker``, and when
    ``use_gpu`` ``gpus_per_worker`` whole GPUs); ``basis`` says why GPUs are used or not."""

    num_workers: int
    use_gpu: bool
    cpu_per_worker: float
    gpus_per_worker: int = 1
    basis: str = field(default="", compare=False)

    @property
    def total_cpus(self) -> float:
        return self.num_workers * self.cpu_per_worker

    @property
    def total_gpus(self) -> int:
        return self.num_workers * self.gpus_per_worker if self.use_gpu else 0


def pretrain_resources(spec: PretrainSpec, cluster: ClusterResources) -> PretrainResources:
    """A DDP run gets whole GPUs (``resources_per_worker.GPU``, default one per worker) when
    it uses GPUs at all: always when the spec says so (``use_gpu: true`` or a ``GPU`` in
    ``resources_per_worker``), under ``auto`` when the cluster has or can add GPUs."""
    cpu = float(spec.resources_per_worker.get("CPU", 1.0))
    gpu_each = spec.resources_per_worker.get("GPU")
    if spec.use_gpu is not None:
        use_gpu, basis = spec.use_gpu, f"use_gpu: {str(spec.use_gpu).lower()} in the spec"
    elif gpu_each is not None:
        use_gpu, basis = gpu_each > 0, "resources_per_worker.GPU in the spec"
    elif cluster.max_gpus >= 1:
        use_gpu, basis = True, f"auto: {_gpu_reason(cluster)}"
    else:
        use_gpu, basis = False, "auto: the cluster has no GPU and cannot add any"
    return PretrainResources(num_workers=spec.num_workers, use_gpu=use_gpu, cpu_per_worker=cpu,
                             gpus_per_worker=gpus_per_worker(spec), basis=basis)


def gpus_per_worker(spec: PretrainSpec) -> int:
    """Whole GPUs per DDP worker when the run uses GPUs (``resources_per_worker.GPU``, else
    one)."""
    return max(1, int(spec.resources_per_worker.get("GPU") or 1))


def concurrent_pretrain_runs(runs: list[PretrainResources], cluster: ClusterResources) -> int:
    """How many of these (equal-sized) runs fit at once on the cluster at its largest: whole
    GPUs, never shared; at most all of them."""
    if not runs:
        return 0
    largest = max(runs, key=lambda r: (r.total_gpus, r.total_cpus))
    limits = [_fit(cluster.max_cpus, largest.total_cpus)] if largest.total_cpus else []
    if largest.total_gpus:
        limits.append(_fit(cluster.max_gpus, largest.total_gpus))
    fit = min([*limits, len(runs)])
    return max(1, int(fit))


# ---------------------------------------------------------------------------- waiting


def gpu_wait(amount: float, cluster: ClusterResources) -> str | None:
    """Whether a request of ``amount`` GPUs (one trial's share, or one run's workers together)
    must wait, and for what: None when the cluster has them now; ``"autoscaler"`` when its
    autoscaler can add them; ``"never"`` when it cannot reach them at all."""
    if amount <= 0 or amount <= cluster.gpus + 1e-9:
        return None
    return "autoscaler" if amount <= cluster.max_gpus + 1e-9 else "never"


def unreachable_gpus_reason(amount: float, cluster: ClusterResources) -> str:
    """Why ``amount`` GPUs cannot be had, in words (for an error or a plan note)."""
    if cluster.autoscaler is None:
        return (f"the Ray cluster has {cluster.gpus:g} and no autoscaler that can add GPU "
                f"nodes was found (Ray's GCS autoscaling config, {BOOTSTRAP_CONFIG}, or a "
                f"cluster-launcher YAML named by {AUTOSCALER_CONFIG_ENV})")
    return (f"the Ray cluster has {cluster.gpus:g} and its autoscaler can reach at most "
            f"{_quantity(cluster.max_gpus)} ({cluster.autoscaler.describe()})")
