"""The per-worker pre-training loop, called directly (no Ray): protocol guarantees and DDP maths.

* one step on 2 gloo ranks equals one step on 1 rank over the same global batch (Barlow Twins,
  SimCLR, SupCon, supervised; parameters and BN statistics within 1e-5);
* the frozen epoch leaves the encoder bit-identical (parameters and buffers); under SSL_p every
  encoder tensor outside ``layer4[-1]`` stays bit-identical through training;
* resuming from a checkpoint gives the bit-identical encoder of an uninterrupted run;
* the LR finder's suggestion becomes lr_max; GlobalBatchNorm equals BatchNorm in one process.

This file doubles as the 2-rank worker script:
``python test_pretrain_loop.py RANK WORLD INIT_FILE OUT_DIR SPEC_JSON MODE`` where MODE is
``synthetic`` (tiny random data, deterministic views) or ``dataset`` (the spec's data and views).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from raysweep.config import DatasetSpec, EncoderSpec, PretrainSpec, from_dict, to_dict
from raysweep.distributed import GlobalBatchNorm, convert_to_global_batchnorm
from raysweep.errors import DataError, WeightsError
from raysweep.ssl.pretrain import checkpoint as ckpt
from raysweep.ssl.pretrain.hooks import LocalHooks
from raysweep.ssl.pretrain.loop import TrainingData, build_net, pretrain_worker
from raysweep.ssl.pretrain.sharding import epoch_order, local_batch
from raysweep.storage.atomic import to_jsonable

HERE = Path(__file__).resolve()


def tiny_spec(**changes: Any) -> PretrainSpec:
    """small_resnet on 16 px images, a (32, 32) projector, global batch 8."""
    base = PretrainSpec(
        name="tiny", data=DatasetSpec(sources=({"kind": "digits"},), image_size=16),
        encoder=EncoderSpec(name="small_resnet"), projector=(32, 32), batch_size=8,
        epochs=1, frozen_epochs=1, lr_max=1e-2, deterministic=True, seed=3,
    )
    return base.replace(**changes)


def tiny_data(n: int = 8, seed: int = 0) -> TrainingData:
    """``n`` random grey 16 x 16 images with labels of 2 classes."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 1, 16, 16), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % 2
    return TrainingData(images, np.arange(n, dtype=np.int64), labels, ("a", "b"))


def fixed_views(x: torch.Tensor, generator: torch.Generator) -> Any:
    """Deterministic "augmentation" (identical on any number of ranks): two views, or one."""
    return x, x.flip(-1)


def fixed_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return x.flip(-2)


def run_local(spec: PretrainSpec, root: Path, data: TrainingData | None = None) -> LocalHooks:
    hooks = LocalHooks(root)
    transform = fixed_view if spec.method == "supervised" else fixed_views
    pretrain_worker(spec, hooks, data=data or tiny_data(), transform=transform)
    return hooks


def final_state(root: Path) -> ckpt.PretrainState:
    return ckpt.load_state(sorted(root.glob("checkpoint_*"))[-1])


def initial_net(spec: PretrainSpec, num_classes: int = 2) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in build_net(spec, num_classes).state_dict().items()}


# ------------------------------------------------------------------------------------------
# 2 ranks == 1 rank
# ------------------------------------------------------------------------------------------

METHODS = ("barlow_twins", "simclr", "supcon", "supervised")


def one_step_spec(method: str) -> PretrainSpec:
    # No frozen epoch, one epoch of exactly one global batch: one optimisation step.
    return tiny_spec(method=method, further=False, projector=(16, 16))


