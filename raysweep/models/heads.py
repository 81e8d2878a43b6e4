"""Projector and classification heads.

* :class:`Projector`: the Barlow Twins projector of Zbontar et al. (docs/protocol.md: three linear
  layers of 8192 units, BatchNorm + ReLU between them); with ``widths=(512, 128)`` and
  ``batch_norm=False`` it is the SimCLR head of the thesis (FC, ReLU, linear; dim 128).
* :class:`LinearHead`: the paper's head L, one linear layer on the encoder features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from raysweep.models.init import seeded_init

__all__ = ["LinearHead", "Projector"]


class Projector(nn.Sequential):
    """MLP ``in_dim -> widths[0] -> ... -> widths[-1]``: (Linear-BN-ReLU) blocks, plain last Linear.

    Args:
        in_dim: encoder output dimension.
        widths: output width of every linear layer (default 8192-8192-8192, Barlow Twins).
        batch_norm: BatchNorm1d after each hidden Linear (Barlow Twins); ``False`` gives
            Linear-ReLU blocks with biases (the SimCLR projection head).
        generator: draws the initialisation (torch's default initialisers) reproducibly;
            ``None`` uses the global RNG.

    As in the reference Barlow Twins code, the linear layers have no bias when followed by
    BatchNorm, and the last layer has no bias either. ``last_layer`` is the final ``nn.Linear``
    (whose weight the sparse objective penalises with the L2,1 norm, eq. 2). Input (B, in_dim),
    output (B, output_dim).
    """

    def __init__(
        self,
        in_dim: int,
        widths: Sequence[int] = (8192, 8192, 8192),
        *,
        batch_norm: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1 or in_dim < 1:
            raise ValueError(f"projector widths must be positive, got in_dim={in_dim} {widths}")
        layers: list[nn.Module] = []
        dims = (int(in_dim), *widths)
        with seeded_init(generator):
            for d_in, d_out in zip(dims[:-2], dims[1:-1], strict=True):
                layers.append(nn.Linear(d_in, d_out, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm1d(d_out))
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.Linear(dims[-2], dims[-1], bias=not batch_norm))
        super().__init__(*layers)
        self.in_dim = int(in_dim)
        self.output_dim = widths[-1]

    @property
    def last_layer(self) -> nn.Linear:
        """The final linear layer (its ``weight`` is W of the sparse objective, eq. 2)."""
        last = self[-1]
        assert isinstance(last, nn.Linear)
        return last


class LinearHead(nn.Module):
    """Linear classification head: (B, in_dim) features -> (B, num_classes) logits.

    The paper's run-to-run randomness is the head's initialisation (section 3.6): pass the seed's
    ``generator`` to draw it reproducibly (torch's default ``nn.Linear`` initialisation).
    """

    def __init__(
        self, in_dim: int, num_classes: int, *, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        if in_dim < 1 or num_classes < 2:
            raise ValueError(
                f"a linear head needs in_dim >= 1 and num_classes >= 2, got {in_dim}, {num_classes}"
            )
        self.in_dim, self.num_classes = int(in_dim), int(num_classes)
        with seeded_init(generator):
            self.linear = nn.Linear(self.in_dim, self.num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)
