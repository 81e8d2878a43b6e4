"""The spec dataclasses: data sources and datasets, encoders, pre-training, evaluation,
external test sets, searches, the report, resources and the whole :class:`ExperimentSpec`.

Every default is the paper's (docs/protocol.md) unless marked otherwise; checks and coercion come
from :mod:`raysweep.config.validation`.
"""


from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from raysweep.config.validation import (
    Spec,
    _apply_overrides,
    _between,
    _closest,
    _collect,
    _describe,
    _FieldError,
    _fraction_or_zero,
    _name,
    _non_empty,
    _non_negative,
    _positive,
    _unit_interval_open,
    _unit_interval_open_closed,
    spec_field,
    to_dict,
)
from raysweep.config.weight_formats import WEIGHT_FORMATS
from raysweep.storage.paths import storage_path

# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

SourceKind = Literal["folder", "manifest", "medmnist", "digits"]


@dataclass(frozen=True)
class SourceSpec(Spec):
    """One image source. ``kind`` selects the reader (``raysweep.data.sources``):

    - ``folder``: ``path`` is a directory with one sub-folder per class.
    - ``manifest``: ``path`` is a CSV with columns ``path,label[,split]``; image paths are
      relative to ``root`` (default: the manifest's directory) and must lie inside it, symbolic
      links resolved, unless ``allow_outside_root``. The layout of ISIC, UFES-20 and DermNet
      downloads.
    - ``medmnist``: ``name`` (e.g. ``breastmnist``) read as ``<root>/<name>.npz`` (root defaults
      to ``~/.medmnist``, where the ``medmnist`` package downloads), or ``path`` to an ``.npz``.
    - ``digits``: scikit-learn's bundled 8x8 handwritten digits (offline demo set).
    """

    kind: SourceKind = spec_field(doc="reader: folder | manifest | medmnist | digits")
    path: str | None = spec_field(None, doc="directory, manifest CSV or .npz file")
    root: str | None = spec_field(None, doc="manifest image root / medmnist download root")
    allow_outside_root: bool = spec_field(
        False, doc="folder / manifest: accept images outside its folder (or root): ../, absolute "
                   "paths, symbolic links leading out")
    name: str | None = spec_field(None, doc="medmnist dataset flag, e.g. breastmnist")
    split: str | None = spec_field(
        None, doc="use only this split: the source's own (MedMNIST's, a manifest's split "
                  "column), else the dataset's stratified one (split_seed, test_fraction, "
                  "val_fraction); labelled or not")
    classes: tuple[str, ...] | None = spec_field(
        None, checks=(_non_empty,), doc="keep only these classes (and fix their order)")
    labelled: bool = spec_field(True, doc="false: labels are ignored (pre-training only)")
    oversample: float = spec_field(
        1.0, checks=(_positive,), doc="copies of this source in a mixture (IUD = 2 x IU + D)")
    class_oversample: Mapping[str, float] = spec_field(
        default_factory=dict, doc="copies per class (OSCC 10:1), on top of `oversample`")
    skip_corrupt: bool = spec_field(False, doc="warn about and skip unreadable images")
    watermark_cutout: bool = spec_field(False, doc="apply the centre cutout (DermNet)")

    def problems(self) -> list[_FieldError]:
        problems = []
        if self.kind in ("folder", "manifest") and not self.path:
            problems.append(_FieldError(("path",), f"required for a {self.kind} source"))
        if self.kind == "medmnist" and not (self.path or self.name):
            problems.append(_FieldError(("name",), "a medmnist source needs `name` or `path`"))
        problems.extend(_FieldError(("class_oversample", cls_name), f"must be > 0, got {ratio!r}")
                        for cls_name, ratio in self.class_oversample.items() if not ratio > 0)
        return problems


#: Bounds of ``DatasetSpec.image_size``: the 8 px digits up to 4096 px (16 Mpx per image).
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 4096


@dataclass(frozen=True)
class DatasetSpec(Spec):
    """A dataset: the union of ``sources`` (with their oversampling ratios), decoded once at
    ``image_size`` into the cache, split into train/val/test.

    Splits: a source's own split (MedMNIST's, a manifest's ``split`` column) is used when it has
    one; otherwise a stratified split by ``split_seed`` with ``test_fraction`` / ``val_fraction``.
    ``label_fraction`` / ``label_count`` then keep a stratified subset of the train split's
    labels (the thesis' 100 / 250 / 1000 labels; Chaves et al.'s 1 / 10 / 100 %), or
    ``label_per_class`` a class-balanced one (the thesis' 25 per class, section 5.2). The split
    seed is separate from training seeds.
    """

    sources: tuple[SourceSpec, ...] = spec_field(checks=(_non_empty,), doc="sources to unite")
    image_size: int = spec_field(256, checks=(_between(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),),
                                 doc="square side in pixels (paper: 256)")
    split_seed: int = spec_field(0, checks=(_non_negative,), doc="seed of splits and subsets")
    test_fraction: float = spec_field(0.2, checks=(_unit_interval_open,),
                                      doc="test share when a source has no split")
    val_fraction: float = spec_field(0.0, checks=(_fraction_or_zero,),
                                     doc="validation share when a source has no split")
    label_fraction: float = spec_field(1.0, checks=(_unit_interval_open_closed,),
                                       doc="stratified share of training labels kept")
    label_count: int | None = spec_field(None, checks=(_positive,),
                                         doc="exact number of training labels kept (stratified)")
    label_rounding: Literal["nearest", "down"] = spec_field(
        "nearest", doc="label_fraction x labels: nearest (halves up) or down (Chaves: 10% of "
                       "14,805 = 1,480)")
    label_per_class: int | None = spec_field(
        None, checks=(_positive,),
        doc="class-balanced subset: this many training labels of each class (all of a "
            "smaller class; the thesis' 25 per class)")
    cache_dir: str | None = spec_field(None, doc="decode cache (default ~/.cache/raysweep)")

    def problems(self) -> list[_FieldError]:
        problems = []
        if self.label_count is not None and self.label_fraction != 1.0:
            problems.append(_FieldError(("label_count",),
                                        "give label_count or label_fraction, not both"))
        if self.label_per_class is not None and (self.label_count is not None
                                                 or self.label_fraction != 1.0):
            problems.append(_FieldError(("label_per_class",),
                                        "give label_per_class, label_count or label_fraction, "
                                        "not two of them"))
        if self.test_fraction + self.val_fraction >= 1:
            problems.append(_FieldError(("val_fraction",),
                                        "test_fraction + val_fraction must be < 1"))
        return problems


# --------------------------------------------------------------------------------------------
# Encoders, pre-training, evaluation
# --------------------------------------------------------------------------------------------

