"""The pre-training methods, one registry entry each.

An entry says everything the pre-training loop needs to know about a method: its objective (a
function of the network's outputs for one micro-batch), the kind of head put on the encoder,
how many augmented views of an image the network sees, whether the images need labels, and which
augmentation pipeline replaces the spec's default one. ``PretrainSpec.method`` accepts exactly the
names registered here, so adding a method (VICReg, BYOL, ...) is one :class:`PretrainMethod` in
:data:`METHODS`; ``tests/ssl/test_methods.py`` trains one step of every entry.

* ``barlow_twins``: Barlow Twins (Zbontar et al. 2021; docs/protocol.md eq. 1) with the sparse
  term of eq. 2 (``alpha`` times the L2,1 norm of the projector's last weight), on a
  BatchNorm projector;
* ``simclr``: NT-Xent (Chen et al. 2020; thesis Table 3.1) on a projector without BatchNorm;
* ``supcon``: supervised contrastive learning (Khosla et al. 2020, ``L^sup_out``; Chaves et
  al.'s SCL): NT-Xent whose positives are the images of the same class, on the same projector;
  it needs labels (the labelled training split, after the data's label budget);
* ``supervised``: cross entropy of a linear classification head on one augmented view (the
  paper's ``SL`` baseline).

The two-view objectives also log ``contrastive_top1``, the share of anchors whose most similar
embedding in the (global) batch is their other view (Jiang's thesis, Figure 7.1).

This module imports no torch at import time (the spec validation reads it); the objectives
import their losses when first called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch.nn.functional as F

from raysweep.distributed import all_reduce_sum
from raysweep.errors import SpecError
from raysweep.ssl.losses import (
    barlow_twins_terms,
    contrastive_top1_accuracy,
    l21_norm,
    nt_xent_loss,
    supcon_loss,
)

if TYPE_CHECKING:
    import torch

    from raysweep.config import PretrainSpec

__all__ = ["METHODS", "HeadKind", "ObjectiveInput", "PretrainMethod", "pretrain_method"]

#: ``projector_bn``: :class:`~raysweep.models.Projector` with BatchNorm (Barlow Twins);
#: ``projector``: the same MLP without BatchNorm, with biases (SimCLR);
#: ``classifier``: :class:`~raysweep.models.LinearHead` over the training classes.
HeadKind = Literal["projector_bn", "projector", "classifier"]


@dataclass(frozen=True)
class ObjectiveInput:
    """What an objective sees of one micro-batch.

    ``outputs``: one (B, d) tensor per view, the head's outputs (projections, or logits over
    the classes for a ``classifier`` head); ``labels``: (B,) class indices when the method
    needs labels; ``sparse_weight``: the projector's last linear weight (d, d_prev), or None;
    ``world_size``: the number of DDP ranks.
    """

    outputs: tuple[torch.Tensor, ...]
    labels: torch.Tensor | None
    sparse_weight: torch.Tensor | None
    world_size: int


#: ``objective(spec, batch) -> (loss, logged)``: the scalar to back-propagate (global over ranks
#: where the loss is) and the floats logged for this micro-batch (always with ``loss``).
Objective = Callable[["PretrainSpec", ObjectiveInput], tuple["torch.Tensor", dict[str, float]]]


@dataclass(frozen=True)
class PretrainMethod:
    """One pre-training method (see the module doc)."""

    name: str
    objective: Objective
    head: HeadKind
    views: Literal[1, 2]
    needs_labels: bool = False
    #: The pipeline used when the spec leaves ``augmentation`` at its default (None: the
    #: spec's own).
    augmentation: str | None = None


def barlow_twins_objective(spec: PretrainSpec, batch: ObjectiveInput
                           ) -> tuple[torch.Tensor, dict[str, float]]:
    """Barlow Twins (eq. 1) plus ``alpha`` times the L2,1 norm of the projector's last weight
    (eq. 2), logged by term."""

    z_a, z_b = batch.outputs
    terms = barlow_twins_terms(z_a, z_b, lambda_offdiag=spec.lambda_offdiag)
    logged = {"invariance": float(terms.invariance.detach()),
              "redundancy": float(terms.redundancy.detach())}
    loss = terms.loss
    if spec.alpha > 0 and batch.sparse_weight is not None:
        sparsity = l21_norm(batch.sparse_weight.float())
        loss = loss + spec.alpha * sparsity
        logged["sparsity"] = float(sparsity.detach())
    logged["loss"] = float(loss.detach())
    logged["contrastive_top1"] = _top1(batch)
    return loss, logged


def _top1(batch: ObjectiveInput) -> float:
    """The contrastive top-1 accuracy of a two-view batch (a monitor; no gradient)."""

    z_a, z_b = batch.outputs
    return float(contrastive_top1_accuracy(z_a.detach(), z_b.detach()))


def simclr_objective(spec: PretrainSpec, batch: ObjectiveInput
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """NT-Xent at ``spec.temperature`` over the global batch."""

    z_a, z_b = batch.outputs
    loss = nt_xent_loss(z_a, z_b, temperature=spec.temperature)
    return loss, {"loss": float(loss.detach()), "contrastive_top1": _top1(batch)}


def supcon_objective(spec: PretrainSpec, batch: ObjectiveInput
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """SupCon (Khosla et al. 2020) at ``spec.temperature`` over the global batch, the positives
    of an anchor being every other view of its class on any rank."""

    z_a, z_b = batch.outputs
    assert batch.labels is not None
    loss = supcon_loss(z_a, z_b, batch.labels, temperature=spec.temperature)
    return loss, {"loss": float(loss.detach()), "contrastive_top1": _top1(batch)}


def supervised_objective(spec: PretrainSpec, batch: ObjectiveInput
                         ) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross entropy of this rank's logits (DDP averages the gradients); logged as the mean
    over ranks."""


    (logits,) = batch.outputs
    assert batch.labels is not None
    loss = F.cross_entropy(logits.float(), batch.labels)
    mean = all_reduce_sum(loss.detach()) / batch.world_size
    return loss, {"loss": float(mean)}


METHODS: dict[str, PretrainMethod] = {method.name: method for method in (
    PretrainMethod("barlow_twins", barlow_twins_objective, head="projector_bn", views=2),
    PretrainMethod("simclr", simclr_objective, head="projector", views=2),
    PretrainMethod("supcon", supcon_objective, head="projector", views=2, needs_labels=True,
                   augmentation="simclr"),
    PretrainMethod("supervised", supervised_objective, head="classifier", views=1,
                   needs_labels=True, augmentation="supervised"),
)}


def pretrain_method(name: str) -> PretrainMethod:
    """The registered method ``name``; a one-line SpecError naming the known ones otherwise."""

    try:
        return METHODS[name]
    except KeyError:
        raise SpecError(f"unknown pre-training method {name!r}; choose one of "
                        f"{', '.join(METHODS)}") from None
