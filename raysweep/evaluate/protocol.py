"""One fine-tuning or linear-probe run of the paper's protocol (docs/protocol.md "Fine-tuning";
section 3.4, appendix A.1; the authors' fastai code), for one seed.

1. A new linear head (``raysweep.models.LinearHead``, initialised from the seed's ``head``
   stream).
2. ``head_epochs`` (1) epochs of the head against the frozen encoder, Adam at ``head_lr`` (1e-3).
   ``bn_in_head_epoch = trainable`` (default, fastai's ``freeze``: BatchNorm layers stay in
   training mode and their affine parameters train); ``frozen``: the encoder is entirely in eval
   mode and nothing in it trains.
3. Fine-tuning unfreezes the whole encoder with a fresh optimiser state (fastai's
   ``freeze_to`` clears the state); a probe keeps its optimiser.
4. LR finder (fastai ``lr_find``: 100 steps from 1e-7 to 10, ``valley``) on the trainable part,
   with model and optimiser restored afterwards, unless ``lr_max`` is given.
5. ``epochs`` (40) of fastai's 1cycle at ``lr_max`` (``raysweep.optim.fastai_one_cycle``).
6. TTA on the test set (3 views, averaged softmax) and the metrics.

Optimiser: fastai's Adam = ``torch.optim.AdamW`` with ``eps=1e-5``, ``betas=(0.9, 0.99)``
(beta1 cycled 0.95 -> 0.85 -> 0.95 by the 1cycle schedule; fastai's decoupled weight decay,
0 in the paper's code). Training batches: ``batch_size`` (64), reshuffled each epoch from the
``data_order`` stream, incomplete last batch dropped (fastai), augmented with the ``supervised``
pipeline from the ``train_aug`` stream; the LR finder draws its batches from its own stream.

Linear probe: the encoder is frozen *throughout*, BatchNorm included, and runs in eval mode, so
its features are a fixed function of the (augmented) image. (The authors' fastai ``freeze``
would leave BatchNorm trainable; that would make the "probe" train part of the encoder and
would forbid sharing one encoder pass between seeds.) Probe rows record
``bn_in_head_epoch = frozen`` accordingly.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from raysweep.config import EvaluationSpec
from raysweep.data import to_float_rgb
from raysweep.errors import WeightsError
from raysweep.evaluate.inputs import (
    LabelledPair,
    Split,
    epoch_batches,
    prepare_pair,
    prepare_split,
    resolve_device,
    steps_per_epoch,
)
from raysweep.evaluate.metrics import classification_metrics
from raysweep.evaluate.streams import SeedStreams
from raysweep.evaluate.tta import Augment, tta_probabilities
from raysweep.models import LinearHead
from raysweep.optim import LRFinderResult, fastai_one_cycle, lr_range_test

__all__ = ["finetune", "probe_single", "default_augment", "encoder_output_dim"]

ADAM_BETAS = (0.9, 0.99)  # fastai Adam defaults
ADAM_EPS = 1e-5


def default_augment(settings: EvaluationSpec, image_size: int) -> Augment:
    """The training/TTA pipeline named by ``settings.augmentation`` (``supervised``)."""
    from raysweep.augment import build_pipeline

    return build_pipeline(settings.augmentation, image_size=image_size,
                          strength=settings.strength)


@torch.no_grad()
def encoder_output_dim(encoder: nn.Module, sample: torch.Tensor) -> int:
    """``encoder.output_dim``, checked against a forward pass of ``sample`` (uint8 images).

    Raises WeightsError when the attribute is missing or the features have another size. The
    check runs in eval mode (BatchNorm statistics untouched) and restores the module's mode.
    """
    declared = getattr(encoder, "output_dim", None)
    if not isinstance(declared, int) or declared < 1:
        raise WeightsError(f"encoder {type(encoder).__name__} has no integer output_dim "
                           f"(got {declared!r})")
    was_training = encoder.training
    encoder.eval()
    try:
        features = encoder(to_float_rgb(sample))
    finally:
        encoder.train(was_training)
    if features.ndim != 2 or features.shape[1] != declared:
        raise WeightsError(f"encoder {type(encoder).__name__} outputs features of shape "
                           f"{tuple(features.shape)} but its output_dim (the head's input size) "
                           f"is {declared}")
    return declared


def _bn_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for p in m.parameters(recurse=False)]


def _set_bn_train(module: nn.Module, train: bool) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train(train)


def _adam(params: Sequence[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS,
                             weight_decay=weight_decay)


def training_batches(pair: LabelledPair, batch_size: int, order: torch.Generator,
                     aug_generator: torch.Generator, augment: Augment
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless augmented training batches, epoch after epoch: (float (B, 3, H, W), labels)."""
    while True:
        for index in epoch_batches(pair.train_images.shape[0], batch_size, order):
            index = index.to(pair.train_images.device)
            x = augment(to_float_rgb(pair.train_images[index]), generator=aug_generator)
            yield x, pair.train_labels[index]