#: Augmentation pipelines of ``raysweep.augment`` (named here so that specs validate without
#: importing kornia). Two-view pipelines are for SSL; single-view ones for fine-tuning and TTA.
TWO_VIEW_PIPELINES = ("barlow_twins", "simclr", "simclr_medical", "simclr_short",
                      "simclr_grey")
AUGMENTATION_PIPELINES = TWO_VIEW_PIPELINES + ("supervised", "supervised_upright")


def _augmentation(value: Any) -> str | None:
    if value in AUGMENTATION_PIPELINES:
        return None
    return (f"unknown pipeline {value!r}{_closest(str(value), list(AUGMENTATION_PIPELINES))}; "
            f"choose one of {', '.join(AUGMENTATION_PIPELINES)}")

EncoderName = Literal["resnet18", "resnet34", "resnet50", "resnet200x2", "small_resnet"]

PRETRAIN_PREFIX = "pretrain:"


def pretrain_reference(weights: str) -> str | None:
    """The run name in a ``pretrain:NAME`` weight source, else None."""
    return weights[len(PRETRAIN_PREFIX):] if weights.startswith(PRETRAIN_PREFIX) else None


@dataclass(frozen=True)
class EncoderSpec(Spec):
    """An encoder architecture and its initial weights (``raysweep.models.weights`` registry):
    ``random``, ``torchvision:IMAGENET1K_V1`` / ``V2``, ``barlowtwins``, ``vicreg``,
    ``file:PATH``, ``FORMAT:PATH`` (a public SSL checkpoint's key layout, FORMAT one of
    ``raysweep.config.weight_formats.WEIGHT_FORMATS``: moco, swav, solo-learn, vissl, ...), or
    ``pretrain:NAME`` (the output of this experiment's pretrain run NAME)."""

    name: EncoderName = spec_field("resnet50", doc="architecture")
    weights: str = spec_field("random", doc="weight source")

    def problems(self) -> list[_FieldError]:
        known = ("random", "torchvision:", "barlowtwins", "vicreg", "file:", "pretrain:",
                 *(f"{fmt}:" for fmt in WEIGHT_FORMATS))
        if not any(self.weights == k or (k.endswith(":") and self.weights.startswith(k)
                                         and len(self.weights) > len(k)) for k in known):
            kind, sep, _ = self.weights.partition(":")
            hint = (_closest(kind, list(WEIGHT_FORMATS)) if sep and kind not in WEIGHT_FORMATS
                    else _closest(self.weights, ["random", "barlowtwins", "vicreg",
                                                 "torchvision:IMAGENET1K_V1",
                                                 "torchvision:IMAGENET1K_V2"]))
            return [_FieldError(("weights",), f"unknown weight source {self.weights!r}{hint}; "
                                              "use random, torchvision:ENUM, barlowtwins, vicreg, "
                                              "file:PATH, pretrain:NAME or FORMAT:PATH with "
                                              f"FORMAT one of {', '.join(WEIGHT_FORMATS)}")]
        return []


#: The pre-training methods a spec may name, each with whether its images need labels. The
#: methods themselves are registered in ``raysweep.ssl.methods.METHODS`` (a layer above the
#: specs); ``tests/ssl/test_methods.py`` checks that both name the same methods alike.
PRETRAIN_METHODS_NEED_LABELS: dict[str, bool] = {
    "barlow_twins": False, "simclr": False, "supcon": True, "supervised": True,
}

#: The LR range test's default first and last learning rates (fastai's ``lr_find`` range).
LR_FINDER_START = 1e-7
LR_FINDER_END = 10.0


def _pretrain_method(value: Any) -> str | None:
    if value in PRETRAIN_METHODS_NEED_LABELS:
        return None
    methods = list(PRETRAIN_METHODS_NEED_LABELS)
    return (f"unknown method {value!r}{_closest(str(value), methods)}; "
            f"choose one of {', '.join(methods)}")


Trainable = Literal["encoder", "last_block"]


