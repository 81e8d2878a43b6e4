"""Encoder contract, parametrised over every registered encoder, plus heads."""

from __future__ import annotations

import inspect

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck

from raysweep.errors import WeightsError
from raysweep.models import (
    ENCODERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LinearHead,
    Projector,
    build_encoder,
)
from raysweep.models.encoders import wide_bottleneck_trunk

EXPECTED_DIM = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet200x2": 4096,
                "small_resnet": 128}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


#: Encoders too large to initialise in a fast test: checked on the meta device (shapes, keys
#: and dtypes, no values; the 250M parameters of resnet200x2 take ~20 s to initialise on CPU).
ON_META = {"resnet200x2"}


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_encoder_contract(name: str) -> None:
    with torch.device("meta" if name in ON_META else "cpu"):
        encoder = build_encoder(name, generator=None if name in ON_META else _gen(0)).eval()
        x = torch.rand(2, 3, 32, 32, generator=None if name in ON_META else _gen(1))
        assert encoder.output_dim == EXPECTED_DIM[name]
        with torch.no_grad():
            out = encoder(x)
        reference = (torchvision.models.ResNet(Bottleneck, [3, 24, 36, 3]).state_dict()
                     if name == "resnet200x2" else None)
    assert out.shape == (2, encoder.output_dim) and out.dtype == torch.float32
    keys = set(encoder.state_dict())
    assert not {"mean", "std"} & keys  # normalisation buffers are non-persistent
    assert {"mean", "std"} <= {n for n, _ in encoder.named_buffers()}
    assert all(hasattr(encoder, a) for a in ("conv1", "bn1", "layer1", "layer2", "layer3"))
    assert isinstance(encoder.layer4[-1], nn.Module)
    if reference is not None:  # torchvision's key layout of a [3, 24, 36, 3] bottleneck ResNet
        assert keys == {k for k in reference if not k.startswith("fc.")}
    elif name != "small_resnet":
        reference = getattr(torchvision.models, name)(weights=None).state_dict()
        assert keys == {k for k in reference if not k.startswith("fc.")}
    assert encoder.weights_report.source == "random"


def test_encoder_is_torchvision_resnet_after_imagenet_normalisation() -> None:
    encoder = build_encoder("resnet18", generator=_gen(2)).eval()
    reference = torchvision.models.resnet18(weights=None)
    reference.load_state_dict(encoder.state_dict(), strict=False)  # fc stays random, unused
    reference.fc = nn.Identity()
    reference.eval()
    x = torch.rand(3, 3, 40, 40, generator=_gen(3))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), reference((x - mean) / std))


def test_small_resnet_is_cifar_style_and_configurable() -> None:
    encoder = build_encoder("small_resnet", widths=(8, 16, 24, 32), blocks=(2, 1, 1, 1))
    assert encoder.conv1.kernel_size == (3, 3) and encoder.conv1.stride == (1, 1)
    assert isinstance(encoder.maxpool, nn.Identity)
    assert encoder.output_dim == 32 and len(encoder.layer1) == 2
    assert isinstance(encoder.layer4[-1], torchvision.models.resnet.BasicBlock)
    x = torch.rand(4, 3, 28, 28)
    assert encoder(x).shape == (4, 32)
    with pytest.raises(ValueError, match="4 positive widths"):
        build_encoder("small_resnet", widths=(8, 16))
    with pytest.raises(WeightsError, match="takes no options"):
        build_encoder("resnet18", widths=(8, 16, 24, 32))


def test_initialisation_reproducible_from_generator_without_touching_global_rng() -> None:
    before = torch.get_rng_state()
    a = build_encoder("small_resnet", generator=_gen(5)).state_dict()
    b = build_encoder("small_resnet", generator=_gen(5)).state_dict()
    c = build_encoder("small_resnet", generator=_gen(6)).state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])
    h1 = LinearHead(8, 3, generator=_gen(7)).linear.weight
    h2 = LinearHead(8, 3, generator=_gen(7)).linear.weight
    assert torch.equal(h1, h2)
    p1, p2 = Projector(8, (16, 4), generator=_gen(8)), Projector(8, (16, 4), generator=_gen(8))
    assert all(torch.equal(x, y) for x, y in zip(p1.parameters(), p2.parameters(), strict=True))
    assert torch.equal(torch.get_rng_state(), before)


def test_unknown_encoder_is_a_clear_error() -> None:
    with pytest.raises(WeightsError, match="unknown encoder 'resnet999'"):
        build_encoder("resnet999")


