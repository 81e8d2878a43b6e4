"""Self-supervised objectives as pure functions of embeddings.

* Barlow Twins (Zbontar et al. 2021; docs/protocol.md eq. 1) and its sparse variant (eq. 2, via
  :func:`l21_norm` of the projector's last weight).
* NT-Xent, SimCLR's normalised temperature-scaled cross entropy (Chen et al. 2020; thesis
  Table 3.1: temperature 0.07).
* SupCon, the supervised contrastive loss ``L^sup_out`` of Khosla et al. 2020 (eq. 2): NT-Xent
  whose positives are every other view of the same class (Chaves et al.'s SCL pipelines).
* The contrastive top-1 accuracy of a batch (is an anchor's positive its most similar
  embedding? Jiang's thesis, Figure 7.1): a monitor, not an objective.

Distribution is explicit and opt-in: with ``distributed=None`` (the default) the functions span
all ranks whenever a ``torch.distributed`` process group with more than one rank is initialised,
and are plain single-process maths otherwise. Cross-rank quantities (the batch statistics and the
cross-correlation of Barlow Twins, the negatives of NT-Xent, the negatives and same-class
positives of SupCon) go through the autograd-aware
collectives of :mod:`raysweep.distributed`, so every rank returns the loss of the concatenated
global batch and DDP's gradient averaging gives exactly the single-process gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from raysweep.distributed import (
    all_gather_sizes,
    all_gather_with_grad,
    all_reduce_sum,
    get_rank,
    is_distributed,
)

__all__ = [
    "BarlowTwinsTerms",
    "barlow_twins_loss",
    "barlow_twins_terms",
    "contrastive_top1_accuracy",
    "l21_norm",
    "nt_xent_loss",
    "supcon_loss",
]

#: BatchNorm1d's default epsilon: Zbontar et al. standardise with ``BatchNorm1d(affine=False)``.
BN_EPS = 1e-5


class BarlowTwinsTerms(NamedTuple):
    """The Barlow Twins loss and its two terms (scalars).

    ``loss = invariance + lambda_offdiag * redundancy``, with ``invariance = sum_i (1 - C_ii)^2``
    and ``redundancy = sum_{i != j} C_ij^2`` (unweighted).
    """

    loss: torch.Tensor
    invariance: torch.Tensor
    redundancy: torch.Tensor


def _check_pair(z_a: torch.Tensor, z_b: torch.Tensor) -> None:
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(
            f"embeddings must be two (n, d) tensors of equal shape, got {tuple(z_a.shape)} "
            f"and {tuple(z_b.shape)}"
        )


def _at_least_float32(z: torch.Tensor) -> torch.Tensor:
    return z.to(torch.promote_types(z.dtype, torch.float32))


def _use_collectives(distributed: bool | None) -> bool:
    return is_distributed() if distributed is None else bool(distributed and is_distributed())


def _standardise(z: torch.Tensor, count: torch.Tensor, gather: bool) -> torch.Tensor:
    """(z - mean) / sqrt(var + eps) per feature over the (global) batch; biased variance as BN."""
    reduce = all_reduce_sum if gather else (lambda t: t)
    mean = reduce(z.sum(dim=0)) / count
    centred = z - mean
    var = reduce(centred.square().sum(dim=0)) / count
    return centred / torch.sqrt(var + BN_EPS)


def barlow_twins_terms(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    *,
    lambda_offdiag: float,
    distributed: bool | None = None,
) -> BarlowTwinsTerms:
    """Barlow Twins loss (docs/protocol.md eq. 1) with its invariance and redundancy terms.

    Args:
        z_a, z_b: projector outputs of the two views, (n, d) each (n = local batch).
        lambda_offdiag: weight of the off-diagonal (redundancy) term; the paper uses 1/8192.
        distributed: ``None`` spans all ranks when a process group exists; ``False`` forces the
            local batch only.

    Each feature is standardised along the (global) batch with the batch mean and the biased
    variance plus ``BN_EPS`` (as ``BatchNorm1d(affine=False)``, the reference implementation),
    then ``C = z_a_norm^T z_b_norm / N`` (d x d, N = global batch size). Computed in at least
    float32 whatever the input dtype (mixed precision would otherwise square float16 values).
    """
    _check_pair(z_a, z_b)
    if not lambda_offdiag >= 0:
        raise ValueError(f"lambda_offdiag must be >= 0, got {lambda_offdiag!r}")
    gather = _use_collectives(distributed)
    z_a, z_b = _at_least_float32(z_a), _at_least_float32(z_b)
    count = torch.tensor(float(z_a.shape[0]), device=z_a.device)
    if gather:
        count = all_reduce_sum(count)
    if count.item() < 2:
        raise ValueError("Barlow Twins needs a batch of at least 2 samples to standardise")
    c = _standardise(z_a, count, gather).T @ _standardise(z_b, count, gather)
    if gather:
        c = all_reduce_sum(c)
    c = c / count
    diag = torch.diagonal(c)
    invariance = (1.0 - diag).square().sum()
    redundancy = c.square().sum() - diag.square().sum()
    return BarlowTwinsTerms(invariance + lambda_offdiag * redundancy, invariance, redundancy)


def barlow_twins_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    *,
    lambda_offdiag: float,
    distributed: bool | None = None,
) -> torch.Tensor:
    """Barlow Twins loss, a scalar: ``sum_i (1 - C_ii)^2 + lambda * sum_{i!=j} C_ij^2``.

    See :func:`barlow_twins_terms` for the arguments and the standardisation.
    """
    return barlow_twins_terms(
        z_a, z_b, lambda_offdiag=lambda_offdiag, distributed=distributed
    ).loss


def l21_norm(weight: torch.Tensor) -> torch.Tensor:
    """``||W||_{2,1}``: the sum over the columns of ``W`` of each column's L2 norm (eq. 2).

    ``weight`` is an ``nn.Linear`` weight of shape (out_features, in_features), so column ``j``
    holds every weight leaving input unit ``j``; the penalty drives whole input units of the
    projector's last layer to zero (group sparsity). The sparse Barlow Twins objective is
    ``barlow_twins_loss(...) + alpha * l21_norm(projector_last_layer.weight)``, alpha = 0.01.
    """
    if weight.ndim != 2:
        raise ValueError(f"l21_norm expects a 2-D weight matrix, got shape {tuple(weight.shape)}")
    return torch.linalg.vector_norm(weight, ord=2, dim=0).sum()


def nt_xent_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    *,
    temperature: float,
    distributed: bool | None = None,
) -> torch.Tensor:
    """SimCLR's NT-Xent loss, a scalar averaged over all 2N anchors of the (global) batch.

    Args:
        z_a, z_b: projections of the two views, (n, d) each; row ``i`` of both is one image.
        temperature: softmax temperature tau > 0 (thesis Table 3.1: 0.07).
        distributed: ``None`` takes negatives from every rank when a process group exists;
            ``False`` keeps them local.

    For anchor ``k`` among the 2N L2-normalised embeddings with positive ``p(k)`` (the other
    view of the same image), ``l_k = -log exp(s_kp / tau) / sum_{m != k} exp(s_km / tau)``
    with cosine similarity ``s``; the loss is the mean of ``l_k`` over all 2N anchors. With a
    process group, each rank's anchors are contrasted against every rank's embeddings and the
    per-rank sums are all-reduced, so every rank returns the same global loss.
    """
    _check_pair(z_a, z_b)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    gather = _use_collectives(distributed)
    z_a = F.normalize(_at_least_float32(z_a), dim=1)
    z_b = F.normalize(_at_least_float32(z_b), dim=1)
    candidates, anchors, offset = _global_views(z_a, z_b, gather)
    n_local, n_global = z_a.shape[0], candidates.shape[0] // 2
    logits = anchors @ candidates.T / temperature  # (2n, 2N)
    local = torch.arange(n_local, device=z_a.device)
    self_index = torch.cat([offset + local, n_global + offset + local])
    positive_index = torch.cat([n_global + offset + local, offset + local])
    rows = torch.arange(2 * n_local, device=z_a.device)
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[rows, self_index] = True
    logits = logits.masked_fill(is_self, float("-inf"))
    per_anchor = -logits[rows, positive_index] + torch.logsumexp(logits, dim=1)
    total = per_anchor.sum()
    if gather:
        total = all_reduce_sum(total)
    return total / (2 * n_global)


def _global_views(z_a: torch.Tensor, z_b: torch.Tensor, gather: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(candidates (2N, d), anchors (2n, d), offset)``: every rank's view-a rows then every
    rank's view-b rows (differentiable), this rank's view-a then view-b rows, and the index of
    this rank's first row among the N global images (0 without a process group)."""
    if gather:
        all_a, all_b = all_gather_with_grad(z_a), all_gather_with_grad(z_b)
        offset = sum(all_gather_sizes(z_a.shape[0], z_a.device)[: get_rank()])
    else:
        all_a, all_b, offset = z_a, z_b, 0
    return torch.cat([all_a, all_b]), torch.cat([z_a, z_b]), offset


