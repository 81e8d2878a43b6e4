"""Self-supervised learning: objectives (pure functions, :mod:`raysweep.ssl.losses`), the
registry of pre-training methods (:mod:`raysweep.ssl.methods`) and the pre-training loop
(:mod:`raysweep.ssl.pretrain`).

The losses are imported on first use, so that the spec validation can read the method registry
without importing torch.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BarlowTwinsTerms",
    "barlow_twins_loss",
    "barlow_twins_terms",
    "contrastive_top1_accuracy",
    "l21_norm",
    "nt_xent_loss",
    "supcon_loss",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from raysweep.ssl import losses

        return getattr(losses, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
