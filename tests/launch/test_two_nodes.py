"""A 2-worker DDP pre-training across two Ray nodes (two ``ray start`` processes on loopback),
one worker on each (every node offers one ``rs_slot`` and every worker asks for one), with the
run directory on storage both nodes share (one folder of this machine). Its encoder equals a
1-worker run's after the same step, within the tolerance of the DDP test of the loop
(tests/ssl/pretrain/test_pretrain_loop.py: 1e-5, and Adam's first-step sign noise where a
gradient is float noise)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from launch_helpers import run_in_group

from raysweep.config import DatasetSpec, EncoderSpec, PretrainSpec, to_dict
from raysweep.ssl.pretrain import checkpoint as ckpt
from raysweep.ssl.pretrain.hooks import LocalHooks
from raysweep.ssl.pretrain.loop import build_net, pretrain_worker
from raysweep.storage.atomic import to_jsonable
from raysweep.store.run_dirs import RAY_RUN_NAME

DRIVER = Path(__file__).resolve().parent / "two_node_driver.py"


def fixed_views(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return x, x.flip(-1)  # the driver's views (two_node_driver.fixed_views)


def tiny_npz(path: Path) -> Path:
    """8 random grey 16 x 16 training images of 2 classes in MedMNIST's layout (the scale of
    the loop's DDP test: its tolerance is for such a batch)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 8), ("val", 2), ("test", 2)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, 16, 16), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % 2).reshape(-1, 1)
    np.savez(path, **arrays)
    return path


def one_step_spec(data: Path, cache: Path, num_workers: int) -> PretrainSpec:
    """Barlow Twins from scratch on the 8 training images, one global batch of 8: exactly one
    optimisation step (4 images per rank on 2 workers)."""
    return PretrainSpec(
        name="two-nodes",
        data=DatasetSpec(sources=({"kind": "medmnist", "path": str(data), "split": "train"},),
                         image_size=16, cache_dir=str(cache)),
        encoder=EncoderSpec(name="small_resnet"), projector=(32, 32), batch_size=8,
        epochs=1, further=False, frozen_epochs=0, lr_max=1e-2, deterministic=True, seed=3,
        num_workers=num_workers, max_failures=0,
        resources_per_worker={"CPU": 1, "rs_slot": 1})


@pytest.mark.slow
@pytest.mark.ray
def test_ddp_across_two_nodes_equals_one_worker(local_cluster, tmp_path: Path):
    local_cluster.start_head(cpus=1, resources={"rs_slot": 1})
    local_cluster.add_node(cpus=1, resources={"rs_slot": 1})
    data = tiny_npz(tmp_path / "tiny.npz")
    spec = one_step_spec(data, tmp_path / "cache", num_workers=2)
    out = tmp_path / "driver.json"
    proc = run_in_group(
        [sys.executable, str(DRIVER), json.dumps(to_jsonable(to_dict(spec))),
         str(tmp_path / "shared"), str(out)],
        {**local_cluster.env, "RAY_ADDRESS": local_cluster.address}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    placed = json.loads(out.read_text())
    assert len(placed["nodes"]) == 2
    assert len(placed["worker_nodes"]) == 2 and set(placed["worker_nodes"]) == set(placed["nodes"])
    run_dir = Path(placed["run_dir"])
    assert run_dir.parent.parent == tmp_path / "shared"
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["worker"]["world_size"] == 2
    double = ckpt.load_state(sorted((run_dir / RAY_RUN_NAME).glob("checkpoint_0*"))[-1])

    single_spec = one_step_spec(data, tmp_path / "cache", num_workers=1)
    pretrain_worker(single_spec, LocalHooks(tmp_path / "single"), transform=fixed_views)
    single = ckpt.load_state(sorted((tmp_path / "single").glob("checkpoint_*"))[-1])

    start = build_net(single_spec).state_dict()
    encoder = torch.load(run_dir / "encoder.pt", weights_only=True)
    assert encoder.keys() == single.encoder.keys()
    grads = [s["exp_avg"] for s in single.optimizer["state"].values()]
    params = [k for k in single.net if k.endswith(("weight", "bias"))]
    assert len(grads) == len(params) > 0
    moved = 0.0
    for key, value in single.net.items():
        other = double.net[key]
        if not value.is_floating_point():
            assert torch.equal(other, value), key
            continue
        close = (other - value).abs() <= 1e-5
        if key in params:  # Adam's first step is ~ lr * sign(grad): noise-level grads may flip
            grad = grads[params.index(key)]
            close |= grad.abs() < 1e-4 * grad.abs().max()
        assert bool(close.all()), f"{key}: {(~close).sum()} elements differ"
        moved = max(moved, float((value - start[key]).abs().max()))
        if key.startswith("encoder."):
            torch.testing.assert_close(encoder[key.removeprefix("encoder.")],
                                       double.net[key], rtol=0, atol=0)
    assert moved > 1e-4, "the step changed nothing: the comparison would be vacuous"
