"""Pre-training end to end on Ray Train (one real 2-worker gloo ``TorchTrainer`` run).

One rank is SIGKILLed after the first step of epoch 2; ``FailureConfig(max_failures=1)``
restarts the worker group from the newest checkpoint (epoch 1), and the final encoder must be
bit-identical to an uninterrupted 2-rank run of the same spec (deterministic CPU mode), run
here without Ray by the worker script of ``test_pretrain_loop.py``. Rerunning the finished spec
must do no training and return the same artefact paths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from raysweep.config import DatasetSpec, EncoderSpec, PretrainSpec, to_dict
from raysweep.models import build_encoder
from raysweep.plan.run_identity import run_directory
from raysweep.runtime.pretrain_driver import run_pretrain
from raysweep.ssl.pretrain import checkpoint as ckpt
from raysweep.ssl.pretrain.faults import KillOnce
from raysweep.storage.atomic import to_jsonable

WORKER_SCRIPT = Path(__file__).resolve().parent / "test_pretrain_loop.py"


def ray_spec(breastmnist: Path, cache: Path) -> PretrainSpec:
    """BreastMNIST's 78 validation images at 16 px, batch 16 (4 steps an epoch), 2 workers."""
    return PretrainSpec(
        name="ray-e2e",
        data=DatasetSpec(sources=({"kind": "medmnist", "path": str(breastmnist),
                                   "split": "val"},), image_size=16, cache_dir=str(cache)),
        encoder=EncoderSpec(name="small_resnet"), projector=(32, 32), batch_size=16,
        epochs=2, lr_max=1e-3, deterministic=True, num_workers=2, max_failures=1, seed=1,
    )


def start_reference(spec: PretrainSpec, out: Path) -> list[subprocess.Popen]:
    """The same spec on 2 gloo ranks without Ray and without a failure, started in the
    background (it runs while Ray Train starts up)."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    spec_json = json.dumps({"run": to_jsonable(to_dict(spec))})
    return [subprocess.Popen(
        [sys.executable, str(WORKER_SCRIPT), str(rank), "2", str(out / "pg_init"),
         str(out), spec_json, "dataset"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT) for rank in range(2)]


def reference_encoder(procs: list[subprocess.Popen], out: Path) -> dict[str, torch.Tensor]:
    """The final encoder of :func:`start_reference`'s run, once both ranks are done."""
    for proc in procs:
        log, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, log.decode()[-3000:]
    return ckpt.load_state(sorted((out / "run").glob("checkpoint_*"))[-1]).encoder


@pytest.mark.ray
@pytest.mark.slow
def test_killed_worker_resumes_to_the_uninterrupted_encoder_and_rerun_skips(
        ray_session, breastmnist_npz: Path, tmp_path: Path) -> None:
    spec = ray_spec(breastmnist_npz, tmp_path / "cache")
    marker = tmp_path / "killed"
    reference_run = start_reference(spec, tmp_path / "reference")
    try:
        result = run_pretrain(spec, storage_dir=tmp_path / "store",
                              _after_step=KillOnce(epoch=2, marker=str(marker), rank=1))
    finally:
        reference = reference_encoder(reference_run, tmp_path / "reference")
    assert marker.exists(), "the fault was never injected"
    assert result.run_dir == run_directory(spec, tmp_path / "store") and not result.skipped

    meta = json.loads(result.meta_path.read_text())
    assert meta["status"] == "finished" and meta["epochs_trained"] == 3
    # Restarted once from a checkpoint: the newest one the controller had registered when the
    # worker died (epoch 1's, or epoch 0's if epoch 1's report was still in flight).
    resumed = meta["resumed_from_epochs"]
    assert len(resumed) == 1 and resumed[0] in (1, 2)
    assert meta["spec"]["name"] == "ray-e2e" and "torch" in meta["packages"]
    assert (meta["worker"]["backend"], meta["worker"]["world_size"]) == ("gloo", 2)
    metrics = [json.loads(line) for line in result.metrics_path.read_text().splitlines()]
    assert [(m["epoch"], m["phase"]) for m in metrics] == [
        (0, "frozen"), (1, "train"), (2, "train")]
    assert all(m["images_per_s"] > 0 and m["loss"] > 0 for m in metrics)

    encoder = torch.load(result.encoder_path, weights_only=True)
    assert encoder.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(encoder[key], value), key
    # A plain state dict, loadable by the `file:` weight source.
    loaded = build_encoder("small_resnet", f"file:{result.encoder_path}")
    assert torch.equal(loaded.state_dict()["conv1.weight"], encoder["conv1.weight"])

    stamp = result.encoder_path.stat().st_mtime_ns
    again = run_pretrain(spec, storage_dir=tmp_path / "store")
    assert again.skipped
    assert (again.encoder_path, again.metrics_path, again.meta_path) == (
        result.encoder_path, result.metrics_path, result.meta_path)
    assert result.encoder_path.stat().st_mtime_ns == stamp
