"""Run every benchmark with its documented settings and regenerate the summary of BENCHMARKS.md.

Each benchmark runs as its own process (``nice``, with the environment its section documents)
and writes its JSON to ``benchmarks/out/``; then the summary table between the
``<!-- summary:begin -->`` and ``<!-- summary:end -->`` markers of ``benchmarks/BENCHMARKS.md``
is rewritten from those JSON files, one row per benchmark (machine load, command, headline
numbers, ratio). The sections below the summary (set-up, analysis) are written by hand.

    python benchmarks/run_all.py                      # everything (about an hour on 2 cores)
    python benchmarks/run_all.py --only vs_lightly evaluate_overhead
    python benchmarks/run_all.py --render-only        # the summary from the JSON files at hand
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
DOC = HERE / "BENCHMARKS.md"
BEGIN, END = "<!-- summary:begin -->", "<!-- summary:end -->"


@dataclass(frozen=True)
class Benchmark:
    name: str  # also the JSON file's stem in benchmarks/out/
    script: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    row: Callable[[dict[str, Any]], tuple[str, str]]  # JSON -> (numbers, ratio)

    @property
    def command(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env)
        return " ".join(filter(None, (env, "nice python", f"benchmarks/{self.script}",
                                      *self.args)))


def _load(record: dict[str, Any]) -> str:
    for key in ("load_average_before", "load_average"):
        if key in record:
            return "/".join(f"{v:.0f}" for v in record[key])
    machine = record.get("machine")
    if isinstance(machine, dict) and "load_average_before" in machine:
        return "/".join(f"{v:.0f}" for v in machine["load_average_before"])
    return "n/a"


def _vs_lightly(r: dict[str, Any]) -> tuple[str, str]:
    arms = r["arms"]
    parts = []
    for name, arm in arms.items():
        if arm["median_images_per_s"] is None:
            parts.append(f"{name}: failed ({(arm['error'] or '')[:60]})")
        else:
            parts.append(f"{name} {arm['median_images_per_s']:.1f} img/s "
                         f"({arm['median_cpu_ms_per_image']:.0f} CPU-ms/img)")
    ratio = arms["raysweep"]["ratio_to_lightly"]
    cpu = arms["lightly"]["median_cpu_ms_per_image"] / arms["raysweep"]["median_cpu_ms_per_image"]
    return "; ".join(parts), (f"raysweep / lightly: images/s {ratio:.2f}x, images per "
                              f"CPU-second {cpu:.2f}x" if ratio else "n/a")


def _evaluate_overhead(r: dict[str, Any]) -> tuple[str, str]:
    s = r["summary"]
    numbers = "; ".join(f"{arm}: overhead {v['median_overhead']:.0%}, wall {v['median_wall_s']:.0f}"
                        f" s, trial {v['median_trial_s']:.1f} s" for arm, v in s.items())
    ratio = s["plain_tune"]["median_wall_s"] / s["raysweep"]["median_wall_s"]
    return numbers, f"plain Tune / raysweep wall = {ratio:.2f}x"


def _probe(r: dict[str, Any]) -> tuple[str, str]:
    return (f"batched {r['batched_s']:.1f} s, sequential {r['sequential_s']:.1f} s, "
            f"same predictions: {r['same_predictions']}", f"{r['speedup']:.1f}x")


def _pretrain(r: dict[str, Any]) -> tuple[str, str]:
    rows = r["rows"]
    numbers = "; ".join(f"{x['encoder']} {x['image_size']} px: device {x['device_train_images_per_s']:.1f}"
                        f" img/s, per-sample {x['per_sample_train_images_per_s']:.1f} img/s"
                        for x in rows)
    return numbers, ", ".join(f"{x['speedup_device_vs_per_sample']:.2f}x" for x in rows)


def _decode(r: dict[str, Any]) -> tuple[str, str]:
    return (f"serial {r['serial_img_per_s']} img/s, parallel {r['parallel_img_per_s']} img/s "
            f"({r['workers']} workers, {r['parallel_cpus_used']} CPUs got)", f"{r['speedup']}x")


def _chaos(r: dict[str, Any]) -> tuple[str, str]:
    return (f"{r['rows']} rows, {r['kills']} kills, {r['duplicates']} duplicates, rows equal: "
            f"{r['rows_equal']}", f"chaos / reference wall = {r['ratio']:.2f}x")


def _estimate(r: dict[str, Any]) -> tuple[str, str]:
    pre, ev = r["pretrain"], r["evaluate"]
    numbers = (f"pretrain wall: estimated {pre['estimated_wall_s']:.0f} s, real "
               f"{pre['real_wall_s']:.0f} s; evaluate wall: estimated {ev['estimated_wall_s']:.0f}"
               f" s, real {ev['real_wall_s']:.0f} s; trial time: estimated "
               f"{ev['estimated_trial_s']:.0f} s, real {ev['real_trial_s']:.0f} s")
    pre_ratio = pre["real_wall_s"] / pre["estimated_wall_s"]
    return numbers, (f"real / estimated: pretrain {pre_ratio:.2f}x, evaluate "
                     f"{ev['real_wall_s'] / ev['estimated_wall_s']:.2f}x, trial time "
                     f"{ev['real_trial_s'] / ev['estimated_trial_s']:.2f}x")


ONE_THREAD = (("OMP_NUM_THREADS", "1"),)
BENCHMARKS = (
    Benchmark("vs_lightly", "bench_vs_lightly.py", ("--rounds", "4", "--steps", "1"), ONE_THREAD,
              _vs_lightly),
    Benchmark("evaluate_overhead", "bench_evaluate_overhead.py", (), (), _evaluate_overhead),
    Benchmark("probe_batched", "bench_probe_batched.py", (), ONE_THREAD, _probe),
    Benchmark("pretrain_throughput", "bench_pretrain_throughput.py", ("--steps", "10"),
              ONE_THREAD, _pretrain),
    Benchmark("decode", "bench_decode.py", ("--images", "2000", "--size", "256", "--repeat", "2"),
              (), _decode),
    Benchmark("chaos", "bench_chaos.py", (), ONE_THREAD, _chaos),
    Benchmark("estimate", "bench_estimate.py", (), ONE_THREAD, _estimate),
)


def run(bench: Benchmark) -> None:
    env = {**os.environ, **dict(bench.env),
           "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    command = ["nice", sys.executable, str(HERE / bench.script), *bench.args]
    print(f"== {bench.command}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True)
    print(f"== {bench.name}: {time.perf_counter() - started:.0f} s", flush=True)


def summary_table(out: Path = OUT) -> str:
    """The summary rows of every benchmark whose JSON exists in ``out``."""
    lines = ["| benchmark | load (1/5/15 min) | command | numbers | ratio |",
             "|---|---|---|---|---|"]
    for bench in BENCHMARKS:
        path = out / f"{bench.name}.json"
        if not path.is_file():
            lines.append(f"| {bench.name} | | `{bench.command}` | no {path.name} in "
                         "benchmarks/out: see its section below | |")
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        try:
            numbers, ratio = bench.row(record)
        except (KeyError, TypeError) as err:
            numbers, ratio = f"unreadable record ({type(err).__name__}: {err})", ""
        lines.append(f"| {bench.name} | {_load(record)} | `{bench.command}` | {numbers} | "
                     f"{ratio} |")
    return "\n".join(lines)


def render(doc: Path = DOC, out: Path = OUT) -> None:
    text = doc.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc} has no {BEGIN} ... {END} block to rewrite")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{summary_table(out)}\n{END}{tail}", encoding="utf-8")
    print(f"rewrote the summary of {doc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [b.name for b in BENCHMARKS]
    parser.add_argument("--only", nargs="+", choices=names, help="run these benchmarks only")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the summary from the JSON files in benchmarks/out/")
    args = parser.parse_args()
    if not args.render_only:
        for bench in BENCHMARKS:
            if args.only is None or bench.name in args.only:
                run(bench)
    render()


if __name__ == "__main__":
    main()