def lr_finder_json(result: LRFinderResult | None) -> str:
    """The ``lr_finder`` column: the curve and suggestion, or empty when lr_max was given."""
    if result is None:
        return json.dumps({"lrs": [], "losses": [], "suggestion": None})
    return result.to_json()


def make_row(*, protocol: str, seed: int, settings: EvaluationSpec, metrics: dict[str, Any],
             lr_max: float, finder: LRFinderResult | None, bn_in_head_epoch: str,
             time_train_s: float, time_eval_s: float, time_total_s: float,
             batched_heads: int) -> dict[str, Any]:
    """One results row (docs/design.md "The results table"); the sweep adds the condition's
    keys."""
    return {
        "protocol": protocol,
        "seed": int(seed),
        **metrics,
        "lr_max": float(lr_max),
        "lr_finder": lr_finder_json(finder),
        "bn_in_head_epoch": bn_in_head_epoch,
        "seed_scope": settings.seed_scope,
        "head_epochs": settings.head_epochs,
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "tta_views": settings.tta_views,
        "batched_heads": int(batched_heads),
        "time_train_s": float(time_train_s),
        "time_eval_s": float(time_eval_s),
        "time_total_s": float(time_total_s),
    }


#: Metrics of every epoch's validation record (besides ``epoch`` and ``loss``).
CURVE_METRICS = ("accuracy", "f1_weighted", "f1_macro", "balanced_accuracy")