@dataclass(frozen=True)
class PretrainSpec(Spec):
    """One pre-training run (Ray Train ``TorchTrainer``), from scratch or *further* from given
    weights (docs/protocol.md "Further pre-training"): a fresh projector; ``frozen_epochs`` with the
    encoder frozen (Adam, ``frozen_lr``); then ``epochs`` of 1cycle training of the ``trainable``
    part (``encoder`` = the paper's SSL, ``last_block`` = SSL_p)."""

    name: str = spec_field(checks=(_name,), doc="run name (unique within the experiment)")
    data: DatasetSpec = spec_field(doc="pre-training data (labels ignored unless supervised)")
    method: str = spec_field("barlow_twins", checks=(_pretrain_method,),
                             doc="training objective (raysweep.ssl.methods)")
    encoder: EncoderSpec = spec_field(default_factory=EncoderSpec, doc="architecture + weights")
    further: bool = spec_field(True, doc="further pre-training protocol (frozen first epoch)")
    trainable: Trainable = spec_field("encoder", doc="encoder (SSL) or last_block (SSL_p)")
    epochs: int = spec_field(100, checks=(_positive,), doc="epochs after the frozen epoch")
    frozen_epochs: int = spec_field(1, checks=(_non_negative,), doc="encoder-frozen epochs")
    frozen_lr: float = spec_field(1e-3, checks=(_positive,), doc="Adam lr while frozen")
    batch_size: int = spec_field(128, checks=(_positive,), doc="global batch (paper: 128)")
    grad_accum_steps: int = spec_field(1, checks=(_positive,), doc="micro-batches per step")
    optimizer: Literal["adam", "adamw"] = spec_field("adam", doc="adam (paper) | adamw (SimCLR)")
    schedule: Literal["onecycle", "cosine"] = spec_field("onecycle", doc="lr schedule")
    lr_max: float | None = spec_field(None, checks=(_positive,),
                                      doc="peak lr; null = LR finder on rank 0")
    lr_min: float = spec_field(1e-5, checks=(_positive,), doc="cosine schedule's final lr")
    lr_finder_iters: int = spec_field(100, checks=(_positive,), doc="LR finder iterations")
    pct_start: float = spec_field(0.25, checks=(_unit_interval_open,), doc="1cycle warm-up share")
    div_factor: float = spec_field(25.0, checks=(_positive,), doc="1cycle: lr_max / initial lr")
    final_div_factor: float = spec_field(1e5, checks=(_positive,),
                                         doc="1cycle: lr_max / final lr (fastai's div_final)")
    max_momentum: float = spec_field(0.95, checks=(_between(0.0, 1.0),),
                                     doc="1cycle: Adam beta1 max")
    base_momentum: float = spec_field(0.85, checks=(_between(0.0, 1.0),),
                                      doc="1cycle: Adam beta1 min")
    weight_decay: float = spec_field(1.5e-6, checks=(_non_negative,), doc="(code: 1.5e-6)")
    lambda_offdiag: float = spec_field(1 / 8192, checks=(_non_negative,),
                                       doc="Barlow Twins off-diagonal weight (eq. 1)")
    alpha: float = spec_field(0.01, checks=(_non_negative,),
                              doc="sparsity weight on the projector's last layer (eq. 2)")
    temperature: float = spec_field(0.07, checks=(_positive,), doc="NT-Xent (SimCLR) and SupCon temperature")
    projector: tuple[int, ...] = spec_field((8192, 8192, 8192), checks=(_non_empty,),
                                            doc="projector widths")
    augmentation: str = spec_field("barlow_twins", checks=(_augmentation,),
                                   doc="view pipeline (raysweep.augment)")
    strength: float = spec_field(1.0, checks=(_between(0.0, 2.0),), doc="augmentation strength")
    seed: int = spec_field(0, checks=(_non_negative,), doc="training seed")
    num_workers: int = spec_field(1, checks=(_positive,), doc="DDP workers")
    use_gpu: bool | None = spec_field(None, doc="null = use GPUs when the cluster has them")
    resources_per_worker: Mapping[str, float] = spec_field(default_factory=dict,
                                                           doc="e.g. {CPU: 4}")
    precision: Literal["auto", "fp32", "bf16"] = spec_field("auto", doc="auto = bf16 on GPU")
    channels_last: bool | None = spec_field(None, doc="null = on for GPUs")
    checkpoint_every: int = spec_field(1, checks=(_positive,), doc="epochs between checkpoints")
    max_failures: int = spec_field(3, checks=(_non_negative,), doc="worker failures tolerated")
    deterministic: bool = spec_field(False, doc="deterministic algorithms (bit-reproducible CPU)")
    proxy_every: int = spec_field(0, checks=(_non_negative,),
                                  doc="kNN/linear proxy every k epochs (0 = off)")
    proxy: Literal["knn", "linear"] = spec_field("knn", doc="downstream proxy metric")
    proxy_data: DatasetSpec | None = spec_field(None, doc="labelled data for the proxy")
    validation_fraction: float = spec_field(
        0.0, checks=(_fraction_or_zero,),
        doc="share of the pre-training images held out (not trained on) for a validation loss "
            "and contrastive top-1 accuracy after every epoch (the thesis' Figure 7.1); 0 = off")
    keys: Mapping[str, str] = spec_field(default_factory=dict,
                                         doc="condition keys (initial, further_data, ...)")
    allow_test_overlap: bool = spec_field(
        False, doc="allow training images that are also test images of the conditions "
                   "evaluating this run (a transductive design); the plan and report say so")

    def problems(self) -> list[_FieldError]:
        problems = [_FieldError(("projector", f"[{index}]"), f"must be > 0, got {width}")
                    for index, width in enumerate(self.projector) if width <= 0]
        if self.proxy_every and self.proxy_data is None:
            problems.append(_FieldError(("proxy_data",), "required when proxy_every > 0"))
        if self.base_momentum > self.max_momentum:
            problems.append(_FieldError(("base_momentum",), "must not exceed max_momentum"))
        ranks = self.num_workers * self.grad_accum_steps
        if self.batch_size % ranks:
            problems.append(_FieldError(
                ("batch_size",), f"{self.batch_size} must be a multiple of num_workers x "
                                 f"grad_accum_steps = {ranks} ({self.num_workers} x "
                                 f"{self.grad_accum_steps})"))
        gpus = self.resources_per_worker.get("GPU")
        if gpus is not None and (gpus < 0 or gpus != int(gpus)):
            problems.append(_FieldError(("resources_per_worker", "GPU"), f"must be a whole number "
                                        f"of GPUs (DDP ranks never share one), got {gpus!r}"))
        elif gpus is not None and self.use_gpu is not None and bool(gpus) != self.use_gpu:
            problems.append(_FieldError(("resources_per_worker", "GPU"), f"is {gpus:g} but "
                                        f"use_gpu is {str(self.use_gpu).lower()}"))
        if PRETRAIN_METHODS_NEED_LABELS.get(self.method) and not any(s.labelled for s in self.data.sources):
            problems.append(_FieldError(("data", "sources"), f"a {self.method} run needs a "
                                                             "labelled source (every source "
                                                             "has labelled: false)"))
        return problems


ProtocolName = Literal["finetune", "probe", "logistic"]

#: Metrics the logistic protocol may choose its regularisation by (``log_loss``: the lowest).
LogisticSelection = Literal["accuracy", "f1_weighted", "f1_macro", "balanced_accuracy",
                            "log_loss"]


@dataclass(frozen=True)
class LogisticSpec(Spec):
    """The ``logistic`` protocol (SimCLR's linear evaluation, Chen et al. 2020, appendix B.5;
    VISSL's): standardised frozen features, an L2-regularised multinomial logistic regression
    (scikit-learn, L-BFGS), its inverse regularisation C chosen on a stratified validation share
    of the labelled training data among ``c_num`` log-spaced values in [c_min, c_max], then
    refit on all the labelled training data (``raysweep.evaluate.logistic``)."""

    c_min: float = spec_field(1e-5, checks=(_positive,), doc="smallest C (strongest L2)")
    c_max: float = spec_field(1e3, checks=(_positive,), doc="largest C")
    c_num: int = spec_field(17, checks=(_between(1, 1000),),
                            doc="log-spaced C values (1: c_min only, no selection)")
    val_fraction: float = spec_field(0.2, checks=(_unit_interval_open,),
                                     doc="training-label share held out to choose C")
    select_by: LogisticSelection = spec_field(
        "log_loss", doc="validation metric choosing C (log_loss: a proper scoring rule; "
                        "accuracy favours a constant answer on imbalanced data)")
    class_weight: Literal["none", "balanced"] = spec_field(
        "none", doc="balanced: loss weights inversely proportional to class frequency")
    max_iter: int = spec_field(1000, checks=(_positive,), doc="L-BFGS iterations per fit")
    tol: float = spec_field(1e-4, checks=(_positive,), doc="L-BFGS tolerance")

    def problems(self) -> list[_FieldError]:
        if self.c_max < self.c_min:
            return [_FieldError(("c_max",), "must not be below c_min")]
        if self.c_num == 1 and self.c_max != self.c_min:
            return [_FieldError(("c_num",), "1 value: set c_max equal to c_min (that C)")]
        return []


#: Downstream optimisers: fastai's Adam (``AdamW``, betas (0.9, 0.99), eps 1e-5, the paper's
#: code), or torch's ``Adam`` / ``AdamW`` with torch's defaults (the thesis' Table 3.2).
DownstreamOptimizer = Literal["fastai_adam", "adam", "adamw"]
#: Downstream learning-rate schedules: fastai's 1cycle (the paper), ``MultiStepLR`` (the thesis'
#: frozen backbone) or a constant rate (the thesis' unfrozen backbone).
DownstreamSchedule = Literal["onecycle", "multistep", "constant"]


