"""``BatchedAdam`` over a (K, ...) parameter equals K separate ``torch.optim.Adam``."""

from __future__ import annotations

import torch

from raysweep.optim import BatchedAdam


def test_equals_k_separate_torch_adams_with_own_lrs_and_cycled_beta1() -> None:
    gen = torch.Generator().manual_seed(0)
    k, shape = 4, (3, 5)
    start = torch.randn(k, *shape, generator=gen)
    lrs = torch.tensor([1e-3, 3e-2, 0.1, 2.0], dtype=torch.float64)
    stacked = torch.nn.Parameter(start.clone())
    batched = BatchedAdam([stacked], lr=lrs, betas=(0.95, 0.99), eps=1e-5)
    singles = [torch.nn.Parameter(start[i].clone()) for i in range(k)]
    adams = [torch.optim.Adam([p], lr=float(lrs[i]), betas=(0.95, 0.99), eps=1e-5,
                              foreach=False) for i, p in enumerate(singles)]
    for step in range(25):
        grads = torch.randn(k, *shape, generator=gen) * (10.0 ** (step % 3 - 1))
        beta1 = 0.85 + 0.1 * abs(math_cos(step))
        stacked.grad = grads.clone()
        batched.param_groups[0]["betas"] = (beta1, 0.99)
        batched.step()
        for i, (p, opt) in enumerate(zip(singles, adams, strict=True)):
            p.grad = grads[i].clone()
            opt.param_groups[0]["betas"] = (beta1, 0.99)
            opt.step()
    for i in range(k):
        # the same operations in the same order: bitwise equal on CPU
        torch.testing.assert_close(stacked.data[i], singles[i].data, rtol=0, atol=0)
        assert not torch.equal(stacked.data[i], start[i])  # it really moved


def math_cos(x: float) -> float:
    import math

    return math.cos(x)
