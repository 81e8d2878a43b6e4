"""Optimisation pieces shared by pre-training and evaluation: fastai's 1cycle schedule, the
LR finder with fastai's ``valley`` suggestion, and Adam for K stacked heads.

The names load on first use, so that :mod:`raysweep.config` can read the LR finder's defaults
(:mod:`raysweep.optim.lr_finder`, plain Python) without importing torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raysweep.optim.batched_adam import BatchedAdam
    from raysweep.optim.lr_finder import (
        LRFinderResult,
        lr_range_test,
        lr_range_test_batched,
        suggest_lr,
        valley,
    )
    from raysweep.optim.schedules import fastai_one_cycle, fastai_one_cycle_table

#: Each public name -> the module defining it.
_MODULES = {
    "BatchedAdam": "batched_adam",
    "LRFinderResult": "lr_finder", "lr_range_test": "lr_finder",
    "lr_range_test_batched": "lr_finder", "suggest_lr": "lr_finder", "valley": "lr_finder",
    "fastai_one_cycle": "schedules", "fastai_one_cycle_table": "schedules",
}

__all__ = ["BatchedAdam", "LRFinderResult", "fastai_one_cycle", "fastai_one_cycle_table",
           "lr_range_test", "lr_range_test_batched", "suggest_lr", "valley"]


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'raysweep.optim' has no attribute {name!r}")
    return getattr(import_module(f"raysweep.optim.{_MODULES[name]}"), name)
