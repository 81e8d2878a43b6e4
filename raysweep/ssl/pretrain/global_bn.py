"""Batch normalisation over the *global* batch of all ranks, on any device.

Barlow Twins standardises along the batch, and the original code converts every BatchNorm of
the model to ``nn.SyncBatchNorm`` so that each BN sees the global batch; that also makes one step
on W workers equal to one step of a single worker on the concatenated batch. ``nn.SyncBatchNorm``
only runs on accelerators, so on CPU (gloo) :class:`GlobalBatchNorm` does the same with the
autograd-aware ``all_reduce_sum`` of :mod:`raysweep.distributed` (its backward sums the upstream
gradients over ranks, the convention under which DDP's averaging gives the single-process
gradient). State-dict keys are those of ``nn.BatchNorm*d``, so checkpoints stay torchvision-
compatible. Candidate for ``raysweep/distributed.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from raysweep.distributed import all_reduce_sum, is_distributed

__all__ = ["GlobalBatchNorm", "convert_to_global_batchnorm"]


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
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                          else self.momentum)
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - factor).add_(factor * mean)
                self.running_var.mul_(1 - factor).add_(factor * unbiased)
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
