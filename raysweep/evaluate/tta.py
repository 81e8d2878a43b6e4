"""Test-time augmentation (docs/protocol.md): ``views`` augmented copies of every test image,
softmax probabilities averaged over the views, prediction = argmax.

The views are drawn with the ``supervised`` training pipeline from the run's ``tta`` generator;
``views = 0`` means no TTA (one plain forward pass).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from raysweep.data import to_float_rgb

__all__ = ["tta_probabilities"]

Augment = Callable[..., torch.Tensor]


@torch.no_grad()
def tta_probabilities(logits_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, *,
                      augment: Augment, views: int, generator: torch.Generator,
                      batch_size: int) -> torch.Tensor:
    """Mean softmax probabilities over ``views`` augmented views of each image.

    Args:
        logits_fn: float (B, 3, H, W) in [0, 1] -> logits (..., B, C) (a leading K axis for K
            batched heads is kept).
        images: uint8 (N, C, H, W) on the model's device, in a fixed order.
        augment: ``augment(x, generator=g)``, called exactly ``views`` times per batch.

    Returns float32 (..., N, C) probabilities (each row sums to 1).
    """
    chunks = []
    for start in range(0, images.shape[0], batch_size):
        x = to_float_rgb(images[start:start + batch_size])
        if views == 0:
            chunks.append(torch.softmax(logits_fn(x), dim=-1))
            continue
        total = torch.softmax(logits_fn(augment(x, generator=generator)), dim=-1)
        for _ in range(views - 1):
            total = total + torch.softmax(logits_fn(augment(x, generator=generator)), dim=-1)
        chunks.append(total / views)
    return torch.cat(chunks, dim=-2)
