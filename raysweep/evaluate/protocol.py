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
0 in the paper's code); ``settings.optimizer`` / ``settings.schedule`` choose the thesis'
instead (:mod:`raysweep.evaluate.optimizers`). Training batches: ``batch_size`` (64),
reshuffled each epoch from the ``data_order`` stream, incomplete last batch dropped (fastai),
augmented with the ``supervised`` pipeline from the ``train_aug`` stream (or not augmented at
all with ``train_augmentation: false``, the thesis' unfrozen backbone); the LR finder draws
its batches from its own stream. The phases are :mod:`raysweep.evaluate.phases`, shared with
batched probes.

Linear probe: the encoder is frozen *throughout*, BatchNorm included, and runs in eval mode, so
its features are a fixed function of the (augmented) image. (The authors' fastai ``freeze``
would leave BatchNorm trainable; that would make the "probe" train part of the encoder and
would forbid sharing one encoder pass between seeds.) Probe rows record
``bn_in_head_epoch = frozen`` accordingly.

External test sets (``test_sets``): after step 6 the same trained model is scored on each, with
the same TTA (views from the run's ``tta`` stream of that test set's name), so the in-distribution
row is the same with or without them; their metrics go to the row's ``test_sets`` list
(:func:`raysweep.evaluate.metrics.external_metrics`).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from raysweep.augment import build_pipeline
from raysweep.config import EvaluationSpec
from raysweep.data import to_float_rgb
from raysweep.errors import DataError, WeightsError
from raysweep.evaluate.inputs import (
    ImagesLabels,
    batches_per_epoch,
    prepare_pair,
    prepare_split,
    resolve_device,
)
from raysweep.evaluate.metrics import classification_metrics
from raysweep.evaluate.optimizers import (
    ADAM_BETAS,
    ADAM_EPS,
    make_optimizer,
    make_schedule,
)
from raysweep.evaluate.phases import (
    Precision,
    lr_finder_phase,
    run_steps,
    test_probabilities,
    test_set_entries,
    train_epochs,
    training_batches,
)
from raysweep.evaluate.streams import SeedStreams
from raysweep.evaluate.tta import Augment
from raysweep.models import LinearHead
from raysweep.optim import LRFinderResult

__all__ = ["ADAM_BETAS", "ADAM_EPS", "TEST_SETS", "default_augment", "encoder_output_dim",
           "finetune", "probe_single", "training_augment"]

#: The row key holding the metrics of every external test set (a list of dicts, each with its
#: ``test_set`` name); :mod:`raysweep.store.results` expands it into one table row each.
TEST_SETS = "test_sets"


def default_augment(settings: EvaluationSpec, image_size: int) -> Augment:
    """The training/TTA pipeline named by ``settings.augmentation`` (``supervised``)."""

    return build_pipeline(settings.augmentation, image_size=image_size,
                          strength=settings.strength)


def _unaugmented(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The images as they are (float (B, 3, H, W)): no augmentation, no random draw."""
    return x


def training_augment(settings: EvaluationSpec, augment: Augment) -> Augment:
    """The pipeline of the training and LR-finder batches: ``augment``, or the images as they
    are when ``settings.train_augmentation`` is off (Jiang's unfrozen backbone, "given
    non-augmented image x", thesis section 3.2.3). TTA always uses ``augment``."""
    return augment if settings.train_augmentation else _unaugmented


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


def lr_finder_json(result: LRFinderResult | None) -> str:
    """The ``lr_finder`` column: the curve and suggestion, or empty when lr_max was given."""
    if result is None:
        return json.dumps({"lrs": [], "losses": [], "suggestion": None})
    return result.to_json()


def make_row(*, protocol: str, seed: int, settings: EvaluationSpec, metrics: dict[str, Any],
             lr_max: float, finder: LRFinderResult | None, bn_in_head_epoch: str,
             time_train_s: float, time_eval_s: float, time_total_s: float,
             batched_heads: int, precision: Precision | None = None) -> dict[str, Any]:
    """One results row (docs/design.md "The results table"); the sweep adds the condition's
    keys. ``precision``: bf16 / channels_last columns when the run used either."""
    row = {
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
    if settings.optimizer != "fastai_adam" or settings.schedule != "onecycle":
        row["optimizer"], row["schedule"] = settings.optimizer, settings.schedule
    if not settings.train_augmentation:
        row["train_augmentation"] = False
    if precision is not None:
        row.update(precision.row_columns())
    return row


def prepare_test_sets(test_sets: Mapping[str, ImagesLabels] | None, class_names: Sequence[str],
                      image_size: int, device: torch.device
                      ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Checked external test sets on ``device`` (images of the training images' size)."""
    prepared = {}
    for name, split in (test_sets or {}).items():
        images, labels = prepare_split(split, f"test set {name}", class_names, device)
        if images.shape[-1] != image_size or images.shape[-2] != image_size:

            raise DataError(f"test set {name}: images are {tuple(images.shape[2:])} but the "
                            f"training images are {(image_size, image_size)}")
        prepared[name] = (images, labels)
    return prepared


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


class _SeedRun:
    """One seed's fine-tuning or probe run, phase by phase (the module docstring's steps)."""

    def __init__(self, encoder: nn.Module, train: ImagesLabels, test: ImagesLabels, *,
                 settings: EvaluationSpec, seed: int, class_names: Sequence[str],
                 augment: Augment | None, device: Any, protocol: str,
                 val: ImagesLabels | None, test_sets: Mapping[str, ImagesLabels] | None):
        dev = resolve_device(device)
        self.settings, self.seed, self.protocol = settings, seed, protocol
        self.pair = prepare_pair(train, test, class_names, dev)
        self.val = None if val is None else prepare_split(val, "val", self.pair.class_names, dev)
        self.external = prepare_test_sets(test_sets, self.pair.class_names,
                                          self.pair.image_size, dev)
        self.augment = augment or default_augment(settings, self.pair.image_size)
        self.train_augment = training_augment(settings, self.augment)
        self.streams = SeedStreams(seed, settings.seed_scope)
        self.encoder = copy.deepcopy(encoder).to(dev)  # the caller's encoder stays as it was
        in_dim = encoder_output_dim(self.encoder, self.pair.train_images[:2])
        self.head = LinearHead(in_dim, self.pair.num_classes,
                               generator=self.streams.head()).to(dev)
        self.model = nn.ModuleDict({"encoder": self.encoder, "head": self.head})
        self.precision = Precision.resolve(settings, dev)
        self.precision.prepare(self.model)
        self.forward = self.precision.wrap(self._logits)
        self.probing = protocol == "probe"
        self.bn_mode = "frozen" if self.probing else settings.bn_in_head_epoch
        self.steps = batches_per_epoch(self.pair.train_images.shape[0], settings.batch_size)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.probing or not torch.is_grad_enabled():
            with torch.no_grad():
                features = self.encoder(x)
            return self.head(features)
        return self.head(self.encoder(x))

    def train_step(self, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                   y: torch.Tensor) -> float:
        loss = F.cross_entropy(self.forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def head_phase(self, resume: Mapping[str, Any] | None) -> torch.optim.Optimizer:
        """Steps 1-3: the head-only epoch(s) (skipped when resuming), then the optimiser of
        the scheduled epochs (fine-tuning: the whole model, a fresh state)."""
        encoder, settings = self.encoder, self.settings
        for p in encoder.parameters():
            p.requires_grad_(False)
        trainable = list(self.head.parameters())
        self.model.train()
        if self.probing or self.bn_mode == "frozen":
            encoder.eval()
        else:  # fastai freeze: BatchNorm trains with the head
            for p in _bn_parameters(encoder):
                p.requires_grad_(True)
            trainable += _bn_parameters(encoder)
        # A probe's head takes torch's single-tensor Adam on every device: batched probes
        # repeat its arithmetic exactly (BatchedAdam), and on two small tensors it costs
        # nothing. Fine-tuning keeps torch's default (multi-tensor on CUDA: many tensors).
        optimizer = make_optimizer(trainable, settings.head_lr, settings,
                                   foreach=False if self.probing else None)
        self.order, self.aug_generator = self.streams.data_order(), self.streams.train_aug()
        self.batches = training_batches(self.pair, settings.batch_size, self.order,
                                        self.aug_generator, self.train_augment)
        if resume is None:
            run_steps(partial(self.train_step, optimizer), self.batches,
                      settings.head_epochs * self.steps)
        if self.probing:  # a probe keeps its optimiser
            return optimizer
        for p in encoder.parameters():
            p.requires_grad_(True)
        encoder.train()
        return make_optimizer(list(self.model.parameters()), settings.head_lr, settings)

    def find_lr(self, optimizer: torch.optim.Optimizer, resume: Mapping[str, Any] | None
                ) -> tuple[float, LRFinderResult | None]:
        """Step 4: ``(lr_max, the LR finder's result or None)``."""
        settings = self.settings
        if resume is not None:
            saved = resume["finder"]
            return float(resume["lr_max"]), (LRFinderResult.from_dict(saved) if saved else None)
        if settings.lr_max is not None:
            return settings.lr_max, None
        finder_batches = training_batches(self.pair, settings.batch_size,
                                          *self.streams.lr_finder(), augment=self.train_augment)

        def finder_step(lr: float, active: Sequence[bool]) -> list[float]:
            for group in optimizer.param_groups:
                group["lr"] = lr
            return [self.train_step(optimizer, *next(finder_batches))]

        [finder] = lr_finder_phase(self.model, optimizer, finder_step, 1, settings)
        return finder.suggestion, finder

    def train(self, optimizer: torch.optim.Optimizer, lr_max: float,
              finder: LRFinderResult | None, resume: Mapping[str, Any] | None,
              on_epoch: Callable[[dict[str, Any]], None] | None, bar: Any) -> list[dict]:
        """Step 5: the scheduled epochs (continued from ``resume``); returns the val curve."""
        scheduler = make_schedule(optimizer, self.settings, lr_max, self.steps)
        first_epoch, val_curve = 0, []
        if resume is not None:
            # Every generator sits at an epoch boundary in a checkpoint, so restoring the states
            # of model, optimiser, schedule and both random streams continues the run bit for bit.
            self.model.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            self.order.set_state(resume["data_order_rng"])
            self.aug_generator.set_state(resume["train_aug_rng"])
            first_epoch = int(resume["epoch"])
            val_curve = [dict(record) for record in resume.get("val_curve", [])]
            bar.update(first_epoch)

        def after_epoch(epoch: int) -> None:
            bar.update(1)
            if self.val is not None:
                val_curve.append({"epoch": epoch, **validation_record(
                    self.forward, self.model, *self.val, self.pair.class_names,
                    self.settings.batch_size)})
            if on_epoch is not None:
                on_epoch(copy.deepcopy({  # a snapshot: state dicts alias the live tensors
                    "epoch": epoch, "model": self.model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "data_order_rng": self.order.get_state(),
                    "train_aug_rng": self.aug_generator.get_state(), "lr_max": lr_max,
                    "val_curve": val_curve,
                    "finder": None if finder is None else finder.to_dict()}))

        train_epochs(partial(self.train_step, optimizer), self.batches,
                     steps_per_epoch=self.steps, epochs=self.settings.epochs,
                     first_epoch=first_epoch, after_step=scheduler.step, after_epoch=after_epoch)
        return val_curve

    def score(self) -> tuple[torch.Tensor, dict[str, Any], list[dict[str, Any]]]:
        """Step 6: TTA probabilities (N_test, C), their metrics, and the external test sets'
        entries."""
        self.model.eval()
        probs = test_probabilities(self.forward, self.pair.test_images, augment=self.augment,
                                   settings=self.settings, generator=self.streams.tta())
        metrics = classification_metrics(self.pair.test_labels.cpu().numpy(),
                                         probs.cpu().numpy(), self.pair.class_names)
        [entries] = test_set_entries(self.forward, self.external, augment=self.augment,
                                     settings=self.settings, tta_generator=self.streams.tta,
                                     class_names=self.pair.class_names, num_heads=1)
        return probs, metrics, entries


def _run_seed(encoder: nn.Module, train: ImagesLabels, test: ImagesLabels, *,
              settings: EvaluationSpec, seed: int, class_names: Sequence[str],
              augment: Augment | None, device: Any, progress: bool, protocol: str,
              return_probabilities: bool = False, resume: Mapping[str, Any] | None = None,
              on_epoch: Callable[[dict[str, Any]], None] | None = None,
              val: ImagesLabels | None = None,
              test_sets: Mapping[str, ImagesLabels] | None = None) -> Any:
    start = time.perf_counter()
    run = _SeedRun(encoder, train, test, settings=settings, seed=seed,
                   class_names=class_names, augment=augment, device=device, protocol=protocol,
                   val=val, test_sets=test_sets)
    bar = tqdm(total=settings.head_epochs + settings.epochs, disable=not progress,
               desc=f"{protocol} seed {seed}", unit="epoch")
    optimizer = run.head_phase(resume)
    bar.update(settings.head_epochs)
    lr_max, finder = run.find_lr(optimizer, resume)
    val_curve = run.train(optimizer, lr_max, finder, resume, on_epoch, bar)
    bar.close()
    trained = time.perf_counter()
    probs, metrics, entries = run.score()
    end = time.perf_counter()
    row = make_row(protocol=protocol, seed=seed, settings=settings, metrics=metrics,
                   lr_max=lr_max, finder=finder, bn_in_head_epoch=run.bn_mode,
                   time_train_s=trained - start, time_eval_s=end - trained,
                   time_total_s=end - start, batched_heads=1, precision=run.precision)
    if run.val is not None:
        row["val_curve"] = json.dumps(val_curve)
    if entries:
        row[TEST_SETS] = entries
    return (row, probs.cpu()) if return_probabilities else row


def finetune(encoder: nn.Module, train: ImagesLabels, test: ImagesLabels, *,
             settings: EvaluationSpec,
             seed: int, class_names: Sequence[str], augment: Augment | None = None,
             device: Any = "cpu", progress: bool = False,
             on_epoch: Callable[[dict[str, Any]], None] | None = None,
             resume: Mapping[str, Any] | None = None,
             val: ImagesLabels | None = None,
             test_sets: Mapping[str, ImagesLabels] | None = None,
             return_probabilities: bool = False) -> Any:
    """Fine-tune a copy of ``encoder`` with a new head and return the results row (with
    ``return_probabilities``: ``(row, probabilities float (N_test, C))``, the TTA-averaged
    test probabilities, as :func:`probe_single`).

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
        test_sets: external test sets ``{name: (images, labels)}`` (labels index
            ``class_names``; a set may hold only some classes): the trained model is scored
            on each too, and the row gets their metrics as ``test_sets``, a list of
            ``{"test_set": name, <metrics>, "time_eval_s"}``
            (:func:`raysweep.evaluate.metrics.external_metrics`). They
            change nothing else of the row.

    Bit-reproducible on CPU from ``(settings, seed)``.
    """
    return _run_seed(encoder, train, test, settings=settings, seed=seed, class_names=class_names,
                augment=augment, device=device, progress=progress, protocol="finetune",
                on_epoch=on_epoch, resume=resume, val=val, test_sets=test_sets,
                return_probabilities=return_probabilities)


def probe_single(encoder: nn.Module, train: ImagesLabels, test: ImagesLabels, *,
                 settings: EvaluationSpec,
                 seed: int, class_names: Sequence[str], augment: Augment | None = None,
                 device: Any = "cpu", progress: bool = False,
                 return_probabilities: bool = False,
                 test_sets: Mapping[str, ImagesLabels] | None = None) -> Any:
    """A linear probe of one seed (the encoder frozen throughout): the reference that batched
    probes must equal. Arguments as :func:`finetune`; with ``return_probabilities`` the result
    is ``(row, probabilities float (N_test, C))``, the TTA-averaged test probabilities."""
    return _run_seed(encoder, train, test, settings=settings, seed=seed, class_names=class_names,
                augment=augment, device=device, progress=progress, protocol="probe",
                return_probabilities=return_probabilities, test_sets=test_sets)

