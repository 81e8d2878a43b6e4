"""GPU shares sized from measured peak memory (:mod:`raysweep.plan.gpu_memory`): the
arithmetic, the stored measurements, the plan (fake clusters, no Ray) and the packing on fake GPUs
(a Ray instance of its own with 6 CPUs and 2 GPUs: Ray schedules GPU resources without CUDA)."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from raysweep.config import spec_from_data
from raysweep.plan.gpu_memory import (
    GPU_MEMORY_DIR,
    MAX_TRIALS_PER_GPU,
    MemoryMeasurement,
    TrialKind,
    describe_measurement,
    gpu_fraction,
    read_measurements,
    trials_per_gpu,
    write_measurement,
)
from raysweep.plan.resources import ClusterResources
from raysweep.plan.trials import make_plan

GIB = 2**30
DIGITS = {"sources": [{"kind": "digits", "classes": ["0", "1"]}], "image_size": 16}
FINETUNE = TrialKind("small_resnet", "finetune", 64)


def experiment(storage: Path, seeds: int = 8, **resources) -> object:
    return spec_from_data({
        "name": "exp", "storage": str(storage),
        "evaluate": {"data": DIGITS, "seeds": seeds, "protocols": ["finetune", "probe"],
                     "settings": {"batched_probes": False},
                     "encoders": [{"name": "R", "encoder": {"name": "small_resnet"}}]},
        "resources": resources})


# --------------------------------------------------------------------------- arithmetic


def test_share_is_one_over_the_trials_that_fit_one_device():
    # 20 GiB x 1.25 = 25 GiB; 80 GiB holds 3 of them (not 3.2): a third of a GPU each.
    assert trials_per_gpu(20 * GIB, 80 * GIB, 1.25) == 3
    assert gpu_fraction(MemoryMeasurement(20 * GIB, 80 * GIB), 1.25) == pytest.approx(1 / 3)
    # Exactly four fit: 16 x 1.25 = 20 GiB.
    assert trials_per_gpu(16 * GIB, 80 * GIB, 1.25) == 4
    # More than a device: still one trial per GPU (a whole GPU).
    assert trials_per_gpu(70 * GIB, 80 * GIB, 1.25) == 1
    # A tiny peak is capped.
    assert trials_per_gpu(1, 80 * GIB, 1.25) == MAX_TRIALS_PER_GPU


def test_the_count_is_rounded_down_so_the_memory_always_fits():
    rng = random.Random(0)
    for _ in range(1000):
        device = rng.uniform(8, 200) * GIB
        peak = rng.uniform(0.02, 1.5) * device
        margin = rng.uniform(1.0, 2.0)
        n = trials_per_gpu(peak, device, margin)
        share = gpu_fraction(MemoryMeasurement(int(peak), int(device)), margin)
        assert share == pytest.approx(1 / trials_per_gpu(int(peak), int(device), margin))
        assert 1 / share == round(1 / share)  # a divisor of 1
        if n > 1:  # n of them fit, n + 1 would not
            assert n * peak * margin <= device * (1 + 1e-9)
            assert n == MAX_TRIALS_PER_GPU or (n + 1) * peak * margin > device


def test_each_process_overhead_is_added_once_per_trial_not_multiplied():
    # 2 GiB x 1.25 = 2.5 GiB, plus 0.5 GiB of CUDA context per process: 3 GiB a trial, so
    # 80 GiB hold 26 (2.5 GiB alone would give 32, and 32 x 3 GiB = 96 GiB do not fit).
    assert trials_per_gpu(2 * GIB, 80 * GIB, 1.25) == 32
    assert trials_per_gpu(2 * GIB, 80 * GIB, 1.25, overhead_bytes=GIB // 2) == 26
    measured = MemoryMeasurement(2 * GIB, 80 * GIB, "H100", overhead_bytes=GIB // 2)
    assert gpu_fraction(measured, 1.25) == pytest.approx(1 / 26)
    assert 26 * (2 * GIB * 1.25 + GIB // 2) <= 80 * GIB < 27 * (2 * GIB * 1.25 + GIB // 2)
    assert describe_measurement(measured, 1.25) == (
        "measured: peak 2.0 GiB x 1.25 + 0.5 GiB per process of 80.0 GiB (H100): 26 per GPU")
    # A tiny trial is bounded by its process overhead, not by the cap: 2 GiB and a byte
    # each, so 39 (not 40) fit.
    assert trials_per_gpu(1, 80 * GIB, 1.25, overhead_bytes=2 * GIB) == 39


def test_a_measurement_without_an_overhead_reads_as_zero_and_a_bad_one_is_refused():
    old = {"peak_bytes": 3, "device_bytes": 10}  # a file written before overheads were kept
    assert MemoryMeasurement.from_dict(old).overhead_bytes == 0
    assert MemoryMeasurement.from_dict({**old, "overhead_bytes": 4}).overhead_bytes == 4
    for bad in (-1, 1.5, True, "4"):
        with pytest.raises(ValueError, match="overhead_bytes"):
            MemoryMeasurement.from_dict({**old, "overhead_bytes": bad})


def test_measuring_on_cuda_resets_the_peak_and_records_the_process_overhead(monkeypatch):
    """The CUDA calls ``measuring_peak`` makes, on a stand-in for a device (no GPU here): the
    peak statistics are reset before the block, and the overhead is the memory in use beyond
    what this process's allocator reserves."""
    import torch

    from raysweep.plan.gpu_memory import measuring_peak

    calls: list[str] = []

    class Properties:
        total_memory, name = 80 * GIB, "NVIDIA H100 80GB HBM3"

    fake = {
        "is_available": lambda: True,
        "reset_peak_memory_stats": lambda device: calls.append(f"reset {device}"),
        "max_memory_allocated": lambda device: 7 * GIB,
        "memory_reserved": lambda device: 8 * GIB,
        "mem_get_info": lambda device: (80 * GIB - 8 * GIB - 600 * 2**20, 80 * GIB),
        "get_device_properties": lambda device: Properties(),
    }
    for name, value in fake.items():
        monkeypatch.setattr(torch.cuda, name, value)
    with measuring_peak("cuda") as peak:
        calls.append("block")
    assert calls == ["reset cuda", "block"]
    assert peak["measurement"] == MemoryMeasurement(7 * GIB, 80 * GIB, "NVIDIA H100 80GB HBM3",
                                                    overhead_bytes=600 * 2**20)


