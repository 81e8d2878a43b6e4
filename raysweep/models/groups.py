"""Parameter groups by name, for freezing schedules and optimiser groups.

Names (docs/protocol.md sections 3.4 and 3.7):

``head``        the classification head (the paper's head L).
``projector``   the SSL projector.
``last_block``  ``encoder.layer4[-1]``: the last residual block, the paper's SSL_p
                (in ResNet-50, the final 1x1-3x3-1x1 bottleneck).
``encoder``     every encoder parameter (the paper's SSL: the whole encoder unfrozen).
``all``         every parameter of the modules given.
"""

from __future__ import annotations

from torch import nn

__all__ = ["PARAMETER_GROUPS", "parameter_group", "set_trainable"]

PARAMETER_GROUPS = ("head", "projector", "last_block", "encoder", "all")


def _need(module: nn.Module | None, what: str, group: str) -> nn.Module:
    if module is None:
        raise ValueError(f"parameter group {group!r} needs the {what} module")
    return module


def parameter_group(
    name: str,
    *,
    encoder: nn.Module | None = None,
    projector: nn.Module | None = None,
    head: nn.Module | None = None,
) -> list[nn.Parameter]:
    """The parameters of group ``name`` (one of :data:`PARAMETER_GROUPS`), in module order."""
    if name == "head":
        return list(_need(head, "head", name).parameters())
    if name == "projector":
        return list(_need(projector, "projector", name).parameters())
    if name == "last_block":
        layer4 = getattr(_need(encoder, "encoder", name), "layer4", None)
        if not isinstance(layer4, nn.Sequential) or len(layer4) == 0:
            raise ValueError("parameter group 'last_block' needs an encoder with a layer4 stage")
        return list(layer4[-1].parameters())
    if name == "encoder":
        return list(_need(encoder, "encoder", name).parameters())
    if name == "all":
        modules = [m for m in (encoder, projector, head) if m is not None]
        if not modules:
            raise ValueError("parameter group 'all' needs at least one module")
        return [p for m in modules for p in m.parameters()]
    raise ValueError(f"unknown parameter group {name!r}; choose one of {PARAMETER_GROUPS}")


def set_trainable(modules: list[nn.Module], trainable: list[nn.Parameter]) -> None:
    """Freeze every parameter of ``modules`` except those in ``trainable`` (by identity).

    E.g. SSL_p further pre-training: ``set_trainable([encoder, projector],
    parameter_group("last_block", encoder=encoder) + parameter_group("projector", ...))``.
    BatchNorm running statistics still update in ``train()`` mode; that is the caller's choice.
    """
    keep = {id(p) for p in trainable}
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(id(p) in keep)