def _ascending_fractions(value: Any) -> str | None:
    if value is None:
        return None
    if any(not 0 < v <= 1 for v in value):
        return f"every milestone must be a fraction in (0, 1], got {list(value)}"
    if list(value) != sorted(value):
        return f"milestones must ascend, got {list(value)}"
    return None


@dataclass(frozen=True)
class EvaluationSpec(Spec):
    """The fine-tuning / linear-probe protocol (docs/protocol.md "Fine-tuning", fastai defaults),
    fine-tuning's optional validation curves, and the ``logistic`` protocol's settings.

    The optimiser and schedule default to the paper's (fastai's Adam, 1cycle at the LR finder's
    lr_max); ``optimizer`` / ``schedule`` select the thesis' downstream setups instead
    (docs/protocol.md "Downstream optimisers"): torch's AdamW with ``MultiStepLR`` for a frozen
    backbone, torch's Adam at a constant rate for an unfrozen one. Under ``multistep`` and
    ``constant`` the rate is ``lr_max`` (or the LR finder's when null)."""

    head_epochs: int = spec_field(1, checks=(_non_negative,), doc="head-only epochs")
    head_lr: float = spec_field(1e-3, checks=(_positive,), doc="Adam lr of the head-only epoch")
    bn_in_head_epoch: Literal["trainable", "frozen"] = spec_field(
        "trainable", doc="BatchNorm during the head epoch (fastai freeze: trainable)")
    epochs: int = spec_field(40, checks=(_positive,), doc="1cycle epochs")
    batch_size: int = spec_field(64, checks=(_positive,), doc="batch size")
    lr_max: float | None = spec_field(None, checks=(_positive,), doc="null = LR finder")
    lr_finder_iters: int = spec_field(100, checks=(_positive,), doc="LR finder iterations")
    lr_finder_start: float = spec_field(LR_FINDER_START, checks=(_positive,),
                                        doc="LR finder first lr")
    lr_finder_end: float = spec_field(LR_FINDER_END, checks=(_positive,), doc="LR finder last lr")
    pct_start: float = spec_field(0.25, checks=(_unit_interval_open,), doc="1cycle warm-up share")
    div_factor: float = spec_field(25.0, checks=(_positive,), doc="lr_max / initial lr")
    final_div_factor: float = spec_field(1e5, checks=(_positive,),
                                         doc="lr_max / final lr (fastai's div_final)")
    max_momentum: float = spec_field(0.95, checks=(_between(0.0, 1.0),), doc="Adam beta1 max")
    base_momentum: float = spec_field(0.85, checks=(_between(0.0, 1.0),), doc="Adam beta1 min")
    weight_decay: float = spec_field(0.0, checks=(_non_negative,), doc="(code: 0)")
    optimizer: DownstreamOptimizer = spec_field(
        "fastai_adam", doc="fastai_adam (the paper's code) | adam | adamw (torch defaults; "
                           "the thesis' Table 3.2)")
    schedule: DownstreamSchedule = spec_field(
        "onecycle", doc="onecycle (fastai) | multistep (x gamma at milestones) | constant")
    milestones: tuple[float, ...] = spec_field(
        (0.6, 0.8), checks=(_non_empty, _ascending_fractions),
        doc="multistep: fractions of `epochs` at which the lr is multiplied by gamma")
    gamma: float = spec_field(0.1, checks=(_positive,), doc="multistep: lr factor per milestone")
    augmentation: str = spec_field("supervised", checks=(_augmentation,),
                                   doc="training and TTA pipeline (supervised_upright: no flips)")
    strength: float = spec_field(1.0, checks=(_between(0.0, 2.0),), doc="augmentation strength")
    train_augmentation: bool = spec_field(
        True, doc="false: train (and find the lr) on the non-augmented images, as the thesis' "
                  "unfrozen backbone (section 3.2.3); TTA keeps `augmentation`")
    tta_views: int = spec_field(3, checks=(_non_negative,), doc="TTA views (0 = no TTA)")
    seed_scope: Literal["head", "all"] = spec_field(
        "head", doc="head: only the head init varies with the seed (paper)")
    batched_probes: bool = spec_field(True, doc="probe K seeds in one pass")
    device: str = spec_field(
        "auto", doc="search scoring's probes: auto | cpu | cuda (evaluate-stage trials run on "
                    "the device Tune gives them)")
    precision: Literal["auto", "fp32", "bf16"] = spec_field(
        "auto", doc="fine-tuning and probes: auto = bf16 autocast on GPU, fp32 on CPU")
    channels_last: bool | None = spec_field(
        None, doc="fine-tuning and probes in channels_last memory format; null = on for GPUs")
    validation_curves: bool = spec_field(
        False, doc="fine-tuning: metrics on the data's val split after every epoch")
    logistic: LogisticSpec = spec_field(default_factory=LogisticSpec,
                                        doc="the logistic protocol's settings")

    def arithmetic(self, on_gpu: bool) -> tuple[bool, bool]:
        """``(bf16, channels_last)``: the arithmetic of fine-tuning and probes run on a GPU
        (``on_gpu``) or a CPU: ``precision: auto`` is bf16 autocast on a GPU, fp32 on a CPU;
        ``channels_last: null`` is on for a GPU only (docs/protocol.md "Precision")."""
        bf16 = self.precision == "bf16" or (self.precision == "auto" and on_gpu)
        return bf16, on_gpu if self.channels_last is None else self.channels_last

    def problems(self) -> list[_FieldError]:
        problems = []
        if self.lr_finder_end <= self.lr_finder_start:
            problems.append(_FieldError(("lr_finder_end",), "must be greater than lr_finder_start"))
        if self.base_momentum > self.max_momentum:
            problems.append(_FieldError(("base_momentum",), "must not exceed max_momentum"))
        return problems


#: At most this many seeds per condition (the paper's 35; more is a typo such as ``1e23``).
MAX_SEEDS = 10_000
#: Seed indices stay below 2**31 (they are mixed into 64-bit generator seeds).
MAX_FIRST_SEED = 2**31 - 1 - MAX_SEEDS


@dataclass(frozen=True)
class EncoderCondition(Spec):
    """One encoder evaluated in the ``evaluate`` stage: a readable ``name`` (the condition), the
    encoder (weights may be ``pretrain:NAME``), its condition ``keys`` for the results table, and
    per-condition protocol overrides (e.g. the random-init baseline at 40 / 80 / 160 epochs)."""

    name: str = spec_field(checks=(_name,), doc="condition name")
    encoder: EncoderSpec = spec_field(default_factory=EncoderSpec, doc="architecture + weights")
    protocols: tuple[ProtocolName, ...] | None = spec_field(None, checks=(_non_empty,),
                                                        doc="null = the stage's protocols")
    keys: Mapping[str, str] = spec_field(default_factory=dict, doc="condition keys")
    overrides: Mapping[str, Any] = spec_field(default_factory=dict,
                                              doc="EvaluationSpec fields changed for this one")
    data: DatasetSpec | None = spec_field(None, doc="null = the stage's data (e.g. a label budget)")
    seeds: int | None = spec_field(
        None, checks=(_between(1, MAX_SEEDS),),
        doc="null = the stage's seeds; fewer for a costly baseline (the paper's Table 5: 5)")

    def problems(self) -> list[_FieldError]:
        try:
            merged = _apply_overrides(to_dict(EvaluationSpec()), self.overrides)
        except _FieldError as err:  # a dotted key reaching inside a number
            return [err.under("overrides")]
        _, problems = _collect(EvaluationSpec, merged)
        return [err.under("overrides") for err in problems]