# ------------------------------------------------------------------------- measurements


def test_measurements_are_stored_as_json_and_read_back(tmp_path: Path):
    path = write_measurement(tmp_path, FINETUNE, MemoryMeasurement(5 * GIB, 40 * GIB, "GPU-X"))
    assert path == tmp_path / GPU_MEMORY_DIR / "small_resnet-finetune-b64.json"
    assert json.loads(path.read_text())["peak_bytes"] == 5 * GIB
    assert read_measurements(tmp_path) == {FINETUNE: MemoryMeasurement(5 * GIB, 40 * GIB,
                                                                       "GPU-X")}


def test_an_unreadable_measurement_is_skipped_with_a_warning(tmp_path: Path):
    write_measurement(tmp_path, FINETUNE, MemoryMeasurement(5 * GIB, 40 * GIB))
    (tmp_path / GPU_MEMORY_DIR / "broken.json").write_text("{not json")
    (tmp_path / GPU_MEMORY_DIR / "negative.json").write_text(json.dumps(
        {"encoder": "e", "protocol": "probe", "batch_size": 8, "peak_bytes": -1,
         "device_bytes": 10}))
    with pytest.warns(UserWarning, match="unreadable GPU memory measurement") as caught:
        found = read_measurements(tmp_path)
    assert len(caught) == 2 and list(found) == [FINETUNE]
    assert read_measurements(tmp_path / "nowhere") == {}


def test_measurements_in_an_object_store_are_read_back(s3) -> None:
    """Object-store paths have no order of their own: two stored kinds are listed by name."""
    probe = TrialKind("small_resnet", "probe", 256)
    write_measurement(s3, probe, MemoryMeasurement(2 * GIB, 40 * GIB))
    write_measurement(s3, FINETUNE, MemoryMeasurement(5 * GIB, 40 * GIB, "GPU-X"))
    assert read_measurements(s3) == {FINETUNE: MemoryMeasurement(5 * GIB, 40 * GIB, "GPU-X"),
                                     probe: MemoryMeasurement(2 * GIB, 40 * GIB)}
    assert list(read_measurements(s3)) == [FINETUNE, probe]


@pytest.mark.parametrize("peak", [True, 0, -1, 1.5, "5", None])
def test_a_peak_that_is_not_a_positive_integer_is_refused(peak: object) -> None:
    with pytest.raises(ValueError, match="must be positive integers"):
        MemoryMeasurement.from_dict({"peak_bytes": peak, "device_bytes": 10})
    assert MemoryMeasurement.from_dict({"peak_bytes": 3, "device_bytes": 10}) == \
        MemoryMeasurement(3, 10)


# ---------------------------------------------------------------------------------- plan


