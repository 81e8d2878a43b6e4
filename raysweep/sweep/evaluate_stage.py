"""The evaluate stage as a Ray Tune grid of plain function trainables.

Three layers (docs/design.md principle 3): :func:`evaluate_trial_rows` is plain Python that a test can
call directly (one trial's rows); :func:`evaluation_trainable` is the Tune function trainable
around it (the only ``ray.tune`` calls); :func:`build_tuner` builds the ``Tuner``.

Exactly once: every row is written atomically to the :class:`ResultsStore` the moment it is
computed, and a trial first drops the (condition, protocol, seed) keys that already have a row.
A rerun after a crash or Ctrl-C therefore trains only what is missing; the Tune experiment is
restored with ``Tuner.restore`` when its state exists (unfinished trials are continued, errored
ones restarted), and a finished trial is never trained again even if Tune's own state was lost.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raysweep.artefacts import provenance, stable_hash
from raysweep.config import EncoderCondition, ExperimentSpec
from raysweep.seeding import torch_generator
from raysweep.sweep.plan import EvalTrial, condition_settings, eval_trials, make_plan
from raysweep.sweep.results import ResultsStore, RowKey

#: Metrics a trial reports to Tune (means over its seeds).
REPORTED_METRICS = ("accuracy", "f1_weighted", "f1_macro", "balanced_accuracy")


def condition_by_name(spec: ExperimentSpec, name: str) -> EncoderCondition:
    assert spec.evaluate is not None
    for cond in spec.evaluate.encoders:
        if cond.name == name:
            return cond
    raise KeyError(name)


def resolved_weights(spec: ExperimentSpec, weights: str) -> str:
    """``pretrain:NAME`` -> ``file:<the run's encoder.pt>``; other sources unchanged."""
    run = spec.pretrain_parent(weights)
    if run is None:
        return weights
    from raysweep.sweep.pretrain_stage import pretrain_encoder_path

    return f"file:{pretrain_encoder_path(spec, run)}"


def condition_keys(spec: ExperimentSpec, cond: EncoderCondition) -> dict[str, str]:
    """The condition's columns: its own keys over those of the pretrain run it evaluates."""
    run = spec.pretrain_parent(cond.encoder.weights)
    return {**(run.keys if run is not None else {}), **cond.keys}


