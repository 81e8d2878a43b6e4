"""Adam for K stacked independent models, each with its own learning rate.

Used by batched multi-seed probes: K linear heads live in one parameter of shape ``(K, ...)``.
Adam is elementwise, so one Adam over the stacked parameter equals K separate Adams, except that
each head has its own ``lr`` (from its own LR-finder run and 1cycle schedule). ``torch.optim.Adam``
accepts only one lr per param group and its schedulers cannot set a vector, hence this small
optimiser. Its update is the same sequence of operations as ``torch.optim.Adam``'s single-tensor
path (torch 2.x, ``weight_decay=0``, no amsgrad)::

    m = lerp(m, g, 1 - beta1);  v = beta2 v + (1 - beta2) g^2
    p -= (lr_k / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

``lr`` is a tensor of shape ``(K,)`` broadcast over each head's slice; ``beta1`` may change from
step to step (1cycle momentum) and the bias correction uses the current ``beta1``, as torch does.

The last operation is ``param.addcdiv_(m, denom, value=-step_size)`` per head slice, the very
kernel of torch's single-tensor path, because its rounding differs between devices (a CPU
computes ``p + (s * m) / d``, a CUDA device ``p + s * (m / d)``, possibly fused): so the heads
equal single-tensor Adams (``foreach=False``, as single-seed probes run) on every device, not
only on a CPU. K small kernels per step: the heads are tiny next to the shared encoder pass.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["BatchedAdam"]


class BatchedAdam(torch.optim.Optimizer):
    """Adam whose learning rate is a ``(K,)`` tensor, one per leading-dimension slice.

    Every parameter must have ``K`` as its first dimension. Set ``group["lr"]`` (a ``(K,)``
    tensor) and ``group["betas"]`` between steps to schedule them.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], *, lr: torch.Tensor,
                 betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-5):
        lr = torch.as_tensor(lr, dtype=torch.float64).flatten()
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        for group in self.param_groups:
            for p in group["params"]:
                if p.shape[0] != lr.numel():
                    raise ValueError(f"parameter of shape {tuple(p.shape)} does not have "
                                     f"{lr.numel()} heads as its first dimension")

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim.Optimizer API
        if closure is not None:
            raise ValueError("BatchedAdam does not support closures")
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            eps = group["eps"]
            lr = torch.as_tensor(group["lr"], dtype=torch.float64)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                step = state["step"]
                grad = p.grad
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = 1 - beta1 ** step
                bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
                denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
                # torch's step size: lr / bias_correction1 in double, handed to addcdiv_
                for k, step_size in enumerate((lr / bias_correction1).tolist()):
                    p[k].addcdiv_(exp_avg[k], denom[k], value=-step_size)
        return None