def test_plan_packs_a_measured_kind_by_its_peak_and_says_so(tmp_path: Path):
    spec = experiment(tmp_path)
    write_measurement(spec.directory, FINETUNE, MemoryMeasurement(20 * GIB, 80 * GIB, "H100"))
    cluster = ClusterResources(cpus=12, gpus=4)
    plan = make_plan(spec, cluster, measure_first=False)
    finetune = plan.eval_kinds[FINETUNE]
    # 3 per GPU; 12 CPUs / 4 GPUs = 3 CPUs per GPU, x 1/3: 1 CPU a trial.
    assert finetune.gpu == pytest.approx(1 / 3) and finetune.cpu == 1
    # 12 trials at once fill all four GPUs (3 each) and all 12 CPUs.
    assert plan.eval_concurrency == 12
    text = plan.describe()
    assert ("small_resnet finetune batch 64: 1 CPU, 0.3333 GPU (measured: peak 20.0 GiB x 1.25 "
            "of 80.0 GiB (H100): 3 per GPU)") in text
    # The probes of the same encoder are another kind, not measured: the default share.
    probe = plan.eval_kinds[TrialKind("small_resnet", "probe", 64)]
    assert probe.gpu == 0.25 and "default: the cluster has 4 GPUs; not measured" in probe.basis


def test_an_unmeasured_kind_measures_first_on_a_whole_gpu(tmp_path: Path):
    spec = experiment(tmp_path)
    write_measurement(spec.directory, FINETUNE, MemoryMeasurement(20 * GIB, 80 * GIB))
    plan = make_plan(spec, ClusterResources(cpus=16, gpus=4))
    first = plan.measuring_trials(plan.eval_trials)
    assert [(t.protocol, t.seeds) for t in first] == [("probe", (0,))]
    whole = plan.resources_of(first[0])
    assert (whole.gpu, whole.cpu) == (1.0, 4) and whole.measures_itself
    assert plan.measuring_concurrency(len(first)) == 1
    assert "small_resnet probe batch 64: 4 CPU, 1 GPU (measuring: the first trial" \
        in plan.describe()
    # The finetune trials are packed by their measurement from the start.
    assert not plan.resources_of(plan.eval_trials[0]).measures_itself


def test_a_share_in_the_spec_wins_and_nothing_is_sized_without_gpus(tmp_path: Path):
    spec = experiment(tmp_path, gpus_per_trial=0.5)
    write_measurement(spec.directory, FINETUNE, MemoryMeasurement(20 * GIB, 80 * GIB))
    plan = make_plan(spec, ClusterResources(cpus=16, gpus=4))
    assert plan.eval_kinds == {} and plan.measuring_trials(plan.eval_trials) == ()
    assert "0.5 GPU (spec: resources.gpus_per_trial)" in plan.describe()
    plan = make_plan(experiment(tmp_path), ClusterResources(cpus=2, gpus=0))
    assert plan.eval_kinds == {} and plan.eval_resources.gpu == 0


def test_the_margin_is_a_spec_field(tmp_path: Path):
    spec = experiment(tmp_path, gpu_memory_margin=1.0)
    write_measurement(spec.directory, FINETUNE, MemoryMeasurement(20 * GIB, 80 * GIB))
    plan = make_plan(spec, ClusterResources(cpus=16, gpus=4))
    assert plan.eval_kinds[FINETUNE].gpu == 0.25  # 80 / 20 = 4 per GPU without a margin


# ------------------------------------------------------------------- packing on fake GPUs

SCRIPT = textwrap.dedent('''
    import json, pathlib, sys, time
    import ray
    from ray import tune
    from raysweep.config import spec_from_data
    from raysweep.stages.evaluate import _resource_request
    from raysweep.plan.gpu_memory import MemoryMeasurement, TrialKind, write_measurement
    from raysweep.plan.trials import make_plan
    from raysweep.plan.resources import ClusterResources

    root = pathlib.Path(sys.argv[1])
    spec = spec_from_data({
        "name": "exp", "storage": str(root / "storage"),
        "evaluate": {"data": {"sources": [{"kind": "digits", "classes": ["0", "1"]}],
                              "image_size": 16},
                     "seeds": 6, "protocols": ["finetune"],
                     "encoders": [{"name": "R", "encoder": {"name": "small_resnet"}}]}})
    # A recorded measurement: 20 GiB peak x 1.25 on an 80 GiB device: 3 per GPU.
    write_measurement(spec.directory, TrialKind("small_resnet", "finetune", 64),
                      MemoryMeasurement(20 * 2**30, 80 * 2**30, "fake"))

    ray.init(num_cpus=6, num_gpus=2, include_dashboard=False, log_to_driver=False)
    plan = make_plan(spec, ClusterResources.detect(), measure_first=False)
    barrier = root / "started"
    barrier.mkdir(parents=True)

    def trainable(config):
        # Wait (up to 150 s: worker processes start slowly on a small machine) until all six
        # trials run at once; they can only when the packing lets them.
        (barrier / str(config["trial"]["seeds"][0])).touch()
        deadline = time.time() + 150
        while len(list(barrier.iterdir())) < 6 and time.time() < deadline:
            time.sleep(0.2)
        tune.report({"gpu_ids": ",".join(map(str, ray.get_gpu_ids())),
                     "all_at_once": len(list(barrier.iterdir())) == 6})

    trials = [{"condition": t.condition, "protocol": t.protocol, "seeds": list(t.seeds),
               "row_ids": [], "test_sets": []} for t in plan.eval_trials]
    tuner = tune.Tuner(tune.with_resources(trainable, _resource_request(plan)),
                       param_space={"trial": tune.grid_search(trials)},
                       tune_config=tune.TuneConfig(max_concurrent_trials=plan.eval_concurrency),
                       run_config=tune.RunConfig(storage_path=str(root / "tune"), verbose=0))
    rows = [r.metrics for r in tuner.fit()]
    share = plan.resources_of(plan.eval_trials[0])
    json.dump({"cpu": share.cpu, "gpu": share.gpu, "slots": plan.eval_concurrency,
               "trials": [{k: r[k] for k in ("gpu_ids", "all_at_once")} for r in rows]},
              open(sys.argv[2], "w"))
    ray.shutdown()
''')