def test_projector_structure() -> None:
    default = inspect.signature(Projector).parameters["widths"].default
    assert tuple(default) == (8192, 8192, 8192)
    proj = Projector(12, (32, 32, 16))
    kinds = [type(m).__name__ for m in proj]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert all(m.bias is None for m in proj if isinstance(m, nn.Linear))
    assert proj.last_layer is proj[-1] and proj.last_layer.weight.shape == (16, 32)
    assert proj(torch.randn(5, 12)).shape == (5, 16) and proj.output_dim == 16
    simclr = Projector(12, (20, 8), batch_norm=False)
    assert [type(m).__name__ for m in simclr] == ["Linear", "ReLU", "Linear"]
    assert simclr.last_layer.bias is not None
    with pytest.raises(ValueError, match="positive"):
        Projector(12, ())


def test_linear_head() -> None:
    head = LinearHead(10, 4)
    assert head(torch.randn(3, 10)).shape == (3, 4)
    with pytest.raises(ValueError, match="num_classes"):
        LinearHead(10, 1)


def bottleneck_resnet_parameters(blocks: list[int], widen: int) -> int:
    """Parameters of a bottleneck ResNet trunk without ``fc``, counted layer by layer from the
    architecture's definition (He et al. 2016, Table 1; SwAV / VICReg's ``widen``): a 7x7 stem
    of 64 * widen channels with its BatchNorm, then per block the 1x1, 3x3, 1x1 convolutions
    (planes, planes, 4 * planes) and their BatchNorms (2 parameters a channel), and a 1x1
    projection with its BatchNorm on each stage's first block."""
    width = 64 * widen
    total = 3 * width * 7 * 7 + 2 * width
    channels = width
    for stage, count in enumerate(blocks):
        planes = width * 2**stage
        for block in range(count):
            total += channels * planes + planes * planes * 9 + planes * 4 * planes
            total += 2 * (planes + planes + 4 * planes)
            if block == 0:
                total += channels * 4 * planes + 2 * 4 * planes
            channels = 4 * planes
    return total


def test_resnet200x2_has_vicregs_published_parameter_count() -> None:
    """VICReg's repository lists its backbones as ResNet-50 23M, ResNet-50 (x2) 93M and
    ResNet-200 (x2) 250M parameters (the count in whole millions, rounded down); the paper
    (section 5): "about 250 million parameters, compared to 23 million parameters for a
    ResNet-50", with "an encoder dimension of 4096"."""
    assert bottleneck_resnet_parameters([3, 24, 36, 3], 2) == 250_128_512
    with torch.device("meta"):  # counted without allocating the 1 GB of weights
        encoder = build_encoder("resnet200x2")
        resnet50x2 = wide_bottleneck_trunk([3, 4, 6, 3], widen=2)
    count = sum(p.numel() for p in encoder.parameters())
    assert count == bottleneck_resnet_parameters([3, 24, 36, 3], 2)
    assert count // 10**6 == 250 and encoder.output_dim == 4096
    # the same rule on VICReg's two other published backbones
    assert sum(p.numel() for p in resnet50x2.parameters()) // 10**6 == 93
    resnet50 = torchvision.models.resnet50(weights=None)
    assert (sum(p.numel() for p in resnet50.parameters()) - 2048 * 1000 - 1000) // 10**6 == 23
    assert bottleneck_resnet_parameters([3, 4, 6, 3], 1) == sum(
        p.numel() for n, p in resnet50.named_parameters() if not n.startswith("fc."))
    # torchvision's width_per_group = 128 (wide_resnet50_2's recipe) is another network
    with torch.device("meta"):
        other = torchvision.models.ResNet(Bottleneck, [3, 24, 36, 3], width_per_group=128)
    assert sum(p.numel() for n, p in other.named_parameters() if not n.startswith("fc.")) \
        != count and other.fc.in_features == 2048


def test_the_wide_trunk_at_width_1_is_torchvisions_resnet50_and_widens_every_stage() -> None:
    with torch.device("meta"):
        trunk = wide_bottleneck_trunk([3, 4, 6, 3], widen=1).state_dict()
        wide = build_encoder("resnet200x2").state_dict()
    reference = torchvision.models.resnet50(weights=None).state_dict()
    assert {k: v.shape for k, v in trunk.items()} == {
        k: v.shape for k, v in reference.items() if not k.startswith("fc.")}
    # VICReg's resnet200x2 layout: a 128-channel stem, stage widths 128 .. 1024, 4096 out
    assert wide["conv1.weight"].shape == (128, 3, 7, 7)
    assert wide["layer1.0.conv1.weight"].shape == (128, 128, 1, 1)
    assert wide["layer2.0.conv2.weight"].shape == (256, 256, 3, 3)
    assert wide["layer3.35.conv3.weight"].shape == (2048, 512, 1, 1)
    assert wide["layer4.0.downsample.0.weight"].shape == (4096, 2048, 1, 1)
    assert wide["layer4.2.bn3.running_mean"].shape == (4096,)
    with pytest.raises(ValueError, match="4 positive block counts"):
        wide_bottleneck_trunk([3, 4, 6], widen=2)
