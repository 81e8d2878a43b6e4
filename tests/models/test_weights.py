"""Weight sources on files the tests create: nothing is downloaded, errors name the file."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torchvision

from raysweep.errors import WeightsError
from raysweep.models import build_encoder, hub_checkpoint_path


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    (home / "hub" / "checkpoints").mkdir(parents=True)
    return home


def _resnet_state(arch: str, seed: int) -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return getattr(torchvision.models, arch)(weights=None).state_dict()


def _assert_loaded(encoder: torch.nn.Module, source: dict[str, torch.Tensor]) -> None:
    own = encoder.state_dict()
    assert set(own) == {k for k in source if not k.startswith("fc.")}
    for key, value in own.items():
        assert torch.equal(value, source[key]), key


def test_torchvision_enum_read_from_the_hub_cache(torch_home: Path) -> None:
    state = _resnet_state("resnet18", seed=1)  # includes fc.*, like the real file
    path = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert hub_checkpoint_path("resnet18-f37072fd.pth") == path
    torch.save(state, path)
    encoder = build_encoder("resnet18", "torchvision:IMAGENET1K_V1")
    _assert_loaded(encoder, state)
    assert encoder.weights_report.source == "torchvision:IMAGENET1K_V1"
    assert encoder.weights_report.unexpected == ()


def test_missing_torchvision_file_says_what_to_place_where(torch_home: Path) -> None:
    with pytest.raises(WeightsError) as info:
        build_encoder("resnet50", "torchvision:IMAGENET1K_V2")
    message = str(info.value)
    assert "\n" not in message
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in message
    assert str(torch_home / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth") in message
    with pytest.raises(WeightsError, match=r"resnet18 has torchvision weights \['IMAGENET1K_V1'\]"):
        build_encoder("resnet18", "torchvision:IMAGENET1K_V2")


def test_barlowtwins_hub_file_and_shape_mismatch(torch_home: Path) -> None:
    state = _resnet_state("resnet50", seed=2)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # hub model: fc removed
    path = torch_home / "hub" / "checkpoints" / "barlowtwins_resnet50.pth"
    torch.save(state, path)
    _assert_loaded(build_encoder("resnet50", "barlowtwins"), state)

    small = torch_home / "r18.pt"
    torch.save(_resnet_state("resnet18", seed=3), small)
    with pytest.raises(WeightsError) as info:
        build_encoder("resnet50", f"file:{small}")
    message = str(info.value)
    assert "\n" not in message and "do not fit resnet50" in message and "shape" in message
    with pytest.raises(WeightsError, match="resnet50 only, not resnet18"):
        build_encoder("resnet18", "barlowtwins")


def test_missing_vicreg_file_names_url_and_place(torch_home: Path) -> None:
    with pytest.raises(WeightsError) as info:
        build_encoder("resnet50", "vicreg")
    message = str(info.value)
    assert "https://dl.fbaipublicfiles.com/vicreg/resnet50.pth" in message
    assert str(torch_home / "hub" / "checkpoints" / "vicreg_resnet50.pth") in message


def test_vicreg_resnet200x2_reads_its_own_hub_file(torch_home: Path) -> None:
    from raysweep.models.weights import weights_file

    path = torch_home / "hub" / "checkpoints" / "vicreg_resnet200x2.pth"
    assert weights_file("vicreg", "resnet200x2") == path
    assert weights_file("vicreg", "resnet50") == path.with_name("vicreg_resnet50.pth")
    with pytest.raises(WeightsError) as info:
        build_encoder("resnet200x2", "vicreg")
    message = str(info.value)
    assert "\n" not in message
    assert "https://dl.fbaipublicfiles.com/vicreg/resnet200x2.pth" in message
    assert str(path) in message
    with pytest.raises(WeightsError, match="vicreg publishes resnet50 and resnet200x2 only, "
                                           "not resnet18"):
        build_encoder("resnet18", "vicreg")
    with pytest.raises(WeightsError, match="barlowtwins publishes a resnet50 only, not "
                                           "resnet200x2"):
        weights_file("barlowtwins", "resnet200x2")


@pytest.mark.parametrize("wrapping", ["plain", "ddp", "raysweep_checkpoint", "compiled_ddp"])
def test_file_source_unwraps_known_formats(tmp_path: Path, wrapping: str) -> None:
    state = build_encoder("small_resnet", generator=torch.Generator().manual_seed(4)).state_dict()
    obj: object = {
        "plain": state,
        "ddp": {f"module.{k}": v for k, v in state.items()},
        "raysweep_checkpoint": {"encoder": state, "epoch": 3, "spec_hash": "abc"},
        "compiled_ddp": {f"module._orig_mod.{k}": v for k, v in state.items()},
    }[wrapping]
    path = tmp_path / "encoder.pt"
    torch.save(obj, path)
    _assert_loaded(build_encoder("small_resnet", f"file:{path}"), state)


def test_whole_model_state_dict_keeps_encoder_entries(tmp_path: Path) -> None:
    state = build_encoder("small_resnet", generator=torch.Generator().manual_seed(5)).state_dict()
    whole = {**{f"encoder.{k}": v for k, v in state.items()}, "projector.0.weight": torch.ones(2)}
    torch.save(whole, tmp_path / "model.pt")
    _assert_loaded(build_encoder("small_resnet", f"file:{tmp_path / 'model.pt'}"), state)


def test_partial_and_extra_keys(tmp_path: Path) -> None:
    state = build_encoder("small_resnet").state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(WeightsError, match=r"encoder tensors are missing from the file, e\.g\. layer4"):
        build_encoder("small_resnet", f"file:{tmp_path / 'partial.pt'}")
    torch.save({**state, "extra.weight": torch.ones(1)}, tmp_path / "extra.pt")
    with pytest.warns(UserWarning, match="1 tensors not used"):
        encoder = build_encoder("small_resnet", f"file:{tmp_path / 'extra.pt'}")
    assert encoder.weights_report.unexpected == ("extra.weight",)


class _NotATensor:
    pass


def test_unreadable_or_unsafe_files_are_errors(tmp_path: Path) -> None:
    (tmp_path / "corrupt.pt").write_bytes(b"definitely not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        build_encoder("small_resnet", f"file:{tmp_path / 'corrupt.pt'}")
    with open(tmp_path / "pickle.pt", "wb") as handle:  # weights_only=True refuses objects
        pickle.dump({"conv1.weight": _NotATensor()}, handle, protocol=2)
    with pytest.raises(WeightsError, match="cannot read"):
        build_encoder("small_resnet", f"file:{tmp_path / 'pickle.pt'}")
    torch.save({"conv1.weight": "text"}, tmp_path / "strings.pt")
    with pytest.raises(WeightsError, match="not a tensor"):
        build_encoder("small_resnet", f"file:{tmp_path / 'strings.pt'}")
    with pytest.raises(WeightsError, match="not found"):
        build_encoder("small_resnet", f"file:{tmp_path / 'absent.pt'}")
    with pytest.raises(WeightsError, match="unknown weights 'imagenet'"):
        build_encoder("small_resnet", "imagenet")
