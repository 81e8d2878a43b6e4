"""Two augmentations kornia does not have, written as kornia augmentations.

Both subclass ``IntensityAugmentationBase2D``, so they share kornia's per-sample probability gate
(``p``, recorded per sample in ``op._params["batch_prob"]``) and draw their parameters from
torch's global RNG, which :class:`raysweep.augment.pipelines.Pipeline` forks and seeds from the
caller's generator.
"""

from __future__ import annotations

from typing import Any

import torch
from kornia.augmentation import IntensityAugmentationBase2D
from kornia.color import rgb_to_ycbcr, ycbcr_to_rgb
from kornia.enhance import equalize

__all__ = ["RandomCenterDropout", "RandomLumaEqualize"]


class RandomCenterDropout(IntensityAugmentationBase2D):
    """The paper's watermark cutout: zero a centred rectangle (footnote 5, ``RandomCenterDropout``).

    At 256 x 256 px the rectangle is ``width`` in [50, 100] px by ``height`` in [185, 190] px,
    drawn uniformly per sample, centred in the image, applied with probability ``p`` = 0.33. At
    other sizes both ranges scale with the image (``width * W / 256``, ``height * H / 256``), so
    the same fraction of the image is covered.

    Input/output: float (B, C, H, W); ``_params`` holds ``batch_prob``, ``width``, ``height`` (px).
    """

    def __init__(
        self,
        p: float = 0.33,
        width: tuple[float, float] = (50.0, 100.0),
        height: tuple[float, float] = (185.0, 190.0),
        reference_size: int = 256,
    ) -> None:
        super().__init__(p=p, same_on_batch=False, keepdim=False)
        self.width_range, self.height_range = width, height
        self.reference_size = reference_size

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        b, _, h, w = batch_shape
        u = torch.rand(2, b, device=self.device, dtype=torch.float32)
        lo_w, hi_w = self.width_range
        lo_h, hi_h = self.height_range
        width = (lo_w + (hi_w - lo_w) * u[0]) * (w / self.reference_size)
        height = (lo_h + (hi_h - lo_h) * u[1]) * (h / self.reference_size)
        return {
            "width": width.round().clamp(0, w).long(),
            "height": height.round().clamp(0, h).long(),
        }

    def apply_transform(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        _, _, h, w = input.shape
        rect_w = params["width"].to(input.device).view(-1, 1, 1, 1)
        rect_h = params["height"].to(input.device).view(-1, 1, 1, 1)
        ys = torch.arange(h, device=input.device).view(1, 1, h, 1)
        xs = torch.arange(w, device=input.device).view(1, 1, 1, w)
        top, left = (h - rect_h) // 2, (w - rect_w) // 2
        inside = (ys >= top) & (ys < top + rect_h) & (xs >= left) & (xs < left + rect_w)
        return input.masked_fill(inside, 0.0)


class RandomLumaEqualize(IntensityAugmentationBase2D):
    """Histogram equalisation of the luma (Y of YCbCr) only, with probability ``p``.

    The thesis' medical sequence (section 4.2.1): RGB -> YCbCr, equalise Y (256 bins, kornia's
    PIL-style ``equalize``), back to RGB, so the chroma is kept. Input/output float
    (B, 3, H, W) in [0, 1].
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p=p, same_on_batch=False, keepdim=False)

    def apply_transform(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        ycbcr = rgb_to_ycbcr(input.clamp(0.0, 1.0))
        luma = equalize(ycbcr[:, :1].contiguous())
        return ycbcr_to_rgb(torch.cat([luma, ycbcr[:, 1:]], dim=1)).clamp(0.0, 1.0)
