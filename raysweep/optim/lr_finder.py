"""fastai's learning-rate finder (``Learner.lr_find``) and its ``valley`` suggestion.

The range test (Smith 2017; fastai ``LRFinder``): starting from the current weights, take
``iters`` optimiser steps with the lr growing exponentially, ``lr_i = start * (end / start) **
(i / iters)`` for ``i = 0 .. iters - 1``; record the smoothed training loss (exponential moving
average, ``beta = 0.98``, debiased: fastai's ``AvgSmoothLoss``); stop once the smoothed loss
exceeds 4x its minimum (``stop_div``). The caller saves and restores its model and optimiser state
around the test (fastai reloads ``_tmp.pth``).

The suggestion (fastai ``lr_find(suggest_funcs=valley)``): drop the first ``iters // 10`` and the
last 5 points and everything from the first NaN, then apply :func:`valley`. Two choices where
fastai would fail: if stopping early leaves nothing after the trim, the untrimmed curve is used;
a non-finite loss stops the test at once (fastai runs on and drops the NaNs afterwards, which
leaves the same suggestion).

A library was considered: ``torch-lr-finder`` suggests the steepest gradient, not ``valley``, and
runs its own data loop, so the finder is implemented here (about 60 lines) and tested on known
curves.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raysweep.config.specs import LR_FINDER_END, LR_FINDER_START
from raysweep.errors import RaysweepError

__all__ = ["LR_FINDER_END", "LR_FINDER_START", "LRFinderResult", "lr_range_test",
           "lr_range_test_batched", "suggest_lr", "valley"]

#: The lr range of every LR finder (fastai ``lr_find``'s defaults, ``LR_FINDER_START`` /
#: ``LR_FINDER_END``) is the spec's: the evaluation protocol's ``lr_finder_start`` /
#: ``lr_finder_end`` default to it, pre-training uses it as is.
SMOOTHING_BETA = 0.98  # fastai Recorder(beta=0.98)
DIVERGENCE_FACTOR = 4.0  # fastai LRFinder: stop when smooth_loss > 4 * best_loss


@dataclass(frozen=True)
class LRFinderResult:
    """The recorded curve (lrs and smoothed losses, one per step taken) and the suggested lr."""

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    suggestion: float

    def to_dict(self) -> dict[str, Any]:
        """``{"lrs": [...], "losses": [...], "suggestion": float}``: plain lists and floats, so
        it saves and loads with ``torch.load(..., weights_only=True)`` (run checkpoints)."""
        return {"lrs": list(self.lrs), "losses": list(self.losses),
                "suggestion": self.suggestion}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LRFinderResult:
        """The result :meth:`to_dict` wrote."""
        return cls(lrs=tuple(float(v) for v in data["lrs"]),
                   losses=tuple(float(v) for v in data["losses"]),
                   suggestion=float(data["suggestion"]))

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON, non-finite losses as ``null`` (the results-row format)."""
        data = self.to_dict()
        data["losses"] = [loss if math.isfinite(loss) else None for loss in self.losses]
        return json.dumps(data)


def valley(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's ``valley``: the lr two thirds of the way down the longest valley of the curve.

    For each point, ``lds[i]`` is the length of the longest strictly decreasing subsequence of
    ``losses`` ending at ``i`` (an O(n^2) dynamic programme); the valley runs from
    ``max_end - lds[max_end]`` to ``max_end`` (the first ``i`` reaching the longest length), and
    the suggestion is ``lrs[max_start + int(sections) + int(sections / 2)]`` with
    ``sections = (max_end - max_start) / 3``. Reproduces fastai's code exactly, including its
    off-by-one start.
    """
    n = len(losses)
    if n == 0 or len(lrs) != n:
        raise ValueError(f"valley needs equally long, non-empty curves (got {len(lrs)} lrs, "
                         f"{n} losses)")
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx])


def suggest_lr(lrs: Sequence[float], losses: Sequence[float], iters: int) -> float:
    """fastai ``lr_find``'s suggestion: trim ``[iters // 10 : -5]``, cut at the first NaN,
    :func:`valley`. Falls back to the untrimmed curve when the trim leaves nothing."""

    def finite_prefix(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
        cut = next((i for i, y in enumerate(ys) if not math.isfinite(y)), len(ys))
        return list(xs[:cut]), list(ys[:cut])

    trimmed = finite_prefix(lrs[iters // 10:-5], losses[iters // 10:-5])
    if not trimmed[0]:
        trimmed = finite_prefix(lrs, losses)
    if not trimmed[0]:
        raise RaysweepError("LR finder: the training loss was not finite from the first step "
                            f"(lr {lrs[0] if lrs else float('nan'):.3g}); check the data and model")
    return valley(*trimmed)


def lr_range_test_batched(step: Callable[[float, Sequence[bool]], Sequence[float]],
                          num_runs: int, *, start: float = LR_FINDER_START,
                          end: float = LR_FINDER_END, iters: int = 100,
                          stop_div: bool = True) -> list[LRFinderResult]:
    """The range test for ``num_runs`` independent runs sharing one lr sweep (batched heads).

    ``step(lr, active)`` takes one optimiser step at ``lr`` for every run and returns the
    ``num_runs`` training losses; ``active[k]`` is False once run ``k`` has stopped (its loss is
    ignored from then on, so it may be left out of the step). Run ``k``'s result equals that of a
    separate :func:`lr_range_test` whose ``step`` returns run ``k``'s loss.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if not 0 < start < end:
        raise ValueError(f"need 0 < start < end, got start={start}, end={end}")
    averages = [0.0] * num_runs
    best = [math.inf] * num_runs
    active = [True] * num_runs
    lrs: list[list[float]] = [[] for _ in range(num_runs)]
    curves: list[list[float]] = [[] for _ in range(num_runs)]
    for i in range(iters):
        lr = start * (end / start) ** (i / iters)
        raw = step(lr, list(active))
        for k in range(num_runs):
            if not active[k]:
                continue
            averages[k] = SMOOTHING_BETA * averages[k] + (1.0 - SMOOTHING_BETA) * float(raw[k])
            smooth = averages[k] / (1.0 - SMOOTHING_BETA ** (i + 1))
            lrs[k].append(lr)
            curves[k].append(smooth)
            best[k] = min(best[k], smooth)
            if not math.isfinite(smooth) or (stop_div and smooth > DIVERGENCE_FACTOR * best[k]):
                active[k] = False
        if not any(active):
            break
    return [LRFinderResult(tuple(lrs[k]), tuple(curves[k]), suggest_lr(lrs[k], curves[k], iters))
            for k in range(num_runs)]


def lr_range_test(step: Callable[[float], float], *, start: float = LR_FINDER_START,
                  end: float = LR_FINDER_END, iters: int = 100,
                  stop_div: bool = True) -> LRFinderResult:
    """fastai's LR range test: ``step(lr)`` takes one optimiser step at ``lr`` and returns the
    training loss; returns the curve and the ``valley`` suggestion. The caller restores its
    model and optimiser afterwards (the test changes them)."""
    return lr_range_test_batched(lambda lr, active: [step(lr)], 1, start=start, end=end,
                                 iters=iters, stop_div=stop_div)[0]
