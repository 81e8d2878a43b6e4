"""Run-directory hashing, the finished marker, and the downstream proxy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from raysweep.config import DatasetSpec, EncoderSpec, PretrainSpec
from raysweep.ssl.pretrain import LocalHooks, pretrain_worker
from raysweep.ssl.pretrain.driver import run_pretrain
from raysweep.ssl.pretrain.proxy import knn_accuracy, linear_probe_accuracy
from raysweep.ssl.pretrain.run_dir import is_finished, result_hash, run_directory

BASE = PretrainSpec(name="run", data=DatasetSpec(sources=({"kind": "digits"},), image_size=16),
                    encoder=EncoderSpec(name="small_resnet"))


@pytest.mark.parametrize("change", [
    {"num_workers": 4}, {"seed": 1}, {"lambda_offdiag": 0.01}, {"trainable": "last_block"},
    {"encoder.weights": "torchvision:IMAGENET1K_V2"}, {"data.image_size": 32},
    {"grad_accum_steps": 2}, {"precision": "fp32"}, {"epochs": 3},
])
def test_hash_changes_with_what_determines_the_encoder(change: dict) -> None:
    assert result_hash(BASE.replace(**change)) != result_hash(BASE)


@pytest.mark.parametrize("change", [
    {"name": "other"}, {"checkpoint_every": 5}, {"max_failures": 0}, {"deterministic": True},
    {"keys": {"initial": "SL"}}, {"channels_last": True},
    {"proxy_every": 2, "proxy_data": {"sources": [{"kind": "digits"}]}},
])
def test_hash_ignores_operational_fields(change: dict) -> None:
    assert result_hash(BASE.replace(**change)) == result_hash(BASE)


def test_file_weights_are_hashed_by_content(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"one")
    spec = BASE.replace(**{"encoder.weights": f"file:{weights}"})
    first = result_hash(spec)
    weights.write_bytes(b"two")
    assert result_hash(spec) != first
    assert run_directory(spec, tmp_path).name == f"run-{result_hash(spec)}"
    assert run_directory(spec, tmp_path).parent == tmp_path / "pretrain"


def test_only_a_complete_finished_run_counts_as_finished(tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    for name in ("encoder.pt", "metrics.jsonl"):
        (run / name).write_bytes(b"x")
    assert not is_finished(run)
    (run / "meta.json").write_text(json.dumps({"status": "running"}))
    assert not is_finished(run)
    (run / "meta.json").write_text(json.dumps({"status": "finished"}))
    assert is_finished(run)
    (run / "encoder.pt").unlink()
    assert not is_finished(run)


def test_finished_run_is_returned_without_starting_ray(tmp_path: Path, monkeypatch) -> None:
    run = run_directory(BASE, tmp_path)
    run.mkdir(parents=True)
    for name in ("encoder.pt", "metrics.jsonl"):
        (run / name).write_bytes(b"x")
    (run / "meta.json").write_text(json.dumps({"status": "finished"}))
    import ray.train.torch

    def no_trainer(*args, **kwargs):
        raise AssertionError("a finished run must not start Ray Train")

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", no_trainer)
    result = run_pretrain(BASE, storage_dir=tmp_path)
    assert result.skipped and result.encoder_path == run / "encoder.pt"
    assert result.weights == f"file:{run / 'encoder.pt'}"


def test_knn_matches_scikit_learn_majority_vote_when_weights_are_flat() -> None:
    rng = np.random.default_rng(0)
    train, test = torch.randn(60, 5, generator=torch.Generator().manual_seed(1)), \
        torch.randn(25, 5, generator=torch.Generator().manual_seed(2))
    train_labels, test_labels = rng.integers(0, 2, 60), rng.integers(0, 2, 25)
    # A huge temperature makes every neighbour's weight ~1: a plain majority vote of k = 7.
    ours = knn_accuracy(train, train_labels, test, test_labels, k=7, temperature=1e6)
    sk = KNeighborsClassifier(n_neighbors=7, metric="cosine").fit(train.numpy(), train_labels)
    assert ours == pytest.approx(sk.score(test.numpy(), test_labels))


def test_linear_probe_separates_separable_features() -> None:
    g = torch.Generator().manual_seed(0)
    labels = np.arange(40) % 2
    features = torch.randn(40, 3, generator=g) + 4 * torch.as_tensor(labels)[:, None]
    assert linear_probe_accuracy(features, labels, features, labels) == 1.0


def test_proxy_metric_is_reported_every_k_epochs(tmp_path: Path, breastmnist_npz: Path) -> None:
    data = DatasetSpec(sources=({"kind": "medmnist", "path": str(breastmnist_npz)},),
                       image_size=16, cache_dir=str(tmp_path / "cache"))
    spec = BASE.replace(projector=(16, 16), batch_size=8, further=False, epochs=2, lr_max=1e-3,
                        proxy_every=2, proxy_data=data)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 1, 16, 16), dtype=np.uint8)
    from raysweep.ssl.pretrain.loop import TrainingData

    hooks = LocalHooks(tmp_path / "run")
    pretrain_worker(spec, hooks, data=TrainingData(images, np.arange(8)),
                    transform=lambda x, generator: (x, x.flip(-1)))
    assert "proxy_knn_acc" not in hooks.reported[0]
    score = hooks.reported[1]["proxy_knn_acc"]
    # The reported value is the kNN accuracy of the epoch's encoder on BreastMNIST val.
    from raysweep.models import build_encoder
    from raysweep.ssl.pretrain.checkpoint import load_state
    from raysweep.ssl.pretrain.proxy import proxy_score

    encoder = build_encoder("small_resnet")
    encoder.load_state_dict(load_state(tmp_path / "run" / "checkpoint_000001")["encoder"])
    assert score == proxy_score(encoder, data, kind="knn", device=torch.device("cpu"))
    assert 0.5 <= score <= 1.0  # 78 val images, 73% benign: a kNN does not fall below chance


def test_user_errors_are_raised_before_any_worker_starts(tmp_path: Path,
                                                         breastmnist_npz: Path) -> None:
    from raysweep.errors import DataError, SpecError
    from raysweep.ssl.pretrain.driver import preflight

    data = DatasetSpec(sources=({"kind": "medmnist", "path": str(breastmnist_npz),
                                 "split": "val"},), image_size=16)  # 78 images
    with pytest.raises(SpecError, match="multiple of num_workers x grad_accum_steps = 3"):
        preflight(BASE.replace(data=data, batch_size=16, num_workers=3), gpu=False)
    with pytest.raises(DataError, match="78 images are fewer than one batch of 128"):
        preflight(BASE.replace(data=data, batch_size=128), gpu=False)
    preflight(BASE.replace(data=data, batch_size=64, num_workers=2), gpu=False)
