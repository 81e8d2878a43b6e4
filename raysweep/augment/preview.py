"""A grid of original images and their augmented views (the paper's Figure 2).

Backs ``raysweep augment preview --pipeline NAME --source SOURCE --out views.png``: the CLI
loads the source's uint8 images and calls :func:`render_preview`.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from raysweep.augment.pipelines import VIEWS, build_pipeline, build_views
from raysweep.config import AUGMENTATION_PIPELINES, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from raysweep.errors import DataError, SpecError
from raysweep.seeding import torch_generator
from raysweep.storage.atomic import atomic_write_bytes

__all__ = ["render_preview"]


def _as_float_rgb(images: torch.Tensor | np.ndarray, n: int, image_size: int) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise DataError(
            f"preview needs uint8 images of shape (N, C, H, W) with C in (1, 3), got "
            f"{x.dtype} {tuple(x.shape)}"
        )
    x = x[:n].cpu().float().div(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True,
                         align_corners=False).clamp(0.0, 1.0)


def check_preview_arguments(pipeline_name: str, *, n: int, image_size: int,
                            strength: float) -> None:
    """One-line :class:`SpecError` for a preview argument out of range (before any decoding)."""
    if pipeline_name not in AUGMENTATION_PIPELINES:
        raise SpecError(f"preview: unknown augmentation pipeline {pipeline_name!r}; choose one of "
                        f"{', '.join(AUGMENTATION_PIPELINES)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SpecError(f"preview: n must be an integer >= 1, got {n!r}")
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise SpecError(f"preview: image_size must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], "
                        f"got {image_size!r}")
    if not math.isfinite(strength) or not 0.0 <= strength <= 2.0:
        raise SpecError(f"preview: strength must be in [0, 2], got {strength!r}")


def render_preview(
    images_uint8: torch.Tensor | np.ndarray,
    pipeline_name: str,
    out_path: str | os.PathLike[str],
    *,
    seed: int,
    image_size: int,
    n: int = 8,
    strength: float = 1.0,
    center_dropout: bool = False,
) -> Path:
    """Write a PNG grid: one row per image (the first ``n``), columns original, view 1, view 2.

    Args:
        images_uint8: (N, C, H, W) uint8, C in {1, 3} (grey is shown as RGB).
        pipeline_name: a two-view pipeline (``barlow_twins``, ``simclr``, ``simclr_medical``:
            its two views) or a single-view one (``supervised``: two independent draws).
        out_path: the PNG to write (atomically; nothing is left behind on error).
        seed: augmentation draws come from ``raysweep.seeding.torch_generator(seed, "preview")``.
        image_size: side of the (square) views; originals are resized to it for display.

    Returns the written path.
    """
    check_preview_arguments(pipeline_name, n=n, image_size=image_size, strength=strength)
    x = _as_float_rgb(images_uint8, n, image_size)
    generator = torch_generator(seed, "preview")
    if pipeline_name in VIEWS:
        views = build_views(pipeline_name, image_size=image_size, strength=strength,
                            center_dropout=center_dropout)
        first, second = views(x, generator=generator)
    else:
        pipeline = build_pipeline(pipeline_name, image_size=image_size, strength=strength,
                                  center_dropout=center_dropout)
        first, second = pipeline(x, generator=generator), pipeline(x, generator=generator)

    columns = (("original", x), ("view 1", first), ("view 2", second))
    rows = x.shape[0]
    figure = Figure(figsize=(3 * 1.6, rows * 1.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 3, squeeze=False)
    for col, (title, batch) in enumerate(columns):
        for row in range(rows):
            ax = axes[row][col]
            ax.imshow(batch[row].permute(1, 2, 0).numpy(), vmin=0.0, vmax=1.0,
                      interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=9)
    figure.suptitle(f"{pipeline_name} (strength {strength:g}, seed {seed})", fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return atomic_write_bytes(out_path, buffer.getvalue())