def supcon_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    distributed: bool | None = None,
) -> torch.Tensor:
    """Khosla et al.'s supervised contrastive loss ``L^sup_out`` (2020, eq. 2), a scalar averaged
    over all 2N anchors of the (global) batch.

    Args:
        z_a, z_b: projections of the two views, (n, d) each; row ``i`` of both is one image.
        labels: (n,) integer class of each image (this rank's rows).
        temperature: softmax temperature tau > 0.
        distributed: ``None`` takes negatives and positives from every rank when a process
            group exists; ``False`` keeps them local.

    Among the 2N L2-normalised embeddings, anchor ``i``'s positives ``P(i)`` are every other
    embedding of its class (its own other view included) and ``A(i)`` all but itself:
    ``l_i = -1/|P(i)| sum_{p in P(i)} log exp(s_ip / tau) / sum_{a in A(i)} exp(s_ia / tau)``
    with cosine similarity ``s``. With one image per class it is NT-Xent
    (:func:`nt_xent_loss`). With a process group the labels are gathered with the embeddings,
    so an anchor's positives include same-class images of every rank, and the per-rank sums are
    all-reduced: every rank returns the same global loss.
    """
    _check_pair(z_a, z_b)
    if labels.shape != (z_a.shape[0],):
        raise ValueError(f"labels must be ({z_a.shape[0]},), got {tuple(labels.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    gather = _use_collectives(distributed)
    z_a = F.normalize(_at_least_float32(z_a), dim=1)
    z_b = F.normalize(_at_least_float32(z_b), dim=1)
    candidates, anchors, offset = _global_views(z_a, z_b, gather)
    all_labels = all_gather_with_grad(labels) if gather else labels
    n_local, n_global = z_a.shape[0], all_labels.shape[0]
    logits = anchors @ candidates.T / temperature  # (2n, 2N)
    local = torch.arange(n_local, device=z_a.device)
    self_index = torch.cat([offset + local, n_global + offset + local])
    rows = torch.arange(2 * n_local, device=z_a.device)
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[rows, self_index] = True
    positive = (torch.cat([labels, labels])[:, None] == torch.cat([all_labels, all_labels])[None])
    positive &= ~is_self
    log_prob = logits - torch.logsumexp(logits.masked_fill(is_self, float("-inf")), dim=1,
                                        keepdim=True)
    per_anchor = -(log_prob * positive).sum(dim=1) / positive.sum(dim=1)
    total = per_anchor.sum()
    if gather:
        total = all_reduce_sum(total)
    return total / (2 * n_global)


@torch.no_grad()
def contrastive_top1_accuracy(
    z_a: torch.Tensor, z_b: torch.Tensor, *, distributed: bool | None = None
) -> torch.Tensor:
    """The share of the 2N anchors of the (global) batch whose most similar other embedding
    (cosine similarity, itself excluded) is its positive, the other view of the same image:
    the "top-1 accuracy" of contrastive pre-training (Jiang's thesis, Figure 7.1: "whether the
    model correctly matches the positive pairs in a batch"). A float32 scalar in [0, 1]; a tie
    between the positive and another candidate counts as a miss.

    Args:
        z_a, z_b: projections of the two views, (n, d) each; row ``i`` of both is one image.
        distributed: ``None`` takes the candidates from every rank when a process group exists
            (every rank returns the global share); ``False`` keeps them local.
    """
    _check_pair(z_a, z_b)
    gather = _use_collectives(distributed)
    z_a = F.normalize(_at_least_float32(z_a), dim=1)
    z_b = F.normalize(_at_least_float32(z_b), dim=1)
    candidates, anchors, offset = _global_views(z_a, z_b, gather)
    n_local, n_global = z_a.shape[0], candidates.shape[0] // 2
    similarity = anchors @ candidates.T  # (2n, 2N)
    local = torch.arange(n_local, device=z_a.device)
    self_index = torch.cat([offset + local, n_global + offset + local])
    positive_index = torch.cat([n_global + offset + local, offset + local])
    rows = torch.arange(2 * n_local, device=z_a.device)
    similarity[rows, self_index] = float("-inf")
    positive = similarity[rows, positive_index]
    similarity[rows, positive_index] = float("-inf")
    hits = (positive > similarity.max(dim=1).values).sum().float()
    if gather:
        hits = all_reduce_sum(hits)
    return hits / (2 * n_global)