@pytest.mark.slow
def test_one_step_on_two_gloo_ranks_equals_one_rank(tmp_path: Path) -> None:
    specs = {m: one_step_spec(m) for m in METHODS}
    init_file = tmp_path / "pg_init"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    spec_json = json.dumps({m: to_jsonable(to_dict(s)) for m, s in specs.items()})
    procs = [subprocess.Popen(
        [sys.executable, str(HERE), str(rank), "2", str(init_file), str(tmp_path / "ddp"),
         spec_json, "synthetic"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for rank in range(2)]
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out.decode()[-3000:]
    for method, spec in specs.items():
        run_local(spec, tmp_path / "single" / method)
        single, double = (final_state(tmp_path / run / method) for run in ("single", "ddp"))
        start = initial_net(spec)
        assert single.net.keys() == double.net.keys()
        # The gradients: after one Adam step, exp_avg = (1 - beta1) * grad, in parameter order;
        # equal up to float32 summation order (1e-5 of the tensor's largest gradient).
        grads_1 = [s["exp_avg"] for s in single.optimizer["state"].values()]
        grads_2 = [s["exp_avg"] for s in double.optimizer["state"].values()]
        assert len(grads_1) == len(grads_2) > 0
        for g1, g2 in zip(grads_1, grads_2, strict=True):
            torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-5 * float(g1.abs().max()))
        params = [k for k in single.net if k.endswith(("weight", "bias"))]
        moved = 0.0
        for key, value in single.net.items():
            other = double.net[key]
            if not value.is_floating_point():
                assert torch.equal(other, value), f"{method}: {key}"
                continue
            close = (other - value).abs() <= 1e-5
            if key in params:
                # Adam's first step is ~ lr * sign(grad): where a gradient is float noise
                # (|g| < 1e-4 max |g|), two summation orders may pick opposite signs.
                grad = grads_1[params.index(key)]
                close |= grad.abs() < 1e-4 * grad.abs().max()
            assert bool(close.all()), f"{method}: {key}: {(~close).sum()} elements differ"
            moved = max(moved, float((value - start[key]).abs().max()))
        assert moved > 1e-4, f"{method}: the step changed nothing, the test would be vacuous"


# ------------------------------------------------------------------------------------------
# Frozen epoch and SSL_p
# ------------------------------------------------------------------------------------------


def test_frozen_epoch_keeps_encoder_bit_identical_and_trains_projector(tmp_path: Path) -> None:
    spec = tiny_spec(epochs=1)
    run_local(spec, tmp_path)
    start = initial_net(spec, 0)
    frozen = ckpt.load_state(tmp_path / "checkpoint_000000")
    assert frozen.phase == "frozen"
    for key, value in frozen.encoder.items():  # parameters AND BatchNorm buffers
        assert torch.equal(value, start[f"encoder.{key}"]), key
    changed = [k for k in start if k.startswith("head.")
               and not torch.equal(frozen.net[k], start[k])]
    assert any(k.endswith("weight") for k in changed)
    # The following 1cycle epoch trains the whole encoder (SSL).
    trained = final_state(tmp_path).encoder
    assert not torch.equal(trained["conv1.weight"], start["encoder.conv1.weight"])


def test_ssl_p_changes_only_the_last_block(tmp_path: Path) -> None:
    spec = tiny_spec(trainable="last_block", epochs=2)
    run_local(spec, tmp_path, tiny_data(16))
    start = initial_net(spec, 0)
    final = final_state(tmp_path).encoder
    last = f"layer4.{len(build_net(spec).encoder.layer4) - 1}."
    inside = [k for k in final if k.startswith(last)]
    assert inside and any(not torch.equal(final[k], start[f"encoder.{k}"]) for k in inside)
    for key in final:
        if not key.startswith(last):
            assert torch.equal(final[key], start[f"encoder.{key}"]), key


# ------------------------------------------------------------------------------------------
# Resume, metrics, LR finder
# ------------------------------------------------------------------------------------------


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path: Path) -> None:
    spec = tiny_spec(epochs=3)
    data = tiny_data(16)
    full = run_local(spec, tmp_path / "full", data)
    # An interrupted run: only the checkpoint after epoch 1 survived.
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint_000001",
                    tmp_path / "resumed" / "checkpoint_000001")
    resumed = run_local(spec, tmp_path / "resumed", data)
    assert [m["epoch"] for m in resumed.reported] == [2, 3]
    a, b = final_state(tmp_path / "full"), final_state(tmp_path / "resumed")
    for key in a.net:
        assert torch.equal(a.net[key], b.net[key]), key
    # The history is carried through the checkpoint: same epochs and losses (timings differ).
    assert [(m["epoch"], m["loss"]) for m in a.history] == [
        (m["epoch"], m["loss"]) for m in b.history]
    assert (a.resumed_from, b.resumed_from) == ([], [2])
    assert [m["phase"] for m in full.reported] == ["frozen", "train", "train", "train"]
    for m in full.reported:
        assert {"loss", "invariance", "redundancy", "sparsity", "lr", "images_per_s"} <= set(m)
        # Barlow Twins: loss = invariance + lambda * redundancy + alpha * ||W||_21.
        expected = m["invariance"] + spec.lambda_offdiag * m["redundancy"] + \
            spec.alpha * m["sparsity"]
        assert m["loss"] == pytest.approx(expected, rel=1e-6)


def test_lr_finder_sets_lr_max_and_is_recorded(tmp_path: Path) -> None:
    spec = tiny_spec(lr_max=None, lr_finder_iters=12, epochs=1)
    hooks = run_local(spec, tmp_path, tiny_data(16))
    state = final_state(tmp_path)
    finder = state.lr_finder
    assert 0 < len(finder["lrs"]) <= 12 and len(finder["lrs"]) == len(finder["losses"])
    assert finder["lrs"] == sorted(finder["lrs"])
    assert state.lr_max == finder["suggestion"] == hooks.reported[-1]["lr_max"]
    assert finder["lrs"][0] <= state.lr_max <= finder["lrs"][-1]
    # 1cycle starts at lr_max / 25 (fastai's div).
    assert hooks.reported[-1]["lr"] == pytest.approx(state.lr_max / 25)


