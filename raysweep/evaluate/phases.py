"""The phases a fine-tuning or probe run goes through (docs/protocol.md "Fine-tuning"), shared
by a single seed's run (:mod:`raysweep.evaluate.protocol`) and K batched probe heads
(:mod:`raysweep.evaluate.batched`):

- :func:`training_batches`: the endless augmented training batches of a run;
- :func:`run_steps` / :func:`train_epochs`: the head-only epoch(s) and the scheduled epochs;
- :func:`lr_finder_phase`: fastai's LR finder from a saved state that is restored afterwards;
- :func:`test_probabilities` / :func:`test_set_entries`: TTA scoring of the test split and of
  each external test set;
- :class:`Precision`: bf16 autocast and channels_last (``EvaluationSpec.precision`` /
  ``channels_last``, on by default for GPUs), applied to the model and every forward pass.

A step function takes one batch ``(x float (B, 3, H, W), y int64 (B,))`` and takes one
optimiser step; single runs and batched heads differ only in their step function.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from raysweep.config import EvaluationSpec
from raysweep.data import to_float_rgb
from raysweep.evaluate.inputs import LabelledPair, epoch_batches
from raysweep.evaluate.metrics import external_metrics
from raysweep.evaluate.tta import Augment, tta_probabilities
from raysweep.optim import LRFinderResult, lr_range_test_batched

__all__ = ["Precision", "lr_finder_phase", "run_steps", "test_probabilities",
           "test_set_entries", "train_epochs", "training_batches"]

Batch = tuple[torch.Tensor, torch.Tensor]
StepFn = Callable[[torch.Tensor, torch.Tensor], Any]


@dataclass(frozen=True)
class Precision:
    """How a run computes: bf16 autocast and/or channels_last memory format.

    Both default on for CUDA devices and off on CPU (``precision: auto``, ``channels_last:
    null``), as ``PretrainSpec.precision`` / ``channels_last`` in pre-training. Off, the
    run is exactly the fp32 path: no autocast context is entered and no tensor is converted.
    With bf16, logits are returned in float32, so the loss, softmax and metrics stay fp32.
    Tolerance, tested on CPU (``torch.autocast("cpu", dtype=torch.bfloat16)``) with a fixed
    ``lr_max``: TTA probabilities within 0.01 of fp32's and every metric within 0.05
    (tests/evaluate/test_precision.py; docs/protocol.md "Precision").
    """

    bf16: bool = False
    channels_last: bool = False
    device_type: str = "cpu"

    @classmethod
    def resolve(cls, settings: EvaluationSpec, device: torch.device) -> Precision:
        bf16, channels_last = settings.arithmetic(on_gpu=device.type == "cuda")
        return cls(bf16=bf16, channels_last=channels_last, device_type=device.type)

    def row_columns(self) -> dict[str, Any]:
        """The row's ``precision`` and ``channels_last`` columns when either is on (a plain
        fp32 row, as every row before them, has neither)."""
        if not self.bf16 and not self.channels_last:
            return {}
        return {"precision": "bf16" if self.bf16 else "fp32",
                "channels_last": self.channels_last}

    def prepare(self, module: nn.Module) -> nn.Module:
        """``module`` in channels_last when enabled (in place, as ``Module.to``)."""
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=torch.bfloat16)

    def wrap(self, logits_fn: Callable[[torch.Tensor], torch.Tensor]
             ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``logits_fn`` with inputs in channels_last and under autocast when enabled, its
        logits in float32; ``logits_fn`` itself when both are off."""
        if not self.bf16 and not self.channels_last:
            return logits_fn

        def wrapped(x: torch.Tensor) -> torch.Tensor:
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                logits = logits_fn(x)
            return logits.float()

        return wrapped


def training_batches(pair: LabelledPair, batch_size: int, order: torch.Generator,
                     aug_generator: torch.Generator, augment: Augment) -> Iterator[Batch]:
    """Endless augmented training batches, epoch after epoch: (float (B, 3, H, W), labels)."""
    while True:
        for index in epoch_batches(pair.train_images.shape[0], batch_size, order):
            index = index.to(pair.train_images.device)
            x = augment(to_float_rgb(pair.train_images[index]), generator=aug_generator)
            yield x, pair.train_labels[index]


def run_steps(step: StepFn, batches: Iterator[Batch], count: int) -> None:
    """``count`` optimiser steps on the next batches (the head-only epochs)."""
    for _ in range(count):
        step(*next(batches))


def train_epochs(step: StepFn, batches: Iterator[Batch], *, steps_per_epoch: int,
                 epochs: int, first_epoch: int = 0, after_step: Callable[[], Any],
                 after_epoch: Callable[[int], None] | None = None) -> None:
    """Epochs ``first_epoch + 1 .. epochs`` of ``steps_per_epoch`` steps, ``after_step`` (the
    schedule's step) after each and ``after_epoch(epoch)`` (1-based) after each epoch."""
    for epoch in range(first_epoch, epochs):
        for _ in range(steps_per_epoch):
            step(*next(batches))
            after_step()
        if after_epoch is not None:
            after_epoch(epoch + 1)


def lr_finder_phase(module: nn.Module, optimizer: torch.optim.Optimizer,
                    step: Callable[[float, Sequence[bool]], Sequence[float]], num_runs: int,
                    settings: EvaluationSpec) -> list[LRFinderResult]:
    """fastai's LR finder for ``num_runs`` runs sharing one lr sweep
    (:func:`raysweep.optim.lr_range_test_batched`; one run = :func:`~raysweep.optim.lr_range_test`),
    with ``module`` and ``optimizer`` restored to their state before it (fastai reloads
    ``_tmp.pth``). ``step(lr, active)`` takes one step at ``lr`` and returns each run's loss."""
    saved_module = copy.deepcopy(module.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    finders = lr_range_test_batched(step, num_runs, start=settings.lr_finder_start,
                                    end=settings.lr_finder_end, iters=settings.lr_finder_iters)
    module.load_state_dict(saved_module)
    optimizer.load_state_dict(saved_optimizer)
    return finders


def test_probabilities(logits_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                       *, augment: Augment, settings: EvaluationSpec,
                       generator: torch.Generator) -> torch.Tensor:
    """TTA probabilities float (..., N, C) of ``images`` with ``settings.tta_views`` views."""
    return tta_probabilities(logits_fn, images, augment=augment, views=settings.tta_views,
                             generator=generator, batch_size=settings.batch_size)


def test_set_entries(logits_fn: Callable[[torch.Tensor], torch.Tensor],
                     external: Mapping[str, tuple[torch.Tensor, torch.Tensor]], *,
                     augment: Augment, settings: EvaluationSpec,
                     tta_generator: Callable[[str], torch.Generator],
                     class_names: Sequence[str], num_heads: int) -> list[list[dict[str, Any]]]:
    """Each head's ``test_sets`` entries (one per external test set, in order): the same TTA
    views for every head (``tta_generator(name)``), each set's inference time divided among the
    ``num_heads`` heads. ``logits_fn`` gives logits (B, C) for one head, (K, B, C) for K."""
    entries: list[list[dict[str, Any]]] = [[] for _ in range(num_heads)]
    for name, (images, labels) in external.items():
        began = time.perf_counter()
        probs = test_probabilities(logits_fn, images, augment=augment, settings=settings,
                                   generator=tta_generator(name)).cpu()
        probs = probs.reshape(num_heads, *probs.shape[-2:])
        seconds = (time.perf_counter() - began) / num_heads
        for k in range(num_heads):
            entries[k].append(external_metrics(name, labels, probs[k], class_names, seconds))
    return entries
