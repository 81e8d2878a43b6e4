"""Optimisation pieces shared by pre-training and evaluation: fastai's 1cycle schedule, the
LR finder with fastai's ``valley`` suggestion, and Adam for K stacked heads."""

from raysweep.optim.batched_adam import BatchedAdam
from raysweep.optim.lr_finder import (
    LRFinderResult,
    lr_range_test,
    lr_range_test_batched,
    suggest_lr,
    valley,
)
from raysweep.optim.schedules import fastai_one_cycle, fastai_one_cycle_table

__all__ = ["BatchedAdam", "LRFinderResult", "fastai_one_cycle", "fastai_one_cycle_table",
           "lr_range_test", "lr_range_test_batched", "suggest_lr", "valley"]
