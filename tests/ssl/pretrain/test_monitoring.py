"""What pre-training monitors (Jiang's thesis, Figure 7.1): the contrastive top-1 accuracy of
every epoch and, with ``validation_fraction``, the loss and top-1 accuracy on held-out images
never trained on; both reach ``metrics.jsonl`` and the epoch line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from raysweep.config import DatasetSpec, EncoderSpec, PretrainSpec
from raysweep.errors import DataError
from raysweep.ssl import contrastive_top1_accuracy, nt_xent_loss, supcon_loss
from raysweep.ssl.pretrain import LocalHooks, pretrain_worker
from raysweep.ssl.pretrain import checkpoint as ckpt
from raysweep.ssl.pretrain.loop import TrainingData, build_net
from raysweep.ssl.pretrain.progress import epoch_line
from raysweep.ssl.pretrain.sharding import validation_split


def spec_of(**changes) -> PretrainSpec:
    base = PretrainSpec(name="mon", method="simclr", data=DatasetSpec(
        sources=({"kind": "digits"},), image_size=16), encoder=EncoderSpec(name="small_resnet"),
        projector=(16, 8), batch_size=8, further=False, frozen_epochs=0, epochs=2,
        lr_max=1e-2, deterministic=True, seed=4, temperature=0.5)
    return base.replace(**changes)


def data_of(n: int) -> TrainingData:
    rng = np.random.default_rng(1)
    return TrainingData(rng.integers(0, 256, (n, 1, 16, 16), dtype=np.uint8), np.arange(n),
                        np.arange(n) % 2, ("a", "b"))


def fixed_views(x: torch.Tensor, generator: torch.Generator):
    return x, x.flip(-1)


def test_validation_split_holds_out_distinct_images_never_trained_on() -> None:
    indices = np.concatenate([np.arange(40), np.arange(10)])  # images 0-9 oversampled 2:1
    train, held = validation_split(indices, 0.25, seed=3)
    assert len(held) == 10 and len(set(held.tolist())) == 10  # 25 % of 40 distinct images
    assert not set(held.tolist()) & set(train.tolist())  # no repeat of a held-out image stays
    assert set(train.tolist()) | set(held.tolist()) == set(range(40))
    kept = [i for i in indices.tolist() if i not in set(held.tolist())]
    assert train.tolist() == kept  # every other entry stays, repeats and order included
    again, same = validation_split(indices, 0.25, seed=3)
    assert np.array_equal(same, held) and np.array_equal(again, train)  # seeded
    assert not np.array_equal(validation_split(indices, 0.25, seed=4)[1], held)
    assert len(validation_split(np.arange(7), 0.5, seed=0)[1]) == 4  # 3.5 rounds half up


def test_the_validation_loss_is_the_final_networks_loss_on_the_held_out_images(
        tmp_path: Path) -> None:
    spec = spec_of(validation_fraction=1 / 3)
    hooks = LocalHooks(tmp_path)
    metrics_path = tmp_path / "metrics.jsonl"
    pretrain_worker(spec, hooks, data=data_of(24), transform=fixed_views,
                    metrics_path=metrics_path)
    history = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    assert len(history) == 2
    for record in history:
        assert 0.0 <= record["contrastive_top1"] <= 1.0
        assert {"val_loss", "val_contrastive_top1"} <= set(record)
    assert history[0]["val_loss"] != history[1]["val_loss"]  # the network moved

    # independently: the last checkpoint's network, in eval mode, on the held-out images
    _, held = validation_split(np.arange(24), 1 / 3, seed=spec.data.split_seed)
    net = build_net(spec, 2)
    net.load_state_dict(ckpt.load_state(tmp_path / "checkpoint_000001").net)
    net.eval()
    x = torch.from_numpy(data_of(24).images[held]).float().div(255).expand(-1, 3, -1, -1)
    with torch.no_grad():
        z_a, z_b = net(*fixed_views(x, torch.Generator()))
    assert history[-1]["val_loss"] == pytest.approx(
        float(nt_xent_loss(z_a, z_b, temperature=0.5)), rel=1e-5)
    assert history[-1]["val_contrastive_top1"] == pytest.approx(
        float(contrastive_top1_accuracy(z_a, z_b)), abs=1e-6)
    # 16 training images: 2 steps an epoch
    assert hooks.reported[0]["images_per_s"] > 0
    line = epoch_line("mon", history[-1], 2, 0.0)
    assert f"top-1 {history[-1]['contrastive_top1']:.3f}" in line
    assert f"val loss {history[-1]['val_loss']:.4g}" in line and "val top-1 " in line


def test_supcon_validates_on_held_out_labelled_images_with_their_labels(
        tmp_path: Path) -> None:
    # the labelled training split: 24 of 36 images (12 have no label), three classes
    images = data_of(36).images
    labelled = np.arange(0, 36, 3).tolist() + np.arange(1, 36, 3).tolist()
    labels = np.arange(36) % 3
    data = TrainingData(images, np.asarray(sorted(labelled)), labels, ("a", "b", "c"))
    spec = spec_of(method="supcon", validation_fraction=1 / 3, epochs=1)
    metrics_path = tmp_path / "metrics.jsonl"
    pretrain_worker(spec, LocalHooks(tmp_path), data=data, transform=fixed_views,
                    metrics_path=metrics_path)
    (record,) = [json.loads(line) for line in metrics_path.read_text().splitlines()]

    _, held = validation_split(data.indices, 1 / 3, seed=spec.data.split_seed)
    assert set(held.tolist()) <= set(labelled)  # never an image without a label
    net = build_net(spec, 3)
    net.load_state_dict(ckpt.load_state(tmp_path / "checkpoint_000000").net)
    net.eval()
    x = torch.from_numpy(images[held]).float().div(255).expand(-1, 3, -1, -1)
    with torch.no_grad():
        z_a, z_b = net(*fixed_views(x, torch.Generator()))
    target = supcon_loss(z_a, z_b, torch.from_numpy(labels[held]), temperature=0.5)
    assert record["val_loss"] == pytest.approx(float(target), rel=1e-5)
    # negative control: the same held-out images with other labels give another loss
    shuffled = torch.from_numpy((labels[held] + 1) % 3 * (np.arange(len(held)) % 2))
    assert float(supcon_loss(z_a, z_b, shuffled, temperature=0.5)) != pytest.approx(
        record["val_loss"], rel=1e-5)
    assert record["val_contrastive_top1"] == pytest.approx(
        float(contrastive_top1_accuracy(z_a, z_b)), abs=1e-6)


def test_no_validation_by_default_and_a_hold_out_below_one_batch_is_refused(
        tmp_path: Path) -> None:
    hooks = LocalHooks(tmp_path / "plain")
    pretrain_worker(spec_of(epochs=1), hooks, data=data_of(16), transform=fixed_views)
    assert "contrastive_top1" in hooks.reported[0]
    assert not any(k.startswith("val_") for k in hooks.reported[0])
    with pytest.raises(DataError) as err:
        pretrain_worker(spec_of(validation_fraction=0.2), LocalHooks(tmp_path / "small"),
                        data=data_of(20), transform=fixed_views)
    assert str(err.value) == ("pretrain mon: validation_fraction 0.2 holds out 4 images, fewer "
                              "than one batch of 8")


def test_the_preflight_names_a_hold_out_below_one_batch() -> None:
    from raysweep.plan.preflight import pretrain_data_problems

    run = spec_of(validation_fraction=0.001)  # digits: 1,797 images, 2 held out
    (problem,) = pretrain_data_problems(run)
    assert problem.startswith("pretrain mon: ") and problem.endswith(
        "validation_fraction 0.001 holds out 2 images, fewer than one batch of 8")
    assert pretrain_data_problems(run.replace(validation_fraction=0.1)) == []
