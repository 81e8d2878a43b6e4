"""Frozen features of an encoder: one pass over the plain (unaugmented) images, in eval mode.

What the ``logistic`` protocol and the representation analysis start from: the encoder's
outputs on the labelled train and test images, computed once per encoder and then shared by
every seed (``raysweep.evaluate.logistic``) and every representation metric
(``raysweep.evaluate.representation``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from raysweep.data import to_float_rgb
from raysweep.evaluate.inputs import ImagesLabels, prepare_pair, resolve_device
from raysweep.evaluate.protocol import encoder_output_dim, prepare_test_sets

__all__ = ["FEATURE_BATCH", "LabelledFeatures", "encode", "labelled_features"]

#: Images per forward pass. Fixed (not the protocol's batch size) so that features, and with
#: them the rows computed from them, depend on the encoder and the images only.
FEATURE_BATCH = 256


@dataclass(frozen=True)
class LabelledFeatures:
    """Features float64 (N, D) and labels int64 (N,) of the labelled train and test splits, and
    of every external test set (``external``: name -> (features, labels))."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: tuple[str, ...]
    external: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@torch.no_grad()
def encode(encoder: nn.Module, images: torch.Tensor, *, batch_size: int = FEATURE_BATCH
           ) -> np.ndarray:
    """``encoder`` outputs float64 (N, D) for uint8 images (N, C, H, W) on the encoder's
    device, in order. The caller puts the encoder in eval mode."""
    chunks = [encoder(to_float_rgb(images[start:start + batch_size])).double().cpu()
              for start in range(0, images.shape[0], batch_size)]
    return torch.cat(chunks).numpy()


def labelled_features(encoder: nn.Module, train: ImagesLabels, test: ImagesLabels, *,
                      class_names: Sequence[str], device: Any = "cpu",
                      test_sets: Mapping[str, ImagesLabels] | None = None) -> LabelledFeatures:
    """Frozen features of the labelled ``train`` and ``test`` splits (checked like every
    protocol's inputs: :func:`raysweep.evaluate.inputs.prepare_pair`) and of the external
    ``test_sets``. A copy of ``encoder`` runs in eval mode (BatchNorm uses its running
    statistics); the caller's is unchanged."""
    dev = resolve_device(device)
    pair = prepare_pair(train, test, class_names, dev)
    external = prepare_test_sets(test_sets, pair.class_names, pair.image_size, dev)
    encoder = copy.deepcopy(encoder).to(dev).eval()
    encoder_output_dim(encoder, pair.train_images[:2])
    return LabelledFeatures(
        train_x=encode(encoder, pair.train_images), train_y=pair.train_labels.cpu().numpy(),
        test_x=encode(encoder, pair.test_images), test_y=pair.test_labels.cpu().numpy(),
        class_names=pair.class_names,
        external={name: (encode(encoder, images), labels.cpu().numpy())
                  for name, (images, labels) in external.items()})
