"""Public SSL checkpoints' key layouts (``FORMAT:PATH``), on small files the tests write in each
layout as its library saves it: nothing is downloaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from raysweep.config import spec_from_data
from raysweep.config.weight_formats import WEIGHT_FORMATS, weight_format
from raysweep.errors import SpecProblems, WeightsError
from raysweep.models import build_encoder
from raysweep.models.weights import LAYOUTS

State = dict[str, torch.Tensor]


def _encoder_state(seed: int = 7) -> State:
    return build_encoder("small_resnet", generator=torch.Generator().manual_seed(seed)).state_dict()


def _prefixed(prefix: str, state: State) -> State:
    return {f"{prefix}{key}": value for key, value in state.items()}


def _head() -> State:
    return {"0.weight": torch.ones(4, 8), "2.weight": torch.ones(2, 4)}


#: Each layout as its library writes it: the encoder ``s`` and, around it, the heads, momentum
#: encoders, queues and training state a downloaded file carries.
CHECKPOINTS: dict[str, Callable[[State], object]] = {
    "solo-learn": lambda s: {"epoch": 399, "hyper_parameters": {"method": "byol"},
                             "state_dict": {**_prefixed("backbone.", s),
                                            **_prefixed("momentum_backbone.", s),
                                            **_prefixed("projector.", _head()),
                                            "classifier.weight": torch.ones(10, 8)}},
    "moco": lambda s: {"epoch": 800, "arch": "resnet50",
                       "state_dict": {**_prefixed("module.encoder_q.", s),
                                      **_prefixed("module.encoder_q.fc.", _head()),
                                      **_prefixed("module.encoder_k.", s),
                                      "module.queue": torch.zeros(128, 16),
                                      "module.queue_ptr": torch.zeros(1, dtype=torch.long)},
                       "optimizer": {"state": {}, "param_groups": [{"lr": 0.03}]}},
    "swav": lambda s: {**_prefixed("module.", s), **_prefixed("module.projection_head.", _head()),
                       "module.prototypes.weight": torch.ones(30, 4)},
    "dino": lambda s: dict(s),
    "byol": lambda s: {**s, "fc.weight": torch.ones(1000, 8), "fc.bias": torch.ones(1000)},
    "simclr": lambda s: {"state_dict": {**s, "fc.weight": torch.ones(1000, 8)}},
    "infomin": lambda s: {"epoch": 800,
                          "model": {**_prefixed("module.encoder.", s),
                                    **_prefixed("module.head.", _head())},
                          "model_ema": {**_prefixed("module.encoder.", s)}},
    "vissl": lambda s: {"phase_idx": 199, "classy_state_dict": {"base_model": {"model": {
        "trunk": _prefixed("_feature_blocks.", s), "heads": _prefixed("0.clf.", _head())}}}},
    "mmpretrain": lambda s: {"meta": {"epoch": 200}, "state_dict": {
        **_prefixed("backbone.", s), **_prefixed("neck.mlp.", _head()),
        "head.predictor.weight": torch.ones(2, 2)}},
    "timm": lambda s: {**s, "fc.weight": torch.ones(1000, 8), "fc.bias": torch.ones(1000)},
}


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _assert_equal(encoder: nn.Module, state: State) -> None:
    own = encoder.state_dict()
    assert set(own) == set(state)
    for key, value in own.items():
        assert torch.equal(value, state[key]), key


def test_every_format_has_a_layout_and_a_test():
    assert set(LAYOUTS) == set(WEIGHT_FORMATS) == {*CHECKPOINTS, "lightly"}


@pytest.mark.parametrize("fmt", sorted(CHECKPOINTS))
def test_each_layout_maps_onto_the_encoder(tmp_path: Path, fmt: str):
    state = _encoder_state()
    path = _save(CHECKPOINTS[fmt](state), tmp_path / "checkpoint.pth")
    encoder = build_encoder("small_resnet", f"{fmt}:{path}")
    _assert_equal(encoder, state)
    assert encoder.weights_report.unexpected == ()


def test_vissl_flat_trunk_prefix(tmp_path: Path):
    state = _encoder_state(8)
    path = _save({"model_state_dict": _prefixed("trunk._feature_blocks.", state)},
                 tmp_path / "vissl.torch")
    _assert_equal(build_encoder("small_resnet", f"vissl:{path}"), state)


def test_lightly_sequential_backbone_of_a_torchvision_resnet(tmp_path: Path):
    """lightly's recipe: ``nn.Sequential(*list(resnet18().children())[:-1])`` as ``backbone``."""
    torch.manual_seed(3)
    resnet = torchvision.models.resnet18(weights=None)
    backbone = nn.Sequential(*list(resnet.children())[:-1])
    checkpoint = {"state_dict": {**_prefixed("backbone.", backbone.state_dict()),
                                 **_prefixed("projection_head.layers.", _head())}}
    path = _save(checkpoint, tmp_path / "lightly.ckpt")
    expected = {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    _assert_equal(build_encoder("resnet18", f"lightly:{path}"), expected)
    named = _save({"state_dict": _prefixed("backbone.", expected)}, tmp_path / "named.ckpt")
    _assert_equal(build_encoder("resnet18", f"lightly:{named}"), expected)


def _one_line_error(weights: str, arch: str = "small_resnet") -> str:
    with pytest.raises(WeightsError) as caught:
        build_encoder(arch, weights)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_file_of_another_layout_is_refused_naming_its_keys(tmp_path: Path):
    moco = _save(CHECKPOINTS["moco"](_encoder_state()), tmp_path / "moco.pth.tar")
    message = _one_line_error(f"solo-learn:{moco}")
    assert "not a solo-learn checkpoint: no key starts with backbone." in message
    assert "this file's keys start with module." in message
    vissl = _save([torch.ones(2)], tmp_path / "list.torch")
    assert "not a vissl checkpoint: no state dict under classy_state_dict.base_model.model." \
           "trunk or model_state_dict nor at the top level" in _one_line_error(f"vissl:{vissl}")


def test_keys_that_do_not_fit_name_the_missing_and_the_unexpected(tmp_path: Path):
    """A deep-stem timm ResNet (``conv1.0``) read as a plain one: both sides named, one line."""
    state = _encoder_state()
    deep_stem = {("conv1.0.weight" if k == "conv1.weight" else k): v for k, v in state.items()}
    path = _save(deep_stem, tmp_path / "resnet_d.pth")
    message = _one_line_error(f"timm:{path}")
    assert ("1 encoder tensors are missing from the file (conv1.weight) and 1 tensors in the "
            "file are unexpected (conv1.0.weight)") in message
    assert message.startswith(f"weights 'timm:{path}' do not fit small_resnet: ")
    resnet18 = _save(CHECKPOINTS["moco"](build_encoder("resnet18").state_dict()),
                     tmp_path / "r18.pth")
    assert "do not fit small_resnet: conv1.weight has shape (64, 3, 7, 7) in the file" in \
        _one_line_error(f"moco:{resnet18}")


def test_a_format_needs_a_path_and_a_missing_file_is_named(tmp_path: Path):
    assert "give a path, as in 'swav:/path/to/file'" in _one_line_error("swav:")
    assert f"file {tmp_path / 'absent.pth'} not found" in \
        _one_line_error(f"swav:{tmp_path / 'absent.pth'}")


def _spec(weights: str) -> dict:
    return {"name": "formats", "storage": "/tmp/unused", "evaluate": {
        "data": {"sources": [{"kind": "folder", "path": "/tmp/unused"}]},
        "encoders": [{"name": "ssl", "encoder": {"name": "resnet50", "weights": weights}}]}}


def test_spec_accepts_each_format_and_suggests_a_near_one():
    for fmt in WEIGHT_FORMATS:
        spec = spec_from_data(_spec(f"{fmt}:/weights/{fmt}.pth"))
        assert weight_format(spec.evaluate.encoders[0].encoder.weights) == fmt
    with pytest.raises(SpecProblems, match=r"unknown weight source 'mocco:/w\.pth' \(did you "
                                           r"mean 'moco'\?\)"):
        spec_from_data(_spec("mocco:/w.pth"))
    assert weight_format("file:/w.pth") is None and weight_format("moco:") is None
