"""The evaluate stage as a Ray Tune grid of plain function trainables.

Three layers (docs/design.md principle 3): :func:`evaluate_trial_rows` is plain Python that a test can
call directly (one trial's rows); :func:`evaluation_trainable` is the Tune function trainable
around it (the only ``ray.tune`` calls); :func:`build_tuner` builds the ``Tuner``.

Exactly once, and never stale: every row is identified by a hash of everything that determines
it (:mod:`raysweep.plan.identity`) and written atomically to the :class:`ResultsStore` under
that identity the moment it is computed. The stage asks the store which rows of the current spec
are missing and builds a *fresh* Tuner over the trials that still have missing rows; nothing of
Tune's own state is ever restored (``Tuner.restore`` would unpickle files from the storage
directory, which others may be able to write). A fine-tuning run that is interrupted continues
from its newest epoch checkpoint, a plain tensor file ``<experiment>/checkpoints/<row_id>.pt``
written atomically (at most every :data:`CHECKPOINT_INTERVAL_S`) and read with
``torch.load(..., weights_only=True)``; it is deleted once the row exists.

External test sets: each training run (a seed's fine-tuning, a condition's probes) is scored on
the data's test split and on every external test set whose row is missing, and writes one row
per test set (:func:`split_by_test_set`), each carrying the ``training_id`` of the run (the
identity of its test-split row). A run whose rows all exist is not repeated; one with some
rows missing (a test set added or changed) is repeated and writes only those.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import ray.tune
import torch
from ray import tune
from ray.tune import PlacementGroupFactory

from raysweep.config import IN_DISTRIBUTION, EncoderCondition, ExperimentSpec
from raysweep.console import tune_verbosity
from raysweep.data import load_dataset
from raysweep.defaults import TRIAL_MAX_FAILURES
from raysweep.defaults import checkpoint_interval_s as default_interval
from raysweep.errors import DataError, RaysweepError
from raysweep.evaluate import finetune, logistic_probe, probe
from raysweep.evaluate.external import load_externals
from raysweep.evaluate.protocol import TEST_SETS
from raysweep.models import build_encoder
from raysweep.plan.budgets import budget_columns
from raysweep.plan.gpu_memory import (
    MemoryMeasurement,
    measuring_peak,
    read_measurements,
    write_measurement,
)
from raysweep.plan.identity import identify_trials, trial_refs
from raysweep.plan.preflight import check_resources
from raysweep.plan.run_identity import pretrain_encoder_path
from raysweep.plan.trials import EvalTrial, Plan, condition_settings, make_plan, trial_kind
from raysweep.runtime.progress import StageProgress
from raysweep.seeding import torch_generator
from raysweep.storage.atomic import atomic_torch_save, stable_hash
from raysweep.storage.checkpoints import torch_load
from raysweep.storage.paths import AnyPath, ray_storage, remove_tree
from raysweep.storage.provenance import provenance
from raysweep.store.results import TEST_SET_COLUMN, ResultsStore, RowKey, RowRef
from raysweep.tracking.stage import evaluate_callbacks

#: Metrics a trial reports to Tune (means over its seeds).
REPORTED_METRICS = ("accuracy", "f1_weighted", "f1_macro", "balanced_accuracy")

CHECKPOINT_DIR = "checkpoints"
TUNE_DIR = "tune"


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

    return f"file:{pretrain_encoder_path(spec, run)}"


def condition_keys(spec: ExperimentSpec, cond: EncoderCondition) -> dict[str, str]:
    """The condition's columns: its own keys over those of the pretrain run it evaluates."""
    run = spec.pretrain_parent(cond.encoder.weights)
    return {**(run.keys if run is not None else {}), **cond.keys}


def condition_labels(spec: ExperimentSpec) -> dict[str, dict[str, object]]:
    """Per condition, the columns that only name it (its keys, encoder name and weight source,
    and in a label-budget study its ``n_labels`` and ``arm``: :mod:`raysweep.plan.budgets`):
    set from the current spec when the results table is consolidated, never part of a row's
    identity."""

    assert spec.evaluate is not None
    budgets = budget_columns(spec)
    return {cond.name: {"encoder": cond.encoder.name, "encoder_source": cond.encoder.weights,
                        **condition_keys(spec, cond), **budgets[cond.name]}
            for cond in spec.evaluate.encoders}


