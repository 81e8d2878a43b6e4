"""Run-directory hashing, the finished marker, the downstream proxy, the 1cycle settings, the
phases' freezing, and the failure-injection hook."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from raysweep.config import DatasetSpec, EncoderSpec, PretrainSpec
from raysweep.errors import SpecError
from raysweep.plan.run_identity import result_hash, run_directory
from raysweep.runtime.pretrain_driver import run_pretrain
from raysweep.ssl.pretrain import LocalHooks, pretrain_worker
from raysweep.ssl.pretrain.proxy import knn_accuracy, linear_probe_accuracy
from raysweep.store.run_dirs import is_finished

BASE = PretrainSpec(name="run", data=DatasetSpec(sources=({"kind": "digits"},), image_size=16),
                    encoder=EncoderSpec(name="small_resnet"))


@pytest.mark.parametrize("change", [
    {"num_workers": 4}, {"seed": 1}, {"lambda_offdiag": 0.01}, {"trainable": "last_block"},
    {"encoder.weights": "torchvision:IMAGENET1K_V2"}, {"data.image_size": 32},
    {"grad_accum_steps": 2}, {"precision": "fp32"}, {"epochs": 3},
    {"pct_start": 0.3}, {"div_factor": 10.0}, {"final_div_factor": 1e4},
    {"max_momentum": 0.9}, {"base_momentum": 0.8}, {"validation_fraction": 0.1},
    {"method": "supcon"},
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


def test_hashes_of_runs_stored_before_the_1cycle_fields_are_unchanged() -> None:
    """Computed by the code before pct_start ... base_momentum became spec fields: at their
    defaults they stay out of the hash, so stored runs are found again."""
    assert result_hash(BASE, save_digests=False) == "652d3f723bb4"
    simclr = BASE.replace(method="simclr", epochs=3, lr_max=0.01)
    assert result_hash(simclr, save_digests=False) == "2d2b6057d5d5"
    explicit = BASE.replace(pct_start=0.25, div_factor=25.0, final_div_factor=1e5,
                            max_momentum=0.95, base_momentum=0.85, validation_fraction=0.0)
    assert result_hash(explicit, save_digests=False) == "652d3f723bb4"


def test_1cycle_settings_reach_the_schedule() -> None:
    """The pre-training schedule is fastai's 1cycle with the spec's settings."""
    from raysweep.optim.schedules import fastai_one_cycle
    from raysweep.ssl.pretrain.loop import make_scheduler

    def trace(make) -> list[tuple[float, float]]:
        optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
        scheduler = make(optimizer)
        out = []
        for _ in range(20):
            group = optimizer.param_groups[0]
            out.append((group["lr"], group["betas"][0]))
            optimizer.step()
            scheduler.step()
        return out

    spec = BASE.replace(pct_start=0.4, div_factor=10.0, final_div_factor=1e3,
                        max_momentum=0.9, base_momentum=0.8)
    got = trace(lambda opt: make_scheduler(spec, opt, 0.1, 20))
    assert got == trace(lambda opt: fastai_one_cycle(
        opt, max_lr=0.1, total_steps=20, pct_start=0.4, div=10.0, div_final=1e3,
        max_momentum=0.9, base_momentum=0.8))
    assert got[0] == (pytest.approx(0.1 / 10), pytest.approx(0.9))
    assert got[8] == (pytest.approx(0.1), pytest.approx(0.8))  # the peak at pct_start * 20
    default = trace(lambda opt: make_scheduler(BASE, opt, 0.1, 20))
    assert default == trace(lambda opt: fastai_one_cycle(opt, max_lr=0.1, total_steps=20))
    with pytest.raises(SpecError, match="base_momentum: must not exceed max_momentum"):
        BASE.replace(base_momentum=0.96)


def test_phases_train_only_their_part_and_freeze_batchnorm_elsewhere() -> None:
    """Frozen phase: the head only; SSL_p: resnet50's last bottleneck (1x1, 3x3, 1x1) and the
    head; modules outside the trainable part in eval mode (BatchNorm statistics frozen)."""
    from raysweep.models import Projector, build_encoder
    from raysweep.ssl.pretrain.loop import PretrainNet, configure_phase

    net = PretrainNet(build_encoder("resnet50"), Projector(2048, (16, 8)))
    last = net.encoder.layer4[-1]
    assert [c.kernel_size for c in (last.conv1, last.conv2, last.conv3)] == [(1, 1), (3, 3),
                                                                              (1, 1)]
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    expected = {
        ("frozen", "encoder"): ids(net.head.parameters()),
        ("train", "last_block"): ids(last.parameters()) | ids(net.head.parameters()),
        ("train", "encoder"): ids(net.parameters()),
    }
    for (phase, trainable), want in expected.items():
        params = configure_phase(net, phase, trainable)
        assert ids(params) == want == {id(p) for p in net.parameters() if p.requires_grad}
        for module in net.modules():
            inside = all(id(p) in want for p in module.parameters(recurse=False))
            if isinstance(module, torch.nn.BatchNorm2d):
                assert module.training == inside, (phase, trainable)


@pytest.mark.slow
def test_kill_once_kills_its_rank_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    marker = tmp_path / "killed"
    code = ("import sys; from raysweep.ssl.pretrain.faults import KillOnce; "
            f"hook = KillOnce(epoch=2, marker={str(marker)!r}, rank=1); "
            "[hook(e, s, r) for e, s, r in ((2, 0, 0), (2, 1, 1), (1, 0, 1))]; "
            "print('alive', flush=True); hook(2, 0, 1); print('survived')")
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=False)
    assert first.returncode == -9 and first.stdout == "alive\n" and marker.exists()
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=False)
    assert again.returncode == 0 and again.stdout == "alive\nsurvived\n"


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
    encoder.load_state_dict(load_state(tmp_path / "run" / "checkpoint_000001").encoder)
    assert score == proxy_score(encoder, data, kind="knn", device=torch.device("cpu"))
    assert 0.5 <= score <= 1.0  # 78 val images, 73% benign: a kNN does not fall below chance


def test_user_errors_are_raised_before_any_worker_starts(tmp_path: Path,
                                                         breastmnist_npz: Path) -> None:
    from raysweep.errors import DataError, SpecError
    from raysweep.runtime.pretrain_driver import preflight

    data = DatasetSpec(sources=({"kind": "medmnist", "path": str(breastmnist_npz),
                                 "split": "val"},), image_size=16)  # 78 images
    with pytest.raises(SpecError, match="multiple of num_workers x grad_accum_steps = 3"):
        preflight(BASE.replace(data=data, batch_size=16, num_workers=3), gpu=False)
    with pytest.raises(DataError, match="78 images are fewer than one batch of 128"):
        preflight(BASE.replace(data=data, batch_size=128), gpu=False)
    preflight(BASE.replace(data=data, batch_size=64, num_workers=2), gpu=False)