# ------------------------------------------------------------------------------------------
# Small pieces
# ------------------------------------------------------------------------------------------


def test_rank_slices_tile_the_same_global_batches() -> None:
    indices = np.arange(40) * 3
    order = epoch_order(indices, seed=5, epoch=2)
    assert sorted(order) == sorted(indices)
    assert not np.array_equal(order, epoch_order(indices, seed=5, epoch=3))
    assert np.array_equal(order, epoch_order(indices, seed=5, epoch=2))
    for step in range(5):
        whole = local_batch(order, step=step, batch_size=8, rank=0, world_size=1)
        halves = [local_batch(order, step=step, batch_size=8, rank=r, world_size=2)
                  for r in range(2)]
        assert np.array_equal(np.concatenate(halves), whole)


def test_global_batchnorm_is_batchnorm_in_one_process() -> None:
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                    torch.nn.Flatten(), torch.nn.LazyLinear(5),
                                    torch.nn.BatchNorm1d(5))
    x = torch.randn(6, 3, 8, 8)
    reference(x)
    converted = convert_to_global_batchnorm(torch.nn.Sequential(*list(reference)))
    assert isinstance(converted[1], GlobalBatchNorm) and isinstance(converted[4], GlobalBatchNorm)
    assert converted.state_dict().keys() == reference.state_dict().keys()
    torch.testing.assert_close(converted(x), reference(x))


def test_bad_inputs_raise_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="fewer than one batch"):
        run_local(tiny_spec(batch_size=16), tmp_path, tiny_data(8))
    unlabelled = TrainingData(tiny_data(8).images, np.arange(8, dtype=np.int64), None, ("a", "b"))
    with pytest.raises(DataError, match="supervised needs labels"):
        run_local(tiny_spec(method="supervised"), tmp_path / "unlabelled", unlabelled)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="unreadable checkpoint"):
        ckpt.load_state(tmp_path / "broken")
    with pytest.raises(WeightsError, match="not found"):
        ckpt.load_state(tmp_path)


def test_checkpoint_state_round_trips_and_earlier_files_still_load(tmp_path: Path) -> None:
    spec = tiny_spec(lr_max=None, lr_finder_iters=6, epochs=1)
    run_local(spec, tmp_path / "run", tiny_data(16))
    directory = tmp_path / "run" / "checkpoint_000001"
    state = ckpt.load_state(directory)
    raw = torch.load(directory / ckpt.STATE_FILE, weights_only=True)
    assert raw.keys() == {*ckpt.PretrainState.__dataclass_fields__, "encoder"}
    assert raw["encoder"].keys() == state.encoder.keys() and all(
        torch.equal(raw["encoder"][k], state.net[f"encoder.{k}"]) for k in state.encoder)
    assert state.next_epoch == 2 and state.phase == "train" and state.resumed_from == []
    assert [m["epoch"] for m in state.history] == [0, 1] and state.meta["world_size"] == 1
    assert state.meta["backend"] is None  # no process group in a direct call
    assert state.lr_finder is not None and state.lr_max == state.lr_finder["suggestion"]
    # A file of the earlier format (with its never-read "step" and "scaler") loads the same.
    old = tmp_path / "old"
    old.mkdir()
    torch.save({**raw, "step": 0, "scaler": {}}, old / ckpt.STATE_FILE)
    again = ckpt.load_state(old)
    assert (again.next_epoch, again.history, again.lr_finder, again.meta) == (
        state.next_epoch, state.history, state.lr_finder, state.meta)
    # Anything else is refused in one line naming the file.
    for name, obj in (("plain", state.encoder), ("partial", {"next_epoch": 1, "net": {}}),
                      ("list", [1, 2])):
        (tmp_path / name).mkdir()
        torch.save(obj, tmp_path / name / ckpt.STATE_FILE)
        with pytest.raises(WeightsError, match=f"{tmp_path / name / ckpt.STATE_FILE}: not a "
                                               "pre-training checkpoint") as err:
            ckpt.load_state(tmp_path / name)
        assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------
# Worker script
# ------------------------------------------------------------------------------------------


def _worker_main(rank: int, world: int, init_file: str, out_dir: str, spec_json: str,
                 mode: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        specs = json.loads(spec_json)
        for key, data in specs.items():
            spec = from_dict(PretrainSpec, data)
            hooks = LocalHooks(Path(out_dir) / key)
            if mode == "synthetic":
                transform = fixed_view if spec.method == "supervised" else fixed_views
                pretrain_worker(spec, hooks, data=tiny_data(), transform=transform)
            else:
                pretrain_worker(spec, hooks)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    _worker_main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:7])