def condition_encoder(spec: ExperimentSpec, cond: EncoderCondition):
    """A new instance of the encoder a condition evaluates, with its initial weights. A random
    encoder is the same for every seed and protocol (only the head varies: the paper): its
    initialisation is seeded by the condition's name."""

    return build_encoder(cond.encoder.name, resolved_weights(spec, cond.encoder.weights),
                         generator=torch_generator(0, "encoder_init", cond.name))


def checkpoint_path(spec: ExperimentSpec, ref: RowRef) -> AnyPath:
    """Where the fine-tuning run of row ``ref`` keeps its newest epoch checkpoint."""
    return spec.directory / CHECKPOINT_DIR / f"{ref.row_id}.pt"


def load_checkpoint(path: AnyPath) -> dict[str, Any] | None:
    """A fine-tuning checkpoint (tensors and plain values only: ``weights_only=True``), or None
    when there is none or it cannot be read (it is then removed, with a warning: the run
    starts from its first epoch, to the same row)."""
    if not path.is_file():
        return None
    try:
        state = torch_load(path)
        if not isinstance(state, dict) or "epoch" not in state:
            raise ValueError("not a fine-tuning checkpoint")
        return state
    except Exception as err:  # noqa: BLE001 - any unreadable file: start over
        reason = " ".join(str(err).split())[:200]
        warnings.warn(f"ignoring unreadable checkpoint {path} ({type(err).__name__}: {reason}); "
                      "the run starts from its first epoch", stacklevel=2)
        path.unlink(missing_ok=True)
        return None


def _epoch_saver(path: AnyPath, interval_s: float) -> Callable[[dict[str, Any]], None]:
    last = time.monotonic()

    def save(state: dict[str, Any]) -> None:
        nonlocal last
        if time.monotonic() - last >= interval_s:
            atomic_torch_save(state, path)
            last = time.monotonic()

    return save


def evaluate_trial_rows(spec: ExperimentSpec, trial: EvalTrial, *, device: str = "cpu",
                        progress: bool = False,
                        checkpoint_interval_s: float | None = None) -> list[dict[str, Any]]:
    """Run one trial's missing rows, writing each as soon as it exists; return all rows of the
    trial (stored before and new), in :meth:`EvalTrial.row_keys` order (per seed, the test
    split, then each external test set).

    ``trial`` may come identified (its ``row_ids`` set, as the stage hands it to Tune) or not
    (they are computed here). Fine-tuning runs checkpoint every ``checkpoint_interval_s``
    (default: :func:`~raysweep.defaults.checkpoint_interval_s`) and continue from their
    checkpoint. A trial whose rows were identified for another arithmetic than ``device``
    computes with is refused (its rows would be stored under an identity they do not have)."""

    assert spec.evaluate is not None
    refs = _identified_refs(spec, trial, device)
    store = ResultsStore(spec.directory)
    todo = {ref.key: ref for ref in refs if not store.has(ref)}
    if todo:
        cond = condition_by_name(spec, trial.condition)
        dataset = load_dataset(cond.data or spec.evaluate.data, progress=progress)
        needed = {key.test_set for key in todo}
        externals = load_externals([t for t in spec.evaluate.test_sets if t.name in needed],
                                   cond.data or spec.evaluate.data, dataset.classes,
                                   progress=progress)
        run = _TrialRun(spec, trial, cond, dataset, externals, refs, todo, store, device)
        if trial.protocol in ("probe", "logistic"):
            run.probes()
        else:
            run.finetunes(progress, default_interval() if checkpoint_interval_s is None
                          else checkpoint_interval_s)
    return [store.read(ref) for ref in refs]


