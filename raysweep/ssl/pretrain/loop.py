"""One worker's pre-training loop: plain PyTorch, runnable with or without Ray.

:func:`pretrain_worker` is what every Ray Train worker runs (through :func:`ray_train_loop`, the
``train_loop_per_worker`` of the driver); tests call it directly, in one process or in a
process group they start themselves. Its only contact with Ray is the ``hooks`` object
(:mod:`raysweep.ssl.pretrain.hooks`, Ray calls marked ``# RAY``).

The protocol (docs/protocol.md "Further pre-training", section 3.7 of the paper):

1. a fresh, randomly initialised head: the projector or linear head that the method's entry in
   :mod:`raysweep.ssl.methods` names (which also gives the objective and the number of views);
2. ``frozen_epochs`` (paper: 1) with the encoder frozen: only the projector trains, with Adam at
   the fixed ``frozen_lr`` (1e-3). Only when ``spec.further``; from scratch this is skipped;
3. ``epochs`` of training of the ``trainable`` part (``encoder``: the paper's SSL; ``last_block``:
   SSL_p, ``encoder.layer4[-1]`` only) plus the projector, with the 1cycle policy (fastai's, via
   :func:`raysweep.optim.schedules.fastai_one_cycle`) or a cosine schedule; ``lr_max`` given or
   found by an LR range test.

Frozen means bit-identical: frozen encoder modules are put in eval mode, so their BatchNorm
running statistics do not move either. (fastai's ``freeze`` keeps BatchNorm trainable, a
fine-tuning habit; for further pre-training we freeze BN statistics outside the trainable part,
so that "every tensor outside ``layer4[-1]`` is unchanged" holds under SSL_p.)

Distribution (DDP over ``W`` ranks): every global batch of ``batch_size`` images is split into
``W`` contiguous slices (:mod:`raysweep.ssl.pretrain.sharding`); with ``W > 1`` every BatchNorm
of the model spans the global batch (``nn.SyncBatchNorm`` on GPUs,
:class:`~raysweep.distributed.GlobalBatchNorm` on CPUs), and the losses reduce across
ranks with autograd-aware collectives, so one step on W workers equals one step of one worker on
the same global batch. Gradient accumulation splits each rank's slice into
``grad_accum_steps`` micro-batches; the SSL losses are then computed per micro-batch (their
batch statistics span ``batch_size / grad_accum_steps`` images across ranks) and the gradients
are averaged: a documented approximation of the full batch, as in every accumulation scheme
for batch-statistics losses.

Monitoring (the thesis' Figure 7.1): every epoch's metrics hold the mean of the method's logged
terms (two-view methods add ``contrastive_top1``, the share of anchors whose most similar
embedding in the global batch is their other view) and, with ``validation_fraction``, the same
terms on a held-out share of the images (``val_loss``, ``val_contrastive_top1``, ...:
:func:`validation_metrics`), never trained on.

Randomness: the data order comes from ``(seed, epoch)``, the augmentation of each micro-batch
from ``(seed, epoch, step, rank, micro-batch)``, the initialisation from ``(seed, "init")``:
nothing depends on global RNG state, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from raysweep import augment
from raysweep.config import PretrainSpec, from_dict
from raysweep.data import load_dataset, to_float_rgb
from raysweep.distributed import (
    broadcast_float,
    convert_to_global_batchnorm,
    get_backend,
    get_rank,
    get_world_size,
)
from raysweep.errors import DataError, SpecError, WeightsError
from raysweep.models import LinearHead, Projector, build_encoder
from raysweep.optim import lr_range_test
from raysweep.optim.lr_finder import LR_FINDER_END, LR_FINDER_START
from raysweep.optim.schedules import fastai_one_cycle
from raysweep.ray_adapter import train_report_logger_name
from raysweep.seeding import derive_seed, torch_generator
from raysweep.ssl.methods import ObjectiveInput, pretrain_method
from raysweep.ssl.pretrain import checkpoint as ckpt
from raysweep.ssl.pretrain.hooks import RayTrainHooks, WorkerHooks
from raysweep.ssl.pretrain.proxy import proxy_score
from raysweep.ssl.pretrain.sharding import (
    epoch_order,
    global_batches,
    local_batch,
    validation_split,
)
from raysweep.storage.atomic import atomic_write_text, to_jsonable
from raysweep.storage.paths import AnyPath, storage_path
from raysweep.storage.provenance import provenance

if TYPE_CHECKING:
    from raysweep.models import ResNetEncoder

__all__ = [
    "PretrainNet",
    "StepHook",
    "TrainingData",
    "pretrain_worker",
    "ray_train_loop",
]

#: Called after every optimisation step as ``hook(epoch, step, rank)`` (tests inject worker
#: failures with it: :class:`raysweep.ssl.pretrain.faults.KillOnce`).
StepHook = Callable[[int, int, int], None]


@dataclass
class TrainingData:
    """What the loop trains on: uint8 images (N, C, H, W), the indices of an epoch (with
    oversampling repeats), labels (N,) with their class names for the methods that need them,
    the held-out validation indices (``validation_fraction``; None: no validation), and
    ``watermark`` bool (N,): the images whose source asks for the watermark cutout
    (``watermark_cutout: true``, DermNet; None: none does)."""

    images: Any
    indices: np.ndarray
    labels: np.ndarray | None = None
    classes: tuple[str, ...] = ()
    val_indices: np.ndarray | None = None
    watermark: np.ndarray | None = None


class PretrainNet(nn.Module):
    """Encoder followed by a projector (SSL) or a linear head (supervised).

    ``forward(*views)`` maps each float (B, 3, H, W) batch to its projection (B, d) and returns
    them as a tuple, so that DDP sees one forward per backward (as in the Barlow Twins code).
    """

    encoder: ResNetEncoder
    head: nn.Module

    def __init__(self, encoder: ResNetEncoder, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, *views: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.head(self.encoder(v)) for v in views)


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def load_training_data(spec: PretrainSpec) -> TrainingData:
    """The pre-training images: every unlabelled index (with oversampling) for SSL methods, the
    labelled training split for ``supervised``."""

    dataset = load_dataset(spec.data)
    watermark = dataset.watermark if dataset.watermark.any() else None
    if pretrain_method(spec.method).needs_labels:
        indices, _ = dataset.labelled_indices("train")
        return TrainingData(dataset.images, np.asarray(indices, dtype=np.int64),
                            np.asarray(dataset.labels, dtype=np.int64), tuple(dataset.classes),
                            watermark=watermark)
    return TrainingData(dataset.images, np.asarray(dataset.unlabelled(), dtype=np.int64),
                        watermark=watermark)


def hold_out_validation(spec: PretrainSpec, data: TrainingData) -> TrainingData:
    """``data`` with ``spec.validation_fraction`` of its distinct images moved to
    ``val_indices`` (:func:`~raysweep.ssl.pretrain.sharding.validation_split`, from the data's
    split seed); ``data`` itself when the fraction is 0. A hold-out smaller than one batch is
    a :class:`DataError` (the validation batches have the training batch size, so that the two
    losses compare)."""
    if not spec.validation_fraction:
        return data
    train, held = validation_split(data.indices, spec.validation_fraction,
                                   seed=spec.data.split_seed)
    if len(held) < spec.batch_size:
        raise DataError(f"pretrain {spec.name}: validation_fraction {spec.validation_fraction:g} "
                        f"holds out {len(held)} images, fewer than one batch of "
                        f"{spec.batch_size}")
    return dataclasses.replace(data, indices=train, val_indices=held)


def build_net(spec: PretrainSpec, num_classes: int = 0) -> PretrainNet:
    """Encoder from ``spec.encoder`` plus a fresh projector / head, initialised from
    ``(seed, "init")`` (the encoder's random init too, when its weights are ``random``)."""

    encoder = build_encoder(spec.encoder.name, spec.encoder.weights,
                            generator=torch_generator(spec.seed, "pretrain-init-encoder"))
    head_generator = torch_generator(spec.seed, "pretrain-init-head")
    kind = pretrain_method(spec.method).head
    if kind == "classifier":
        head: nn.Module = LinearHead(encoder.output_dim, num_classes, generator=head_generator)
    else:
        head = Projector(encoder.output_dim, spec.projector,
                         batch_norm=kind == "projector_bn", generator=head_generator)
    return PretrainNet(encoder, head)


#: The spec's default ``augmentation`` (a method may replace it by its own pipeline).
_DEFAULT_AUGMENTATION = PretrainSpec.__dataclass_fields__["augmentation"].default


def build_transform(spec: PretrainSpec) -> Callable[..., Any]:
    """Two views or one augmented view (as the method asks), batched on the device."""

    method = pretrain_method(spec.method)
    # The pipeline holds the paper's watermark cutout when a source asks for it; each batch
    # says which of its images come from such a source (micro_batch_loss), and only those
    # are cut (DermNet's watermark, docs/protocol.md).
    cutout = any(source.watermark_cutout for source in spec.data.sources)
    name = spec.augmentation
    if method.augmentation is not None and name == _DEFAULT_AUGMENTATION:
        name = method.augmentation
    build = augment.build_views if method.views == 2 else augment.build_pipeline
    return build(name, image_size=spec.data.image_size, strength=spec.strength,
                 center_dropout=cutout)


def resolve_precision(spec: PretrainSpec, device: torch.device) -> tuple[bool, bool]:
    """(bf16 autocast?, channels_last?): defaults on for CUDA devices, off on CPU."""
    on_gpu = device.type == "cuda"
    bf16 = spec.precision == "bf16" or (spec.precision == "auto" and on_gpu)
    channels_last = on_gpu if spec.channels_last is None else spec.channels_last
    return bf16, channels_last


def _trainable_modules(net: PretrainNet, phase: str, trainable: str) -> list[nn.Module]:
    if phase == "frozen":
        return [net.head]
    if trainable == "last_block":
        return [net.encoder.layer4[-1], net.head]
    return [net.encoder, net.head]


def configure_phase(net: PretrainNet, phase: str, trainable: str) -> list[nn.Parameter]:
    """Set requires_grad and train/eval modes for ``phase``; return the trainable parameters.

    Modules outside the trainable part are in eval mode (BatchNorm statistics frozen) and
    receive no gradient, so they stay bit-identical.
    """
    modules = _trainable_modules(net, phase, trainable)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    params: list[nn.Parameter] = []
    for module in modules:
        module.train()
        for p in module.parameters():
            p.requires_grad_(True)
            params.append(p)
    return params


def make_optimizer(spec: PretrainSpec, params: list[nn.Parameter], phase: str,
                   lr: float) -> torch.optim.Optimizer:
    """Adam (paper; or AdamW for SimCLR) with the spec's weight decay, in both phases."""
    cls = torch.optim.AdamW if spec.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=spec.frozen_lr if phase == "frozen" else lr,
               weight_decay=spec.weight_decay)


