"""fastai's 1cycle formula, re-implemented independently, against ``fastai_one_cycle``
(OneCycleLR reparametrised) and its per-head table."""

from __future__ import annotations

import math

import pytest
import torch

from raysweep.optim import fastai_one_cycle


def fastai_reference(pos: float, pct: float, start: float, middle: float, end: float) -> float:
    """fastai ``combined_cos(pct, start, middle, end)(pos)`` written out from its source:
    ``combine_scheds([pct, 1 - pct], [SchedCos(start, middle), SchedCos(middle, end)])``."""
    bounds = [0.0, pct, 1.0]
    idx = min(max(i for i, b in enumerate(bounds) if pos >= b), len(bounds) - 2)
    actual = (pos - bounds[idx]) / (bounds[idx + 1] - bounds[idx])
    lo, hi = [(start, middle), (middle, end)][idx]
    return lo + (1 + math.cos(math.pi * (1 - actual))) * (hi - lo) / 2


def collect(total: int, max_lr, **kwargs):
    """Run the scheduler through ``total`` steps; return lrs/beta1 of each group per step."""
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(len(max_lr))]
    opt = torch.optim.Adam([{"params": [p]} for p in params], lr=1.0, betas=(0.9, 0.99))
    sched = fastai_one_cycle(opt, max_lr=list(max_lr), total_steps=total, **kwargs)
    lrs, moms = [], []
    for _ in range(total):
        lrs.append([g["lr"] for g in opt.param_groups])
        moms.append([g["betas"][0] for g in opt.param_groups])
        opt.step()
        sched.step()
    lrs.append([g["lr"] for g in opt.param_groups])  # after the last step: pos = 1
    moms.append([g["betas"][0] for g in opt.param_groups])
    return lrs, moms


@pytest.mark.parametrize("total", [7, 40, 360])
def test_lr_and_momentum_equal_fastai_formula_at_every_step(total: int) -> None:
    max_lrs = (3e-3, 0.2)
    lrs, moms = collect(total, max_lrs)
    for step in range(total + 1):
        pos = step / total
        for group, lr_max in enumerate(max_lrs):
            want = fastai_reference(pos, 0.25, lr_max / 25, lr_max, lr_max / 1e5)
            # fastai's formula cancels near the end (middle + (end - middle)): compare on the
            # scale of lr_max
            tol = 1e-12 * lr_max
            assert lrs[step][group] == pytest.approx(want, rel=1e-12, abs=tol)
            want_mom = fastai_reference(pos, 0.25, 0.95, 0.85, 0.95)
            assert moms[step][group] == pytest.approx(want_mom, rel=1e-12, abs=0)


def test_known_points_of_the_cycle() -> None:
    total, lr_max = 40, 0.01
    lrs, moms = collect(total, (lr_max,), pct_start=0.25, div=25.0, div_final=1e5)
    assert lrs[0][0] == pytest.approx(lr_max / 25, rel=1e-12)  # start: lr_max / div
    assert moms[0][0] == pytest.approx(0.95, rel=1e-12)
    assert lrs[10][0] == pytest.approx(lr_max, rel=1e-12)  # peak at pct_start * N = 10
    assert moms[10][0] == pytest.approx(0.85, rel=1e-12)
    assert lrs[40][0] == pytest.approx(lr_max / 1e5, rel=1e-9)  # fastai: lr_max / div_final
    assert max(row[0] for row in lrs) == pytest.approx(lr_max, rel=1e-12)
    # torch's own OneCycleLR defaults would peak one step earlier and end at lr_max / (25 * 1e5)
    assert lrs[9][0] < lrs[10][0]


def test_rejects_an_empty_or_degenerate_cycle() -> None:
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ValueError, match="total_steps"):
        fastai_one_cycle(optimizer, max_lr=1.0, total_steps=0)
    with pytest.raises(ValueError, match="pct_start"):
        fastai_one_cycle(optimizer, max_lr=1.0, total_steps=10, pct_start=1.0)


def test_table_equals_the_scheduler_bit_for_bit() -> None:
    from raysweep.optim import fastai_one_cycle_table

    max_lrs = (3e-3, 0.2, 1.7e-5)
    lrs, moms = collect(50, max_lrs)
    table, table_moms = fastai_one_cycle_table(list(max_lrs), 50)
    assert table.shape == (51, 3)
    assert table.tolist() == lrs  # the same floats, not just close
    assert table_moms == [row[0] for row in moms]
