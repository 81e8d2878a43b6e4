"""One command that checks raysweep's GPU path and leaves its numbers behind.

    python benchmarks/gpu_acceptance.py --device cuda          # one GPU machine, under 8 minutes
    python benchmarks/gpu_acceptance.py --smoke --device cpu   # every part, tiny (the test suite)

Parts, in this order; each is timed, and one that fails or outlasts its limit is recorded as
such while the others go on (on a GPU each part runs in a process of its own, killed after its
limit, so that a CUDA error or a hang stops that part only; ``--isolate yes`` does so on a CPU):

``run``
    A real ``raysweep run`` (``python -m raysweep.cli run SPEC``) of a small study: Barlow Twins
    pre-training through Ray Train on one worker (``nccl`` on a GPU), then fine-tunes and
    batched probes of the pre-trained and a random encoder as Ray Tune trials packed by their
    measured peak memory (:mod:`raysweep.plan.gpu_memory`: the first trial of each kind alone
    on a whole GPU, the rest at the measured share). Recorded: the process-group backend, world
    size, bf16 and channels_last the pre-training worker ran with; per kind the measured peak,
    the process overhead, the share and CPUs the plan gives and the plan's concurrency; per
    trial its measured peak and its time window, hence how many trials ran at once in each
    pass; the rows and their precision columns.
``precision``
    Fine-tuning and single-seed probes of the same seeds in the product's default precision
    (``precision: auto``: bf16 autocast + channels_last on a GPU; forced on a CPU) and in fp32,
    with a fixed ``lr_max``: the largest metric and TTA-probability differences against the
    tolerance docs/protocol.md "Precision" states (metrics 0.05, probabilities 0.01).
``throughput_paper``, ``throughput_medmnist``
    Barlow Twins pre-training images/s of raysweep's step against lightly's recipe on identical
    work (``bench_vs_lightly.py``; lightly's loader with one worker per core, as its users run
    it), at the paper's setting (ResNet-50, 224 px, projector 8192-8192-8192, batch 128) and
    at MedMNIST's (ResNet-18 with the CIFAR stem, 32 px, batch 512): raysweep in fp32 and in its
    GPU default (bf16 + channels_last), lightly in fp32 (its examples) and under bf16
    autocast, each arm's FLOPs per step (``FlopCounterMode``) and MFU against the card's peak
    (``bench_common.PEAK_FLOPS``: bf16 for bf16 arms, TF32 for fp32 ones).
``probe``
    35 batched probe heads against 35 sequential single-seed probes (``bench_probe_batched.py``):
    the speed-up and whether the rows are identical.

Writes ``gpu_acceptance.json`` (every field of every part, None where it could not be measured,
with the reason) and ``gpu_acceptance.md`` (the tables for BENCHMARKS.md) to ``--out-dir``
(default ``benchmarks/out``). ``RAY_ADDRESS`` set: the run joins that cluster; else one local
Ray instance is started for it and stopped after it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from bench_common import DATA, OUT, ROOT, machine, sync
from bench_probe_batched import compare_probes
from bench_vs_lightly import Setting, compare

from raysweep.storage.atomic import atomic_write_json, atomic_write_text
from raysweep.storage.provenance import provenance

PARTS = ("run", "precision", "throughput_paper", "throughput_medmnist", "probe")
#: The tolerance of bf16 + channels_last against fp32 that docs/protocol.md "Precision" states.
METRIC_TOLERANCE = 0.05
PROBABILITY_TOLERANCE = 0.01
PRECISION_METRICS = ("accuracy", "f1_weighted", "f1_macro", "balanced_accuracy", "auc_ovr")
#: The fields every part's record holds (None where the part could not measure them).
FIELDS: dict[str, tuple[str, ...]] = {
    "run": ("spec", "experiment_dir", "exit_code", "wall_s", "ray_address", "pretrain",
            "kinds", "plan_concurrency", "passes", "max_trials_at_once", "trials", "rows",
            "row_precision", "log"),
    "precision": ("encoder", "image_size", "seeds", "resolved", "protocols", "max_metric_diff",
                  "max_probability_diff", "metric_tolerance", "probability_tolerance",
                  "within_tolerance", "fp32_s", "default_s", "machine"),
    "throughput_paper": ("setting", "loader_workers", "arms", "default_arm",
                         "default_vs_lightly", "default_mfu", "lightly_skipped",
                         "loss_function_abs_difference", "machine"),
    "probe": ("seeds", "settings", "batched_s", "sequential_s", "speedup", "same_rows",
              "differing_rows", "same_predictions", "max_probability_diff", "agree",
              "mean_accuracy", "machine"),
}
FIELDS["throughput_medmnist"] = FIELDS["throughput_paper"]


# ---------------------------------------------------------------------------------------------
# Sizes: the GPU check and the CPU smoke test
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """The sizes of one mode and each part's time limit (seconds)."""

    name: str
    run_spec: Callable[[Path], dict[str, Any]]
    precision: dict[str, Any]
    throughput: dict[str, Setting]
    probe: dict[str, Any]
    limits: dict[str, float]