def _identified_refs(spec: ExperimentSpec, trial: EvalTrial, device: str) -> list[RowRef]:
    """The trial's rows, identified (a :class:`RaysweepError` when its encoder does not exist
    yet, or when they were identified for another arithmetic than ``device`` runs)."""
    on_gpu = device.startswith("cuda")
    if not trial.row_ids:
        [trial] = identify_trials(spec, (trial,), on_gpu=on_gpu)
    assert spec.evaluate is not None
    cond = condition_by_name(spec, trial.condition)
    settings = condition_settings(spec.evaluate.settings, cond)
    if trial.protocol != "logistic" and (settings.arithmetic(trial.on_gpu)
                                         != settings.arithmetic(on_gpu)):
        planned, actual = ("a GPU", "a CPU") if trial.on_gpu else ("a CPU", "a GPU")
        raise RaysweepError(f"trial {trial.trial_name}: its rows were identified for {planned} "
                            f"but it runs on {actual} ({device}): set the evaluation's "
                            "precision and channels_last, or resources.gpus_per_trial, so "
                            "that they agree")
    refs = trial_refs(trial)
    if any(ref.row_id is None for ref in refs):
        raise RaysweepError(f"condition {trial.condition}: its encoder "
                            f"{cond.encoder.weights} does "
                            "not exist yet (run the pretrain stage first)")
    return refs


class _TrialRun:
    """The training runs of one trial whose rows are missing (``todo``), and how their rows
    are stored: one per test set, each carrying the run's ``run_id`` and provenance."""

    def __init__(self, spec: ExperimentSpec, trial: EvalTrial, cond: EncoderCondition,
                 dataset: Any, externals: Any, refs: list[RowRef],
                 todo: dict[RowKey, RowRef], store: ResultsStore, device: str) -> None:
        assert spec.evaluate is not None
        self.spec, self.trial, self.cond, self.dataset = spec, trial, cond, dataset
        self.externals, self.todo, self.store, self.device = externals, todo, store, device
        self.settings = condition_settings(spec.evaluate.settings, cond)
        self.train, self.test = dataset.labelled("train"), dataset.labelled("test")
        self.training = {ref.key.seed: ref for ref in refs if ref.key.test_set == IN_DISTRIBUTION}
        self.seeds = sorted({key.seed for key in todo})
        self.common = {"condition": cond.name, "spec_hash": stable_hash(spec),
                       **_provenance_columns()}

    def store_run(self, row: dict[str, Any]) -> None:
        """Store the rows of one training run that are missing."""
        seed = int(row["seed"])
        run: dict[str, Any] = {**self.common, "run_id": uuid.uuid4().hex}
        if self.trial.test_sets:
            run["training_id"] = self.training[seed].row_id
        for test_set, part in split_by_test_set(row).items():
            ref = self.todo.get(RowKey(self.trial.condition, self.trial.protocol, seed,
                                       test_set))
            if ref is not None:
                _store_row(self.store, part, run, ref)

    def probes(self) -> None:
        """All missing seeds' probes (or logistic regressions) in one pass over the encoder."""

        run = probe if self.trial.protocol == "probe" else logistic_probe
        for row in run(condition_encoder(self.spec, self.cond), self.train, self.test,
                       settings=self.settings, seeds=self.seeds,
                       class_names=self.dataset.classes, device=self.device,
                       test_sets=self.externals):
            self.store_run(row)

    def finetunes(self, progress: bool, interval_s: float) -> None:
        """Each missing seed's fine-tuning, from its checkpoint when it has one; its rows are
        stored as soon as it is done."""

        val = (validation_split(self.dataset, self.cond.name)
               if self.settings.validation_curves else None)
        for seed in self.seeds:
            path = checkpoint_path(self.spec, self.training[seed])
            resume = load_checkpoint(path)
            row = finetune(condition_encoder(self.spec, self.cond), self.train, self.test,
                           settings=self.settings, seed=seed, class_names=self.dataset.classes,
                           device=self.device, progress=progress,
                           on_epoch=_epoch_saver(path, interval_s), resume=resume, val=val,
                           test_sets=self.externals)
            row["resumed_from_epoch"] = int(resume["epoch"]) if resume else 0
            self.store_run(row)
            path.unlink(missing_ok=True)


