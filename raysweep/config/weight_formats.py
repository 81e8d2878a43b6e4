"""The key layouts of public SSL checkpoints that raysweep reads (``FORMAT:PATH`` weights).

A leaf module without torch, so that a spec is validated (``raysweep validate --spec-only``)
without loading PyTorch: :mod:`raysweep.config.specs` accepts ``FORMAT:PATH`` for every name
here, and :mod:`raysweep.models.weights` maps each layout onto the encoder's torchvision keys
(``conv1``, ``bn1``, ``layer1`` ... ``layer4``).
"""

from __future__ import annotations

__all__ = ["WEIGHT_FORMATS", "weight_format"]

#: Format name -> the checkpoint it reads, and where the encoder's tensors are in it.
WEIGHT_FORMATS: dict[str, str] = {
    "solo-learn": "solo-learn Lightning checkpoint (state_dict, backbone.*)",
    "lightly": "lightly Lightning checkpoint (state_dict, backbone.*; torchvision names or "
               "the nn.Sequential indices of a ResNet's children)",
    "moco": "MoCo v1 / v2 checkpoint (state_dict, module.encoder_q.*)",
    "swav": "SwAV ResNet-50 in torch hub format (module.* or plain torchvision keys; "
            "projection_head and prototypes left out)",
    "dino": "DINO ResNet-50 in torch hub format (plain torchvision keys)",
    "byol": "BYOL ResNet-50 converted to PyTorch from DeepMind's release (torchvision keys, "
            "optionally under state_dict)",
    "simclr": "SimCLR v1 / v2 ResNet-50 converted from TensorFlow (state_dict, torchvision keys)",
    "infomin": "InfoMin / PyContrast checkpoint (model, module.encoder.*)",
    "vissl": "VISSL checkpoint (classy_state_dict.base_model.model.trunk, "
             "_feature_blocks.*; or trunk.*)",
    "mmpretrain": "MMPretrain / MMSelfSup checkpoint (state_dict, backbone.*)",
    "timm": "timm ResNet state dict (torchvision-compatible keys)",
}


def weight_format(weights: str) -> str | None:
    """The format name of a ``FORMAT:PATH`` weight source, else None."""
    kind, sep, path = weights.partition(":")
    return kind if sep and path and kind in WEIGHT_FORMATS else None
