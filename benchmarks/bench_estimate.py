"""How close ``raysweep run SPEC --dry-run --estimate`` comes to the real run, stage by stage.

One small study on this machine (a random ``small_resnet`` on BreastMNIST at 28 px): one
Barlow Twins pre-training run (2 epochs, batch 32) and an evaluate stage of fine-tuning (4 seeds,
2 epochs) and batched probes on a 128-image label budget, on ``ray.init(num_cpus=2)``. First the
estimate (:func:`raysweep.plan.estimate.estimate_plan`, its step times measured here), then the
stages run for real (:func:`raysweep.api.pretrain`, then :func:`raysweep.api.evaluate`), each
timed. Reported per stage: estimated and real wall time, and for the evaluate stage also the
estimated and real sum of trial times (``time_total_s`` of the rows: the training the estimate
models, without Ray's start-up, data loading and scheduling). Writes
``benchmarks/out/estimate.json``.

    OMP_NUM_THREADS=1 nice python benchmarks/bench_estimate.py
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RAYSWEEP_SHARED_DATA", ROOT / "tests" / "data" / "medmnist"))


def study(storage: Path) -> dict[str, Any]:
    data = {"sources": [{"kind": "medmnist", "path": str(DATA / "breastmnist.npz")}],
            "image_size": 28}
    return {
        "name": "estimate-bench", "storage": str(storage),
        "pretrain": [{"name": "bt", "data": data, "encoder": {"name": "small_resnet"},
                      "further": False, "epochs": 2, "batch_size": 32, "lr_max": 1e-3,
                      "projector": [128, 128]}],
        "evaluate": {"data": {**data, "label_count": 128}, "seeds": 4,
                     "protocols": ["finetune", "probe"],
                     "settings": {"epochs": 2, "head_epochs": 1, "batch_size": 32,
                                  "lr_max": 1e-3, "tta_views": 1},
                     "encoders": [{"name": "bt", "encoder": {"name": "small_resnet",
                                                             "weights": "pretrain:bt"}}]},
        "resources": {"max_concurrent_trials": 2}}


def main() -> None:
    import pandas as pd

    from raysweep import api
    from raysweep.config import spec_from_data
    from raysweep.experiment.runner import ensure_ray
    from raysweep.plan.estimate import cached_timer, count_images, estimate_plan, trial_seconds
    from raysweep.plan.resources import ClusterResources
    from raysweep.plan.trials import make_plan

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        spec = spec_from_data(study(Path(tmp)))
        plan = make_plan(spec, ClusterResources(cpus=2, gpus=0))
        timer = cached_timer()
        started = time.perf_counter()
        estimates = {e.stage: e for e in estimate_plan(plan, timer)}
        estimate_s = time.perf_counter() - started
        counts = count_images(spec.evaluate.data)
        estimated_trials = sum(trial_seconds(plan, t, counts, timer) for t in plan.eval_trials)
        ensure_ray(num_cpus=2)
        started = time.perf_counter()
        api.pretrain(spec)
        pretrain_s = time.perf_counter() - started
        started = time.perf_counter()
        table = pd.read_parquet(api.evaluate(spec))
        evaluate_s = time.perf_counter() - started
    # A fine-tuning row is one trial; the batched probes' rows share one trial (its longest).
    finetune = table[table["protocol"] == "finetune"]["time_total_s"].sum()
    probe = table[table["protocol"] == "probe"]["time_total_s"].max()
    record = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_before": load_before},
        "estimate_took_s": estimate_s,
        "pretrain": {"estimated_wall_s": estimates["pretrain"].wall_s, "real_wall_s": pretrain_s},
        "evaluate": {"estimated_wall_s": estimates["evaluate"].wall_s, "real_wall_s": evaluate_s,
                     "estimated_trial_s": estimated_trials,
                     "real_trial_s": float(finetune + probe), "trials": len(plan.eval_trials)},
    }
    out = ROOT / "benchmarks" / "out" / "estimate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
