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

Per-row timings are the shared wall time divided by K (``batched_heads`` = K says so).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from raysweep.config import EvaluationSpec
from raysweep.evaluate.inputs import Split, prepare_pair, resolve_device, steps_per_epoch
from raysweep.evaluate.metrics import classification_metrics
from raysweep.evaluate.protocol import (
    ADAM_BETAS,
    ADAM_EPS,
    TEST_SETS,
    default_augment,
    encoder_output_dim,
    external_metrics,
    make_row,
    prepare_test_sets,
    training_batches,
)
from raysweep.evaluate.streams import SeedStreams
from raysweep.evaluate.tta import Augment, tta_probabilities
from raysweep.models import LinearHead
from raysweep.optim import BatchedAdam, fastai_one_cycle_table, lr_range_test_batched

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


def probe_batched(encoder: nn.Module, train: Split, test: Split, *, settings: EvaluationSpec,
                  seeds: Sequence[int], class_names: Sequence[str],
                  augment: Augment | None = None, device: Any = "cpu",
                  return_probabilities: bool = False,
                  test_sets: Mapping[str, Any] | None = None) -> Any:
    """Linear probes for ``seeds`` in one pass; rows equal ``probe_single`` per seed (external
    ``test_sets`` included: every head is scored on each with the shared TTA views).

    With ``return_probabilities`` the result is ``(rows, probabilities float (K, N_test, C))``.

    Requires ``settings.seed_scope == "head"``, ``weight_decay == 0`` and the paper's optimiser
    and 1cycle (callers fall back to separate runs otherwise: see
    :func:`raysweep.evaluate.probe`).
    """
    if settings.seed_scope != "head":
        raise ValueError("batched probes need seed_scope 'head' (shared data streams)")
    if settings.weight_decay != 0:
        raise ValueError("batched probes support weight_decay 0 only")
    if settings.optimizer != "fastai_adam" or settings.schedule != "onecycle":
        raise ValueError("batched probes support the fastai_adam optimiser and the onecycle "
                         "schedule only")
    seeds = [int(s) for s in seeds]
    start = time.perf_counter()
    dev = resolve_device(device)
    pair = prepare_pair(train, test, class_names, dev)
    external = prepare_test_sets(test_sets, pair.class_names, pair.image_size, dev)
    augment = augment or default_augment(settings, pair.image_size)
    shared = SeedStreams(seeds[0], settings.seed_scope)  # every non-head stream is shared
    encoder = copy.deepcopy(encoder).to(dev).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    in_dim = encoder_output_dim(encoder, pair.train_images[:2])
    heads = BatchedLinear.from_generators([SeedStreams(s).head() for s in seeds], in_dim,
                                          pair.num_classes).to(dev)
    num_heads = len(seeds)
    steps = steps_per_epoch(pair.train_images.shape[0], settings.batch_size)

    def features(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return encoder(x)

    def train_step(optimizer: BatchedAdam, x: torch.Tensor, y: torch.Tensor) -> None:
        loss = _per_head_loss(heads(features(x)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def set_lr(optimizer: BatchedAdam, lr: torch.Tensor | float) -> None:
        optimizer.param_groups[0]["lr"] = torch.as_tensor(lr, dtype=torch.float64).expand(
            num_heads).clone()

    # head-only epoch(s): the probe never unfreezes, so its optimiser state carries on
    optimizer = BatchedAdam(heads.parameters(), lr=torch.full((num_heads,), settings.head_lr,
                                                              dtype=torch.float64),
                            betas=ADAM_BETAS, eps=ADAM_EPS)
    batches = training_batches(pair, settings.batch_size, shared.data_order(),
                               shared.train_aug(), augment)
    heads.train()
    for _ in range(settings.head_epochs * steps):
        train_step(optimizer, *next(batches))

    # LR finder: one shared sweep, a curve per head
    finders = None
    if settings.lr_max is None:
        saved_heads = copy.deepcopy(heads.state_dict())
        saved_optimizer = copy.deepcopy(optimizer.state_dict())
        finder_batches = training_batches(pair, settings.batch_size, *shared.lr_finder(),
                                          augment=augment)

        def finder_step(lr: float, active: Sequence[bool]) -> list[float]:
            set_lr(optimizer, lr)
            x, y = next(finder_batches)
            logits = heads(features(x))
            mask = torch.tensor(active, device=logits.device)
            loss = _per_head_loss(logits[mask], y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            detached = logits.detach()
            # the same call as a single run, so the recorded losses are the same numbers
            return [float(F.cross_entropy(detached[k], y)) if active[k] else float("nan")
                    for k in range(num_heads)]

        finders = lr_range_test_batched(finder_step, num_heads, start=settings.lr_finder_start,
                                        end=settings.lr_finder_end,
                                        iters=settings.lr_finder_iters)
        heads.load_state_dict(saved_heads)
        optimizer.load_state_dict(saved_optimizer)
        lr_max = torch.tensor([f.suggestion for f in finders], dtype=torch.float64)
    else:
        lr_max = torch.full((num_heads,), float(settings.lr_max), dtype=torch.float64)

    # 1cycle with a per-head lr_max
    total = settings.epochs * steps
    schedule = {"pct_start": settings.pct_start, "div": settings.div_factor,
                "div_final": settings.final_div_factor,
                "max_momentum": settings.max_momentum, "base_momentum": settings.base_momentum}
    beta2 = ADAM_BETAS[1]
    lrs, moms = fastai_one_cycle_table(lr_max.tolist(), total, **schedule)
    for step, momentum in zip(range(total), moms, strict=False):
        set_lr(optimizer, lrs[step])
        optimizer.param_groups[0]["betas"] = (momentum, beta2)
        train_step(optimizer, *next(batches))
    trained = time.perf_counter()

    heads.eval()
    probs = tta_probabilities(lambda x: heads(features(x)), pair.test_images, augment=augment,
                              views=settings.tta_views, generator=shared.tta(),
                              batch_size=settings.batch_size)
    labels = pair.test_labels.cpu().numpy()
    probs_np = probs.cpu().numpy()
    rows = []
    end = time.perf_counter()
    for k, seed in enumerate(seeds):
        metrics = classification_metrics(labels, probs_np[k], pair.class_names)
        rows.append(make_row(
            protocol="probe", seed=seed, settings=settings, metrics=metrics,
            lr_max=float(lr_max[k]), finder=finders[k] if finders else None,
            bn_in_head_epoch="frozen", time_train_s=(trained - start) / num_heads,
            time_eval_s=(end - trained) / num_heads, time_total_s=(end - start) / num_heads,
            batched_heads=num_heads))
    for name, (images, external_labels) in external.items():
        began = time.perf_counter()
        external_probs = tta_probabilities(
            lambda x: heads(features(x)), images, augment=augment, views=settings.tta_views,
            generator=shared.tta(name), batch_size=settings.batch_size).cpu()
        seconds = (time.perf_counter() - began) / num_heads
        for k, row in enumerate(rows):
            row.setdefault(TEST_SETS, []).append(external_metrics(
                name, external_labels, external_probs[k], pair.class_names, seconds))
    return (rows, probs.cpu()) if return_probabilities else rows