def breastmnist_source() -> dict[str, str]:
    return {"kind": "medmnist", "path": str(DATA / "breastmnist.npz")}


def full_run_spec(work: Path) -> dict[str, Any]:
    """The study of the GPU check: ResNet-50 at 224 px on BreastMNIST, Barlow Twins with the
    paper's projector for 2 epochs, then 4 seeds of fine-tuning and batched probes of the
    pre-trained and a random encoder (2 epochs, a fixed lr_max). Pre-training sees the training
    split only, never the images the evaluation tests on."""
    data = {"sources": [breastmnist_source()], "image_size": 224}
    train_images = {"sources": [{**breastmnist_source(), "split": "train"}], "image_size": 224}
    return {
        "name": "gpu-acceptance", "storage": str(work / "runs"),
        "pretrain": [{"name": "SSL", "data": train_images, "method": "barlow_twins", "further": False,
                      "epochs": 2, "encoder": {"name": "resnet50"}, "batch_size": 128,
                      "projector": [8192, 8192, 8192], "lr_max": 1e-3, "num_workers": 1,
                      "keys": {"initial": "SSL"}}],
        "evaluate": {
            "data": data, "protocols": ["finetune", "probe"], "seeds": 4,
            "settings": {"epochs": 2, "batch_size": 64, "lr_max": 1e-3, "tta_views": 1},
            "encoders": [{"name": "SSL", "encoder": {"name": "resnet50", "weights": "pretrain:SSL"}},
                         {"name": "random", "encoder": {"name": "resnet50", "weights": "random"},
                          "keys": {"initial": "random"}}]},
    }


def smoke_run_spec(work: Path) -> dict[str, Any]:
    """The smoke test's study: digits at 16 px, a small ResNet, one epoch everywhere."""
    digits = {"sources": [{"kind": "digits", "classes": ["0", "1", "2"]}], "image_size": 16,
              "test_fraction": 0.3}
    train_digits = {**digits, "sources": [{**digits["sources"][0], "split": "train"}]}
    return {
        "name": "gpu-acceptance-smoke", "storage": str(work / "runs"),
        "pretrain": [{"name": "SSL", "data": train_digits, "method": "barlow_twins", "further": False,
                      "epochs": 1, "encoder": {"name": "small_resnet"}, "batch_size": 64,
                      "projector": [32, 32], "lr_max": 2e-3, "num_workers": 1}],
        "evaluate": {
            "data": {**digits, "label_count": 45},
            "protocols": ["finetune", "probe"], "seeds": 2,
            "settings": {"epochs": 1, "batch_size": 16, "lr_max": 1e-3, "tta_views": 0,
                         "augmentation": "supervised_upright"},
            "encoders": [{"name": "SSL",
                          "encoder": {"name": "small_resnet", "weights": "pretrain:SSL"}}]},
        "resources": {"cpus_per_trial": 1},
    }


def full_scale() -> Scale:
    workers = os.cpu_count() or 1
    common = {"variants": ("bf16+channels_last",), "lightly_bf16": True,
              "loader_workers": workers, "rounds": 3, "steps": 10, "warmup_steps": 3,
              "schedule": "blocks", "flops": True, "first_losses": 5}
    return Scale(
        name="full", run_spec=full_run_spec,
        precision={"encoder": "resnet50", "image_size": 224, "seeds": 3, "max_train": 192,
                   "settings": {"epochs": 2, "lr_max": 1e-3, "batch_size": 32, "tta_views": 2}},
        throughput={
            "throughput_paper": Setting(encoder="resnet50", image_size=224, batch=128,
                                        projector=(8192, 8192, 8192), dataset="breastmnist",
                                        **common),
            "throughput_medmnist": Setting(encoder="resnet18-3x3", image_size=32, batch=512,
                                           projector=(2048, 2048, 2048),
                                           dataset="pneumoniamnist", **common)},
        probe={"seeds": 35, "epochs": 3, "lr_finder_iters": 100},
        limits={"run": 210, "precision": 60, "throughput_paper": 75, "throughput_medmnist": 60,
                "probe": 60})


