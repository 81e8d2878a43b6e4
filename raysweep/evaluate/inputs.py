"""Checked inputs of an evaluation run: the labelled train/test pair, batches and the device.

A split is an :data:`ImagesLabels` pair ``(images, labels)``: images uint8 ``(N, C, H, W)``
with C in {1, 3} (tensor or array, e.g. ``ImageDataset.labelled(split)``), labels int64
``(N,)`` indexing ``class_names``.
Every problem a user can cause is a :class:`~raysweep.errors.DataError` naming the split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from raysweep.errors import DataError

__all__ = ["ImagesLabels", "LabelledPair", "batches_per_epoch", "epoch_batches", "prepare_pair",
           "prepare_split", "resolve_device"]

#: A labelled split as given: ``(images uint8 (N, C, H, W), labels int (N,))``.
ImagesLabels = tuple["torch.Tensor | np.ndarray", "torch.Tensor | np.ndarray"]


@dataclass(frozen=True)
class LabelledPair:
    """Train and test images (uint8, on the run's device) and labels (int64, same device)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/``None`` -> CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _split(split: ImagesLabels, name: str, num_classes: int,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        images, labels = split
    except (TypeError, ValueError):
        raise DataError(f"{name} split: expected a pair (images, labels)") from None
    images = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor)
                             else images)
    labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor)
                             else labels)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(f"{name} split: images must have shape (N, 1 or 3, H, W), got "
                        f"{tuple(images.shape)}")
    if images.dtype != torch.uint8:
        raise DataError(f"{name} split: images must be uint8, got {images.dtype}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{name} split: {images.shape[0]} images but labels of shape "
                        f"{tuple(labels.shape)}")
    if images.shape[0] == 0:
        raise DataError(f"{name} split is empty")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise DataError(f"{name} split: labels must be integers, got {labels.dtype}")
    labels = labels.to(torch.int64)
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.numel():
        raise DataError(f"{name} split: label {int(bad[0])} is outside 0..{num_classes - 1} "
                        f"({num_classes} class names)")
    return images.to(device), labels.to(device)


def prepare_split(split: ImagesLabels, name: str, class_names: Sequence[str],
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One checked split ``(images uint8, labels int64)`` on ``device`` (e.g. ``val``)."""
    return _split(split, name, len(class_names), device)


def prepare_pair(train: ImagesLabels, test: ImagesLabels, class_names: Sequence[str],
                 device: torch.device) -> LabelledPair:
    """Validate and move a train/test pair to ``device``.

    Raises DataError for an empty split, malformed arrays, labels outside ``class_names``, a
    training set with fewer than two classes, a test class unseen in training (a head cannot
    learn it), or train/test images of different shapes.
    """
    names = tuple(str(c) for c in class_names)
    if len(names) < 2:
        raise DataError(f"need at least two class names, got {list(names)}")
    train_x, train_y = _split(train, "train", len(names), device)
    test_x, test_y = _split(test, "test", len(names), device)
    if train_x.shape[2:] != test_x.shape[2:]:
        raise DataError(f"train images are {tuple(train_x.shape[2:])} but test images are "
                        f"{tuple(test_x.shape[2:])}")
    seen = set(torch.unique(train_y).tolist())
    if len(seen) < 2:
        raise DataError(f"train split has a single class ({names[next(iter(seen))]!r}); "
                        "a classifier needs at least two")
    unseen = sorted(set(torch.unique(test_y).tolist()) - seen)
    if unseen:
        listed = ", ".join(repr(names[c]) for c in unseen)
        raise DataError(f"test split has class {listed} that never occurs in the train split")
    return LabelledPair(train_x, train_y, test_x, test_y, names)


def epoch_batches(num_items: int, batch_size: int,
                  generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch of shuffled index batches (CPU int64), the incomplete last batch dropped as in
    fastai's training DataLoader; a set smaller than one batch gives one batch of everything."""
    order = torch.randperm(num_items, generator=generator)
    if num_items < batch_size:
        return [order]
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(num_items // batch_size)]


def batches_per_epoch(num_items: int, batch_size: int) -> int:
    """Number of batches :func:`epoch_batches` yields."""
    return max(1, num_items // batch_size)