def _duplicate_names(names: list[str], path: tuple[str, ...]) -> list[_FieldError]:
    return [_FieldError(path + (f"[{index}]", "name"), f"duplicate name {name!r}")
            for index, name in enumerate(names) if name in names[:index]]


@dataclass(frozen=True)
class RepresentationSpec(Spec):
    """Representation analysis of every evaluated encoder, once per encoder and labelled data
    (``raysweep.evaluate.representation``): kNN accuracy, a linear-separability score and the
    silhouette coefficient of its frozen features on the test set, PCA and t-SNE embeddings of
    up to ``max_points`` test images (Jiang, thesis section 7.1)."""

    knn_k: int = spec_field(20, checks=(_positive,), doc="neighbours of the kNN classifier")
    separability_folds: int = spec_field(5, checks=(_between(2, 100),),
                                         doc="cross-validation folds of the separability score")
    max_points: int = spec_field(2000, checks=(_between(10, 100_000),),
                                 doc="test images embedded in 2-D (a stratified subset)")
    tsne_pca_dims: int = spec_field(50, checks=(_positive,), doc="PCA dimensions before t-SNE")
    perplexity: float = spec_field(30.0, checks=(_positive,), doc="t-SNE perplexity")
    seed: int = spec_field(0, checks=(_non_negative,), doc="subset, folds and t-SNE seed")


#: The name of the in-distribution test set (the evaluation data's own test split) in the
#: results table's ``test_set`` column; an external test set may not take it.
IN_DISTRIBUTION = "test"


@dataclass(frozen=True)
class ExternalTestSet(Spec):
    """An external (out-of-distribution) test set (docs/protocol.md "External test sets"; Chaves
    et al.: Derm7pt, ISIC 2020 and PAD-UFES-20 after training on ISIC 2019). Every trained model
    is scored on all of its labelled images as well (every split of its sources; a source's
    ``split`` keeps one), with the same TTA; the extra test sets cost inference only.

    Its classes are matched to the training classes by name: ``label_map`` renames a class
    (``nevus: benign``) or leaves its images out (``null``: a diagnosis with no training class);
    a class it does not name must be a training class. It may hold only some of the training
    classes: its metrics are then over the classes present."""

    name: str = spec_field(checks=(_name,), doc="test set name (the results' test_set column)")
    sources: tuple[SourceSpec, ...] = spec_field(checks=(_non_empty,), doc="its images")
    label_map: Mapping[str, str | None] = spec_field(
        default_factory=dict, doc="its class -> a training class (null: leave those images out)")

    def problems(self) -> list[_FieldError]:
        problems = []
        if self.name == IN_DISTRIBUTION:
            problems.append(_FieldError(("name",), f"{IN_DISTRIBUTION!r} names the evaluation "
                                                   "data's own test split; choose another name"))
        problems.extend(_FieldError(("sources", f"[{index}]", "labelled"),
                                    "a test set's images need their labels")
                        for index, source in enumerate(self.sources) if not source.labelled)
        return problems


@dataclass(frozen=True)
class EvaluateStage(Spec):
    """The ``evaluate`` stage: every encoder condition x protocol x seed (docs/protocol.md: 35),
    each scored on the data's test split and on every external test set (``test_sets``)."""

    data: DatasetSpec = spec_field(doc="labelled train/test data")
    encoders: tuple[EncoderCondition, ...] = spec_field(checks=(_non_empty,), doc="conditions")
    protocols: tuple[ProtocolName, ...] = spec_field(("finetune", "probe"), checks=(_non_empty,),
                                                 doc="finetune, probe and/or logistic")
    seeds: int = spec_field(35, checks=(_between(1, MAX_SEEDS),),
                            doc="seed indices first_seed .. +seeds-1")
    first_seed: int = spec_field(0, checks=(_between(0, MAX_FIRST_SEED),), doc="first seed index")
    settings: EvaluationSpec = spec_field(default_factory=EvaluationSpec, doc="protocol")
    representations: RepresentationSpec | None = spec_field(
        None, doc="representation analysis per encoder ({} = defaults; null = none)")
    test_sets: tuple[ExternalTestSet, ...] = spec_field(
        (), doc="external test sets every trained model is also scored on")

    def problems(self) -> list[_FieldError]:
        return (_duplicate_names([c.name for c in self.encoders], ("encoders",))
                + _duplicate_names([t.name for t in self.test_sets], ("test_sets",)))

    def condition_seeds(self, condition: EncoderCondition) -> tuple[int, ...]:
        """The seed indices of ``condition``: its own number of seeds, else the stage's, from
        ``first_seed`` (so a condition with fewer seeds pairs with the others on its seeds)."""
        count = condition.seeds if condition.seeds is not None else self.seeds
        return tuple(range(self.first_seed, self.first_seed + count))


@dataclass(frozen=True)
class SearchParam(Spec):
    """One searched dimension: ``uniform`` / ``loguniform`` (low, high), ``int`` (integer low,
    high, both included), or ``choice`` (choices: numbers, strings, booleans or null)."""

    type: Literal["uniform", "loguniform", "int", "choice"] = spec_field(doc="distribution")
    low: float | None = spec_field(None, doc="lower bound")
    high: float | None = spec_field(None, doc="upper bound")
    choices: tuple[Any, ...] | None = spec_field(None, checks=(_non_empty,), doc="values")

    def problems(self) -> list[_FieldError]:
        if self.type == "choice":
            if not self.choices:
                return [_FieldError(("choices",), "required for type choice")]
            given = [bound for bound in ("low", "high") if getattr(self, bound) is not None]
            if given:
                return [_FieldError((given[0],), "goes with type uniform, loguniform or int; "
                                                 "type choice takes choices only")]
            return [_FieldError(("choices", f"[{index}]"), f"must be a number, a string, a "
                                                         f"boolean or null, got {_describe(choice)}")
                    for index, choice in enumerate(self.choices)
                    if choice is not None and not isinstance(choice, (bool, int, float, str))]
        if self.choices is not None:
            return [_FieldError(("choices",), f"goes with type choice; type {self.type} takes "
                                              "low and high")]
        if self.low is None or self.high is None:
            return [_FieldError(("low" if self.low is None else "high",),
                                f"required for type {self.type}")]
        if self.high <= self.low:
            return [_FieldError(("high",), "must be greater than low")]
        if self.type == "loguniform" and self.low <= 0:
            return [_FieldError(("low",), "must be > 0 for loguniform")]
        if self.type == "int":
            return [_FieldError((bound,), f"must be an integer for type int, got "
                                          f"{getattr(self, bound)!r}")
                    for bound in ("low", "high") if not float(getattr(self, bound)).is_integer()]
        return []

    def values_to_check(self) -> tuple[Any, ...]:
        """The values a spec must accept for this dimension: both bounds, or every choice."""
        if self.type == "choice":
            return tuple(self.choices or ())
        if self.type == "int":
            return int(self.low), int(self.high)  # type: ignore[arg-type]
        return self.low, self.high


