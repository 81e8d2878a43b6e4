"""Self-supervised learning: objectives (pure functions, :mod:`raysweep.ssl.losses`), the
registry of pre-training methods (:mod:`raysweep.ssl.methods`) and the pre-training loop
(:mod:`raysweep.ssl.pretrain`).
"""

from __future__ import annotations

from raysweep.ssl.losses import (
    BarlowTwinsTerms,
    barlow_twins_loss,
    barlow_twins_terms,
    contrastive_top1_accuracy,
    l21_norm,
    nt_xent_loss,
    supcon_loss,
)

__all__ = [
    "BarlowTwinsTerms",
    "barlow_twins_loss",
    "barlow_twins_terms",
    "contrastive_top1_accuracy",
    "l21_norm",
    "nt_xent_loss",
    "supcon_loss",
]

