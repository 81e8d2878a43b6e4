"""The downstream optimiser and learning-rate schedule of a fine-tuning or probe run.

- ``optimizer``: ``fastai_adam`` (the paper's code: fastai's Adam, i.e. ``torch.optim.AdamW``
  with ``betas=(0.9, 0.99)``, ``eps=1e-5`` and decoupled weight decay), or torch's ``Adam`` /
  ``AdamW`` with torch's own defaults (``betas=(0.9, 0.999)``, ``eps=1e-8``) and
  ``weight_decay`` (an L2 term for ``adam``, decoupled for ``adamw``): the thesis' Table 3.2,
  written with PyTorch Lightning's defaults.
- ``schedule``: fastai's 1cycle (:func:`raysweep.optim.fastai_one_cycle`; Adam's beta1 cycles
  with it), ``multistep`` (``torch.optim.lr_scheduler.MultiStepLR``: the rate is multiplied by
  ``gamma`` at each milestone, a fraction of ``epochs``; the thesis' frozen backbone, footnote
  4: 0.6 and 0.8 of the epochs, gamma 0.1) or ``constant`` (the thesis' unfrozen backbone).

Every schedule is stepped once per optimiser step, so a run's checkpoint (optimiser and
scheduler state dicts: plain tensors and numbers) resumes it exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from raysweep.config import EvaluationSpec
from raysweep.optim import fastai_one_cycle

__all__ = ["ADAM_BETAS", "ADAM_EPS", "make_optimizer", "make_schedule", "milestone_steps",
           "uses_fastai_defaults"]

ADAM_BETAS = (0.9, 0.99)  # fastai Adam defaults
ADAM_EPS = 1e-5


def uses_fastai_defaults(settings: EvaluationSpec) -> bool:
    """Whether the run uses the paper's optimiser and 1cycle (what batched probes implement)."""
    return settings.optimizer == "fastai_adam" and settings.schedule == "onecycle"


def make_optimizer(params: Sequence[nn.Parameter], lr: float, settings: EvaluationSpec, *,
                   foreach: bool | None = None) -> torch.optim.Optimizer:
    """A fresh optimiser of ``settings.optimizer`` over ``params`` at ``lr``. ``foreach``:
    torch's choice of implementation (None: torch's default, the multi-tensor path on CUDA);
    ``False`` keeps the single-tensor path on every device, whose arithmetic batched probes
    (:class:`raysweep.optim.BatchedAdam`) repeat."""
    params = list(params)
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=settings.weight_decay,
                                foreach=foreach)
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=settings.weight_decay,
                                 foreach=foreach)
    return torch.optim.AdamW(params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS,
                             weight_decay=settings.weight_decay, foreach=foreach)


def milestone_steps(settings: EvaluationSpec, steps_per_epoch: int) -> list[int]:
    """The optimiser steps after which ``multistep`` multiplies the rate by ``gamma``: each
    milestone fraction of ``epochs`` rounded to a whole epoch (halves up), in steps. The
    thesis' 0.6 and 0.8 of 40 epochs are epochs 24 and 32."""
    epochs = [int(m * settings.epochs + 0.5) for m in settings.milestones]
    return [e * steps_per_epoch for e in epochs]


def make_schedule(optimizer: torch.optim.Optimizer, settings: EvaluationSpec, lr_max: float,
                  steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule of the ``settings.epochs`` training epochs at ``lr_max``, to be stepped
    after every optimiser step (``settings.epochs * steps_per_epoch`` steps)."""
    if settings.schedule == "onecycle":
        return fastai_one_cycle(
            optimizer, max_lr=lr_max, total_steps=settings.epochs * steps_per_epoch,
            pct_start=settings.pct_start, div=settings.div_factor,
            div_final=settings.final_div_factor, max_momentum=settings.max_momentum,
            base_momentum=settings.base_momentum)
    for group in optimizer.param_groups:
        group["lr"] = float(lr_max)
        group.pop("initial_lr", None)
    milestones = milestone_steps(settings, steps_per_epoch) \
        if settings.schedule == "multistep" else []  # no milestone: a constant rate
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones,
                                                gamma=settings.gamma)