def smoke_scale() -> Scale:
    tiny = {"encoder": "small_resnet", "image_size": 16, "batch": 8,
            "projector": (32, 32, 32), "dataset": "breastmnist", "max_images": 32,
            "variants": ("bf16+channels_last",), "lightly_bf16": True,
            "loader_workers": 1, "rounds": 1, "steps": 1,
            "warmup_steps": 1, "schedule": "blocks", "flops": True, "first_losses": 3}
    return Scale(
        name="smoke", run_spec=smoke_run_spec,
        precision={"encoder": "small_resnet", "image_size": 28, "seeds": 1, "max_train": 48,
                   "max_test": 48,
                   "settings": {"epochs": 1, "lr_max": 1e-3, "batch_size": 16, "tta_views": 1}},
        throughput={"throughput_paper": Setting(**tiny), "throughput_medmnist": Setting(**tiny)},
        probe={"seeds": 3, "epochs": 1, "lr_finder_iters": 5, "max_train": 48, "max_test": 48},
        # Generous: a shared CPU's load, not the work, sets these times.
        limits={"run": 900, "precision": 900, "throughput_paper": 900,
                "throughput_medmnist": 900, "probe": 900})


# ---------------------------------------------------------------------------------------------
# Part "run": a real `raysweep run` and what it left in storage
# ---------------------------------------------------------------------------------------------


def ray_cluster() -> tuple[str, bool]:
    """(the GCS address a run joins, whether this process started that Ray instance): the
    cluster of ``RAY_ADDRESS``, the one this process is connected to, or a local one started
    by raysweep's own ``ensure_ray`` (without a dashboard where Ray's dashboard cannot run)."""
    import ray

    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], False
    if ray.is_initialized():
        return ray.get_runtime_context().gcs_address, False
    from raysweep.runtime.ray_session import ensure_ray

    try:
        ensure_ray()
    except Exception as err:  # noqa: BLE001 - e.g. the dashboard's packages are missing
        print(f"ray with a dashboard did not start ({err}); starting it without", flush=True)
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False)
    return ray.get_runtime_context().gcs_address, True


def run_cli(spec_path: Path, work: Path, address: str, limit: float) -> tuple[int, float, Path]:
    """``python -m raysweep.cli run SPEC`` joined to ``address``, its output in a log; killed
    with its process group after ``limit`` seconds. (exit code (-9 when killed), wall s, log)."""
    log = work / "run.log"
    env = {**os.environ, "RAY_ADDRESS": address, "RAYSWEEP_CACHE": str(work / "cache"),
           "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "raysweep.cli", "run", str(spec_path)],
                                   env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=ROOT)
        try:
            code = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = -9
    return code, time.perf_counter() - started, log


def pretrain_record(experiment: Path) -> dict[str, Any] | None:
    """What the pre-training worker ran with, from the finished run's ``meta.json``."""
    metas = sorted(experiment.glob("pretrain/*/meta.json"))
    if not metas:
        return None
    meta = json.loads(metas[0].read_text())
    worker = meta.get("worker") or {}
    final = meta.get("final_metrics") or {}
    return {"backend": worker.get("backend"), "world_size": worker.get("world_size"),
            "device": worker.get("device"), "bf16": worker.get("bf16"),
            "channels_last": worker.get("channels_last"), "use_gpu": meta.get("use_gpu"),
            "fit_time_s": meta.get("fit_time_s"), "epochs": meta.get("epochs_trained"),
            "images_per_s": final.get("images_per_s")}


