"""Orchestration overhead of the evaluate stage against a plain Ray Tune grid, same trials.

Both arms run the same 40 short fine-tuning trials (2 conditions x 20 seeds; a random
``small_resnet`` on BreastMNIST at 28 px, one 1cycle epoch on a 128-image label budget, no LR
finder, about 1-2 s of training each) on one ``ray.init(num_cpus=2)``, one CPU per trial:

* ``raysweep``: the evaluate stage as a user runs it, :func:`raysweep.api.evaluate` (experiment
  lock, identity of every row, a fresh ``Tuner`` of function trainables from
  :func:`raysweep.stages.evaluate.build_tuner` with reused actors, rows written atomically,
  ``results.parquet`` consolidated);
* ``plain_tune``: what one writes with stock Ray Tune: one function trainable per (condition,
  seed) in a ``grid_search``, ``tune.with_resources({"cpu": 1})``, default ``TuneConfig``
  (a fresh actor per trial), each trial loading the data from the same decode cache, building
  the encoder and calling the same :func:`raysweep.evaluate.finetune`.

A trial's time is the fine-tuning itself (``time_total_s`` of its row: head epoch, 1cycle
epoch, evaluation with TTA), the same quantity on both sides, and

    overhead = wall x slots / sum of trial times - 1

(slots = trials that can run at once, 2 here): 0 when the slots are busy with fine-tuning all
the time, 0.25 when a quarter more slot-time goes to starting actors, importing, loading data,
scheduling and writing results. The arms alternate (``A B A B``) on the same Ray instance so that
load changes on a shared machine hit both. Writes ``benchmarks/out/evaluate_overhead.json``.

    nice python benchmarks/bench_evaluate_overhead.py
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RAYSWEEP_SHARED_DATA", ROOT / "tests" / "data" / "medmnist"))
CONDITIONS = ("random-a", "random-b")
SETTINGS = {"epochs": 1, "head_epochs": 1, "batch_size": 32, "lr_max": 1e-3, "tta_views": 1}


def orchestration_overhead(wall_s: float, slots: int, trial_seconds: Sequence[float]) -> float:
    """``wall x slots / sum(trial_seconds) - 1``: the share of slot-time not spent in trials."""
    busy = float(sum(trial_seconds))
    if busy <= 0 or wall_s <= 0 or slots < 1:
        raise ValueError(f"need positive wall time, slots and trial times, got {wall_s}, "
                         f"{slots}, {busy}")
    return wall_s * slots / busy - 1.0


def experiment_data(storage: Path, seeds: int, label_count: int) -> dict[str, Any]:
    data = {"sources": [{"kind": "medmnist", "path": str(DATA / "breastmnist.npz")}],
            "image_size": 28, "label_count": label_count}
    return {
        "name": "overhead", "storage": str(storage),
        "evaluate": {
            "data": data, "seeds": seeds, "protocols": ["finetune"], "settings": SETTINGS,
            "encoders": [{"name": name, "encoder": {"name": "small_resnet"}}
                         for name in CONDITIONS],
        },
        "resources": {"cpus_per_trial": 1},
    }


def run_raysweep(data: dict[str, Any]) -> dict[str, Any]:
    from raysweep import api
    from raysweep.config import spec_from_data
    from raysweep.plan.identity import stage_refs
    from raysweep.plan.trials import make_plan
    from raysweep.store.results import ResultsStore

    spec = spec_from_data(data)
    started = time.perf_counter()
    api.evaluate(spec)
    wall = time.perf_counter() - started
    store = ResultsStore(spec.directory)
    rows = [store.read(ref) for ref in stage_refs(spec)]
    return {"wall_s": wall, "slots": make_plan(spec).eval_concurrency,
            "trial_s": [float(r["time_total_s"]) for r in rows],
            "accuracy": [float(r["accuracy"]) for r in rows]}


def plain_trainable(config: dict[str, Any], data: dict[str, Any]) -> None:
    """One (condition, seed): load the data, build the encoder, fine-tune, report."""
    from ray import tune

    from raysweep.config import spec_from_data
    from raysweep.data import load_dataset
    from raysweep.evaluate import finetune
    from raysweep.stages.evaluate import condition_by_name, condition_encoder

    spec = spec_from_data(data)
    assert spec.evaluate is not None
    dataset = load_dataset(spec.evaluate.data)
    cond = condition_by_name(spec, config["condition"])
    row = finetune(condition_encoder(spec, cond), dataset.labelled("train"),
                   dataset.labelled("test"), settings=spec.evaluate.settings,
                   seed=config["seed"], class_names=dataset.classes)
    tune.report({"finetune_s": float(row["time_total_s"]), "accuracy": float(row["accuracy"])})


def run_plain_tune(data: dict[str, Any], storage: Path) -> dict[str, Any]:
    from ray import tune

    seeds = list(range(data["evaluate"]["seeds"]))
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(plain_trainable, data=data), {"cpu": 1}),
        param_space={"condition": tune.grid_search(list(CONDITIONS)),
                     "seed": tune.grid_search(seeds)},
        run_config=tune.RunConfig(name="plain", storage_path=str(storage), verbose=0))
    started = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - started
    if results.errors:
        raise RuntimeError(f"{len(results.errors)} plain Tune trials failed: {results.errors[0]}")
    metrics = [r.metrics for r in results]
    return {"wall_s": wall, "slots": 2, "trial_s": [float(m["finetune_s"]) for m in metrics],
            "accuracy": [float(m["accuracy"]) for m in metrics]}


def record(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace,
           load_before: list[float]) -> dict[str, Any]:
    """The JSON record of the runs so far (written after every run: a run cut short by a
    time limit keeps what it measured)."""
    from raysweep.storage.provenance import package_versions

    summary = {arm: {"median_overhead": statistics.median(r["overhead"] for r in rs),
                     "median_wall_s": statistics.median(r["wall_s"] for r in rs),
                     "median_trial_s": statistics.median(t for r in rs for t in r["trial_s"])}
               for arm, rs in runs.items() if rs}
    return {
        "benchmark": "evaluate_overhead",
        "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "ray_num_cpus": 2, "seeds": args.seeds, "conditions": list(CONDITIONS),
        "label_count": args.label_count, "settings": SETTINGS,
        "load_average_before": load_before,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "packages": package_versions(), "summary": summary, "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="seeds per condition (2 conditions)")
    parser.add_argument("--label-count", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="A B rounds")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "out" / "evaluate_overhead.json")
    args = parser.parse_args()

    import ray

    from raysweep.config import spec_from_data
    from raysweep.data import load_dataset
    from raysweep.experiment.runner import ensure_ray
    from raysweep.storage.atomic import atomic_write_json

    load_before = [round(v, 2) for v in os.getloadavg()]
    runs: dict[str, list[dict[str, Any]]] = {"raysweep": [], "plain_tune": []}
    with tempfile.TemporaryDirectory(prefix="raysweep-bench-") as tmp:
        os.environ["RAYSWEEP_CACHE"] = str(Path(tmp) / "cache")  # workers inherit it
        # A token of this Ray instance's own (its workers inherit it): Ray 2.60 otherwise keeps
        # the token in ~/.ray/auth_token, which another Ray started on a shared machine replaces,
        # and every worker started after that fails to authenticate.
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
        warm = spec_from_data(experiment_data(Path(tmp) / "warm", args.seeds, args.label_count))
        assert warm.evaluate is not None
        load_dataset(warm.evaluate.data, progress=False)  # decode once, outside the timing
        ensure_ray(num_cpus=2)
        try:
            for repeat in range(args.repeats):
                for arm in runs:
                    storage = Path(tmp) / f"{arm}-{repeat}"
                    data = experiment_data(storage, args.seeds, args.label_count)
                    run = (run_raysweep(data) if arm == "raysweep"
                           else run_plain_tune(data, storage))
                    run["trials"] = len(run["trial_s"])
                    run["overhead"] = orchestration_overhead(run["wall_s"], run["slots"],
                                                             run["trial_s"])
                    run["load_average"] = [round(v, 2) for v in os.getloadavg()]
                    runs[arm].append(run)
                    atomic_write_json(args.out, record(runs, args, load_before))
                    print(f"{arm} #{repeat + 1}: {run['trials']} trials, wall {run['wall_s']:.1f} s,"
                          f" trials {sum(run['trial_s']):.1f} s (median "
                          f"{statistics.median(run['trial_s']):.2f} s), overhead "
                          f"{run['overhead']:.1%}, load {run['load_average']}", flush=True)
        finally:
            ray.shutdown()

    summary = record(runs, args, load_before)["summary"]
    for arm, s in summary.items():
        print(f"{arm:12s} overhead {s['median_overhead']:.1%}  wall {s['median_wall_s']:.1f} s  "
              f"trial {s['median_trial_s']:.2f} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