def evaluate_trial_rows(spec: ExperimentSpec, trial: EvalTrial, *, device: str = "cpu",
                        progress: bool = False, on_epoch: Callable[[dict], None] | None = None,
                        resume: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run one trial's missing seeds, writing each row as soon as it exists; return all rows
    of the trial (cached and new), in seed order.

    A fine-tuning trial (one seed) hands ``on_epoch`` / ``resume`` to
    :func:`raysweep.evaluate.finetune`: its epoch checkpoints and the state to continue from."""
    from raysweep.data import load_dataset
    from raysweep.evaluate import finetune, probe
    from raysweep.models import build_encoder

    assert spec.evaluate is not None
    store = ResultsStore(spec.directory)
    keys = [RowKey(trial.condition, trial.protocol, seed) for seed in trial.seeds]
    todo = [key.seed for key in store.missing(keys)]
    if todo:
        cond = condition_by_name(spec, trial.condition)
        settings = condition_settings(spec.evaluate.settings, cond)
        dataset = load_dataset(cond.data or spec.evaluate.data, progress=progress)
        train, test = dataset.labelled("train"), dataset.labelled("test")
        weights = resolved_weights(spec, cond.encoder.weights)

        def fresh_encoder():
            # A random encoder is the same for every seed: only the head varies (paper).
            return build_encoder(cond.encoder.name, weights,
                                 generator=torch_generator(0, "encoder_init", cond.name))

        common = {"condition": cond.name, "encoder": cond.encoder.name,
                  "encoder_source": cond.encoder.weights, **condition_keys(spec, cond),
                  "spec_hash": stable_hash(spec), **_provenance_columns()}
        if trial.protocol == "probe":
            for row in probe(fresh_encoder(), train, test, settings=settings, seeds=todo,
                             class_names=dataset.classes, device=device):
                _store_row(store, row, common, trial.protocol)
        else:
            # Only a single-seed trial has a state to resume (the plan makes those).
            resume = resume if len(todo) == 1 else None
            for seed in todo:  # each row is stored as soon as its seed is done
                row = finetune(fresh_encoder(), train, test, settings=settings, seed=seed,
                               class_names=dataset.classes, device=device, progress=progress,
                               on_epoch=on_epoch, resume=resume)
                row["resumed_from_epoch"] = int(resume["epoch"]) if resume else 0
                _store_row(store, row, common, trial.protocol)
    return [store.read(key) for key in keys]


def _provenance_columns() -> dict[str, str]:
    record = provenance()
    return {"git_commit": record["git_commit"], "packages": json.dumps(record["packages"])}


def _store_row(store: ResultsStore, row: dict[str, Any], common: dict[str, Any],
               protocol: str) -> None:
    full = {**row, **common, "protocol": protocol, "run_id": uuid.uuid4().hex,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    store.write(full)


def trial_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Means over a trial's seeds of :data:`REPORTED_METRICS` (what Tune shows)."""
    summary: dict[str, float] = {"seeds": float(len(rows))}
    for metric in REPORTED_METRICS:
        values = [float(r[metric]) for r in rows if metric in r]
        if values:
            summary[metric] = sum(values) / len(values)
    return summary


#: Minimum seconds between two epoch checkpoints of a fine-tuning trial (a ResNet-50 with its
#: Adam state is ~300 MB: checkpoint long trials, not the short ones).
CHECKPOINT_INTERVAL_S = float(os.environ.get("RAYSWEEP_CHECKPOINT_INTERVAL_S", "120"))
STATE_FILE = "finetune_state.pt"


def evaluation_trainable(config: dict[str, Any], spec: ExperimentSpec) -> None:
    """Tune function trainable: one evaluation trial (``config["trial"]``).

    A fine-tuning trial checkpoints its state at epoch ends (at most every
    :data:`CHECKPOINT_INTERVAL_S`); when Tune restores an interrupted trial it continues from
    its newest checkpoint, to the same row an uninterrupted run gives."""
    import ray.tune  # --- Ray: the trainable's only Tune calls are below ---
    import torch

    trial = EvalTrial(**config["trial"])
    gpu_ids = ray.get_gpu_ids()
    device = "cuda" if gpu_ids and torch.cuda.is_available() else "cpu"
    resume = None
    checkpoint = ray.tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume = torch.load(Path(directory) / STATE_FILE, weights_only=True)
    last = time.monotonic()

    def on_epoch(state: dict[str, Any]) -> None:
        nonlocal last
        if time.monotonic() - last < CHECKPOINT_INTERVAL_S:
            return
        with tempfile.TemporaryDirectory() as directory:
            torch.save(state, Path(directory) / STATE_FILE)
            ray.tune.report({"epoch": state["epoch"]},
                            checkpoint=ray.tune.Checkpoint.from_directory(directory))
        last = time.monotonic()

    rows = evaluate_trial_rows(spec, trial, device=device, on_epoch=on_epoch, resume=resume)
    ray.tune.report(trial_summary(rows))


def tune_experiment_name(trials: tuple[EvalTrial, ...]) -> str:
    """The Tune experiment's name: a hash of its trial list, so a changed grid starts afresh
    (rows already computed are still skipped) while an identical one is restored."""
    return "evaluate-" + stable_hash([(t.condition, t.protocol, list(t.seeds)) for t in trials])


def build_tuner(spec: ExperimentSpec):
    """The ``ray.tune.Tuner`` of the evaluate stage (restored when its state exists)."""
    from ray import tune

    from raysweep.console import tune_verbosity
    from raysweep.sweep.progress import StageProgress

    plan = make_plan(spec)
    trials = eval_trials(spec)
    trainable = tune.with_resources(tune.with_parameters(evaluation_trainable, spec=spec),
                                    plan.eval_resources.as_ray())
    storage = str(spec.directory / "tune")
    name = tune_experiment_name(trials)
    path = Path(storage) / name
    if tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=True)
    return tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search([
            {"condition": t.condition, "protocol": t.protocol, "seeds": t.seeds}
            for t in trials])},
        # Reused actors keep torch imported and the decoded data mapped between trials.
        tune_config=tune.TuneConfig(max_concurrent_trials=plan.eval_concurrency,
                                    reuse_actors=True,
                                    trial_name_creator=lambda t: EvalTrial(
                                        **t.config["trial"]).trial_name,
                                    trial_dirname_creator=lambda t: f"trial-{t.trial_id}"),
        run_config=tune.RunConfig(name=name, storage_path=storage,
                                  failure_config=tune.FailureConfig(max_failures=2),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                  callbacks=[StageProgress("evaluate")], verbose=tune_verbosity()),
    )
