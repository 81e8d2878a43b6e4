"""Contract of the pre-training method registry: every registered method is reachable from a
spec, gets the head and the views its entry names, and trains one step of the real loop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raysweep.config import DatasetSpec, EncoderSpec, PretrainSpec, from_dict
from raysweep.config.specs import PRETRAIN_METHODS_NEED_LABELS
from raysweep.errors import SpecError
from raysweep.models import LinearHead, Projector
from raysweep.ssl.methods import METHODS, pretrain_method
from raysweep.ssl.pretrain import LocalHooks, pretrain_worker
from raysweep.ssl.pretrain import checkpoint as ckpt
from raysweep.ssl.pretrain.loop import TrainingData, build_net, build_transform

BASE = {"name": "m", "data": {"sources": [{"kind": "digits"}], "image_size": 16},
        "encoder": {"name": "small_resnet"}, "projector": [16, 16], "batch_size": 8,
        "further": False, "epochs": 1, "lr_max": 1e-2, "deterministic": True, "seed": 2}


def spec_of(method: str) -> PretrainSpec:
    """The spec a user writes: only ``method`` names the registry entry."""
    return from_dict(PretrainSpec, {**BASE, "method": method})


def test_the_spec_names_exactly_the_registered_methods_and_their_label_needs() -> None:
    """The specs (a layer below the methods) keep their own table of method names."""
    assert {name: m.needs_labels for name, m in METHODS.items()} == PRETRAIN_METHODS_NEED_LABELS


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_is_reachable_from_a_spec_with_its_head_and_views(name: str) -> None:
    method = METHODS[name]
    spec = spec_of(name)
    assert pretrain_method(spec.method) is method
    head = build_net(spec, num_classes=3).head
    if method.head == "classifier":
        assert isinstance(head, LinearHead) and head(torch.zeros(2, 128)).shape == (2, 3)
    else:
        assert isinstance(head, Projector)
        has_bn = any(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules())
        assert has_bn == (method.head == "projector_bn")
    images = torch.rand(4, 3, 16, 16)
    out = build_transform(spec)(images, generator=torch.Generator().manual_seed(0))
    views = out if isinstance(out, tuple) else (out,)
    assert len(views) == method.views
    assert all(v.shape == images.shape for v in views)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_one_step(name: str, tmp_path: Path) -> None:
    spec = spec_of(name)
    rng = np.random.default_rng(0)
    data = TrainingData(rng.integers(0, 256, (8, 1, 16, 16), dtype=np.uint8), np.arange(8),
                        np.arange(8) % 2, ("a", "b"))
    start = {k: v.clone() for k, v in build_net(spec, 2).state_dict().items()}
    hooks = LocalHooks(tmp_path)
    pretrain_worker(spec, hooks, data=data)
    (report,) = hooks.reported
    assert np.isfinite(report["loss"])
    state = ckpt.load_state(tmp_path / "checkpoint_000000")
    assert state.next_epoch == 1 and state.phase == "train"
    moved = [k for k in start if start[k].is_floating_point()
             and not torch.equal(state.net[k], start[k])]
    assert any(k.startswith("encoder.") for k in moved) and any(k.startswith("head.")
                                                               for k in moved)


def test_objectives_compute_their_losses() -> None:
    """Each entry's objective against the loss written out independently."""
    from raysweep.ssl.methods import ObjectiveInput

    g = torch.Generator().manual_seed(1)
    z_a, z_b = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    weight = torch.randn(4, 5, generator=g)
    spec = spec_of("barlow_twins")
    loss, logged = METHODS["barlow_twins"].objective(spec, ObjectiveInput((z_a, z_b), None,
                                                                          weight, 1))
    norm = lambda z: (z - z.mean(0)) / (z.var(0, unbiased=False) + 1e-5).sqrt()  # noqa: E731
    c = norm(z_a).T @ norm(z_b) / 6
    off = c - torch.diag(torch.diag(c))
    expected = ((1 - torch.diag(c)) ** 2).sum() + spec.lambda_offdiag * (off ** 2).sum() + \
        spec.alpha * weight.norm(dim=0).sum()
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-4)
    assert logged["loss"] == pytest.approx(float(expected), rel=1e-4)

    logits, labels = torch.randn(6, 3, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])
    loss, logged = METHODS["supervised"].objective(
        spec, ObjectiveInput((logits,), labels, None, 1))
    expected = -torch.log_softmax(logits, 1)[torch.arange(6), labels].mean()
    torch.testing.assert_close(loss, expected)


def test_unknown_method_is_a_one_line_error_naming_the_known_ones() -> None:
    with pytest.raises(SpecError, match="method: unknown method 'simcl' \\(did you mean "
                                           "'simclr'\\?\\); choose one of barlow_twins, simclr"):
        from_dict(PretrainSpec, {**BASE, "method": "simcl"})
    with pytest.raises(SpecError, match="unknown pre-training method 'byol'"):
        pretrain_method("byol")


def test_a_method_needing_labels_refuses_unlabelled_data() -> None:
    needing = [name for name, m in METHODS.items() if m.needs_labels]
    assert needing
    for name in needing:
        with pytest.raises(SpecError, match=f"a {name} run needs a labelled source"):
            PretrainSpec(name="x", method=name, encoder=EncoderSpec(name="small_resnet"),
                         data=DatasetSpec(sources=({"kind": "digits", "labelled": False},)))


def test_the_spec_validation_imports_no_torch() -> None:
    """The spec validation (``raysweep validate --spec-only``) names the methods from its own
    table, not the registry: importing it must stay cheap."""
    code = "import sys, raysweep.config; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_only_the_images_of_a_watermarked_source_are_offered_to_the_cutout(tmp_path: Path
                                                                           ) -> None:
    """The loop hands each micro-batch's ``watermark`` mask (from its images' sources) to the
    views, and a batch without watermarked images is transformed without a mask."""
    spec = spec_of("barlow_twins")
    views = build_transform(spec)
    offered: list[torch.Tensor | None] = []

    def recording(x: torch.Tensor, *, generator: torch.Generator,
                  cutout: torch.Tensor | None = None):
        offered.append(cutout)
        return views(x, generator=generator, cutout=cutout)

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (8, 1, 16, 16), dtype=np.uint8)
    watermark = np.arange(8) >= 5  # the last three images come from a DermNet-like source
    data = TrainingData(images, np.arange(8), watermark=watermark)
    pretrain_worker(spec, LocalHooks(tmp_path), data=data, transform=recording)
    assert offered and all(mask is not None for mask in offered)
    assert sum(int(mask.sum()) for mask in offered) == 3 * spec.epochs
    assert sum(len(mask) for mask in offered) == 8 * spec.epochs