def kinds_record(spec: Any) -> tuple[list[dict[str, Any]], int]:
    """Per kind of trial: its stored measurement and the resources the plan gives it now (one
    entry, ``every trial``, where shares are not sized from memory); and the plan's concurrency (:func:`raysweep.plan.trials.make_plan`, measurements as stored)."""
    from raysweep.plan.gpu_memory import read_measurements, trials_per_gpu
    from raysweep.plan.trials import make_plan

    plan = make_plan(spec, measure_first=False)
    measured = read_measurements(spec.directory)
    margin = spec.resources.gpu_memory_margin
    if not plan.eval_kinds:  # no GPU shares sized from memory (no GPU): one entry for all
        res = plan.eval_resources
        return [{"kind": "every trial", "cpus": res.cpu, "gpu_share": res.gpu,
                 "basis": res.basis, "peak_bytes": None, "overhead_bytes": None,
                 "device_bytes": None, "device_name": None, "trials_per_gpu": None}
                ], plan.eval_concurrency
    kinds = []
    for kind, res in sorted(plan.eval_kinds.items()):
        m = measured.get(kind)
        kinds.append({
            "kind": kind.describe(), "cpus": res.cpu, "gpu_share": res.gpu, "basis": res.basis,
            "peak_bytes": m.peak_bytes if m else None,
            "overhead_bytes": m.overhead_bytes if m else None,
            "device_bytes": m.device_bytes if m else None,
            "device_name": m.device_name if m else None,
            "trials_per_gpu": trials_per_gpu(m.peak_bytes, m.device_bytes, margin,
                                             m.overhead_bytes) if m else None})
    return kinds, plan.eval_concurrency


def most_at_once(windows: list[tuple[float, float]]) -> int:
    """The largest number of ``(start, end)`` windows open at one moment (an end before a
    start at the same instant)."""
    events = sorted([(start, 1) for start, _ in windows] + [(end, -1) for _, end in windows],
                    key=lambda e: (e[0], e[1]))
    running = best = 0
    for _, change in events:
        running += change
        best = max(best, running)
    return best


def tune_passes(experiment: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per Tune pass of the evaluate stage (measuring, then packed): its trials and the most
    that ran at once; and every trial's reported window and measured peak (Tune's
    ``result.json`` of each trial)."""
    passes, trials = [], []
    for tune_dir in sorted(experiment.glob("tune/evaluate-*")):
        windows = []
        for result in sorted(tune_dir.glob("*/result.json")):
            lines = result.read_text().splitlines()
            if not lines:
                continue
            last = json.loads(lines[-1])
            config = last.get("config", {}).get("trial", {})
            record = {"pass": tune_dir.name, "condition": config.get("condition"),
                      "protocol": config.get("protocol"), "seeds": config.get("seeds"),
                      **{k: last.get(k) for k in ("started_at", "finished_at",
                                                  "gpu_peak_bytes", "gpu_overhead_bytes")}}
            trials.append(record)
            if record["started_at"] is not None and record["finished_at"] is not None:
                windows.append((record["started_at"], record["finished_at"]))
        passes.append({"tune_dir": tune_dir.name, "trials": len(windows),
                       "max_at_once": most_at_once(windows)})
    return passes, trials


def rows_record(experiment: Path) -> tuple[int | None, dict[str, int] | None]:
    """(rows in ``results.parquet``, rows by their precision columns)."""
    import pandas as pd

    path = experiment / "results.parquet"
    if not path.is_file():
        return None, None
    table = pd.read_parquet(path)
    labels = [f"{p}/channels_last={c}" for p, c in zip(
        table.get("precision", pd.Series(["fp32"] * len(table))).fillna("fp32"),
        table.get("channels_last", pd.Series([False] * len(table))).fillna(False),
        strict=True)]
    return len(table), {label: labels.count(label) for label in sorted(set(labels))}


def part_run(scale: Scale, device: torch.device, work: Path, limit: float) -> dict[str, Any]:
    """A real ``raysweep run`` of ``scale``'s study, and what it left in storage."""
    from raysweep.config import spec_from_data

    data = scale.run_spec(work)
    spec = spec_from_data(data)
    work.mkdir(parents=True, exist_ok=True)
    spec_path = work / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
    address, started = ray_cluster()
    try:
        code, wall, log = run_cli(spec_path, work, address, limit)
        experiment = Path(str(spec.directory))
        kinds, concurrency = kinds_record(spec)
    finally:
        if started:
            import ray

            ray.shutdown()
    passes, trials = tune_passes(experiment)
    n_rows, precision = rows_record(experiment)
    record = {"spec": data, "experiment_dir": str(experiment), "exit_code": code, "wall_s": wall,
              "ray_address": address, "pretrain": pretrain_record(experiment), "kinds": kinds,
              "plan_concurrency": concurrency, "passes": passes,
              "max_trials_at_once": max((p["max_at_once"] for p in passes), default=None),
              "trials": trials, "rows": n_rows, "row_precision": precision, "log": str(log)}
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise PartFailed(f"raysweep run exited {code}: {tail[0][:300]}", record)
    return record