@torch.no_grad()
def validation_record(logits_fn: Callable[[torch.Tensor], torch.Tensor], model: nn.Module,
                      images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str],
                      batch_size: int) -> dict[str, float]:
    """Mean cross-entropy ``loss`` and :data:`CURVE_METRICS` of ``logits_fn`` on plain
    (unaugmented) images uint8 (N, C, H, W), with ``model`` in eval mode for the pass and every
    submodule's mode restored afterwards. Draws no random numbers and changes no parameter or
    BatchNorm statistic, so training continues exactly as without it."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        logits = torch.cat([logits_fn(to_float_rgb(images[i:i + batch_size]))
                            for i in range(0, images.shape[0], batch_size)])
    finally:
        for module, mode in modes:
            module.train(mode)
    loss = float(F.cross_entropy(logits, labels))
    metrics = classification_metrics(labels.cpu().numpy(),
                                     torch.softmax(logits, dim=-1).cpu().numpy(), class_names)
    return {"loss": loss, **{name: float(metrics[name]) for name in CURVE_METRICS}}


def _run(encoder: nn.Module, train: Split, test: Split, *, settings: EvaluationSpec, seed: int,
         class_names: Sequence[str], augment: Augment | None, device: Any, progress: bool,
         protocol: str, return_probabilities: bool = False,
         resume: Mapping[str, Any] | None = None,
         on_epoch: Callable[[dict[str, Any]], None] | None = None,
         val: Split | None = None) -> Any:
    start = time.perf_counter()
    dev = resolve_device(device)
    pair = prepare_pair(train, test, class_names, dev)
    val_pair = None if val is None else prepare_split(val, "val", pair.class_names, dev)
    augment = augment or default_augment(settings, pair.image_size)
    streams = SeedStreams(seed, settings.seed_scope)
    encoder = copy.deepcopy(encoder).to(dev)  # the caller's encoder stays as it was
    in_dim = encoder_output_dim(encoder, pair.train_images[:2])
    head = LinearHead(in_dim, pair.num_classes, generator=streams.head()).to(dev)
    model = nn.ModuleDict({"encoder": encoder, "head": head})
    probing = protocol == "probe"
    bn_mode = "frozen" if probing else settings.bn_in_head_epoch
    steps = steps_per_epoch(pair.train_images.shape[0], settings.batch_size)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if probing or not torch.is_grad_enabled():
            with torch.no_grad():
                features = encoder(x)
            return head(features)
        return head(encoder(x))

    def train_step(optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
        loss = F.cross_entropy(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    # --- 1-2: head-only epoch(s) ----------------------------------------------------------
    for p in encoder.parameters():
        p.requires_grad_(False)
    trainable = list(head.parameters())
    model.train()
    if probing or bn_mode == "frozen":
        encoder.eval()
    else:  # fastai freeze: BatchNorm trains with the head
        for p in _bn_parameters(encoder):
            p.requires_grad_(True)
        trainable += _bn_parameters(encoder)
    optimizer = _adam(trainable, settings.head_lr, settings.weight_decay)
    order, aug_generator = streams.data_order(), streams.train_aug()
    batches = training_batches(pair, settings.batch_size, order, aug_generator, augment)
    epochs_bar = tqdm(total=settings.head_epochs + settings.epochs, disable=not progress,
                      desc=f"{protocol} seed {seed}", unit="epoch")
    if resume is None:
        for _ in range(settings.head_epochs * steps):
            train_step(optimizer, *next(batches))
    epochs_bar.update(settings.head_epochs)

    # --- 3: unfreeze (fine-tuning) ------------------------------------------------------
    if not probing:
        for p in encoder.parameters():
            p.requires_grad_(True)
        encoder.train()
        optimizer = _adam(list(model.parameters()), settings.head_lr, settings.weight_decay)

    # --- 4: LR finder ---------------------------------------------------------------------
    finder: LRFinderResult | None = None
    if resume is not None:
        saved = resume["finder"]
        finder = None if not saved else LRFinderResult(
            lrs=tuple(saved["lrs"]), losses=tuple(saved["losses"]),
            suggestion=float(saved["suggestion"]))
        lr_max = float(resume["lr_max"])
    elif settings.lr_max is None:
        saved_model = copy.deepcopy(model.state_dict())
        saved_optimizer = copy.deepcopy(optimizer.state_dict())
        finder_batches = training_batches(pair, settings.batch_size, *streams.lr_finder(),
                                          augment=augment)

        def finder_step(lr: float) -> float:
            for group in optimizer.param_groups:
                group["lr"] = lr
            return train_step(optimizer, *next(finder_batches))

        finder = lr_range_test(finder_step, start=settings.lr_finder_start,
                               end=settings.lr_finder_end, iters=settings.lr_finder_iters)
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
        lr_max = finder.suggestion
    else:
        lr_max = settings.lr_max

    # --- 5: 1cycle ----------------------------------------------------------------------
    scheduler = fastai_one_cycle(
        optimizer, max_lr=lr_max, total_steps=settings.epochs * steps,
        pct_start=settings.pct_start, div=settings.div_factor,
        div_final=settings.final_div_factor, max_momentum=settings.max_momentum,
        base_momentum=settings.base_momentum)
    first_epoch = 0
    val_curve: list[dict[str, float]] = []
    if resume is not None:
        # Every generator sits at an epoch boundary in a checkpoint, so restoring the states of
        # model, optimiser, schedule and both random streams continues the run bit for bit.
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        order.set_state(resume["data_order_rng"])
        aug_generator.set_state(resume["train_aug_rng"])
        first_epoch = int(resume["epoch"])
        val_curve = [dict(record) for record in resume.get("val_curve", [])]
        epochs_bar.update(first_epoch)
    for epoch in range(first_epoch, settings.epochs):
        for _ in range(steps):
            train_step(optimizer, *next(batches))
            scheduler.step()
        epochs_bar.update(1)
        if val_pair is not None:
            val_curve.append({"epoch": epoch + 1, **validation_record(
                forward, model, *val_pair, pair.class_names, settings.batch_size)})
        if on_epoch is not None:
            on_epoch(copy.deepcopy({  # a snapshot: state dicts alias the live tensors
                      "epoch": epoch + 1, "model": model.state_dict(),
                      "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                      "data_order_rng": order.get_state(), "train_aug_rng": aug_generator.get_state(),
                      "lr_max": lr_max, "val_curve": val_curve,
                      "finder": None if finder is None else {
                          "lrs": list(finder.lrs), "losses": list(finder.losses),
                          "suggestion": finder.suggestion}}))
    epochs_bar.close()
    trained = time.perf_counter()

    # --- 6: TTA and metrics -------------------------------------------------------------
    model.eval()
    probs = tta_probabilities(forward, pair.test_images, augment=augment,
                              views=settings.tta_views, generator=streams.tta(),
                              batch_size=settings.batch_size)
    metrics = classification_metrics(pair.test_labels.cpu().numpy(), probs.cpu().numpy(),
                                     pair.class_names)
    end = time.perf_counter()
    row = make_row(protocol=protocol, seed=seed, settings=settings, metrics=metrics,
                   lr_max=lr_max, finder=finder, bn_in_head_epoch=bn_mode,
                   time_train_s=trained - start, time_eval_s=end - trained,
                   time_total_s=end - start, batched_heads=1)
    if val_pair is not None:
        row["val_curve"] = json.dumps(val_curve)
    return (row, probs.cpu()) if return_probabilities else row


def finetune(encoder: nn.Module, train: Split, test: Split, *, settings: EvaluationSpec,
             seed: int, class_names: Sequence[str], augment: Augment | None = None,
             device: Any = "cpu", progress: bool = False,
             on_epoch: Callable[[dict[str, Any]], None] | None = None,
             resume: Mapping[str, Any] | None = None,
             val: Split | None = None) -> dict[str, Any]:
    """Fine-tune a copy of ``encoder`` with a new head and return the results row.

    Args:
        encoder: module with ``output_dim``; (B, 3, H, W) floats in [0, 1] -> (B, output_dim).
            Deep-copied: the caller's encoder is not changed.
        train, test: ``(images uint8 (N, C, H, W), labels int64 (N,))``.
        settings: the protocol's hyperparameters (``EvaluationSpec``).
        seed: the seed index (see :mod:`raysweep.evaluate.streams`).
        class_names: names in label order (per-class metric keys).
        augment: ``augment(x, generator=g) -> x`` (default: ``settings.augmentation``).
        device: ``cpu``, ``cuda``, ``auto``.
        progress: a tqdm bar over epochs.
        on_epoch: called after every 1cycle epoch with the run's state (model, optimiser and
            schedule state dicts, both random streams, lr_max and the LR-finder curve: tensors
            and plain values only, so it saves and loads with ``weights_only=True``).
        resume: such a state: the run continues after its epoch, skipping the head epoch and
            the LR finder, and ends with the same row as an uninterrupted run.
        val: a labelled validation split ``(images, labels)``: after every 1cycle epoch the
            model's loss and :data:`CURVE_METRICS` on it (plain images, eval mode) are
            recorded, and the row gets them as ``val_curve`` (a JSON list of
            ``{"epoch", "loss", "accuracy", ...}``). They change nothing of the run: the other
            columns equal a run without ``val``.

    Bit-reproducible on CPU from ``(settings, seed)``.
    """
    return _run(encoder, train, test, settings=settings, seed=seed, class_names=class_names,
                augment=augment, device=device, progress=progress, protocol="finetune",
                on_epoch=on_epoch, resume=resume, val=val)


def probe_single(encoder: nn.Module, train: Split, test: Split, *, settings: EvaluationSpec,
                 seed: int, class_names: Sequence[str], augment: Augment | None = None,
                 device: Any = "cpu", progress: bool = False,
                 return_probabilities: bool = False) -> Any:
    """A linear probe of one seed (the encoder frozen throughout): the reference that batched
    probes must equal. Arguments as :func:`finetune`; with ``return_probabilities`` the result
    is ``(row, probabilities float (N_test, C))``, the TTA-averaged test probabilities."""
    return _run(encoder, train, test, settings=settings, seed=seed, class_names=class_names,
                augment=augment, device=device, progress=progress, protocol="probe",
                return_probabilities=return_probabilities)