def make_scheduler(spec: PretrainSpec, optimizer: torch.optim.Optimizer, lr_max: float,
                   total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """fastai's 1cycle with the spec's settings (``pct_start``, ``div_factor``,
    ``final_div_factor``, ``max_momentum``, ``base_momentum``; docs/protocol.md's defaults) or
    cosine from lr_max to ``lr_min``."""
    if spec.schedule == "cosine":
        for group in optimizer.param_groups:
            group["lr"] = lr_max
            group["initial_lr"] = lr_max
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps,
                                                          eta_min=spec.lr_min)

    return fastai_one_cycle(optimizer, max_lr=lr_max, total_steps=total_steps,
                            pct_start=spec.pct_start, div=spec.div_factor,
                            div_final=spec.final_div_factor, max_momentum=spec.max_momentum,
                            base_momentum=spec.base_momentum)


# ---------------------------------------------------------------------------------------------
# One step
# ---------------------------------------------------------------------------------------------


@dataclass
class StepContext:
    """Everything one optimisation step needs (built per phase)."""

    spec: PretrainSpec
    model: nn.Module  # the DDP wrapper, or the net itself with one rank
    net: PretrainNet
    data: TrainingData
    transform: Callable[..., Any]
    device: torch.device
    bf16: bool
    channels_last: bool
    rank: int
    world_size: int
    sparse_weight: nn.Parameter | None = None  # the projector's last weight (eq. 2)


