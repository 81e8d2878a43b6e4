"""Batched multi-seed linear probes: K seeds share every encoder forward pass.

With the encoder frozen (and in eval mode) and ``seed_scope: head``, the K single-seed probes of
:func:`raysweep.evaluate.protocol.probe_single` see exactly the same batches, augmentations, LR
finder batches and TTA views; only their heads differ. So the augmentation and the encoder run
once per batch and K heads train side by side as one :class:`BatchedLinear` (weight
``(K, C, D)``), each with its own Adam state, its own LR-finder curve and its own 1cycle
``lr_max`` (:class:`raysweep.optim.BatchedAdam`; :func:`raysweep.optim.fastai_one_cycle_table`).

Equality with K separate runs (required: identical predictions, logits within 1e-5; on CPU the
rows come out equal bit for bit): each head's logits come from the same ``F.linear`` call as a
single head's, the per-head gradients of the summed per-head mean losses equal each head's own
gradients, BatchedAdam repeats torch's Adam operations, the 1cycle values are read from the same
``OneCycleLR``, and the LR finder's per-head losses come from the same ``cross_entropy`` call as
a single run, so its ``valley`` decisions (comparisons of losses, where a last-bit difference
could change ``lr_max``) are the same. A head whose LR finder has stopped is left out
of the loss until the finder ends (its state is restored anyway).

Under bf16 autocast (``precision``, on by default on GPUs) the heads run in the same
precision as single probes, within the tolerance of :class:`raysweep.evaluate.phases.Precision`
of them rather than bit for bit.

Per-row timings are the shared wall time divided by K (``batched_heads`` = K says so).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from raysweep.config import EvaluationSpec
from raysweep.evaluate.inputs import (
    ImagesLabels,
    LabelledPair,
    batches_per_epoch,
    prepare_pair,
    resolve_device,
)
from raysweep.evaluate.metrics import classification_metrics
from raysweep.evaluate.optimizers import ADAM_BETAS, ADAM_EPS
from raysweep.evaluate.phases import (
    Precision,
    lr_finder_phase,
    run_steps,
    test_probabilities,
    test_set_entries,
    train_epochs,
    training_batches,
)
from raysweep.evaluate.protocol import (
    TEST_SETS,
    default_augment,
    encoder_output_dim,
    make_row,
    prepare_test_sets,
    training_augment,
)
from raysweep.evaluate.streams import SeedStreams
from raysweep.evaluate.tta import Augment
from raysweep.models import LinearHead
from raysweep.optim import BatchedAdam, LRFinderResult, fastai_one_cycle_table

__all__ = ["BatchedLinear", "probe_batched"]


class BatchedLinear(nn.Module):
    """K independent linear heads: features (B, D) -> logits (K, B, C).

    ``weight`` (K, C, D) and ``bias`` (K, C); head ``k`` computes ``x @ weight[k].T + bias[k]``.
    :meth:`from_generators` initialises head ``k`` exactly as ``LinearHead`` would from the
    ``k``-th generator.
    """

    def __init__(self, num_heads: int, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_heads, num_classes, in_dim))
        self.bias = nn.Parameter(torch.zeros(num_heads, num_classes))

    @classmethod
    def from_generators(cls, generators: Sequence[torch.Generator], in_dim: int,
                        num_classes: int) -> BatchedLinear:
        layer = cls(len(generators), in_dim, num_classes)
        with torch.no_grad():
            for k, generator in enumerate(generators):
                single = LinearHead(in_dim, num_classes, generator=generator).linear
                layer.weight[k].copy_(single.weight)
                layer.bias[k].copy_(single.bias)
        return layer

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # One F.linear per head: the very kernel a single head runs, so the logits are equal
        # bit for bit (a single baddbmm can differ in the last bits for some shapes); the
        # encoder pass, not this, is the cost.
        return torch.stack([F.linear(features, w, b)
                            for w, b in zip(self.weight.unbind(0), self.bias.unbind(0),
                                            strict=True)])


def _per_head_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over heads of each head's mean cross-entropy (gradients = each head's own)."""
    k, b, c = logits.shape
    losses = F.cross_entropy(logits.reshape(k * b, c), labels.repeat(k), reduction="none")
    return losses.view(k, b).mean(dim=1).sum()