class PartFailed(RuntimeError):
    """A part that failed but measured something: ``record`` keeps what it got."""

    def __init__(self, message: str, record: dict[str, Any]) -> None:
        super().__init__(message)
        self.record = record


# ---------------------------------------------------------------------------------------------
# Part "precision": the default precision against fp32, same seeds
# ---------------------------------------------------------------------------------------------


def precision_pair(settings: Any, device: torch.device) -> tuple[Any, Any]:
    """(fp32 settings, the default's): ``precision: auto`` on a GPU (bf16 + channels_last);
    forced on a CPU, where ``auto`` is fp32."""
    fp32 = settings.replace(precision="fp32", channels_last=False)
    default = settings if device.type == "cuda" else settings.replace(precision="bf16",
                                                                      channels_last=True)
    return fp32, default


def part_precision(scale: Scale, device: torch.device) -> dict[str, Any]:
    """Fine-tunes and probes of the same seeds in fp32 and in the default precision: the
    largest metric and TTA-probability differences against docs/protocol.md's tolerance."""
    from bench_probe_batched import breastmnist

    from raysweep.config import EvaluationSpec
    from raysweep.evaluate import finetune, probe_single
    from raysweep.evaluate.phases import Precision
    from raysweep.models import build_encoder

    cfg = scale.precision
    train, test, classes = breastmnist(cfg["max_train"], cfg.get("max_test"))
    if cfg["image_size"] != 28:
        train, test = resize(train, cfg["image_size"]), resize(test, cfg["image_size"])
    encoder = build_encoder(cfg["encoder"], generator=torch.Generator().manual_seed(0))
    fp32, default = precision_pair(EvaluationSpec(device=str(device), **cfg["settings"]), device)
    metric_diff = prob_diff = 0.0
    seconds = {"fp32": 0.0, "default": 0.0}
    for run in (finetune, probe_single):
        for seed in range(cfg["seeds"]):
            out = {}
            for name, settings in (("fp32", fp32), ("default", default)):
                sync(device)
                started = time.perf_counter()
                out[name] = run(encoder, train, test, settings=settings, seed=seed,
                                class_names=classes, device=str(device),
                                return_probabilities=True)
                sync(device)
                seconds[name] += time.perf_counter() - started
            (row_a, p_a), (row_b, p_b) = out["fp32"], out["default"]
            metric_diff = max(metric_diff, *(abs(row_a[m] - row_b[m]) for m in PRECISION_METRICS
                                             if m in row_a and m in row_b))
            prob_diff = max(prob_diff, float((p_a - p_b).abs().max()))
    resolved = Precision.resolve(default, device)
    return {"encoder": cfg["encoder"], "image_size": cfg["image_size"], "seeds": cfg["seeds"],
            "resolved": {"bf16": resolved.bf16, "channels_last": resolved.channels_last},
            "protocols": ["finetune", "probe"], "max_metric_diff": metric_diff,
            "max_probability_diff": prob_diff, "metric_tolerance": METRIC_TOLERANCE,
            "probability_tolerance": PROBABILITY_TOLERANCE,
            "within_tolerance": metric_diff <= METRIC_TOLERANCE
            and prob_diff <= PROBABILITY_TOLERANCE,
            "fp32_s": seconds["fp32"], "default_s": seconds["default"], "machine": machine(device)}


def resize(images_labels: tuple[Any, Any], size: int) -> tuple[Any, Any]:
    """uint8 images (N, C, H, W) resized to ``size`` px (bilinear), labels unchanged."""
    images = torch.from_numpy(np.ascontiguousarray(images_labels[0])).float()
    out = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear",
                                          align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).numpy(), images_labels[1]


# ---------------------------------------------------------------------------------------------
# Parts "throughput_*" and "probe"
# ---------------------------------------------------------------------------------------------


