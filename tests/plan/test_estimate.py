"""``raysweep run SPEC --dry-run --estimate``: the arithmetic against a hand computation with an
injected step time, a real timing, and one real tiny run of the flag through the CLI."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raysweep.config import spec_from_data
from raysweep.plan.estimate import StepTiming, count_images, estimate_plan, measure_step
from raysweep.plan.resources import ClusterResources
from raysweep.plan.trials import make_plan

DIGITS = {"sources": [{"kind": "digits", "classes": ["0", "1"]}], "image_size": 16}


def spec_dict(storage: Path) -> dict:
    return {
        "name": "est", "storage": str(storage),
        "pretrain": [{"name": "P", "data": DIGITS, "encoder": {"name": "small_resnet"},
                      "further": True, "frozen_epochs": 1, "epochs": 2, "batch_size": 16,
                      "lr_max": 0.01, "projector": [32, 32]}],
        "evaluate": {"data": DIGITS, "seeds": 2, "protocols": ["finetune", "probe"],
                     "settings": {"head_epochs": 1, "epochs": 2, "batch_size": 8,
                                  "lr_max": 0.01, "tta_views": 1},
                     "encoders": [{"name": "R", "encoder": {"name": "small_resnet"}}]}}


def fake_timer(calls: list):
    """Step times proportional to the batch, so that a wrong batch shows."""
    def timer(encoder: str, batch: int, image_size: int) -> StepTiming:
        calls.append((encoder, batch, image_size))
        return StepTiming(train_s=0.001 * batch, forward_s=0.0002 * batch)
    return timer


def test_estimate_matches_a_hand_computation(tmp_path: Path):
    spec = spec_from_data(spec_dict(tmp_path))
    plan = make_plan(spec, ClusterResources(cpus=4, gpus=0))
    counts = count_images(spec.evaluate.data)
    n_pre, n_train, n_test = counts.pretrain, counts.train, counts.test
    assert n_pre >= n_train > 0 and n_test > 0
    calls: list = []
    pretrain, evaluate = estimate_plan(plan, fake_timer(calls))

    # Pre-training: (1 frozen + 2) epochs x ceil(n / 16) steps of 2 views x 16 images.
    pre_s = 3 * math.ceil(n_pre / 16) * (0.001 * 32)
    assert pretrain.unit == "CPU" and pretrain.wall_s == pytest.approx(pre_s)
    assert pretrain.device_hours == pytest.approx(pre_s * 1 / 3600)  # one worker, one CPU

    # Fine-tuning, per seed: (1 + 2) epochs of training steps, (1 + 1 TTA) test passes.
    train_steps, test_steps = 3 * math.ceil(n_train / 8), 2 * math.ceil(n_test / 8)
    finetune_s = train_steps * 0.008 + test_steps * 0.0016
    # Batched probes: one forward-only pass for both seeds.
    probe_s = (train_steps + test_steps) * 0.0016
    total = 2 * finetune_s + probe_s
    assert evaluate.unit == "CPU"
    assert plan.eval_concurrency == 3  # 3 trials, 1 CPU each, 4 CPUs
    assert evaluate.wall_s == pytest.approx(max(finetune_s, total / 3))
    assert evaluate.device_hours == pytest.approx(total / 3600)
    assert set(calls) == {("small_resnet", 32, 16), ("small_resnet", 8, 16)}


def test_estimate_counts_gpus_and_slots_on_a_gpu_cluster(tmp_path: Path):
    data = spec_dict(tmp_path)
    data["resources"] = {"gpus_per_trial": 0.5}
    data["pretrain"][0]["num_workers"] = 2
    spec = spec_from_data(data)
    plan = make_plan(spec, ClusterResources(cpus=8, gpus=2))
    counts = count_images(spec.evaluate.data)
    pretrain, evaluate = estimate_plan(plan, fake_timer([]))
    # Two workers, one whole GPU each, 16 views a worker.
    pre_s = 3 * math.ceil(counts.pretrain / 16) * (0.001 * 16)
    assert pretrain.unit == "GPU" and pretrain.wall_s == pytest.approx(pre_s)
    assert pretrain.device_hours == pytest.approx(pre_s * 2 / 3600)
    train_steps = 3 * math.ceil(counts.train / 8)
    test_steps = 2 * math.ceil(counts.test / 8)
    total = 2 * (train_steps * 0.008 + test_steps * 0.0016) + (train_steps + test_steps) * 0.0016
    assert evaluate.unit == "GPU" and evaluate.device_hours == pytest.approx(total * 0.5 / 3600)


def test_a_training_step_is_timed_and_costs_more_than_a_forward_pass():
    timing = measure_step("small_resnet", 8, 16, device="cpu", steps=2)
    assert timing.train_s > timing.forward_s > 0


@pytest.mark.slow
def test_dry_run_estimate_through_the_cli_writes_nothing(tmp_path: Path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict(tmp_path / "storage")))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",
                                                             "RAYSWEEP_AUTOSCALER_CONFIG")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([sys.executable, "-m", "raysweep.cli", "run", str(path), "--dry-run",
                           "--estimate"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    [pre] = [line for line in lines if line.startswith("estimate pretrain: ")]
    [ev] = [line for line in lines if line.startswith("estimate evaluate: ")]
    [total] = [line for line in lines if line.startswith("estimate total: ")]
    assert "CPU-hours, wall" in pre and "1 run," in pre
    assert "3 trials" in ev and "measured on this machine's" in total
    assert not (tmp_path / "storage").exists()  # nothing written to the storage