def _to_device(ctx: StepContext, index: np.ndarray) -> torch.Tensor:

    batch = torch.from_numpy(np.ascontiguousarray(ctx.data.images[np.sort(index)]))
    order = np.argsort(np.argsort(index, kind="stable"), kind="stable")
    batch = batch[torch.from_numpy(order)]  # back to the sampled order after a sorted read
    return to_float_rgb(batch.to(ctx.device, non_blocking=True))


def _layout(ctx: StepContext, x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if ctx.channels_last else x


def micro_batch_loss(ctx: StepContext, index: np.ndarray,
                     generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one micro-batch (global over ranks where the method's loss is) and its logged
    terms: the views the method asks for, through the network, into its objective."""
    method = pretrain_method(ctx.spec.method)
    x = _to_device(ctx, index)
    if ctx.data.watermark is None:
        views = ctx.transform(x, generator=generator)
    else:
        cutout = torch.from_numpy(ctx.data.watermark[index]).to(ctx.device)
        views = ctx.transform(x, generator=generator, cutout=cutout)

    if method.views == 1:
        views = (views,)
    labels = None
    if method.needs_labels:
        if ctx.data.labels is None:
            raise DataError(f"pretrain {ctx.spec.name}: method {ctx.spec.method} needs labels; "
                            "the training data has none")
        labels = torch.from_numpy(ctx.data.labels[index]).to(ctx.device)
    with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.bf16):
        outputs = ctx.model(*(_layout(ctx, view) for view in views))
    return method.objective(ctx.spec, ObjectiveInput(outputs, labels, ctx.sparse_weight,
                                                     ctx.world_size))


def train_step(ctx: StepContext, optimizer: torch.optim.Optimizer, index: np.ndarray, *,
               epoch: int, step: int, purpose: str = "pretrain-views") -> dict[str, float]:
    """One optimisation step on this rank's slice ``index`` of a global batch."""
    accum = ctx.spec.grad_accum_steps
    chunks = np.array_split(index, accum)
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = {}
    for micro, chunk in enumerate(chunks):
        generator = torch_generator(ctx.spec.seed, purpose, epoch, step, ctx.rank, micro)
        model, last = ctx.model, micro == accum - 1
        with (model.no_sync() if isinstance(model, DistributedDataParallel) and not last
              else contextlib.nullcontext()):
            loss, logged = micro_batch_loss(ctx, chunk, generator)
            (loss / accum).backward()
        for key, value in logged.items():
            totals[key] = totals.get(key, 0.0) + value / accum
    optimizer.step()
    return totals


# ---------------------------------------------------------------------------------------------
# The worker
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def _wrap(net: PretrainNet, device: torch.device, world_size: int) -> nn.Module:
    if world_size == 1:
        return net
    return DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None,
        forward_sync_buffers=False)  # BN statistics are global: buffers agree on every rank


def find_lr_max(ctx: StepContext, params: list[nn.Parameter], steps: int) -> dict[str, Any]:
    """LR range test (fastai's exponential sweep and "valley" suggestion, via
    :func:`raysweep.optim.lr_range_test`) on the trainable parameters, from a copy of the state
    that is restored afterwards.

    The test runs on every rank together, on the real global batches (Barlow Twins' loss and
    the global BatchNorm need all ranks); rank 0's suggestion is then broadcast so every rank
    uses the very same lr_max.
    """

    spec = ctx.spec
    saved = {k: v.detach().clone() for k, v in ctx.net.state_dict().items()}
    optimizer = make_optimizer(spec, params, "train", LR_FINDER_START)
    order = epoch_order(ctx.data.indices, seed=derive_seed(spec.seed, "lr-finder"), epoch=0)
    counter = {"i": 0}

    def step(lr: float) -> float:
        for group in optimizer.param_groups:
            group["lr"] = lr
        i = counter["i"]
        counter["i"] += 1
        index = local_batch(order, step=i % steps, batch_size=spec.batch_size,
                            rank=ctx.rank, world_size=ctx.world_size)
        return train_step(ctx, optimizer, index, epoch=-1, step=i,
                          purpose="pretrain-lr-finder-views")["loss"]

    result = lr_range_test(step, start=LR_FINDER_START, end=LR_FINDER_END,
                           iters=spec.lr_finder_iters)
    with torch.no_grad():
        ctx.net.load_state_dict(saved)
    suggestion = broadcast_float(float(result.suggestion), ctx.device)
    return {"lrs": [float(v) for v in result.lrs], "losses": [float(v) for v in result.losses],
            "suggestion": suggestion}


def pretrain_worker(
    spec: PretrainSpec,
    hooks: WorkerHooks,
    *,
    metrics_path: str | os.PathLike[str] | None = None,
    transform: Callable[..., Any] | None = None,
    data: TrainingData | None = None,
    after_step: StepHook | None = None,
) -> None:
    """Pre-train per ``spec`` on this rank; report every epoch; checkpoint per ``checkpoint_every``.

    Args:
        spec: the run.
        hooks: device, checkpoint lookup and reporting (Ray Train or local).
        metrics_path: rank 0 rewrites this ``metrics.jsonl`` (atomically) after every epoch.
        transform: replaces the spec's augmentation (tests use deterministic views).
        data: replaces ``load_dataset(spec.data)`` (tests).
        after_step: called after every optimisation step (tests inject failures with it).

    Must be called on every rank of the process group (if any); the default process group's
    backend must suit ``hooks.device`` (gloo for CPU, nccl for CUDA).
    """
    rank, world = get_rank(), get_world_size()
    if spec.batch_size % (world * spec.grad_accum_steps):
        raise SpecError(f"pretrain {spec.name}: batch_size {spec.batch_size} must be a multiple "
                        f"of num_workers x grad_accum_steps = {world * spec.grad_accum_steps}")
    with _deterministic(spec.deterministic):
        data = hold_out_validation(spec, data if data is not None else load_training_data(spec))
        steps = global_batches(len(data.indices), spec.batch_size)
        if steps == 0:
            raise DataError(f"pretrain {spec.name}: {len(data.indices)} images are fewer than "
                            f"one batch of {spec.batch_size}")
        worker = _Worker.build(spec, hooks, rank, world, data, steps,
                               transform if transform is not None else build_transform(spec),
                               storage_path(metrics_path) if metrics_path else None, after_step)
        train_epochs(worker)


@dataclass
class _Worker:
    """One rank's fixed setting for a whole run: the spec, the runtime, the data, the network
    (converted for DDP and on the device) and what the checkpoints record about the worker."""

    spec: PretrainSpec
    hooks: WorkerHooks
    rank: int
    world: int
    data: TrainingData
    steps: int  # optimisation steps per epoch
    transform: Callable[..., Any]
    metrics_path: AnyPath | None
    after_step: StepHook | None
    net: PretrainNet
    bf16: bool
    channels_last: bool
    meta: dict[str, Any]  # provenance and resolved settings, recorded in every checkpoint

    @classmethod
    def build(cls, spec: PretrainSpec, hooks: WorkerHooks, rank: int, world: int,
              data: TrainingData, steps: int, transform: Callable[..., Any],
              metrics_path: AnyPath | None, after_step: StepHook | None) -> _Worker:
        device = hooks.device
        bf16, channels_last = resolve_precision(spec, device)
        net = build_net(spec, num_classes=len(data.classes))
        if world > 1:
            converted = (nn.SyncBatchNorm.convert_sync_batchnorm(net) if device.type == "cuda"
                         else convert_to_global_batchnorm(net))
            assert isinstance(converted, PretrainNet)  # both convert in place, returning the root
            net = converted
        net = net.to(device).to(memory_format=torch.channels_last if channels_last else
                                torch.contiguous_format)
        meta = {"provenance": provenance(spec), "world_size": world, "device": str(device),
                "backend": get_backend(), "bf16": bf16,
                "channels_last": channels_last}
        return cls(spec, hooks, rank, world, data, steps, transform, metrics_path, after_step,
                   net, bf16, channels_last, to_jsonable(meta))

    @property
    def device(self) -> torch.device:
        return self.hooks.device

    @property
    def frozen_epochs(self) -> int:
        return self.spec.frozen_epochs if self.spec.further else 0

    @property
    def total_epochs(self) -> int:
        return self.frozen_epochs + self.spec.epochs


@dataclass
class _Progress:
    """What carries over from epoch to epoch, and across a restart through the checkpoint."""

    start_epoch: int  # the first epoch this call trains
    history: list[dict[str, Any]]
    lr_max: float | None
    lr_finder: dict[str, Any] | None = None
    resumed_from: list[int] = field(default_factory=list)  # epochs the run restarted at
    restored: ckpt.PretrainState | None = None  # the checkpoint restored, for its optimiser


@dataclass
class _Phase:
    """The optimisation set-up of one phase (``frozen`` or ``train``)."""

    name: str
    ctx: StepContext
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None


def train_epochs(worker: _Worker) -> None:
    """Restore from the newest checkpoint, then train every remaining epoch, building each
    phase's optimiser when the phase begins."""
    progress = restore(worker)
    phase: _Phase | None = None
    for epoch in range(progress.start_epoch, worker.total_epochs):
        name = "frozen" if epoch < worker.frozen_epochs else "train"
        if phase is None or phase.name != name:
            phase = None
            gc.collect()  # the old DDP reducer must drop its hooks before a new one is built
            phase = enter_phase(worker, name, epoch, progress)
        metrics = train_epoch(worker, phase, epoch, progress)
        finish_epoch(worker, phase, epoch, progress, metrics)


def restore(worker: _Worker) -> _Progress:
    """The progress of the newest checkpoint (its network loaded into ``worker.net``, this
    rank's RNG states restored), or a fresh start when there is none or it is unreadable."""
    fresh = _Progress(start_epoch=0, history=[], lr_max=worker.spec.lr_max)
    with worker.hooks.latest_checkpoint() as directory:
        if directory is None:
            return fresh
        try:
            state = ckpt.load_state(directory)
            ckpt.load_rng_state(directory, worker.rank)
        except WeightsError as err:  # a damaged or planted file: never trust it
            warnings.warn(f"{err}; starting this run from its first epoch", stacklevel=1)
            return fresh
    worker.net.load_state_dict(state.net)
    return _Progress(start_epoch=state.next_epoch, history=state.history, lr_max=state.lr_max,
                     lr_finder=state.lr_finder,
                     resumed_from=[*state.resumed_from, state.next_epoch], restored=state)


def enter_phase(worker: _Worker, name: str, epoch: int, progress: _Progress) -> _Phase:
    """Freeze all but the phase's trainable part, wrap for DDP, run the LR finder when the
    training phase has no lr_max yet, and build the optimiser (and, when training, the
    schedule), restored from the checkpoint when the run resumes inside this phase."""
    spec, net = worker.spec, worker.net
    params = configure_phase(net, name, spec.trainable)
    ctx = StepContext(spec, _wrap(net, worker.device, worker.world), net, worker.data,
                      worker.transform, worker.device, worker.bf16, worker.channels_last,
                      worker.rank, worker.world,
                      getattr(getattr(net.head, "last_layer", None), "weight", None))
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    if name == "train":
        if progress.lr_max is None:
            progress.lr_finder = find_lr_max(ctx, params, worker.steps)
            progress.lr_max = progress.lr_finder["suggestion"]
            configure_phase(net, name, spec.trainable)
        lr_max = progress.lr_max
        optimizer = make_optimizer(spec, params, name, lr_max or spec.frozen_lr)
        scheduler = make_scheduler(spec, optimizer, float(lr_max), spec.epochs * worker.steps)
    else:
        optimizer = make_optimizer(spec, params, name, progress.lr_max or spec.frozen_lr)
    restored = progress.restored
    if restored is not None and restored.phase == name and epoch == progress.start_epoch:
        optimizer.load_state_dict(restored.optimizer)
        if scheduler is not None and restored.scheduler is not None:
            scheduler.load_state_dict(restored.scheduler)
    return _Phase(name, ctx, optimizer, scheduler)


def train_epoch(worker: _Worker, phase: _Phase, epoch: int, progress: _Progress
                ) -> dict[str, Any]:
    """One epoch of ``phase``: its metrics (the mean logged terms, lr, throughput, the
    validation terms with a hold-out, and the proxy when it is due). A non-finite loss stops
    the run."""
    spec = worker.spec
    order = epoch_order(worker.data.indices, seed=spec.seed, epoch=epoch)
    sums: dict[str, float] = {}
    lr_first = phase.optimizer.param_groups[0]["lr"]
    started = time.perf_counter()
    for step in range(worker.steps):
        index = local_batch(order, step=step, batch_size=spec.batch_size, rank=worker.rank,
                            world_size=worker.world)
        logged = train_step(phase.ctx, phase.optimizer, index, epoch=epoch, step=step)
        if phase.scheduler is not None:
            phase.scheduler.step()
        for key, value in logged.items():
            sums[key] = sums.get(key, 0.0) + value / worker.steps
        if worker.after_step is not None:
            worker.after_step(epoch, step, worker.rank)
    elapsed = time.perf_counter() - started
    if any(not math.isfinite(v) for v in sums.values()):
        raise FloatingPointError(f"pretrain {spec.name}: non-finite loss at epoch {epoch}")
    lr_max = progress.lr_max
    metrics: dict[str, Any] = {
        "epoch": epoch, "phase": phase.name, **sums, "lr": float(lr_first),
        "lr_max": float(lr_max) if lr_max is not None and phase.name == "train" else None,
        "images_per_s": worker.steps * spec.batch_size / elapsed, "epoch_time_s": elapsed,
    }
    if worker.data.val_indices is not None:
        metrics.update(validation_metrics(worker, phase))
    if spec.proxy_every and ((epoch + 1) % spec.proxy_every == 0
                             or epoch == worker.total_epochs - 1):
        # Frozen epochs too: a scheduler stopping on the proxy needs it in every report.
        metrics.update(_proxy_metrics(spec, worker.net, worker.device, worker.bf16))
        configure_phase(worker.net, phase.name, spec.trainable)
    return metrics


@torch.no_grad()
def validation_metrics(worker: _Worker, phase: _Phase) -> dict[str, float]:
    """The method's logged terms on the held-out images, each prefixed ``val_`` (``val_loss``,
    ``val_contrastive_top1``, ...): the network in eval mode (BatchNorm on its running
    statistics), no gradient, the same global batches (and micro-batches) every epoch with the
    same views, drawn from ``(seed, "pretrain-val-views", batch, rank, micro-batch)``, so that
    the curve follows the network alone (the thesis' Figure 7.1). Every rank takes its slice of
    each batch, as in training; the losses span the ranks as they do there."""
    spec, val = worker.spec, worker.data.val_indices
    assert val is not None
    ctx = dataclasses.replace(phase.ctx, model=worker.net)  # no DDP wrapper: nothing to sync
    worker.net.eval()
    batches, accum = global_batches(len(val), spec.batch_size), spec.grad_accum_steps
    sums: dict[str, float] = {}
    for step in range(batches):
        index = local_batch(val, step=step, batch_size=spec.batch_size, rank=worker.rank,
                            world_size=worker.world)
        for micro, chunk in enumerate(np.array_split(index, accum)):
            generator = torch_generator(spec.seed, "pretrain-val-views", step, worker.rank, micro)
            _, logged = micro_batch_loss(ctx, chunk, generator)
            for key, value in logged.items():
                sums[key] = sums.get(key, 0.0) + value / (batches * accum)
    configure_phase(worker.net, phase.name, spec.trainable)
    return {f"val_{key}": value for key, value in sums.items()}


def finish_epoch(worker: _Worker, phase: _Phase, epoch: int, progress: _Progress,
                 metrics: dict[str, Any]) -> None:
    """Record the epoch's metrics (``metrics.jsonl`` on rank 0) and report them, with a
    checkpoint when one is due (every ``checkpoint_every`` epochs and after the last)."""
    spec = worker.spec
    progress.history.append(metrics)
    if worker.rank == 0 and worker.metrics_path is not None:
        atomic_write_text(worker.metrics_path, "".join(json.dumps(to_jsonable(m)) + "\n"
                                                       for m in progress.history))
    write = None
    if epoch == worker.total_epochs - 1 or (epoch + 1) % spec.checkpoint_every == 0:
        state = ckpt.PretrainState(
            next_epoch=epoch + 1, phase=phase.name, net=worker.net.state_dict(),
            optimizer=phase.optimizer.state_dict(),
            scheduler=phase.scheduler.state_dict() if phase.scheduler is not None else None,
            lr_max=float(progress.lr_max) if progress.lr_max is not None else None,
            lr_finder=progress.lr_finder, history=to_jsonable(progress.history),
            meta=worker.meta, resumed_from=list(progress.resumed_from))

        def write(directory: Path, state: ckpt.PretrainState = state) -> None:
            ckpt.save_rng_state(directory, worker.rank)
            if worker.rank == 0:
                ckpt.save_state(directory, state)

    worker.hooks.report({k: v for k, v in metrics.items() if v is not None}, write)


def _proxy_metrics(spec: PretrainSpec, net: PretrainNet, device: torch.device,
                   bf16: bool) -> dict[str, float]:
    """The downstream proxy (every rank computes it: it is cheap, and keeps ranks in step)."""

    assert spec.proxy_data is not None
    net.eval()
    score = proxy_score(net.encoder, spec.proxy_data, kind=spec.proxy, device=device, bf16=bf16,
                        seed=spec.seed)
    return {f"proxy_{spec.proxy}_acc": score}


def _match_report_log_level(level: str) -> None:
    """Ray Train 2.60 logs every ``ray.train.report`` at INFO ("Reporting training result
    ...", the whole metrics dict) through a logger the RunConfig's log level misses
    (:func:`raysweep.ray_adapter.train_report_logger_name`). Give that logger the run's level
    (the driver prints its own line per epoch)."""
    name = train_report_logger_name()
    if name is not None:
        logging.getLogger(name).setLevel(level)



def ray_train_loop(config: dict[str, Any]) -> None:
    """``train_loop_per_worker`` of the driver's ``TorchTrainer``: rebuild the spec, run."""

    _match_report_log_level(config.get("log_level", "WARNING"))
    spec = from_dict(PretrainSpec, config["spec"])
    pretrain_worker(spec, RayTrainHooks(), metrics_path=config.get("metrics_path"),
                    transform=config.get("transform"), after_step=config.get("after_step"))