def split_by_test_set(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The rows of one training run, by test set: ``test`` (the protocol's row without its
    ``test_sets`` list), then each entry of that list (the run's columns with the entry's
    metrics and inference time in place of the test split's; every entry has the same metric
    columns: :func:`raysweep.evaluate.metrics.classification_metrics`)."""

    external = row.get(TEST_SETS, [])
    own = {k: v for k, v in row.items() if k != TEST_SETS}
    parts = {IN_DISTRIBUTION: own}
    for entry in external:
        parts[str(entry[TEST_SET_COLUMN])] = {**own, **entry}
    return parts


def validation_split(dataset, condition: str):
    """The labelled ``val`` split that validation curves are recorded on, or a
    :class:`RaysweepError` saying how to get one."""

    try:
        return dataset.labelled("val")
    except DataError as err:
        raise DataError(f"condition {condition}: validation_curves needs a labelled val split "
                        f"(set the data's val_fraction, or use a source with its own val "
                        f"split): {err}") from None


def _provenance_columns() -> dict[str, str]:
    record = provenance()
    return {"git_commit": record["git_commit"], "packages": json.dumps(record["packages"])}


def _store_row(store: ResultsStore, row: dict[str, Any], common: dict[str, Any],
               ref: RowRef) -> None:
    full = {**row, **common, "protocol": ref.key.protocol, "seed": ref.key.seed,
            "row_id": ref.row_id, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if ref.key.test_set != IN_DISTRIBUTION:
        full[TEST_SET_COLUMN] = ref.key.test_set
    store.write(full)


def trial_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Means over a trial's seeds of :data:`REPORTED_METRICS` on the data's test split (what
    Tune shows)."""
    rows = [r for r in rows if r.get(TEST_SET_COLUMN, IN_DISTRIBUTION) == IN_DISTRIBUTION]
    summary: dict[str, float] = {"seeds": float(len(rows))}
    for metric in REPORTED_METRICS:
        values = [float(r[metric]) for r in rows if metric in r]
        if values:
            summary[metric] = sum(values) / len(values)
    return summary


def evaluation_trainable(config: dict[str, Any], spec: ExperimentSpec) -> None:
    """Tune function trainable: one evaluation trial (``config["trial"]``, identified). On a
    GPU it measures the trial's peak memory and stores it when its kind has none yet
    (:mod:`raysweep.plan.gpu_memory`). It reports the means of its rows
    (:func:`trial_summary`), when it ran (``started_at``, ``finished_at``: Unix seconds, so
    that how many trials ran at once can be read off Tune's results) and, on a GPU, the peak
    it measured (``gpu_peak_bytes``, ``gpu_overhead_bytes``)."""

    started = time.time()
    trial = _trial_of(config)
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    computes = bool(missing_trials(spec, (trial,)))
    with measuring_peak(device) as peak:
        rows = evaluate_trial_rows(spec, trial, device=device)
    measurement: MemoryMeasurement | None = peak["measurement"]
    if computes and measurement is not None:
        record_first_measurement(spec, trial, measurement)
    ray.tune.report({**trial_summary(rows), "started_at": started, "finished_at": time.time(),
                     **({"gpu_peak_bytes": measurement.peak_bytes,
                         "gpu_overhead_bytes": measurement.overhead_bytes}
                        if measurement is not None else {})})


def record_first_measurement(spec: ExperimentSpec, trial: EvalTrial,
                             measurement: MemoryMeasurement) -> None:
    """Store ``measurement`` as the peak GPU memory of ``trial``'s kind, unless it has one."""
    kind = trial_kind(spec, trial)
    if kind not in read_measurements(spec.directory):
        write_measurement(spec.directory, kind, measurement)


def _trial_of(config: dict[str, Any]) -> EvalTrial:
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                              for k, v in config["trial"].items()}
    return EvalTrial(**fields)


def missing_trials(spec: ExperimentSpec, trials: tuple[EvalTrial, ...]) -> tuple[EvalTrial, ...]:
    """The identified ``trials`` that still have a row to compute."""
    store = ResultsStore(spec.directory)
    return tuple(t for t in trials if not all(store.has(ref) for ref in trial_refs(t)))