@pytest.mark.slow
def test_measured_third_gpu_trials_fill_two_fake_gpus_three_each(tmp_path: Path):
    out = tmp_path / "packing.json"
    env = {key: value for key, value in os.environ.items()
           if key not in ("RAY_ADDRESS", "CUDA_VISIBLE_DEVICES")}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(out)],
                          env=env, timeout=400, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    packing = json.loads(out.read_text())
    assert packing["cpu"] == 1 and math.isclose(packing["gpu"], 1 / 3)
    assert packing["slots"] == 6
    per_gpu: dict[str, int] = {}
    for trial in packing["trials"]:
        per_gpu[trial["gpu_ids"]] = per_gpu.get(trial["gpu_ids"], 0) + 1
    assert sorted(per_gpu.values()) == [3, 3]  # every GPU holds three trials ...
    assert all(t["all_at_once"] for t in packing["trials"])  # ... all at the same time


# ------------------------------------------------------------------- the stage's two passes


def test_unmeasured_kinds_run_first_then_the_rest_are_packed_by_the_measurement(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from raysweep.plan.identity import identify_trials
    from raysweep.stages import evaluate as evaluate_stage

    spec = experiment(tmp_path, seeds=3)
    cluster = ClusterResources(cpus=12, gpus=4)
    monkeypatch.setattr(evaluate_stage, "make_plan",
                        lambda spec, **kw: make_plan(spec, cluster, **kw))
    monkeypatch.setattr(evaluate_stage, "build_tuner",
                        lambda spec, trials, *, plan, only=None: (plan, only))
    trials = identify_trials(spec)
    tuners = evaluate_stage.evaluation_tuners(spec, trials)
    plan, first = next(tuners)
    # One trial of each kind, each alone on a whole GPU.
    assert sorted((t.protocol, t.seeds) for t in first) == [("finetune", (0,)), ("probe", (0,))]
    assert all(plan.resources_of(t).gpu == 1.0 for t in first)
    # What the measuring trainable stores for the fine-tuning kind (the probe's measurement
    # failed): the rest is packed by it; the probes fall back to the default share.
    evaluate_stage.record_first_measurement(spec, first[0] if first[0].protocol == "finetune"
                                            else first[1],
                                            MemoryMeasurement(20 * GIB, 80 * GIB))
    plan, only = next(tuners)
    assert only is None
    finetune = [t for t in trials if t.protocol == "finetune"]
    assert plan.resources_of(finetune[1]).gpu == pytest.approx(1 / 3)
    probe = [t for t in trials if t.protocol == "probe"]
    assert plan.resources_of(probe[1]).gpu == 0.25
    assert next(tuners, None) is None


def test_a_kinds_first_measurement_is_kept(tmp_path: Path):
    from raysweep.plan.trials import eval_trials
    from raysweep.stages.evaluate import record_first_measurement

    spec = experiment(tmp_path)
    trial = eval_trials(spec)[0]
    record_first_measurement(spec, trial, MemoryMeasurement(3 * GIB, 80 * GIB))
    record_first_measurement(spec, trial, MemoryMeasurement(9 * GIB, 80 * GIB))
    assert read_measurements(spec.directory)[FINETUNE].peak_bytes == 3 * GIB


def test_nothing_is_measured_on_a_cpu():
    from raysweep.plan.gpu_memory import measuring_peak

    with measuring_peak("cpu") as peak:
        pass
    assert peak["measurement"] is None

