"""Reproducible parameter initialisation from an explicit ``torch.Generator``.

torch's and torchvision's initialisers draw from the global CPU RNG. To honour "seeds are
arguments, never globals" without re-implementing every initialiser, modules are *built* inside
:func:`seeded_init`: the global CPU RNG is forked, seeded with a number drawn from the caller's
generator, and restored afterwards, so the caller's global state is unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["seeded_init"]


@contextlib.contextmanager
def seeded_init(generator: torch.Generator | None) -> Iterator[None]:
    """Within the block, CPU initialisers draw from a stream determined by ``generator``.

    ``None`` leaves the global RNG in charge (torch's usual behaviour). The global CPU RNG state
    is restored on exit either way that a generator was given.
    """
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield
