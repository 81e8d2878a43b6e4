"""Encoders: torchvision ResNets without ``fc``, the 2x-wide ResNet-200 of VICReg (built from
torchvision's ``Bottleneck``), and a small CIFAR-style ResNet for CPU work.

Every encoder maps float images (B, 3, H, W) in [0, 1] to features (B, output_dim). Its first op
is the ImageNet mean/std normalisation, held in *non-persistent* buffers so that its state dict
keys are exactly torchvision's ResNet keys minus ``fc.*`` (checkpoints move freely between
raysweep, torchvision and the facebookresearch torch.hub models). The torchvision attribute
names (``conv1``, ``bn1``, ``layer1`` .. ``layer4``) are kept, so ``encoder.layer4[-1]`` is the
paper's SSL_p block (section 3.7: the last bottleneck of ResNet-50).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.resnet import BasicBlock, Bottleneck

if TYPE_CHECKING:
    from raysweep.models.weights import LoadReport

__all__ = ["ENCODERS", "IMAGENET_MEAN", "IMAGENET_STD", "ResNetEncoder", "resnet200x2",
           "small_resnet", "wide_bottleneck_trunk"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNetEncoder(nn.Module):
    """A ResNet trunk (everything but ``fc``) behind ImageNet normalisation.

    Attributes:
        output_dim: width of the pooled feature vector (512 for resnet18/34, 2048 for resnet50,
            4096 for resnet200x2).
        arch: the encoder's registry name (``resnet50``, ``small_resnet``, ...).
        weights_report: what :func:`raysweep.models.build_encoder` loaded into it.
    """

    # Buffers and trunk stages registered by name in ``__init__``.
    mean: torch.Tensor
    std: torch.Tensor
    conv1: nn.Module
    bn1: nn.Module
    relu: nn.Module
    maxpool: nn.Module
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential
    weights_report: LoadReport

    def __init__(self, trunk: nn.Module, output_dim: int, arch: str) -> None:
        super().__init__()
        self.output_dim = int(output_dim)
        self.arch = arch
        self.register_buffer(
            "mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            self.add_module(name, getattr(trunk, name))
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> (B, output_dim)."""
        x = (x - self.mean) / self.std
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


class _SmallTrunk(nn.Module):
    """CIFAR-style ResNet trunk: 3x3 stride-1 stem, no max-pool, BasicBlocks, narrow widths."""

    def __init__(self, widths: Sequence[int], blocks: Sequence[int]) -> None:
        super().__init__()
        if len(widths) != 4 or len(blocks) != 4 or min(*widths, *blocks) < 1:
            raise ValueError(f"small_resnet needs 4 positive widths and block counts, got "
                             f"widths={tuple(widths)} blocks={tuple(blocks)}")
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        in_ch = widths[0]
        for i, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if i == 0 else 2
            layers: list[nn.Module] = []
            for j in range(count):
                s = stride if j == 0 else 1
                downsample = None
                if s != 1 or in_ch != width:
                    downsample = nn.Sequential(
                        nn.Conv2d(in_ch, width, kernel_size=1, stride=s, bias=False),
                        nn.BatchNorm2d(width),
                    )
                layers.append(BasicBlock(in_ch, width, stride=s, downsample=downsample))
                in_ch = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def small_resnet(
    widths: Sequence[int] = (16, 32, 64, 128), blocks: Sequence[int] = (1, 1, 1, 1)
) -> ResNetEncoder:
    """A small CIFAR-style ResNet for CPU demos and tests (28-32 px images).

    3x3 stride-1 stem, no max-pool, four stages of torchvision ``BasicBlock`` with the given
    widths and block counts (stages 2-4 halve the resolution); ``output_dim = widths[-1]``.
    """
    return ResNetEncoder(_SmallTrunk(widths, blocks), output_dim=widths[-1], arch="small_resnet")


class _WideBottleneckTrunk(nn.Module):
    """A ResNet trunk of torchvision ``Bottleneck`` blocks with every width ``widen`` times the
    standard one: the ``widen`` of SwAV's and VICReg's ``resnet.py`` (a 7x7 stride-2 stem of
    ``64 * widen`` channels and a 3x3 max-pool; stage ``i`` of ``64 * widen * 2**i`` planes,
    output ``4x`` that; stride 2 on the 3x3 convolution of each later stage's first block).

    Unlike torchvision's ``width_per_group`` (``wide_resnet50_2``), which widens only the 3x3
    convolutions inside each block and keeps the 2048-d output, this widens the stem, the block
    outputs and the representation too (``2048 * widen``). State-dict keys are torchvision's
    (``conv1``, ``bn1``, ``layerN.B.convK``, ``layerN.0.downsample.{0,1}``), which is also the
    layout of VICReg's published backbones. (VICReg pads by 1 before a stem convolution padded
    by 2: the same as torchvision's padding of 3.)
    """

    def __init__(self, blocks: Sequence[int], widen: int) -> None:
        super().__init__()
        width = 64 * widen
        self.output_dim: int = 0  # set below: the last stage's channels
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = width
        for i, count in enumerate(blocks):
            planes = width * 2**i
            layers: list[nn.Module] = []
            for j in range(count):
                stride = 2 if i > 0 and j == 0 else 1
                downsample = None
                if j == 0:  # the channel count (and, after stage 1, the resolution) changes
                    downsample = nn.Sequential(
                        nn.Conv2d(in_ch, planes * Bottleneck.expansion, kernel_size=1,
                                  stride=stride, bias=False),
                        nn.BatchNorm2d(planes * Bottleneck.expansion))
                layers.append(Bottleneck(in_ch, planes, stride=stride, downsample=downsample))
                in_ch = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.output_dim = in_ch
        for m in self.modules():  # torchvision's (and VICReg's) initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def wide_bottleneck_trunk(blocks: Sequence[int], widen: int) -> _WideBottleneckTrunk:
    """A :class:`_WideBottleneckTrunk` (see there); ``widen=1`` with ``[3, 4, 6, 3]`` is
    torchvision's ResNet-50 trunk, tensor for tensor."""
    if len(blocks) != 4 or min(blocks) < 1 or widen < 1:
        raise ValueError(f"a bottleneck trunk needs 4 positive block counts and widen >= 1, "
                         f"got blocks={tuple(blocks)} widen={widen}")
    return _WideBottleneckTrunk(blocks, widen)


def resnet200x2() -> ResNetEncoder:
    """ResNet-200 (2x): ``Bottleneck`` blocks ``[3, 24, 36, 3]`` at twice the standard widths,
    a 4096-d representation and 250,128,512 parameters (VICReg's ``resnet200x2``, Bardes et al.
    2022; published as "250M" in its repository and "about 250 million" in the paper's
    section 5; docs/protocol.md "Encoders and initial weights")."""
    trunk = wide_bottleneck_trunk((3, 24, 36, 3), widen=2)
    return ResNetEncoder(trunk, output_dim=trunk.output_dim, arch="resnet200x2")


def _torchvision(arch: str, output_dim: int) -> Callable[[], ResNetEncoder]:
    def build() -> ResNetEncoder:
        return ResNetEncoder(getattr(resnet, arch)(weights=None), output_dim, arch)

    build.__doc__ = f"torchvision ``{arch}`` without ``fc`` (output_dim {output_dim})."
    return build


#: Encoder registry: name -> builder of a randomly initialised encoder.
ENCODERS: dict[str, Callable[..., ResNetEncoder]] = {
    "resnet18": _torchvision("resnet18", 512),
    "resnet34": _torchvision("resnet34", 512),
    "resnet50": _torchvision("resnet50", 2048),
    "resnet200x2": resnet200x2,
    "small_resnet": small_resnet,
}
