"""Augmentation pipelines: kornia, batched on the device, per-sample randomness, explicit seeds.

Contract: a pipeline maps float (B, 3, H, W) in [0, 1] to float (B, 3, S, S) in
[0, 1] (S = ``image_size``; every pipeline starts with a random resized crop), and draws *all*
its randomness from the CPU ``torch.Generator`` passed as ``generator=`` (even for CUDA input).
kornia samples parameters from torch's global RNG, so each call draws one seed from the
generator, forks the global RNG (CPU, and the input's CUDA device), seeds it, runs the ops, and
restores it: the caller's global RNG state is unchanged and the same generator state gives the
same views. (Forking the global RNG is not thread-safe: do not augment from several threads of
one process at once.)

Pipelines (``PIPELINES``; two-view ones in ``VIEWS``)
------------------------------------------------------
``barlow_twins`` (two views, Zbontar et al. 2021; paper Table 12): random resized crop
(scale (0.08, 1)), horizontal flip 0.5, colour jitter 0.4/0.4/0.2/0.1 with p 0.8, grayscale
p 0.2, Gaussian blur sigma (0.1, 2.0) with p 1.0 (view 1) / 0.1 (view 2), solarisation p 0 /
0.2 with kornia's ``thresholds=0.1, additions=0.1`` (threshold from 0.5 +- 0.1, addition from
+-0.1; docs/protocol.md). Blur kernel: the odd size covering +-3 sigma_max, capped at the image.

``simclr`` (thesis tau_nat, section 3.2.1): horizontal flip 0.5, random resized crop
(0.08, 1), colour jitter 0.5/0.5/0.5/0.1 with p 0.8 (the STL-10 setup the thesis adopts),
grayscale p 0.2, Gaussian blur 9 x 9, sigma (0.1, 2.0), always. Both views from this pipeline.

``simclr_medical`` (thesis tau_nov, section 4.2.1): tau_nat with jitter 0.2/0.2/0.2/0.04, then
histogram equalisation of the luma with p 0.5, then sharpness with a factor from U(1, 10)
(kornia's ``RandomSharpness``, the thesis' 1/13 [1 1 1; 1 5 1; 1 1 1] smoothing kernel).

``simclr_short`` (thesis tau_short, section 4.1): tau_nat without the horizontal flip and the
random grayscale: crop, colour jitter, blur.

``simclr_grey`` (thesis tau_grey, section 6.1.1): tau_nov without the colour distortion, for
greyscale scans: flip, crop, grayscale p 0.2, blur, luma equalisation p 0.5, sharpness.

``supervised`` (fine-tuning and TTA, docs/protocol.md): random resized crop scale (0.7, 1), ratio
(0.75, 1.33); rotation by an angle from U(0, 45) degrees (every image); horizontal and vertical
flips, p 0.5 each (skin images have no canonical orientation; fastai's ``flip_vert``).

``supervised_upright``: ``supervised`` without the flips, for images with a canonical
orientation (chest X-rays, handwritten digits), where a mirrored image is another image.

``center_dropout=True`` inserts the watermark cutout (:class:`RandomCenterDropout`, p 0.33)
right after the crop, as the paper does when DermNet is in the data.

Grayscale uses kornia's luminance weights (0.299, 0.587, 0.114) as torchvision does. Crops are
resampled bilinearly.

Strength (one scalar ``s`` in [0, 2]; 1 = the values above, 0 = crop and flip only)
-------------------------------------------------------------------------------------
* colour-jitter magnitudes (brightness, contrast, saturation, hue) are multiplied by ``s``
  (hue capped at 0.5); the jitter's probability stays 0.8;
* Gaussian blur sigma range ``(lo, hi)`` becomes ``(lo * s, hi * s)``;
* the probabilities of grayscale, solarisation, blur and luma equalisation become
  ``min(1, p * s)``; the sharpness factor range (1, 10) becomes (1, 1 + 9 s); the rotation
  range (0, 45) becomes (0, 45 s);
* the crop scale's lower bound ``a`` becomes ``a ** s`` (1 at s = 0: a full-area crop that only
  varies the aspect ratio; a^2 at s = 2, e.g. 0.0064 for Barlow Twins).
Ops whose effect is nil at a given strength (zero magnitude or probability) are left out.
The watermark cutout is a data fix, not augmentation strength: it does not scale.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import kornia.augmentation as K
import torch
from torch import nn

from raysweep.augment.ops import RandomCenterDropout, RandomLumaEqualize
from raysweep.config import AUGMENTATION_PIPELINES, TWO_VIEW_PIPELINES
from raysweep.errors import SpecError

__all__ = [
    "MAX_STRENGTH",
    "PIPELINES",
    "VIEWS",
    "Pipeline",
    "TwoViews",
    "build_pipeline",
    "build_views",
    "scaled_crop_lower_bound",
    "scaled_probability",
]

MAX_STRENGTH = 2.0
PIPELINES = AUGMENTATION_PIPELINES
VIEWS = TWO_VIEW_PIPELINES
SINGLE_VIEW = tuple(name for name in PIPELINES if name not in ("barlow_twins",))


def scaled_probability(p: float, strength: float) -> float:
    """``min(1, p * strength)``."""
    return min(1.0, p * strength)


def scaled_crop_lower_bound(lower: float, strength: float) -> float:
    """``lower ** strength``: 1 at strength 0, ``lower`` at 1, ``lower ** 2`` at 2."""
    return lower**strength


@contextlib.contextmanager
def _global_rng_seeded_from(generator: torch.Generator, device: torch.device) -> Iterator[None]:
    """Fork torch's global RNG (CPU and ``device`` if CUDA), seeded from ``generator``."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if (
        device.type == "cuda"
    ) else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(cuda[0]):
                torch.cuda.manual_seed(seed)
        yield