def part_throughput(setting: Setting, device: torch.device) -> dict[str, Any]:
    """raysweep's pre-training step against lightly's recipe (``bench_vs_lightly.compare``):
    every arm, and raysweep's default arm (bf16 + channels_last) against lightly's fp32 arm."""
    result = compare(setting, device)
    arms = result["arms"]
    default = "raysweep+bf16+channels_last" if "raysweep+bf16+channels_last" in arms \
        else "raysweep"
    chosen = arms[default]
    skipped = sorted(name for name, arm in arms.items() if arm["skipped"])
    return {"setting": {k: result[k] for k in ("encoder", "image_size", "batch", "projector",
                                                "dataset", "images", "rounds", "steps",
                                                "warmup_steps", "schedule")},
            "loader_workers": setting.loader_workers, "arms": arms, "default_arm": default,
            "default_vs_lightly": chosen["ratio_to_lightly"], "default_mfu": chosen["mfu"],
            "lightly_skipped": skipped or None,
            "loss_function_abs_difference": result["loss_function_abs_difference"],
            "machine": machine(device) | {"packages": result["packages"]}}


def part_probe(scale: Scale, device: torch.device) -> dict[str, Any]:
    """35 batched probe heads against 35 sequential probes (``bench_probe_batched``)."""
    result = compare_probes(device=str(device), **scale.probe)
    return {k: result[k] for k in FIELDS["probe"] if k != "machine"} | {
        "machine": result["machine"]}


# ---------------------------------------------------------------------------------------------
# Running the parts: each timed, each failing alone
# ---------------------------------------------------------------------------------------------


def run_part(name: str, scale: Scale, device: torch.device, work: Path) -> dict[str, Any]:
    """Part ``name``'s record (raises on failure)."""
    if name == "run":
        return part_run(scale, device, work / "run", scale.limits["run"])
    if name == "precision":
        return part_precision(scale, device)
    if name == "probe":
        return part_probe(scale, device)
    return part_throughput(scale.throughput[name], device)


def outcome(name: str, started: float, limit: float, record: dict[str, Any] | None,
            error: str | None) -> dict[str, Any]:
    """One part's entry: status (ok / failed / over_limit), seconds, limit, error and every
    field of the part (None where it was not measured)."""
    seconds = time.perf_counter() - started
    fields = {key: (record or {}).get(key) for key in FIELDS[name]}
    extra = {k: v for k, v in (record or {}).items() if k not in fields}
    status = "failed" if error else ("over_limit" if seconds > limit else "ok")
    return {"status": status, "seconds": seconds, "limit_s": limit, "error": error,
            **fields, **extra}


def in_process(name: str, scale: Scale, device: torch.device, work: Path) -> dict[str, Any]:
    """Part ``name`` in this process; an exception is recorded, not raised."""
    started = time.perf_counter()
    record, error = None, None
    try:
        record = run_part(name, scale, device, work)
    except PartFailed as err:
        record, error = err.record, str(err)
    except Exception as err:  # noqa: BLE001 - one part's failure must not stop the others
        traceback.print_exc()
        error = f"{type(err).__name__}: {err}".splitlines()[0][:500]
    return outcome(name, started, scale.limits[name], record, error)


def isolated(name: str, scale: Scale, device: torch.device, work: Path) -> dict[str, Any]:
    """Part ``name`` in a process of its own (``--part``), killed after its limit: a CUDA
    error, a crash or a hang ends that part only."""
    started = time.perf_counter()
    result = work / f"{name}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--device",
               str(device), "--work", str(work)] + (["--smoke"] if scale.name == "smoke" else [])
    limit = scale.limits[name] + 60  # the process's start-up and its own clean-up
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    try:
        code = subprocess.run(command, timeout=limit, cwd=ROOT, env=env, check=False).returncode
    except subprocess.TimeoutExpired:
        return outcome(name, started, scale.limits[name], None,
                       f"killed after {limit:.0f} s (limit {scale.limits[name]:.0f} s)")
    if not result.is_file():
        return outcome(name, started, scale.limits[name], None,
                       f"the part's process exited {code} without a record")
    entry = json.loads(result.read_text())
    entry["seconds"] = time.perf_counter() - started  # with the process's start-up
    return entry


def run_parts(parts: list[str], scale: Scale, device: torch.device, work: Path,
              isolate: bool) -> dict[str, Any]:
    """Every part in turn; its entry printed as it ends (progress)."""
    results = {}
    for name in parts:
        print(f"== {name} ==", flush=True)
        runner = isolated if isolate else in_process
        results[name] = runner(name, scale, device, work)
        entry = results[name]
        print(f"== {name}: {entry['status']} in {entry['seconds']:.1f} s "
              f"{entry['error'] or ''}", flush=True)
    return results


# ---------------------------------------------------------------------------------------------
# The Markdown table
# ---------------------------------------------------------------------------------------------


