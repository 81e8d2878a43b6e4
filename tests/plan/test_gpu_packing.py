"""Trials packed onto fake GPUs: a Ray instance of its own with 8 CPUs and 4 GPUs (Ray
schedules GPU resources without CUDA) runs the evaluation trials with the resources and the
concurrency the plan gives, and every GPU holds its share of trials at once: 8 CPUs and 4 GPUs
at 0.5 GPU a trial give 1 CPU a trial and 8 trials at once (a fixed 4 CPUs a trial would run
2 and leave half the GPUs idle)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent('''
    import json, pathlib, sys, time
    import ray
    from ray import tune
    from raysweep.config import ResourcesSpec
    from raysweep.plan.resources import (ClusterResources, evaluation_trial_resources,
                                          max_concurrent_trials)

    ray.init(num_cpus=8, num_gpus=4, include_dashboard=False, log_to_driver=False)
    cluster = ClusterResources.detect()
    trial = evaluation_trial_resources(ResourcesSpec(gpus_per_trial=0.5), cluster)
    slots = max_concurrent_trials(trial, cluster, n_trials=8)

    barrier = pathlib.Path(sys.argv[1]) / "started"
    barrier.mkdir(parents=True)

    def trainable(config):
        # Wait (up to 150 s: worker processes start slowly on a small machine) until all
        # eight trials run at once; they can only when the packing lets them.
        (barrier / str(config["i"])).touch()
        deadline = time.time() + 150
        while len(list(barrier.iterdir())) < 8 and time.time() < deadline:
            time.sleep(0.2)
        tune.report({"gpu_ids": ",".join(map(str, ray.get_gpu_ids())),
                     "all_at_once": len(list(barrier.iterdir())) == 8})

    tuner = tune.Tuner(tune.with_resources(trainable, trial.as_ray()),
                       param_space={"i": tune.grid_search(list(range(8)))},
                       tune_config=tune.TuneConfig(max_concurrent_trials=slots),
                       run_config=tune.RunConfig(storage_path=sys.argv[1], verbose=0))
    results = tuner.fit()
    rows = [r.metrics for r in results]
    json.dump({"cpu": trial.cpu, "gpu": trial.gpu, "slots": slots,
               "trials": [{k: r[k] for k in ("gpu_ids", "all_at_once")} for r in rows]},
              open(sys.argv[2], "w"))
    ray.shutdown()
''')


def test_half_gpu_trials_fill_four_gpus_at_once(tmp_path: Path) -> None:
    out = tmp_path / "packing.json"
    env = {key: value for key, value in os.environ.items()
           if key not in ("RAY_ADDRESS", "CUDA_VISIBLE_DEVICES")}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "tune"), str(out)],
                          env=env, timeout=400, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    packing = json.loads(out.read_text())
    assert (packing["cpu"], packing["gpu"], packing["slots"]) == (1, 0.5, 8)
    trials = packing["trials"]
    assert len(trials) == 8
    # Each GPU holds two trials...
    per_gpu: dict[str, int] = {}
    for trial in trials:
        per_gpu[trial["gpu_ids"]] = per_gpu.get(trial["gpu_ids"], 0) + 1
    assert sorted(per_gpu.values()) == [2, 2, 2, 2] and len(per_gpu) == 4
    # ... and all eight ran at the same time.
    assert all(t["all_at_once"] for t in trials)