def _check_images(x: torch.Tensor, generator: torch.Generator) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"augmentations take float images of shape (B, 3, H, W), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"augmentations take float images in [0, 1], got dtype {x.dtype}")
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError("augmentations need generator=<a CPU torch.Generator>")


class Pipeline(nn.Module):
    """A sequence of kornia augmentations with per-sample randomness: ``pipeline(x, generator=g)``.

    Attributes:
        name: the pipeline's registry name (``"barlow_twins/view2"`` for one Barlow Twins view).
        settings: the resolved parameters (after the strength law), for provenance and tests.
        ops: the kornia augmentations in order; after a call each holds
            ``op._params["batch_prob"]`` (B,), which samples it transformed.
    """

    def __init__(self, name: str, ops: list[nn.Module], settings: dict[str, Any]) -> None:
        super().__init__()
        self.name = name
        self.ops = nn.ModuleList(ops)
        self.settings = settings

    def forward(self, x: torch.Tensor, *, generator: torch.Generator,
                cutout: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> (B, 3, S, S) float in [0, 1], same dtype/device.

        ``cutout`` bool (B,): the images the watermark cutout may touch (those of a source
        with ``watermark_cutout: true``); None: every image. The cutout draws its parameters
        for the whole batch either way, so the other images' draws do not depend on it."""
        _check_images(x, generator)
        dtype = x.dtype
        with _global_rng_seeded_from(generator, x.device):
            for op in self.ops:
                out = op(x)
                if cutout is not None and isinstance(op, RandomCenterDropout):
                    out = torch.where(cutout.view(-1, 1, 1, 1), out, x)
                x = out
        return x.clamp(0.0, 1.0).to(dtype)


class TwoViews(nn.Module):
    """Two configured views of one batch (docs/design.md principle 8): ``views(x, generator=g)``."""

    def __init__(self, name: str, first: Pipeline, second: Pipeline) -> None:
        super().__init__()
        self.name = name
        self.first, self.second = first, second

    def forward(
        self, x: torch.Tensor, *, generator: torch.Generator, cutout: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> two tensors (B, 3, S, S), each with its own per-sample draws
        (``cutout``: as :meth:`Pipeline.forward`)."""
        return (self.first(x, generator=generator, cutout=cutout),
                self.second(x, generator=generator, cutout=cutout))



def _odd_at_most(k: int, image_size: int) -> int:
    cap = image_size if image_size % 2 else image_size - 1
    k = min(k, cap)
    return max(k if k % 2 else k - 1, 1)


class _Builder:
    """Collects ops and their resolved settings under one strength law."""

    def __init__(self, image_size: int, strength: float, center_dropout: bool) -> None:
        self.size, self.s, self.center_dropout = image_size, strength, center_dropout
        self.ops: list[nn.Module] = []
        self.settings: dict[str, Any] = {"image_size": image_size, "strength": strength}

    def crop(self, lower: float, ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        scale = (scaled_crop_lower_bound(lower, self.s), 1.0)
        self.settings["crop_scale"], self.settings["crop_ratio"] = scale, ratio
        self.ops.append(K.RandomResizedCrop((self.size, self.size), scale=scale, ratio=ratio))
        if self.center_dropout:
            self.settings["p_center_dropout"] = 0.33
            self.ops.append(RandomCenterDropout(p=0.33))

    def flip(self, vertical: bool = False) -> None:
        self.settings["p_hflip"] = 0.5
        self.ops.append(K.RandomHorizontalFlip(p=0.5))
        if vertical:
            self.settings["p_vflip"] = 0.5
            self.ops.append(K.RandomVerticalFlip(p=0.5))

    def jitter(self, b: float, c: float, sat: float, hue: float, p: float = 0.8) -> None:
        mags = (b * self.s, c * self.s, sat * self.s, min(0.5, hue * self.s))
        self.settings["jitter"], self.settings["p_jitter"] = mags, p
        if max(mags) > 0:
            self.ops.append(K.ColorJitter(*mags, p=p))

    def grayscale(self, p: float) -> None:
        p = self.settings["p_grayscale"] = scaled_probability(p, self.s)
        if p > 0:
            self.ops.append(K.RandomGrayscale(p=p))

    def blur(self, p: float, sigma: tuple[float, float], kernel: int | None = None) -> None:
        p = self.settings["p_blur"] = scaled_probability(p, self.s)
        sigma = self.settings["blur_sigma"] = (sigma[0] * self.s, sigma[1] * self.s)
        if p > 0:
            k = _odd_at_most(kernel or 2 * math.ceil(3 * sigma[1]) + 1, self.size)
            self.settings["blur_kernel"] = k
            self.ops.append(K.RandomGaussianBlur((k, k), sigma, p=p))

    def solarize(self, p: float) -> None:
        p = self.settings["p_solarize"] = scaled_probability(p, self.s)
        if p > 0:
            self.ops.append(K.RandomSolarize(thresholds=0.1, additions=0.1, p=p))

    def luma_equalize(self, p: float) -> None:
        p = self.settings["p_equalize"] = scaled_probability(p, self.s)
        if p > 0:
            self.ops.append(RandomLumaEqualize(p=p))

    def sharpness(self, high: float) -> None:
        factors = self.settings["sharpness"] = (1.0, 1.0 + (high - 1.0) * self.s)
        if factors[1] > factors[0]:
            self.ops.append(K.RandomSharpness(sharpness=factors, p=1.0))

    def rotation(self, degrees: float) -> None:
        rng = self.settings["rotation_degrees"] = (0.0, degrees * self.s)
        if rng[1] > 0:
            self.ops.append(K.RandomRotation(degrees=rng, p=1.0))

    def build(self, name: str) -> Pipeline:
        return Pipeline(name, self.ops, self.settings)


def _barlow_twins_view(
    view: int, image_size: int, strength: float, center_dropout: bool
) -> Pipeline:
    b = _Builder(image_size, strength, center_dropout)
    b.crop(0.08)
    b.flip()
    b.jitter(0.4, 0.4, 0.2, 0.1)
    b.grayscale(0.2)
    b.blur(1.0 if view == 1 else 0.1, (0.1, 2.0))
    b.solarize(0.0 if view == 1 else 0.2)
    return b.build(f"barlow_twins/view{view}")


#: The SimCLR sequences of the thesis: (flip and grayscale, jitter magnitudes or None for no
#: colour distortion, luma equalisation and sharpness).
_SIMCLR_VARIANTS: dict[str, tuple[bool, tuple[float, float, float, float] | None, bool]] = {
    "simclr": (True, (0.5, 0.5, 0.5, 0.1), False),          # tau_nat, section 3.2.1
    "simclr_medical": (True, (0.2, 0.2, 0.2, 0.04), True),  # tau_nov, section 4.2.1
    "simclr_short": (False, (0.5, 0.5, 0.5, 0.1), False),   # tau_short, section 4.1
    "simclr_grey": (True, None, True),                      # tau_grey, section 6.1.1
}


def _simclr(name: str, image_size: int, strength: float, center_dropout: bool) -> Pipeline:
    flip_and_grey, jitter, contrast = _SIMCLR_VARIANTS[name]
    b = _Builder(image_size, strength, center_dropout)
    if flip_and_grey:
        b.flip()
    b.crop(0.08)
    if jitter is not None:
        b.jitter(*jitter)
    if flip_and_grey:
        b.grayscale(0.2)
    b.blur(1.0, (0.1, 2.0), kernel=9)
    if contrast:
        b.luma_equalize(0.5)
        b.sharpness(10.0)
    return b.build(name)


def _supervised(image_size: int, strength: float, center_dropout: bool,
                flips: bool = True) -> Pipeline:
    b = _Builder(image_size, strength, center_dropout)
    b.crop(0.7, ratio=(0.75, 1.33))
    b.rotation(45.0)
    if flips:
        b.flip(vertical=True)
    return b.build("supervised" if flips else "supervised_upright")


def _check_args(name: str, names: tuple[str, ...], image_size: int, strength: float) -> None:
    if name not in names:
        raise SpecError(f"unknown augmentation pipeline {name!r}; choose one of {names}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    if not 0.0 <= strength <= MAX_STRENGTH:
        raise ValueError(f"augmentation strength must be in [0, {MAX_STRENGTH}], got {strength!r}")


def build_pipeline(
    name: str, *, image_size: int, strength: float = 1.0, center_dropout: bool = False
) -> Pipeline:
    """A single-view pipeline: ``supervised``, ``supervised_upright``, a SimCLR sequence
    (``simclr``, ``simclr_medical``, ``simclr_short``, ``simclr_grey``), or one Barlow Twins
    view as ``barlow_twins/view1`` / ``barlow_twins/view2``. See the module doc."""
    if name in ("barlow_twins/view1", "barlow_twins/view2"):
        _check_args("barlow_twins", PIPELINES, image_size, strength)
        return _barlow_twins_view(int(name[-1]), image_size, strength, center_dropout)
    _check_args(name, SINGLE_VIEW, image_size, strength)
    if name in ("supervised", "supervised_upright"):
        return _supervised(image_size, strength, center_dropout, flips=name == "supervised")
    return _simclr(name, image_size, strength, center_dropout)


def build_views(
    name: str, *, image_size: int, strength: float = 1.0, center_dropout: bool = False
) -> TwoViews:
    """Two-view SSL augmentation: ``barlow_twins`` (asymmetric), or two views of one SimCLR
    sequence (``simclr``, ``simclr_medical``, ``simclr_short``, ``simclr_grey``)."""
    _check_args(name, VIEWS, image_size, strength)
    if name == "barlow_twins":
        first = _barlow_twins_view(1, image_size, strength, center_dropout)
        second = _barlow_twins_view(2, image_size, strength, center_dropout)
    else:
        first = build_pipeline(name, image_size=image_size, strength=strength,
                               center_dropout=center_dropout)
        second = first
    return TwoViews(name, first, second)