def fmt(value: Any, spec: str = ".3g") -> str:
    return "" if value is None else format(value, spec) if isinstance(value, float) \
        else str(value)


def markdown(record: dict[str, Any]) -> str:
    """The tables for BENCHMARKS.md: one line per part, then the throughput arms."""
    info = record["machine"]
    lines = [f"GPU acceptance ({record['scale']}) on {info['device_name']} "
             f"({info['device']}, torch {info['torch']}, CUDA {info['cuda']}), "
             f"{record['total_s']:.0f} s in all, {record['time']}.", "",
             "| part | status | s | result |", "|---|---|---|---|"]
    for name, entry in record["parts"].items():
        lines.append(f"| {name} | {entry['status']} | {entry['seconds']:.1f} | "
                     f"{summary_line(name, entry)} |")
    lines += ["", "| setting | arm | images/s | x lightly | MFU | peak basis |",
              "|---|---|---|---|---|---|"]
    for name in ("throughput_paper", "throughput_medmnist"):
        for arm, row in (record["parts"].get(name, {}).get("arms") or {}).items():
            lines.append(f"| {name.removeprefix('throughput_')} | {arm} | "
                         f"{fmt(row['median_images_per_s'], '.1f')} | "
                         f"{fmt(row['ratio_to_lightly'], '.2f')} | {fmt(row['mfu'], '.1%')} | "
                         f"{(row['skipped'] or row['error'] or row['peak_basis'] or '')[:80]} |")
    return "\n".join(lines) + "\n"


def summary_line(name: str, e: dict[str, Any]) -> str:
    """One part's result in a few words."""
    if e["error"]:
        return e["error"][:200].replace("|", "/")
    if name == "run":
        pre = e["pretrain"] or {}
        return (f"backend {pre.get('backend')}, bf16 {pre.get('bf16')}, channels_last "
                f"{pre.get('channels_last')}; {e['rows']} rows; plan {e['plan_concurrency']} at "
                f"once, at most {e['max_trials_at_once']} ran at once")
    if name == "precision":
        return (f"max metric diff {fmt(e['max_metric_diff'])} (<= {METRIC_TOLERANCE}), max "
                f"probability diff {fmt(e['max_probability_diff'])} (<= "
                f"{PROBABILITY_TOLERANCE}): {'within' if e['within_tolerance'] else 'OUTSIDE'}")
    if name == "probe":
        return (f"{e['seeds']} seeds: batched {fmt(e['batched_s'])} s, sequential "
                f"{fmt(e['sequential_s'])} s, x{fmt(e['speedup'])}; same rows {e['same_rows']}")
    return (f"{e['default_arm']}: x{fmt(e['default_vs_lightly'])} of lightly, MFU "
            f"{fmt(e['default_mfu'], '.1%') or 'n/a'}")


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="every part at a tiny scale")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated among {', '.join(PARTS)}")
    parser.add_argument("--isolate", choices=("auto", "yes", "no"), default="auto",
                        help="each part in a process of its own (auto: on a GPU)")
    parser.add_argument("--out-dir", type=Path, default=OUT)
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # one isolated part
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    scale = smoke_scale() if args.smoke else full_scale()
    if args.part:  # inside an isolated part's process
        entry = in_process(args.part, scale, device, args.work)
        atomic_write_json(args.work / f"{args.part}.json", entry)
        return entry
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"--parts: unknown part(s) {', '.join(unknown)}")
    isolate = args.isolate == "yes" or (args.isolate == "auto" and device.type == "cuda")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="raysweep-gpu-acceptance-") as tmp:
        results = run_parts(parts, scale, device, Path(tmp), isolate)
    record = {"benchmark": "gpu_acceptance", "scale": scale.name, "device": str(device),
              "isolated": isolate, "total_s": time.perf_counter() - started,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(device),
              "provenance": provenance(), "parts": results,
              "failed": sorted(n for n, e in results.items() if e["status"] != "ok")}
    suffix = "_smoke" if args.smoke else ""
    atomic_write_json(args.out_dir / f"gpu_acceptance{suffix}.json", record)
    atomic_write_text(args.out_dir / f"gpu_acceptance{suffix}.md", markdown(record))
    print(markdown(record), flush=True)
    print(f"wrote {args.out_dir / f'gpu_acceptance{suffix}.json'}", flush=True)
    return record


if __name__ == "__main__":
    outcome_record = main()
    sys.exit(1 if outcome_record.get("failed") or outcome_record.get("error") else 0)
