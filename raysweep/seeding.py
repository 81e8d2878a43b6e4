"""Seeds as arguments: independent, reproducible random streams derived from (seed, purpose).

A seed index is a grid axis (docs/design.md principle 6). The same index must give the same head
initialisation, data order, augmentation draws and TTA views in every condition, so that
conditions can be compared run by run. Each purpose therefore gets its own stream, derived by
hashing, so that e.g. changing the number of augmentation draws never shifts the head init.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # torch and numpy are imported lazily: the report needs neither at start-up
    import numpy as np
    import torch

_MASK_63 = (1 << 63) - 1


def derive_seed(seed: int, *purpose: str | int) -> int:
    """A stable 63-bit seed for ``(seed, *purpose)``; identical on every machine and Python.

    >>> derive_seed(0, "head") == derive_seed(0, "head")
    True
    """
    key = "/".join([str(int(seed)), *map(str, purpose)])
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") & _MASK_63


def torch_generator(seed: int, *purpose: str | int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``(seed, *purpose)``."""

    return torch.Generator().manual_seed(derive_seed(seed, *purpose))


def numpy_rng(seed: int, *purpose: str | int) -> np.random.Generator:
    """A ``numpy.random.Generator`` seeded with :func:`derive_seed` of ``(seed, *purpose)``."""

    return np.random.default_rng(derive_seed(seed, *purpose))