class _OneCycleTable:
    """Sets each head's 1cycle lr and Adam's beta1 from :func:`fastai_one_cycle_table`: the
    values of step 0 at once, those of step ``i + 1`` at the ``i``-th :meth:`step` (a
    scheduler's order, so :func:`train_epochs` drives it)."""

    def __init__(self, optimizer: BatchedAdam, lr_max: torch.Tensor, total_steps: int,
                 settings: EvaluationSpec):
        self.optimizer = optimizer
        self.lrs, self.moms = fastai_one_cycle_table(
            lr_max.tolist(), total_steps, pct_start=settings.pct_start, div=settings.div_factor,
            div_final=settings.final_div_factor, max_momentum=settings.max_momentum,
            base_momentum=settings.base_momentum)
        self.index = 0
        self._apply()

    def _apply(self) -> None:
        _set_lr(self.optimizer, self.lrs[self.index])
        self.optimizer.param_groups[0]["betas"] = (self.moms[self.index], ADAM_BETAS[1])

    def step(self) -> None:
        self.index += 1
        self._apply()


def _set_lr(optimizer: BatchedAdam, lr: torch.Tensor | float) -> None:
    """Every head's lr: ``lr`` (K,) or one value for all."""
    num_heads = optimizer.param_groups[0]["lr"].numel()
    optimizer.param_groups[0]["lr"] = torch.as_tensor(lr, dtype=torch.float64).expand(
        num_heads).clone()


def _check_batchable(settings: EvaluationSpec) -> None:
    if settings.seed_scope != "head":
        raise ValueError("batched probes need seed_scope 'head' (shared data streams)")
    if settings.weight_decay != 0:
        raise ValueError("batched probes support weight_decay 0 only")
    if settings.optimizer != "fastai_adam" or settings.schedule != "onecycle":
        raise ValueError("batched probes support the fastai_adam optimiser and the onecycle "
                         "schedule only")


class _BatchedProbe:
    """K probe heads on one frozen encoder: the phases of :mod:`raysweep.evaluate.phases`."""

    def __init__(self, encoder: nn.Module, pair: LabelledPair, seeds: Sequence[int],
                 settings: EvaluationSpec, augment: Augment):
        self.pair, self.settings = pair, settings
        self.train_augment = training_augment(settings, augment)
        self.shared = SeedStreams(seeds[0], settings.seed_scope)  # non-head streams are shared
        self.encoder = copy.deepcopy(encoder).to(pair.train_images.device).eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        in_dim = encoder_output_dim(self.encoder, pair.train_images[:2])
        self.heads = BatchedLinear.from_generators([SeedStreams(s).head() for s in seeds],
                                                   in_dim, pair.num_classes
                                                   ).to(pair.train_images.device)
        self.num_heads = len(seeds)
        self.steps = batches_per_epoch(pair.train_images.shape[0], settings.batch_size)
        self.precision = Precision.resolve(settings, pair.train_images.device)
        self.precision.prepare(self.encoder)
        self.logits = self.precision.wrap(self._logits)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, C) logits of every head; no gradient reaches the encoder."""
        with torch.no_grad():
            features = self.encoder(x)
        return self.heads(features)

    def train_step(self, optimizer: BatchedAdam, x: torch.Tensor, y: torch.Tensor) -> None:
        loss = _per_head_loss(self.logits(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def find_lr(self, optimizer: BatchedAdam) -> tuple[torch.Tensor, list[LRFinderResult] | None]:
        """Each head's ``lr_max`` (K,) float64 and LR-finder result: one shared sweep, a curve
        per head (a head whose finder has stopped leaves the loss)."""
        settings = self.settings
        if settings.lr_max is not None:
            return torch.full((self.num_heads,), float(settings.lr_max), dtype=torch.float64), None
        finder_batches = training_batches(self.pair, settings.batch_size,
                                          *self.shared.lr_finder(), augment=self.train_augment)

        def finder_step(lr: float, active: Sequence[bool]) -> list[float]:
            _set_lr(optimizer, lr)
            x, y = next(finder_batches)
            logits = self.logits(x)
            mask = torch.tensor(active, device=logits.device)
            loss = _per_head_loss(logits[mask], y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            detached = logits.detach()
            # the same call as a single run, so the recorded losses are the same numbers
            return [float(F.cross_entropy(detached[k], y)) if active[k] else float("nan")
                    for k in range(self.num_heads)]

        finders = lr_finder_phase(self.heads, optimizer, finder_step, self.num_heads, settings)
        return torch.tensor([f.suggestion for f in finders], dtype=torch.float64), finders

    def train(self) -> tuple[torch.Tensor, list[LRFinderResult] | None]:
        """The head-only epoch(s), the LR finder and 1cycle; returns (lr_max, finders)."""
        settings = self.settings
        # the probe never unfreezes, so its optimiser state carries on after the head epoch(s)
        optimizer = BatchedAdam(self.heads.parameters(),
                                lr=torch.full((self.num_heads,), settings.head_lr,
                                              dtype=torch.float64),
                                betas=ADAM_BETAS, eps=ADAM_EPS)
        batches = training_batches(self.pair, settings.batch_size, self.shared.data_order(),
                                   self.shared.train_aug(), self.train_augment)
        self.heads.train()
        step = partial(self.train_step, optimizer)
        run_steps(step, batches, settings.head_epochs * self.steps)
        lr_max, finders = self.find_lr(optimizer)
        schedule = _OneCycleTable(optimizer, lr_max, settings.epochs * self.steps, settings)
        train_epochs(step, batches, steps_per_epoch=self.steps, epochs=settings.epochs,
                     after_step=schedule.step)
        return lr_max, finders


def probe_batched(encoder: nn.Module, train: ImagesLabels, test: ImagesLabels, *,
                  settings: EvaluationSpec, seeds: Sequence[int], class_names: Sequence[str],
                  augment: Augment | None = None, device: Any = "cpu",
                  return_probabilities: bool = False,
                  test_sets: Mapping[str, ImagesLabels] | None = None) -> Any:
    """Linear probes for ``seeds`` in one pass; rows equal ``probe_single`` per seed (external
    ``test_sets`` included: every head is scored on each with the shared TTA views).

    With ``return_probabilities`` the result is ``(rows, probabilities float (K, N_test, C))``.

    Requires ``settings.seed_scope == "head"``, ``weight_decay == 0`` and the paper's optimiser
    and 1cycle (callers fall back to separate runs otherwise: see
    :func:`raysweep.evaluate.probe`).
    """
    _check_batchable(settings)
    seeds = [int(s) for s in seeds]
    start = time.perf_counter()
    dev = resolve_device(device)
    pair = prepare_pair(train, test, class_names, dev)
    external = prepare_test_sets(test_sets, pair.class_names, pair.image_size, dev)
    augment = augment or default_augment(settings, pair.image_size)
    run = _BatchedProbe(encoder, pair, seeds, settings, augment)
    lr_max, finders = run.train()
    trained = time.perf_counter()

    run.heads.eval()
    probs = test_probabilities(run.logits, pair.test_images, augment=augment, settings=settings,
                               generator=run.shared.tta())
    labels, probs_np, k_heads = pair.test_labels.cpu().numpy(), probs.cpu().numpy(), len(seeds)
    end = time.perf_counter()
    rows = [make_row(protocol="probe", seed=seed, settings=settings,
                     metrics=classification_metrics(labels, probs_np[k], pair.class_names),
                     lr_max=float(lr_max[k]), finder=finders[k] if finders else None,
                     bn_in_head_epoch="frozen", time_train_s=(trained - start) / k_heads,
                     time_eval_s=(end - trained) / k_heads,
                     time_total_s=(end - start) / k_heads, batched_heads=k_heads,
                     precision=run.precision)
            for k, seed in enumerate(seeds)]
    entries = test_set_entries(run.logits, external, augment=augment, settings=settings,
                               tta_generator=run.shared.tta, class_names=pair.class_names,
                               num_heads=k_heads)
    for row, head_entries in zip(rows, entries, strict=True):
        if head_entries:
            row[TEST_SETS] = head_entries
    return (rows, probs.cpu()) if return_probabilities else rows
