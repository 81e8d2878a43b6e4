"""The only place that knows about process groups.

Collectives here are *autograd-aware*: their backward pass is itself a collective, so a loss
computed from all-reduced or all-gathered tensors sends gradient to every rank's local inputs.

Gradient convention (the DDP convention; docs/design.md principle 1, lightly issue 1977)
-----------------------------------------------------------------------------------
Every rank computes the same *global* loss ``L`` (of the whole, concatenated batch). With these
collectives the gradient that reaches rank ``r``'s local rows is ``world_size * dL/dz_r``, so that
DDP's gradient *averaging* over ranks yields exactly ``dL/dtheta`` of one process on the
concatenated batch. A raw ``dist.all_reduce`` (no backward collective) gives the right loss but
only ``dL/dz_r`` on each rank, i.e. parameter gradients wrong by a factor ``1/world_size`` after
DDP averaging.

Without an initialised process group (or with a world of one) every function here is the identity,
so the maths in :mod:`raysweep.ssl.losses` runs unchanged in a single process.
"""

from __future__ import annotations

from typing import Protocol, cast

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "GlobalBatchNorm",
    "all_gather_sizes",
    "all_gather_with_grad",
    "all_reduce_sum",
    "broadcast_float",
    "convert_to_global_batchnorm",
    "get_backend",
    "get_rank",
    "get_world_size",
    "is_distributed",
]


def is_distributed() -> bool:
    """True when a ``torch.distributed`` process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_world_size() -> int:
    """Number of ranks in the default process group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_backend() -> str | None:
    """The default process group's backend (``nccl``, ``gloo``), or None without one. Ray
    Train starts a process group for a single worker too (``TorchConfig.backend``)."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return str(dist.get_backend())


def get_rank() -> int:
    """This process's rank in the default process group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the backward pass sums the upstream gradients over ranks as well."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``sum_r tensor_r`` on every rank, differentiable (see the module's gradient convention).

    Identity without a process group. Works on every backend (gloo, nccl).
    """
    if not is_distributed():
        return tensor
    return _AllReduceSum.apply(tensor)


class _GatherContext(Protocol):
    """What :class:`_AllGatherRows` keeps on autograd's ``ctx`` for its backward pass."""

    sizes: list[int]  # rows per rank, rank order
    rank: int


class _AllGatherRows(torch.autograd.Function):
    """Concatenate every rank's rows (rank order); backward sums gradients, keeps local rows."""

    @staticmethod
    def forward(ctx: _GatherContext, tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        rank, longest = dist.get_rank(), max(sizes)
        ctx.sizes, ctx.rank = sizes, rank
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        chunks = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(chunks, padded.contiguous())
        return torch.cat([chunk[:n] for chunk, n in zip(chunks, sizes, strict=True)])

    @staticmethod
    def backward(ctx: _GatherContext, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        # Every rank holds d(its loss)/d(all rows); the local rows' gradient is the sum over
        # ranks of their slices. An all_reduce followed by slicing works on every backend
        # (gloo has no reduce_scatter).
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def all_gather_sizes(n: int, device: torch.device | str = "cpu") -> list[int]:
    """Every rank's value of the int ``n`` (e.g. its local batch size), in rank order.

    ``[n]`` without a process group. ``device`` must suit the backend (cuda for nccl).
    """
    if not is_distributed():
        return [int(n)]
    size = torch.tensor([int(n)], device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Rows of ``tensor`` (n_r, ...) from every rank, concatenated in rank order: (sum_r n_r, ...).

    Differentiable (see the module's gradient convention); ranks may hold different numbers of
    rows. Identity without a process group.
    """
    if not is_distributed():
        return tensor
    return _AllGatherRows.apply(tensor, all_gather_sizes(tensor.shape[0], tensor.device))


def broadcast_float(value: float, device: torch.device | str = "cpu", src: int = 0) -> float:
    """Rank ``src``'s ``value`` on every rank (the identity without a process group); e.g. the
    LR finder's suggestion, found once and used by every rank."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=src)
    return float(tensor.item())


# --------------------------------------------------------------------------------------------
# Batch normalisation over the global batch of all ranks, on any device.
#
# Barlow Twins standardises along the batch, and the original code converts every BatchNorm of
# the model to ``nn.SyncBatchNorm`` so that each BN sees the global batch; that also makes one
# step on W workers equal to one step of a single worker on the concatenated batch.
# ``nn.SyncBatchNorm`` only runs on accelerators, so on CPU (gloo) ``GlobalBatchNorm`` does the
# same with the autograd-aware ``all_reduce_sum`` above. State-dict keys are those of
# ``nn.BatchNorm*d``, so checkpoints stay torchvision-compatible.
# --------------------------------------------------------------------------------------------


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training-mode statistics span every rank's batch.

    Input (B, C, *) with any number of trailing dims; mean and biased variance per channel over
    the global batch (two all-reduces: sums, then centred squares, for accuracy); running
    statistics are updated with the unbiased global variance, as ``nn.BatchNorm*d`` does.
    Without a process group of more than one rank, or in eval mode, it is plain BatchNorm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.float()
        count = all_reduce_sum(torch.tensor(float(input.numel() // input.shape[1]),
                                            device=input.device))
        mean = all_reduce_sum(x.sum(dim=dims)) / count
        centred = x - mean.view(shape)
        var = all_reduce_sum(centred.square().sum(dim=dims)) / count
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            # The three buffers exist (are not None) whenever statistics are tracked.
            tracked = cast(torch.Tensor, self.num_batches_tracked)
            running_mean = cast(torch.Tensor, self.running_mean)
            running_var = cast(torch.Tensor, self.running_var)
            with torch.no_grad():
                tracked.add_(1)
                factor = 1.0 / float(tracked) if self.momentum is None else self.momentum
                unbiased = var * count / (count - 1).clamp_min(1)
                running_mean.mul_(1 - factor).add_(factor * mean)
                running_var.mul_(1 - factor).add_(factor * unbiased)
        return out.to(input.dtype)


def convert_to_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm{1,2,3}d`` / ``SyncBatchNorm`` in ``module`` (recursively) by a
    :class:`GlobalBatchNorm` holding the same parameters and buffers; returns the new module."""
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
            module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        out.load_state_dict(module.state_dict())
        out.train(module.training)
        if module.affine:
            out.weight.requires_grad_(module.weight.requires_grad)
            out.bias.requires_grad_(module.bias.requires_grad)
    for name, child in module.named_children():
        out.add_module(name, convert_to_global_batchnorm(child))
    return out
