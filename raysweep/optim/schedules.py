"""fastai's 1cycle policy, expressed with ``torch.optim.lr_scheduler.OneCycleLR``.

fastai (``Learner.fit_one_cycle``, ``fastai/callback/schedule.py``) evaluates, before batch
``i`` of ``N`` (``pos = i / N``)::

    lr(pos)  = combined_cos(pct_start, lr_max / div, lr_max, lr_max / div_final)(pos)
    mom(pos) = combined_cos(pct_start, 0.95, 0.85, 0.95)(pos)
    combined_cos(p, a, b, c)(pos) = SchedCos(a, b)(pos / p)                 if pos < p
                                    SchedCos(b, c)((pos - p) / (1 - p))     otherwise
    SchedCos(start, end)(x) = start + (1 + cos(pi * (1 - x))) * (end - start) / 2

so the peak is at step ``pct_start * N`` and ``lr = lr_max / div_final`` would be reached at
step ``N`` (one past the last batch). ``OneCycleLR`` instead peaks at ``pct_start * T - 1``, ends
at ``T - 1`` and ends at ``initial_lr / final_div_factor``. Configured with

    total_steps       T' = N + 1
    pct_start         p' = (pct_start * N + 1) / (N + 1)     ->  peak at p' T' - 1 = pct_start N
    final_div_factor  div_final / div                       ->  min_lr = lr_max / div_final

its two phases cover exactly fastai's ``[0, pct_start N]`` and ``[pct_start N, N]`` with the same
cosine (``end + (start - end)(1 + cos(pi x)) / 2`` equals ``SchedCos`` since
``cos(pi (1 - x)) = -cos(pi x)``), so both give the same lr and momentum at every step up to
floating-point rounding (tests compare against an independent re-implementation of fastai's
formula). fastai itself computes ``pos`` against a float32 tensor of phase boundaries, so it
differs from the exact formula by float32 rounding; we follow the exact formula.

For Adam, the momentum is ``beta1`` (OneCycleLR sets ``group["betas"][0]``), as in fastai.
Where one optimiser holds several heads with different ``lr_max`` (batched probes),
:func:`fastai_one_cycle_table` reads every head's values from the same scheduler.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import OneCycleLR

__all__ = ["fastai_one_cycle", "fastai_one_cycle_table"]


def fastai_one_cycle(optimizer: Optimizer, *, max_lr: float | list[float], total_steps: int,
                     pct_start: float = 0.25, div: float = 25.0, div_final: float = 1e5,
                     max_momentum: float = 0.95, base_momentum: float = 0.85) -> OneCycleLR:
    """A ``OneCycleLR`` that follows fastai's ``fit_one_cycle`` for ``total_steps`` batches.

    Call ``scheduler.step()`` after each of the ``total_steps`` optimiser steps (the usual torch
    order); before step ``i`` the optimiser then holds fastai's values at ``pos = i / total_steps``.
    ``max_lr`` may be a list, one per param group. Defaults are fastai's (and docs/protocol.md's):
    ``pct_start 0.25, div 25, div_final 1e5, momentum 0.95 -> 0.85 -> 0.95``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0.0 < pct_start < 1.0:
        raise ValueError(f"pct_start must be in (0, 1), got {pct_start}")
    shifted_pct = (pct_start * total_steps + 1.0) / (total_steps + 1.0)
    return OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total_steps + 1,
        pct_start=float(shifted_pct),
        anneal_strategy="cos",
        cycle_momentum=True,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
        div_factor=div,
        final_div_factor=div_final / div,
        three_phase=False,
    )


def fastai_one_cycle_table(max_lrs: list[float], total_steps: int, **kwargs: float
                           ) -> tuple[torch.Tensor, list[float]]:
    """The values :func:`fastai_one_cycle` gives, for several ``max_lrs`` at once.

    Returns ``lrs`` float64 ``(total_steps + 1, len(max_lrs))`` and the momentum per step, read
    from a ``OneCycleLR`` driving a throwaway optimiser with one param group per ``max_lr``: the
    very numbers a single run's scheduler would produce (batched heads use this table so that
    they match separate runs bit for bit). ``kwargs`` as :func:`fastai_one_cycle`.
    """
    groups = [{"params": [torch.zeros(0, requires_grad=True)]} for _ in max_lrs]
    optimizer = torch.optim.Adam(groups, lr=1.0, betas=(0.9, 0.99))
    scheduler = fastai_one_cycle(optimizer, max_lr=[float(x) for x in max_lrs],
                                 total_steps=total_steps, **kwargs)
    lrs, moms = [], []
    for step in range(total_steps + 1):
        lrs.append([float(g["lr"]) for g in optimizer.param_groups])
        moms.append(float(optimizer.param_groups[0]["betas"][0]))
        if step < total_steps:
            optimizer.step()  # no gradients: nothing changes, but torch expects the order
            scheduler.step()
    return torch.tensor(lrs, dtype=torch.float64), moms
