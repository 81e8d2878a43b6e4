"""``build_encoder``: an encoder from the registry, initialised from a weights spec."""

from __future__ import annotations

from typing import Any

import torch

from raysweep.errors import WeightsError
from raysweep.models.encoders import ENCODERS, ResNetEncoder
from raysweep.models.init import seeded_init
from raysweep.models.weights import LoadReport, load_encoder_weights, resolve_weights

__all__ = ["build_encoder"]


def build_encoder(
    name: str,
    weights: str = "random",
    *,
    generator: torch.Generator | None = None,
    **options: Any,
) -> ResNetEncoder:
    """An encoder mapping (B, 3, H, W) floats in [0, 1] to (B, ``encoder.output_dim``).

    Args:
        name: ``resnet18``, ``resnet34``, ``resnet50`` (torchvision, ``fc`` removed),
            ``resnet200x2`` (VICReg's 2x-wide ResNet-200 of torchvision blocks) or
            ``small_resnet`` (CIFAR-style, for CPU demos and tests).
        weights: a weights spec (see :mod:`raysweep.models.weights`): ``random``,
            ``torchvision:IMAGENET1K_V1``/``V2``, ``barlowtwins``, ``vicreg``, ``file:PATH``.
        generator: draws the random initialisation reproducibly (``None``: global RNG).
        options: architecture options of ``small_resnet`` (``widths``, ``blocks``).

    The returned encoder carries ``weights_report`` (:class:`LoadReport`) naming its source.
    Raises :class:`~raysweep.errors.WeightsError` for an unknown name, an unknown or missing
    weights file, or weights of another architecture.
    """
    if name not in ENCODERS:
        raise WeightsError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}")
    if options and name != "small_resnet":
        raise WeightsError(f"encoder {name!r} takes no options, got {sorted(options)}")
    state = resolve_weights(weights, name)  # before building: fail fast on a missing file
    with seeded_init(generator):
        encoder = ENCODERS[name](**options)
    report = LoadReport(weights) if state is None else load_encoder_weights(encoder, state, weights)
    encoder.weights_report = report
    return encoder