#: What a search may optimise: the overall metrics of a probe row
#: (:func:`raysweep.evaluate.metrics.classification_metrics`).
SEARCH_METRICS = ("accuracy", "f1_weighted", "f1_macro", "balanced_accuracy", "auc_ovr")

#: The knobs of the paper's search (any other scalar field of the search's pretrain spec or
#: evaluation settings can be searched too, by its dotted path: ``pretrain.weight_decay``,
#: ``evaluate.lr_max``, ``pretrain.data.image_size``, ...).
SEARCHABLE = ("pretrain.lambda_offdiag", "pretrain.alpha", "pretrain.lr_max", "pretrain.strength")

#: Dotted paths a search may never set (they name the run, not its training).
NOT_SEARCHABLE = ("pretrain.name", "pretrain.keys")


def _scalar_field_type(cls: type, parts: list[str], path: tuple[str, ...]) -> Any:
    """The type of the scalar field ``parts`` (a dotted path) of spec ``cls``; _FieldError
    naming ``path`` when it does not exist or is not a scalar."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    head, rest = parts[0], parts[1:]
    if head not in names:
        raise _FieldError(path, f"cannot be searched: {cls.__name__} has no field {head!r}"
                                f"{_closest(head, names)}")
    tp = hints[head]
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    nested = [a for a in args if isinstance(a, type) and dataclasses.is_dataclass(a)]
    if rest:
        if not nested:
            raise _FieldError(path, f"cannot be searched: {head!r} has no fields inside it")
        return _scalar_field_type(nested[0], rest, path)
    if nested or any(typing.get_origin(a) in (tuple, list, Mapping, dict) or a in (dict, Mapping)
                     for a in args):
        raise _FieldError(path, f"cannot be searched: {head!r} is not a single value")
    return tp


@dataclass(frozen=True)
class SearchEvaluation(Spec):
    """How a search trial is scored: batched linear probes over ``seeds`` paired seeds, trained
    on the labelled train split of ``data`` and scored on its validation split (a stratified
    holdout of the labelled train split when the data has no validation split). The test split
    is never read by a search, so it stays apart for the evaluate stage."""

    data: DatasetSpec = spec_field(doc="labelled data (its validation split scores the trials)")
    seeds: int = spec_field(5, checks=(_positive,), doc="paired seed indices per trial")
    first_seed: int = spec_field(0, checks=(_non_negative,), doc="first seed index")
    settings: EvaluationSpec = spec_field(default_factory=EvaluationSpec, doc="probe protocol")


@dataclass(frozen=True)
class SearchSpec(Spec):
    """An Optuna search inside Ray Tune over pre-training (and evaluation) knobs: Barlow Twins
    lambda, sparsity alpha, lr_max, augmentation strength, ... Each trial pre-trains the
    ``pretrain`` run with its sampled values and is scored by ``evaluate``; ASHA (Optuna's
    successive-halving pruner) stops poor trials early on the per-epoch downstream proxy
    (``raysweep.search.stage``)."""

    name: str = spec_field(checks=(_name,), doc="search name (its directory and study)")
    pretrain: PretrainSpec = spec_field(doc="the base pre-training run (the default config)")
    evaluate: SearchEvaluation = spec_field(doc="how a trial is scored")
    space: Mapping[str, SearchParam] = spec_field(
        checks=(_non_empty,), doc="searched keys: pretrain.<field> or evaluate.<setting>")
    metric: str = spec_field("f1_weighted", doc="objective: this probe metric, mean over seeds")
    mode: Literal["max", "min"] = spec_field("max", doc="maximise or minimise")
    num_samples: int = spec_field(20, checks=(_between(1, 100_000),),
                                  doc="trials (the default is extra)")
    max_concurrent_trials: int | None = spec_field(None, checks=(_positive,),
                                                   doc="cap (null = as many as fit)")
    scheduler: Literal["asha", "none"] = spec_field("asha", doc="early stopping on the proxy")
    grace_period: int = spec_field(1, checks=(_positive,),
                                   doc="training epochs before ASHA may stop a trial")
    reduction_factor: int = spec_field(3, checks=(_between(2, 100),),
                                       doc="ASHA keeps 1/reduction_factor at each rung")
    seed: int = spec_field(0, checks=(_non_negative,), doc="sampler seed")
    compare_default: bool = spec_field(
        True, doc="also score the base run as written, for the report's paired test")

    def problems(self) -> list[_FieldError]:
        problems = []
        for key, param in self.space.items():
            try:
                self._check_searchable(key, param)
            except _FieldError as err:
                problems.append(err)
        if self.metric not in SEARCH_METRICS:
            problems.append(_FieldError(("metric",), f"must be one of "
                                        f"{', '.join(SEARCH_METRICS)}, got {self.metric!r}"
                                        f"{_closest(self.metric, list(SEARCH_METRICS))}"))
        epochs = self.pretrain.epochs + (self.pretrain.frozen_epochs if self.pretrain.further
                                         else 0)
        if self.scheduler == "asha" and self.grace_period > epochs:
            problems.append(_FieldError(("grace_period",), f"{self.grace_period} exceeds the "
                                        f"base run's {epochs} training epoch(s): ASHA could "
                                        "never stop a trial (set scheduler: none, or fewer)"))
        return problems

    def _check_searchable(self, key: str, param: SearchParam) -> None:
        """_FieldError at ``space.<key>`` unless ``key`` names a scalar field of the base
        pre-training run or evaluation settings that accepts every value of ``param``."""
        path = ("space", key)
        stage, _, field_path = key.partition(".")
        if stage not in ("pretrain", "evaluate") or not field_path:
            raise _FieldError(path, "cannot be searched: use pretrain.<field> or "
                                    f"evaluate.<setting>{_closest(key, list(SEARCHABLE))}")
        if key in NOT_SEARCHABLE:
            raise _FieldError(path, "cannot be searched: it names the run")
        cls = PretrainSpec if stage == "pretrain" else EvaluationSpec
        tp = _scalar_field_type(cls, field_path.split("."), path)
        numeric = {a for a in (typing.get_args(tp) or (tp,)) if a in (int, float)}
        if param.type != "choice" and not numeric:
            raise _FieldError(path, f"type {param.type} needs a numeric field; use choice")
        if param.type in ("uniform", "loguniform") and numeric == {int}:
            raise _FieldError(path, "is an integer field: use type int or choice")
        base = self.pretrain if stage == "pretrain" else self.evaluate.settings
        for value in param.values_to_check():
            try:
                base.replace(**{field_path: value})
            except _FieldError as err:
                raise _FieldError(path, f"value {value!r}: {err.reason}") from None


@dataclass(frozen=True)
class Comparison(Spec):
    """A declared pairwise test: null "model_1 <= model_2" (``greater``) or "=" (two-sided).

    Within one protocol (``protocol``, or every protocol holding both conditions), or across
    protocols: ``protocol_1`` for ``model_1`` against ``protocol_2`` for ``model_2`` (e.g. a
    frozen SimCLR backbone's probe against a supervised baseline's fine-tuning), paired by seed
    where both have the seed."""

    model_1: str = spec_field(doc="condition name")
    model_2: str = spec_field(doc="condition name")
    alternative: Literal["greater", "two-sided"] = spec_field("greater", doc="H1")
    protocol: ProtocolName | None = spec_field(None, doc="null = every protocol")
    protocol_1: ProtocolName | None = spec_field(None, doc="model_1's protocol (with protocol_2)")
    protocol_2: ProtocolName | None = spec_field(None, doc="model_2's protocol (with protocol_1)")

    @property
    def across_protocols(self) -> bool:
        return self.protocol_1 is not None

    def problems(self) -> list[_FieldError]:
        if (self.protocol_1 is None) != (self.protocol_2 is None):
            missing = "protocol_2" if self.protocol_2 is None else "protocol_1"
            return [_FieldError((missing,), "give protocol_1 and protocol_2 together")]
        if self.protocol_1 is not None and self.protocol is not None:
            return [_FieldError(("protocol",), "give protocol, or protocol_1 and protocol_2, "
                                               "not both")]
        if self.model_1 == self.model_2 and self.protocol_1 == self.protocol_2:
            return [_FieldError(("model_2",), f"compares {self.model_1!r} with itself")]
        return []


#: Multiple-testing corrections (names as in ``statsmodels.stats.multitest.multipletests``).
Correction = Literal["holm", "fdr_bh", "bonferroni", "none"]
#: Pairwise tests the report can run (keys of ``raysweep.report.stats.TESTS``).
PairwiseTestName = Literal["welch", "paired_t", "wilcoxon", "mannwhitney"]


#: The report's metrics when ``report.metrics`` is unset (the paper's), and those it adds when
#: a test set's largest class holds more than half of it
#: (docs/protocol.md "Baselines and degenerate classifiers").

DEFAULT_REPORT_METRICS = ("accuracy", "f1_weighted")
IMBALANCE_REPORT_METRICS = ("balanced_accuracy", "f1_macro", "auc_ovr")


@dataclass(frozen=True)
class ReportSpec(Spec):
    """What the ``report`` stage computes (``raysweep.report``)."""

    metrics: tuple[str, ...] = spec_field(
        (), doc="metrics tabulated and tested; [] (unset) = accuracy and f1_weighted, plus "
                "balanced_accuracy, f1_macro and auc_ovr when a test set's largest class "
                "holds more than half of it")
    comparisons: tuple[Comparison, ...] = spec_field((), doc="declared tests (default: all pairs)")
    family_by: tuple[str, ...] = spec_field(("protocol",), doc="columns that define a family")
    correction: Correction = spec_field(
        "holm", doc="multiple-testing correction across a family")
    alpha: float = spec_field(0.05, checks=(_unit_interval_open,), doc="significance level")
    tests: tuple[PairwiseTestName, ...] = spec_field(
        typing.get_args(PairwiseTestName), checks=(_non_empty,), doc="pairwise tests run")
    primary_test: PairwiseTestName = spec_field(
        "welch", doc="the test whose corrected p-value is flagged (the paper's: welch)")
    bootstrap_resamples: int = spec_field(10_000, checks=(_between(100, 10**7),),
                                          doc="bootstrap resamples of the mean difference")
    bootstrap_seed: int = spec_field(0, checks=(_non_negative,), doc="bootstrap seed")
    power: float = spec_field(0.8, checks=(_unit_interval_open,), doc="power for seeds needed")
    curve_smoothing: float = spec_field(
        0.0, checks=(_fraction_or_zero,),
        doc="exponential smoothing alpha of plotted per-epoch curves, s_i = (1 - alpha) x_i + "
            "alpha s_(i-1) (the thesis' Appendix D: 0.6); 0 = none")

    @property
    def chosen_metrics(self) -> tuple[str, ...]:
        """``metrics`` as given, else :data:`DEFAULT_REPORT_METRICS` (the report adds the
        imbalance-aware ones to an unset ``metrics`` where a test set needs them)."""
        return self.metrics or DEFAULT_REPORT_METRICS

    def problems(self) -> list[_FieldError]:
        problems = []
        if self.primary_test not in self.tests:
            problems.append(_FieldError(("primary_test",),
                                        f"must be one of tests {list(self.tests)}"))
        if tuple(self.family_by) != ("protocol",):
            problems.extend(
                _FieldError(("comparisons", f"[{index}]", "protocol_1"),
                            "comparisons across protocols need family_by: [protocol]")
                for index, comp in enumerate(self.comparisons) if comp.across_protocols)
        return problems


@dataclass(frozen=True)
class ResourcesSpec(Spec):
    """How trials are packed onto the cluster (``raysweep.plan.resources``)."""

    cpus_per_trial: float | None = spec_field(
        None, checks=(_positive,),
        doc="CPUs per single-process Tune trial; unset (auto): a GPU node's CPUs per GPU times "
            "the trial's GPU share (at least 1), so that every GPU is filled; 1 without GPUs")
    gpus_per_trial: float | None = spec_field(
        None, checks=(_between(0.0, 1.0),), doc="fraction of a GPU per single-process trial")
    max_concurrent_trials: int | None = spec_field(None, checks=(_positive,), doc="cap")
    gpu_memory_margin: float = spec_field(
        1.25, checks=(_between(1.0, 10.0),),
        doc="unset gpus_per_trial: each kind of trial's GPU share is 1 / floor(device memory / "
            "(its measured peak x this margin))")


# --------------------------------------------------------------------------------------------
# Experiment tracking
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MlflowTracking(Spec):
    """MLflow tracking (the ``mlflow`` extra: ``mlflow-skinny``; ``raysweep.tracking``)."""

    tracking_uri: str | None = spec_field(
        None, doc="a server (http://host:5000) or a store URI; null = $MLFLOW_TRACKING_URI, "
                  "else a local SQLite store sqlite:///<tracking dir>/mlflow.db")
    experiment: str | None = spec_field(None, doc="MLflow experiment; null = the spec's name")


@dataclass(frozen=True)
class WandbTracking(Spec):
    """Weights & Biases tracking (the ``wandb`` extra; ``raysweep.tracking``)."""

    project: str | None = spec_field(None, doc="W&B project; null = the spec's name")
    entity: str | None = spec_field(None, doc="W&B entity (team or user); null = the default")
    mode: Literal["offline", "online"] = spec_field(
        "offline", doc="offline: runs stay in <tracking dir>/wandb (wandb sync uploads them)")


@dataclass(frozen=True)
class TensorboardTracking(Spec):
    """TensorBoard event files (tensorboardX, which Ray Tune installs; ``raysweep.tracking``)."""

    logdir: str | None = spec_field(None, doc="null = <tracking dir>/tensorboard")


@dataclass(frozen=True)
class TrackingSpec(Spec):
    """Experiment trackers that mirror what an experiment stores (off by default): every
    evaluation row, pre-training run and search trial. Tracking never decides anything: a
    tracker that cannot be reached is a warning, and the rows are written all the same."""

    mlflow: MlflowTracking | None = spec_field(None, doc="MLflow ({} = defaults; null = off)")
    wandb: WandbTracking | None = spec_field(None, doc="Weights & Biases ({} = offline; null = off)")
    tensorboard: TensorboardTracking | None = spec_field(
        None, doc="TensorBoard event files ({} = defaults; null = off)")
    dir: str | None = spec_field(
        None, doc="local folder of the trackers' files; null = <experiment>/tracking (an "
                  "experiment in an object store needs one)")

    @property
    def enabled(self) -> tuple[str, ...]:
        """The names of the trackers that are on, in a fixed order."""
        return tuple(name for name in ("mlflow", "wandb", "tensorboard")
                     if getattr(self, name) is not None)


@dataclass(frozen=True)
class ExperimentSpec(Spec):
    """A whole study: pretrain runs, the evaluate grid, searches and the report."""

    name: str = spec_field(checks=(_name,), doc="experiment name (its directory)")
    storage: str = spec_field("~/raysweep_runs", checks=(_non_empty,),
                              doc="storage root: a folder (shared for multi-node) or a URI "
                                  "(file://, s3://, gs://)")
    pretrain: tuple[PretrainSpec, ...] = spec_field((), doc="pre-training runs")
    evaluate: EvaluateStage | None = spec_field(None, doc="evaluation grid")
    search: tuple[SearchSpec, ...] = spec_field((), doc="searches")
    report: ReportSpec = spec_field(default_factory=ReportSpec, doc="report settings")
    resources: ResourcesSpec = spec_field(default_factory=ResourcesSpec, doc="packing")
    description: str = spec_field("", doc="free text")
    tracking: TrackingSpec = spec_field(default_factory=TrackingSpec,
                                        doc="experiment trackers (off by default)")

    def problems(self) -> list[_FieldError]:
        names = [p.name for p in self.pretrain]
        problems = _duplicate_names(names, ("pretrain",))
        referenced: list[tuple[tuple[str, ...], str]] = [
            (("pretrain", f"[{index}]", "encoder", "weights"), run.encoder.weights)
                      for index, run in enumerate(self.pretrain)]
        if self.evaluate is not None:
            referenced.extend((("evaluate", "encoders", f"[{index}]", "encoder", "weights"),
                               cond.encoder.weights)
                              for index, cond in enumerate(self.evaluate.encoders))
        referenced.extend((("search", f"[{index}]", "pretrain", "encoder", "weights"),
                           search.pretrain.encoder.weights)
                          for index, search in enumerate(self.search))
        problems.extend(_duplicate_names([s.name for s in self.search], ("search",)))
        for path, weights in referenced:
            target = pretrain_reference(weights)
            if target is not None and target not in names:
                problems.append(_FieldError(path, f"no pretrain run named {target!r}"
                                                  f"{_closest(target, names)}"))
        if not problems:
            problems.extend(self._cycle_problems())
        problems.extend(self._cross_protocol_problems())
        return problems

    def _cross_protocol_problems(self) -> list[_FieldError]:
        """A comparison across protocols whose condition is not evaluated under its
        protocol (conditions the spec does not evaluate are left to the report)."""
        if self.evaluate is None:
            return []
        protocols = {c.name: c.protocols or self.evaluate.protocols
                     for c in self.evaluate.encoders}
        problems = []
        for index, comp in enumerate(self.report.comparisons):
            if not comp.across_protocols:
                continue
            for side, model, protocol in ((1, comp.model_1, comp.protocol_1),
                                          (2, comp.model_2, comp.protocol_2)):
                if model in protocols and protocol not in protocols[model]:
                    problems.append(_FieldError(
                        ("report", "comparisons", f"[{index}]", f"protocol_{side}"),
                        f"condition {model!r} is not evaluated with {protocol!r} (its "
                        f"protocols: {', '.join(protocols[model])})"))
        return problems

    def _cycle_problems(self) -> list[_FieldError]:
        """One problem per cycle of ``pretrain:NAME`` references (a run that waits for
        itself), named at the first run of the cycle in spec order."""
        parent = {run.name: pretrain_reference(run.encoder.weights) for run in self.pretrain}
        index = {run.name: position for position, run in enumerate(self.pretrain)}
        problems, reported = [], set()
        for run in self.pretrain:
            chain, name = [run.name], parent[run.name]
            while name is not None and name not in chain:
                chain.append(name)
                name = parent[name]
            if name is None:
                continue
            cycle = chain[chain.index(name):]
            if frozenset(cycle) in reported:
                continue
            reported.add(frozenset(cycle))
            first = min(cycle, key=index.__getitem__)
            start = cycle.index(first)
            ordered = cycle[start:] + cycle[:start] + [first]
            problems.append(_FieldError(
                ("pretrain", f"[{index[first]}]", "encoder", "weights"),
                f"pretrain runs depend on each other in a cycle: {' -> '.join(ordered)}"))
        return problems

    def pretrain_parent(self, weights: str) -> PretrainSpec | None:
        """The pretrain run whose output ``weights`` (``pretrain:NAME``) refers to, else None."""
        target = pretrain_reference(weights)
        return None if target is None else next(r for r in self.pretrain if r.name == target)

    @property
    def directory(self) -> Any:
        """``<storage>/<name>``: where every artefact of this experiment lives: a local
        :class:`~pathlib.Path`, or a :class:`raysweep.storage.paths.StoragePath` when ``storage`` is an
        object-store URI (``s3://``, ``gs://``, ...)."""

        return storage_path(self.storage) / self.name


