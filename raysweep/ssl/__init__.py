"""Self-supervised learning: objectives (pure functions) and, elsewhere in this package, the
pre-training loop. See :mod:`raysweep.ssl.losses`."""

from raysweep.ssl.losses import (
    BarlowTwinsTerms,
    barlow_twins_loss,
    barlow_twins_terms,
    l21_norm,
    nt_xent_loss,
)

__all__ = [
    "BarlowTwinsTerms",
    "barlow_twins_loss",
    "barlow_twins_terms",
    "l21_norm",
    "nt_xent_loss",
]
