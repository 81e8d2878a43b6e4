"""Cache layout (uint8, 1 or 3 channels) to model input (float RGB in [0, 1])."""

from __future__ import annotations

import torch


def to_float_rgb(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W), C in {1, 3} -> float32 (B, 3, H, W) in [0, 1], on ``x``'s device.

    Grey (C = 1) is replicated to three channels, so every encoder sees RGB (its ImageNet
    normalisation is its own first op).
    """
    if x.dtype != torch.uint8:
        raise TypeError(f"to_float_rgb expects a uint8 tensor, got {x.dtype}")
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"to_float_rgb expects shape (B, 1 or 3, H, W), got {tuple(x.shape)}")
    out = x.to(torch.float32).div_(255.0)
    if out.shape[1] == 1:
        out = out.expand(-1, 3, -1, -1).contiguous()
    return out
