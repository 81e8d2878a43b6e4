"""``benchmarks/gpu_acceptance.py --smoke --device cpu``: the GPU check at a tiny scale on a
CPU, so that it cannot rot between GPU leases. Every part runs (a real ``raysweep run`` through
Ray Train and Tune, bf16 + channels_last against fp32, raysweep's step against lightly's on both
settings, batched against sequential probes), each ends ``ok``, and the JSON holds every field
each part promises; the Markdown table names every part."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_acceptance.py"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("gpu-acceptance")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    env.pop("RAY_ADDRESS", None)  # the script starts (and stops) a Ray instance of its own
    env["OMP_NUM_THREADS"] = "1"  # tiny work: threads would only contend
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--device", "cpu",
                           "--out-dir", str(out)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((out / "gpu_acceptance_smoke.json").read_text())
    return record, (out / "gpu_acceptance_smoke.md").read_text()


def load_script():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_acceptance
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return gpu_acceptance


@pytest.mark.slow
def test_every_part_runs_and_records_every_field(smoke) -> None:
    record, table = smoke
    module = load_script()
    assert sorted(record["parts"]) == sorted(module.PARTS)
    assert record["failed"] == [] and record["scale"] == "smoke"
    for name, entry in record["parts"].items():
        assert entry["status"] == "ok", (name, entry["error"])
        assert entry["seconds"] > 0 and entry["limit_s"] > 0
        missing = [f for f in module.FIELDS[name] if f not in entry]
        assert not missing, (name, missing)
        assert f"| {name} | ok |" in table
    for key in ("device_name", "torch", "cpu_count", "load_average"):
        assert record["machine"][key] is not None


@pytest.mark.slow
def test_the_run_part_trained_through_ray_and_measured_its_trials(smoke) -> None:
    run = smoke[0]["parts"]["run"]
    assert run["exit_code"] == 0
    pretrain = run["pretrain"]
    assert pretrain["backend"] == "gloo" and pretrain["world_size"] == 1  # nccl on a GPU
    assert pretrain["bf16"] is False and pretrain["channels_last"] is False  # CPU defaults
    # 1 encoder x 2 protocols x 2 seeds: one fine-tune row per seed, probes batched per seed.
    assert run["rows"] == 4
    assert run["row_precision"] == {"fp32/channels_last=False": 4}
    assert run["plan_concurrency"] >= 1 and run["max_trials_at_once"] >= 1
    assert run["trials"] and all(t["started_at"] <= t["finished_at"] for t in run["trials"])
    # No GPU: no shares sized from memory, one entry for every trial, no GPU share.
    assert [(k["kind"], k["gpu_share"], k["peak_bytes"]) for k in run["kinds"]] == \
        [("every trial", 0, None)]


@pytest.mark.slow
def test_precision_throughput_and_probe_parts_measure_what_they_claim(smoke) -> None:
    parts = smoke[0]["parts"]
    precision = parts["precision"]
    assert precision["resolved"] == {"bf16": True, "channels_last": True}  # forced on a CPU
    assert 0 < precision["max_probability_diff"] <= precision["probability_tolerance"]
    assert precision["within_tolerance"] is True
    for name in ("throughput_paper", "throughput_medmnist"):
        arms = parts[name]["arms"]
        assert {"raysweep", "lightly", "lightly+bf16", "raysweep+bf16+channels_last"} <= set(arms)
        for arm in arms.values():
            assert arm["error"] is None and arm["skipped"] is None
            assert arm["median_images_per_s"] > 0 and arm["flops_per_step"] > 0
            assert arm["mfu"] is None  # no peak for a CPU
        # Same work: the two libraries' loss functions agree on one pair of embeddings, and
        # each library's bf16 arm starts where its fp32 arm does (same weights, same views).
        assert parts[name]["loss_function_abs_difference"] < 1e-3
        for fp32, bf16 in (("raysweep", "raysweep+bf16+channels_last"),
                           ("lightly", "lightly+bf16")):
            assert arms[bf16]["losses"][0] == pytest.approx(arms[fp32]["losses"][0], rel=0.05)
        assert parts[name]["default_vs_lightly"] > 0
    probe = parts["probe"]
    assert probe["seeds"] == 3 and probe["same_predictions"] and probe["agree"]
    assert probe["speedup"] > 0


def test_most_at_once_counts_overlapping_windows() -> None:
    most_at_once = load_script().most_at_once
    assert most_at_once([]) == 0
    assert most_at_once([(0, 2), (1, 3), (2, 4)]) == 2  # (0, 2) ends as (2, 4) starts
    assert most_at_once([(0, 10), (1, 2), (3, 4), (3.5, 5)]) == 3
