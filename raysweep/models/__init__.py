"""Encoders and their weight sources, the SSL projector, and classification heads."""

from raysweep.models.encoders import ENCODERS, IMAGENET_MEAN, IMAGENET_STD, ResNetEncoder
from raysweep.models.factory import build_encoder
from raysweep.models.heads import LinearHead, Projector
from raysweep.models.init import seeded_init
from raysweep.models.weights import (
    HUB_MODELS,
    HUB_VARIANTS,
    WEIGHT_SOURCES,
    LoadReport,
    hub_checkpoint_path,
    load_encoder_weights,
    resolve_weights,
)

__all__ = [
    "ENCODERS",
    "HUB_MODELS",
    "HUB_VARIANTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "WEIGHT_SOURCES",
    "LinearHead",
    "LoadReport",
    "Projector",
    "ResNetEncoder",
    "build_encoder",
    "hub_checkpoint_path",
    "load_encoder_weights",
    "resolve_weights",
    "seeded_init",
]
