"""The pretrain stage: every pre-training run of an experiment, wave by wave.

Runs of one wave are independent and run at once, as many as the cluster's resources allow
(each is its own Ray Train ``TorchTrainer``; DDP workers get whole GPUs). A run that further
pre-trains another run's output (``pretrain:NAME``) is in a later wave and starts from that
run's ``encoder.pt``, referenced as ``file:PATH``; its own result hash covers the parent's bytes,
not that path, so a copied experiment directory finds its runs again. Finished runs are skipped
by the pre-training driver itself.
"""

from __future__ import annotations

import functools
import time

from raysweep import console
from raysweep.config import ExperimentSpec, PretrainSpec
from raysweep.errors import SpecError
from raysweep.plan.preflight import check_resources
from raysweep.plan.run_identity import resolved_run
from raysweep.plan.trials import make_plan
from raysweep.runtime.concurrency import run_concurrently
from raysweep.runtime.pretrain_driver import run_pretrain
from raysweep.tracking.stage import track_pretrain_run


def run_pretrain_stage(spec: ExperimentSpec, *, only: list[str] | None = None) -> list:
    """Run (or skip, when finished) every pretrain run; return their results in spec order."""

    plan = make_plan(spec)
    wanted = set(only) if only else None
    if wanted:
        unknown = wanted - {r.name for r in spec.pretrain}
        if unknown:

            raise SpecError(f"{spec.name}: no pretrain run named {sorted(unknown)[0]!r}")
    check_resources([line for name, line in plan.unreachable_pretrain.items()
                     if wanted is None or name in wanted])  # GPUs the cluster can never offer
    results = {}
    started = time.monotonic()
    for wave in plan.pretrain_waves:
        runs = [r for r in wave if wanted is None or r.name in wanted]
        if not runs:
            continue
        # Daemon threads, so that Ctrl-C stops the stage at once (raysweep.experiment.interrupt).
        results.update(run_concurrently(
            {run.name: functools.partial(_pretrain_and_track, spec, run) for run in runs},
            max_parallel=plan.pretrain_concurrency))
    if results:
        reused = sum(result.skipped for result in results.values())
        console.say(f"pretrain: {console.plural(len(results), 'run')} done in "
                    f"{console.format_duration(time.monotonic() - started)} "
                    f"({len(results) - reused} trained, {reused} finished before)")
    return [results[r.name] for r in spec.pretrain if r.name in results]


def _pretrain_and_track(spec: ExperimentSpec, run: PretrainSpec):
    """Run (or skip) one pretrain run, then track it (``tracking:``; a tracker holding it
    already, or none on, adds nothing)."""

    result = run_pretrain(resolved_run(spec, run), storage_dir=spec.directory)
    track_pretrain_run(spec, result.run_dir)
    return result
