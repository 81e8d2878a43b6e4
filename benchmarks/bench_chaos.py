"""Chaos: a demo-sized sweep with 35 seeds whose driver is SIGKILLed again and again.

The demo study (digits 0-4 -> 5-9: SL and SSL pre-training, further SSL_p pre-training of each,
five encoders fine-tuned and linearly probed) with 35 seeds, short settings (one pre-training
epoch, three fine-tuning epochs, a fine-tuning checkpoint after every epoch) and deterministic
pre-training. Two storage directories:

1. **reference**: ``raysweep run SPEC`` once, uninterrupted;
2. **chaos**: ``raysweep run SPEC`` started again and again, its whole process group (the driver
   and the Ray it started) SIGKILLed each time, and then every process of that run still alive
   (Ray's workers run in process groups of their own; they are found by an environment
   variable the run passes down), ``--kills`` times, then run to the end. The
   moment of each kill cycles through: while a result row is being written, while a checkpoint
   is being saved (a fine-tuning checkpoint, or a pre-training checkpoint appearing in Ray
   Train's storage), and at a random time; the last two kills hit the consolidation of
   ``results.parquet`` (which only happens once every row exists).
   A row or checkpoint write is caught in flight by watching for its temporary file; to widen
   that window (to tens of milliseconds) every process of *both* arms delays each rename of a
   temporary file by ``--write-delay`` seconds (a ``sitecustomize`` on ``PYTHONPATH``, so that
   Ray's worker processes do it too).

Checks at the end: exactly one row per (condition, protocol, seed) key in ``results.parquet``,
the same keys as the reference, every row equal to the reference's (timings, run ids and resume
counts aside), and every file under the experiment readable (JSON parses, ``.pt`` loads with
``weights_only=True``, Parquet reads). Reports the chaos arm's total wall time (all its runs)
over the reference's; writes ``benchmarks/out/chaos.json``.

    OMP_NUM_THREADS=1 python benchmarks/bench_chaos.py [--kills 10] [--seeds 35]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from raysweep.experiment.demo import demo_spec_dict
from raysweep.storage.atomic import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
#: Columns that legitimately differ between an interrupted and an uninterrupted run (and
#: ``spec_hash``: the two arms' specs differ in their storage folder).
VOLATILE = {"run_id", "finished_at", "resumed_from_epoch", "time_train_s", "time_eval_s",
            "time_total_s", "git_commit", "packages", "spec_hash"}
KILL_MOMENTS = ("random", "row write", "checkpoint save")

SITECUSTOMIZE = '''
import os
import time

_delay = float(os.environ.get("RAYSWEEP_CHAOS_WRITE_DELAY_S", "0"))
if _delay > 0:
    _replace = os.replace

    def _slow_replace(src, dst, *args, **kwargs):
        if str(src).endswith(".tmp"):
            time.sleep(_delay)
        return _replace(src, dst, *args, **kwargs)

    os.replace = _slow_replace
'''


def chaos_spec(storage: Path, seeds: int) -> dict[str, Any]:
    spec = demo_spec_dict(smoke=True, storage=str(storage))
    spec["name"] = "chaos"
    spec["evaluate"]["seeds"] = seeds
    spec["evaluate"]["settings"]["epochs"] = 3
    for run in spec["pretrain"]:
        run["deterministic"] = True
    return spec


def watched(experiment: Path, moment: str, since: float) -> Path | None:
    """A file showing that ``moment`` is happening now in ``experiment`` (created after
    ``since``: a temporary file left by an earlier kill does not count), else None."""
    def fresh(paths) -> Path | None:
        for path in paths:
            try:
                if path.stat().st_mtime >= since:
                    return path
            except FileNotFoundError:  # renamed into place meanwhile
                continue
        return None

    if moment == "row write":
        return fresh((experiment / "rows").rglob("*.tmp"))
    if moment == "checkpoint save":
        return (fresh((experiment / "checkpoints").glob("*.tmp"))
                or fresh((experiment / "pretrain").glob("*/train/checkpoint_*")))
    if moment == "consolidation":
        return fresh(experiment.glob(".results.*.tmp"))
    return None


#: Environment variable marking every process of one ``raysweep run`` (driver, Ray, workers).
RUN_TAG = "RAYSWEEP_CHAOS_RUN"


def kill_tagged(tag: str, timeout_s: float = 30.0) -> None:
    """SIGKILL every process whose environment carries ``RUN_TAG=tag`` and wait until they are
    gone, so that no worker of a killed run still writes while the next run starts."""
    marker = f"{RUN_TAG}={tag}".encode()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if marker in environ.read_bytes().split(b"\0"):
                    pid = int(environ.parent.name)
                    state = (environ.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        alive.append(pid)
                        os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                continue
        if not alive:
            return
        time.sleep(0.1)


def run_once(command: list[str], env: dict[str, str], experiment: Path,
             moment: str | None, rng: random.Random, timeout_s: float) -> dict[str, Any]:
    """One ``raysweep run``; killed at ``moment`` (None: left to finish)."""
    started, since = time.monotonic(), time.time()
    tag = f"{os.getpid()}-{started}"
    env = {**env, RUN_TAG: tag}  # inherited by the driver, the Ray it starts and its workers
    process = subprocess.Popen(command, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = started + (rng.uniform(8, 90) if moment == "random" else timeout_s)
    seen = None
    while process.poll() is None:
        if moment is not None and moment != "random":
            seen = watched(experiment, moment, since)
            if seen is not None:
                break
        if time.monotonic() > deadline:
            if moment is None:
                raise TimeoutError(f"{' '.join(command)} did not finish in {timeout_s} s")
            break
        time.sleep(0.002)
    killed = process.poll() is None
    if killed:
        os.killpg(process.pid, signal.SIGKILL)
    stderr = process.communicate()[1]
    kill_tagged(tag)  # Ray's workers live in process groups of their own
    return {"moment": moment, "killed": killed, "returncode": process.returncode,
            "seen": str(seen.relative_to(experiment)) if seen else None,
            "seconds": time.monotonic() - started,
            "stderr_tail": stderr[-500:] if not killed and process.returncode else ""}


def unreadable_files(experiment: Path) -> list[str]:
    """Files under ``experiment`` that do not read as what their name says."""
    bad = []
    for path in experiment.rglob("*"):
        if not path.is_file() or path.name.endswith(".tmp") or "tune" in path.parts:
            continue
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".pt":
                torch.load(path, map_location="cpu", weights_only=True)
            elif path.suffix == ".parquet":
                pd.read_parquet(path)
        except Exception as err:  # noqa: BLE001 - any failure counts
            bad.append(f"{path.relative_to(experiment)}: {type(err).__name__}")
    return bad


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    keep = [c for c in table.columns if c not in VOLATILE]
    return table[keep].sort_values(["condition", "protocol", "seed"]).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=35)
    parser.add_argument("--seed", type=int, default=0, help="random kill times")
    parser.add_argument("--write-delay", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--work", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "chaos.json")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="raysweep-chaos-"))
    site = work / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "RAYSWEEP_CACHE": str(work / "cache"), "OMP_NUM_THREADS": "1",
           "RAYSWEEP_CHECKPOINT_INTERVAL_S": "0",
           "RAYSWEEP_CHAOS_WRITE_DELAY_S": str(args.write_delay),
           "PYTHONPATH": os.pathsep.join([str(site), str(ROOT),
                                          os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    rng = random.Random(args.seed)
    arms = {}
    for arm in ("reference", "chaos"):
        spec_file = work / f"{arm}.yaml"
        spec_file.write_text(yaml.safe_dump(chaos_spec(work / arm, args.seeds), sort_keys=False))
        arms[arm] = ([sys.executable, "-m", "raysweep.cli", "run", str(spec_file)],
                     work / arm / "chaos")

    command, experiment = arms["reference"]
    reference = run_once(command, env, experiment, None, rng, args.timeout)
    if reference["returncode"] != 0:
        raise SystemExit(f"reference run failed: {reference['stderr_tail']}")
    print(f"reference: {reference['seconds']:.0f} s", flush=True)

    command, experiment = arms["chaos"]
    runs = []
    for index in range(args.kills):
        moment = ("consolidation" if index >= args.kills - 2
                  else KILL_MOMENTS[index % len(KILL_MOMENTS)])
        result = run_once(command, env, experiment, moment, rng, args.timeout)
        runs.append(result)
        print(f"run {index + 1}: {moment}: {'killed' if result['killed'] else 'finished'} after "
              f"{result['seconds']:.1f} s ({result['seen'] or 'no file seen'})", flush=True)
        if not result["killed"]:
            if result["returncode"] != 0:
                raise SystemExit(f"a chaos run failed: {result['stderr_tail']}")
            break
    final = run_once(command, env, experiment, None, rng, args.timeout)
    runs.append(final)
    if final["returncode"] != 0:
        raise SystemExit(f"the final run failed: {final['stderr_tail']}")

    expected = pd.read_parquet(arms["reference"][1] / "results.parquet")
    got = pd.read_parquet(experiment / "results.parquet")
    keys = ["condition", "protocol", "seed"]
    duplicates = int(got.duplicated(keys).sum())
    same_keys = sorted(map(tuple, got[keys].values.tolist())) == sorted(
        map(tuple, expected[keys].values.tolist()))
    equal_rows = same_keys and comparable(got).equals(comparable(expected))
    unreadable = unreadable_files(experiment)
    chaos_s = sum(r["seconds"] for r in runs)
    record = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "seeds": args.seeds, "rows": len(got), "kills": sum(r["killed"] for r in runs),
        "kill_moments": [{k: r[k] for k in ("moment", "killed", "seen", "seconds")}
                         for r in runs],
        "reference_s": reference["seconds"], "chaos_s": chaos_s,
        "ratio": chaos_s / reference["seconds"], "duplicates": duplicates,
        "same_keys": same_keys, "rows_equal": equal_rows, "unreadable": unreadable,
        "write_delay_s": args.write_delay, "work": str(work),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, record)
    print(json.dumps({k: v for k, v in record.items() if k != "kill_moments"}, indent=2))
    print(f"| {args.seeds} | {len(got)} | {record['kills']} | {reference['seconds']:.0f} s | "
          f"{chaos_s:.0f} s | {record['ratio']:.2f}x | {duplicates} | "
          f"{'yes' if equal_rows else 'NO'} | {len(unreadable)} |")
    if duplicates or not equal_rows or unreadable:
        raise SystemExit("chaos broke a promise: see the record above")


if __name__ == "__main__":
    main()
