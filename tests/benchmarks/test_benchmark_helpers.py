"""The pure helpers of the benchmark scripts (no benchmark runs here): the orchestration
overhead formula against a hand computation, and the summary table that ``run_all.py`` writes
into BENCHMARKS.md from the benchmarks' JSON files."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_overhead_formula_matches_a_hand_computation():
    overhead = load("bench_evaluate_overhead").orchestration_overhead
    # 4 trials of 3, 3, 2, 4 s (12 slot-seconds of work) on 2 slots in 9 s of wall time:
    # 18 slot-seconds, of which 6 are not trials -> 6 / 12 = 0.5.
    assert overhead(9.0, 2, [3.0, 3.0, 2.0, 4.0]) == pytest.approx(0.5)
    # Perfect packing: 2 slots busy for the whole 6 s -> no overhead.
    assert overhead(6.0, 2, [3.0, 3.0, 2.0, 4.0]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="positive"):
        overhead(1.0, 2, [])


def test_summary_rewrites_only_the_marked_block(tmp_path: Path):
    run_all = load("run_all")
    out = tmp_path / "out"
    out.mkdir()
    (out / "evaluate_overhead.json").write_text(json.dumps({
        "load_average_before": [3.2, 4.0, 5.9],
        "summary": {"raysweep": {"median_overhead": 0.05, "median_wall_s": 42.0,
                                 "median_trial_s": 2.0},
                    "plain_tune": {"median_overhead": 0.26, "median_wall_s": 50.4,
                                   "median_trial_s": 2.0}}}))
    (out / "probe_batched.json").write_text(json.dumps({"unexpected": 1}))
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"# title\n\n{run_all.BEGIN}\nold rows\n{run_all.END}\n\n## kept section\n")
    run_all.render(doc, out)
    text = doc.read_text()
    assert text.startswith("# title\n\n") and text.endswith(f"{run_all.END}\n\n## kept section\n")
    assert "old rows" not in text
    row = next(line for line in text.splitlines() if line.startswith("| evaluate_overhead"))
    # 50.4 / 42.0 = 1.2: plain Tune takes 20% longer for the same trials.
    assert "| 3/4/6 |" in row and "raysweep: overhead 5%" in row and "= 1.20x" in row
    assert "unreadable record (KeyError" in text  # a record of another shape is named, not fatal
    assert "| vs_lightly | | `OMP_NUM_THREADS=1 nice python benchmarks/bench_vs_lightly.py" in text


def test_the_estimate_row_gives_real_over_estimated_per_stage(tmp_path: Path):
    run_all = load("run_all")
    numbers, ratio = run_all._estimate({
        "pretrain": {"estimated_wall_s": 100.0, "real_wall_s": 150.0},
        "evaluate": {"estimated_wall_s": 40.0, "real_wall_s": 80.0, "estimated_trial_s": 60.0,
                     "real_trial_s": 66.0}})
    assert "pretrain wall: estimated 100 s, real 150 s" in numbers
    assert ratio == "real / estimated: pretrain 1.50x, evaluate 2.00x, trial time 1.10x"