def remove_old_tune_state(spec: ExperimentSpec) -> None:
    """Delete the Tune directories of earlier runs of the stage (their results are rows by
    now; Tune's state is never read back). Only called while holding the experiment's lock."""
    root = spec.directory / TUNE_DIR
    if root.is_dir():
        for path in root.glob("evaluate-*"):
            remove_tree(path)


def evaluation_tuners(spec: ExperimentSpec, trials: tuple[EvalTrial, ...]) -> Iterator[Any]:
    """The Tuners of the stage, in order, each built once the one before has run: first, when
    GPU shares are sized from memory and a kind of trial is not measured yet, one over the
    first missing trial of each such kind (each alone on a whole GPU: it measures); then one
    over the trials still missing, packed by the measurements."""
    plan = make_plan(spec)
    first = plan.measuring_trials(missing_trials(spec, trials))
    if first:
        yield build_tuner(spec, trials, plan=plan, only=first)
    yield build_tuner(spec, trials, plan=make_plan(spec, measure_first=False))


def build_tuner(spec: ExperimentSpec, trials: tuple[EvalTrial, ...] | None = None, *,
                plan: Plan | None = None, only: tuple[EvalTrial, ...] | None = None):
    """A fresh ``ray.tune.Tuner`` over the evaluate stage's trials that still have rows to
    compute (``trials``: identified trials, default those of the current spec; ``only``: just
    these of them). When every row exists it runs every trial: each then only reads its stored
    rows and reports their means (Tune refuses an empty grid). Each trial takes its resources
    from ``plan`` (default: :func:`make_plan` with the stored measurements, unmeasured kinds at
    the default share)."""


    plan = plan or make_plan(spec, measure_first=False)
    check_resources(plan.unreachable_evaluate)  # GPUs the cluster can never offer
    if trials is None:
        trials = identify_trials(spec)
        pending = sorted({t.condition for t in trials if None in t.row_ids})
        if pending:
            raise RaysweepError(f"{spec.name}: the encoders of {', '.join(pending)} do not exist "
                                "yet: run the pretrain stage first (raysweep pretrain SPEC)")
    todo = only or missing_trials(spec, trials) or trials
    concurrency = (plan.measuring_concurrency(len(todo)) if only else plan.eval_concurrency)
    trainable = tune.with_resources(tune.with_parameters(evaluation_trainable, spec=spec),
                                    _resource_request(plan))
    return tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search([
            {"condition": t.condition, "protocol": t.protocol, "seeds": list(t.seeds),
             "row_ids": list(t.row_ids), "test_sets": list(t.test_sets),
             "on_gpu": t.on_gpu} for t in todo])},
        # Reused actors keep torch imported and the decoded data mapped between trials.
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency,
                                    reuse_actors=True,
                                    trial_name_creator=lambda t: _trial_of(t.config).trial_name,
                                    trial_dirname_creator=lambda t: f"trial-{t.trial_id}"),
        run_config=tune.RunConfig(
            name=f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
            **ray_storage(spec.directory / TUNE_DIR),
            failure_config=tune.FailureConfig(max_failures=TRIAL_MAX_FAILURES),
            callbacks=[StageProgress("evaluate"), *_tracking_callbacks(spec)],
            verbose=tune_verbosity()),
    )


def _tracking_callbacks(spec: ExperimentSpec) -> list[Any]:
    """Tracks each trial's rows as it finishes (none when ``tracking:`` is off)."""

    return evaluate_callbacks(spec, condition_labels(spec),
                              lambda config: trial_refs(_trial_of(config)))


def _resource_request(plan: Plan) -> Callable[[dict[str, Any]], Any]:
    """What ``tune.with_resources`` takes: each trial's resources from the plan (by its
    kind)."""

    def request(config: dict[str, Any]) -> PlacementGroupFactory:
        res = plan.resources_of(_trial_of(config))
        bundle = {"CPU": res.cpu, **({"GPU": res.gpu} if res.gpu > 0 else {})}
        return PlacementGroupFactory([bundle])

    return request


