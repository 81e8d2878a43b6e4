"""The LR range test and fastai's ``valley`` rule on curves whose answer is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from raysweep.errors import RaysweepError
from raysweep.optim import lr_range_test, lr_range_test_batched, suggest_lr, valley

LRS = [1e-7 * (1e8) ** (i / 100) for i in range(100)]


def u_curve(minimum_at: int, n: int = 100) -> list[float]:
    """Strictly decreasing to ``minimum_at``, then rising steeply (never below the minimum)."""
    return [1.0 + (minimum_at - i) * 0.01 if i <= minimum_at else 1.0 + (i - minimum_at) ** 2
            for i in range(n)]


@pytest.mark.parametrize("minimum_at", [20, 59, 80])
def test_valley_on_a_clean_u_curve(minimum_at: int) -> None:
    # The longest decreasing run is 0..m (length m + 1); fastai's rule then starts one before it
    # (max_start = m - (m + 1) = -1) and goes int(s) + int(s / 2) further, s = (m + 1) / 3.
    s = (minimum_at + 1) / 3
    expected = -1 + int(s) + int(s / 2)
    assert valley(LRS, u_curve(minimum_at)) == LRS[expected]


def test_valley_with_a_plateau_before_the_drop() -> None:
    # Flat until index 30, strictly decreasing 31..70, rising after: a strictly decreasing
    # subsequence holds one plateau point, so the valley has length 40 + 1 ending at 70.
    losses = [2.0] * 31 + [2.0 - 0.01 * (i - 30) for i in range(31, 71)]
    losses += [losses[-1] + 0.5 * (i - 70) for i in range(71, 100)]
    length = 41
    start = 70 - length
    s = (70 - start) / 3
    assert valley(LRS, losses) == LRS[start + int(s) + int(s / 2)]


def test_valley_ignores_a_short_early_dip() -> None:
    losses = [1.0, 0.5, 1.2] + [1.1 - 0.005 * i for i in range(60)] + [5.0] * 37
    # Longest decreasing subsequence: 1.2 (index 2) then the 60 decreasing points, or 1.0 /
    # 1.1 ... -> length 61 ending at index 62.
    s = (62 - (62 - 61)) / 3
    assert valley(LRS, losses) == LRS[62 - 61 + int(s) + int(s / 2)]


def smooth_finder_curve(log_lr: float) -> float:
    """Flat, a sigmoid descent centred at lr 10^-3.5, then an explosion past lr ~ 1."""
    return 2.0 - 1.5 / (1 + math.exp(-(log_lr + 3.5) * 1.5)) + math.exp(3 * (log_lr - 0.3))


@pytest.mark.parametrize("noise_seed", range(8))
def test_valley_is_stable_under_noise_through_the_smoothed_finder(noise_seed: int) -> None:
    clean = lr_range_test(lambda lr: smooth_finder_curve(math.log10(lr)), iters=100)
    assert 1e-4 < clean.suggestion < 1e-2  # on the descent, past its middle (two thirds)
    rng = np.random.default_rng(noise_seed)
    noisy = lr_range_test(lambda lr: smooth_finder_curve(math.log10(lr)) + rng.normal(0, 0.05),
                          iters=100)
    assert clean.suggestion / 2 <= noisy.suggestion <= clean.suggestion * 2
    assert noisy.losses != clean.losses


def test_range_test_sweeps_smooths_stops_and_suggests() -> None:
    calls: list[float] = []

    def step(lr: float) -> float:  # a loss that falls, then explodes above lr = 0.1
        calls.append(lr)
        return 2.0 - 0.1 * math.log10(lr / 1e-7) + (0.0 if lr < 0.1 else 1e3 * (lr - 0.1))

    result = lr_range_test(step, start=1e-7, end=10.0, iters=100)
    assert calls[:3] == pytest.approx([1e-7 * 1e8 ** (i / 100) for i in range(3)], rel=1e-12)
    # exponential moving average with beta 0.98, debiased (fastai AvgSmoothLoss)
    average, expected = 0.0, []
    for i, lr in enumerate(calls):
        raw = 2.0 - 0.1 * math.log10(lr / 1e-7) + (0.0 if lr < 0.1 else 1e3 * (lr - 0.1))
        average = 0.98 * average + 0.02 * raw
        expected.append(average / (1 - 0.98 ** (i + 1)))
    assert result.losses == pytest.approx(expected, rel=1e-12)
    # stopped at the first smoothed loss above 4x the best so far, and recorded it
    best = min(result.losses[:-1])
    assert result.losses[-1] > 4 * best
    assert all(loss <= 4 * min(result.losses[:i + 1]) for i, loss in enumerate(result.losses[:-1]))
    assert len(calls) < 100
    assert result.suggestion == suggest_lr(result.lrs, result.losses, 100)
    assert result.suggestion == valley(result.lrs[10:-5], result.losses[10:-5])
    row = json.loads(result.to_json())
    assert row["suggestion"] == result.suggestion and len(row["lrs"]) == len(calls)


def test_batched_range_test_equals_separate_runs() -> None:
    slopes = [0.05, 0.1, 0.2]

    def loss(k: int, lr: float) -> float:
        return 3.0 - slopes[k] * math.log10(lr / 1e-7) + (0.0 if lr < 10 ** (-k) else 50.0)

    batched = lr_range_test_batched(lambda lr, active: [loss(k, lr) for k in range(3)], 3,
                                    iters=60)
    for k in range(3):
        single = lr_range_test(lambda lr, k=k: loss(k, lr), iters=60)
        assert batched[k] == single
    assert len({len(r.lrs) for r in batched}) > 1  # they stopped at different steps


def test_non_finite_loss_from_the_start_is_a_clear_error() -> None:
    with pytest.raises(RaysweepError, match="not finite"):
        lr_range_test(lambda lr: float("nan"), iters=20)
