"""The evaluate stage as a Ray Tune grid of plain function trainables.

Three layers (docs/design.md principle 3): :func:`evaluate_trial_rows` is plain Python that a test can
call directly (one trial's rows); :func:`evaluation_trainable` is the Tune function trainable
around it (the only ``ray.tune`` calls); :func:`build_tuner` builds the ``Tuner``.

Exactly once, and never stale: every row is identified by a hash of everything that determines
it (:mod:`raysweep.sweep.identity`) and written atomically to the :class:`ResultsStore` under
that identity the moment it is computed. The stage asks the store which rows of the current spec
are missing and builds a *fresh* Tuner over the trials that still have missing rows; nothing of
Tune's own state is ever restored (``Tuner.restore`` would unpickle files from the storage
directory, which others may be able to write). A fine-tuning run that is interrupted continues
from its newest epoch checkpoint, a plain tensor file ``<experiment>/checkpoints/<row_id>.pt``
written atomically (at most every :data:`CHECKPOINT_INTERVAL_S`) and read with
``torch.load(..., weights_only=True)``; it is deleted once the row exists.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

from raysweep.artefacts import atomic_torch_save, provenance, stable_hash
from raysweep.config import EncoderCondition, ExperimentSpec
from raysweep.errors import RaysweepError
from raysweep.seeding import torch_generator
from raysweep.storage import AnyPath, ray_storage, remove_tree, torch_load
from raysweep.sweep.identity import identify_trials, planned_refs, trial_refs
from raysweep.sweep.plan import EvalTrial, condition_settings, make_plan
from raysweep.sweep.results import ResultsStore, RowRef

#: Metrics a trial reports to Tune (means over its seeds).
REPORTED_METRICS = ("accuracy", "f1_weighted", "f1_macro", "balanced_accuracy")

#: Minimum seconds between two epoch checkpoints of a fine-tuning run (a ResNet-50 with its
#: Adam state is ~300 MB: checkpoint long runs, not the short ones).
CHECKPOINT_INTERVAL_S = float(os.environ.get("RAYSWEEP_CHECKPOINT_INTERVAL_S", "120"))
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
    from raysweep.sweep.pretrain_stage import pretrain_encoder_path

    return f"file:{pretrain_encoder_path(spec, run)}"


def condition_keys(spec: ExperimentSpec, cond: EncoderCondition) -> dict[str, str]:
    """The condition's columns: its own keys over those of the pretrain run it evaluates."""
    run = spec.pretrain_parent(cond.encoder.weights)
    return {**(run.keys if run is not None else {}), **cond.keys}


def condition_labels(spec: ExperimentSpec) -> dict[str, dict[str, str]]:
    """Per condition, the columns that only name it (its keys, encoder name and weight source):
    set from the current spec when the results table is consolidated, never part of a row's
    identity."""
    assert spec.evaluate is not None
    return {cond.name: {"encoder": cond.encoder.name, "encoder_source": cond.encoder.weights,
                        **condition_keys(spec, cond)} for cond in spec.evaluate.encoders}


def condition_encoder(spec: ExperimentSpec, cond: EncoderCondition):
    """A new instance of the encoder a condition evaluates, with its initial weights. A random
    encoder is the same for every seed and protocol (only the head varies: the paper): its
    initialisation is seeded by the condition's name."""
    from raysweep.models import build_encoder

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
    trial (stored before and new), in seed order.

    ``trial`` may come identified (its ``row_ids`` set, as the stage hands it to Tune) or not
    (they are computed here). Fine-tuning runs checkpoint every ``checkpoint_interval_s``
    (default :data:`CHECKPOINT_INTERVAL_S`) and continue from their checkpoint."""
    from raysweep.data import load_dataset
    from raysweep.evaluate import finetune, logistic_probe, probe

    assert spec.evaluate is not None
    if not trial.row_ids:
        [trial] = identify_trials(spec, (trial,))
    refs = trial_refs(trial)
    unknown = [ref for ref in refs if ref.row_id is None]
    if unknown:
        raise RaysweepError(f"condition {trial.condition}: its encoder "
                            f"{condition_by_name(spec, trial.condition).encoder.weights} does "
                            "not exist yet (run the pretrain stage first)")
    store = ResultsStore(spec.directory)
    todo = [ref for ref in refs if not store.has(ref)]
    if todo:
        cond = condition_by_name(spec, trial.condition)
        settings = condition_settings(spec.evaluate.settings, cond)
        dataset = load_dataset(cond.data or spec.evaluate.data, progress=progress)
        train, test = dataset.labelled("train"), dataset.labelled("test")

        common = {"condition": cond.name, "spec_hash": stable_hash(spec),
                  **_provenance_columns()}
        if trial.protocol in ("probe", "logistic"):
            by_seed = {ref.key.seed: ref for ref in todo}
            run = probe if trial.protocol == "probe" else logistic_probe
            for row in run(condition_encoder(spec, cond), train, test, settings=settings,
                           seeds=list(by_seed), class_names=dataset.classes, device=device):
                _store_row(store, row, common, by_seed[int(row["seed"])])
        else:
            interval = CHECKPOINT_INTERVAL_S if checkpoint_interval_s is None \
                else checkpoint_interval_s
            val = validation_split(dataset, cond.name) if settings.validation_curves else None
            for ref in todo:  # each row is stored as soon as its seed is done
                path = checkpoint_path(spec, ref)
                resume = load_checkpoint(path)
                row = finetune(condition_encoder(spec, cond), train, test, settings=settings,
                               seed=ref.key.seed, class_names=dataset.classes, device=device,
                               progress=progress, on_epoch=_epoch_saver(path, interval),
                               resume=resume, val=val)
                row["resumed_from_epoch"] = int(resume["epoch"]) if resume else 0
                _store_row(store, row, common, ref)
                path.unlink(missing_ok=True)
    return [store.read(ref) for ref in refs]


def validation_split(dataset, condition: str):
    """The labelled ``val`` split that validation curves are recorded on, or a
    :class:`RaysweepError` saying how to get one."""
    from raysweep.errors import DataError

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
            "row_id": ref.row_id, "run_id": uuid.uuid4().hex,
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


def evaluation_trainable(config: dict[str, Any], spec: ExperimentSpec) -> None:
    """Tune function trainable: one evaluation trial (``config["trial"]``, identified)."""
    import ray  # --- Ray: the trainable's only Ray calls are below ---
    import ray.tune
    import torch

    trial = EvalTrial(**{k: tuple(v) if isinstance(v, list) else v
                         for k, v in config["trial"].items()})
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    rows = evaluate_trial_rows(spec, trial, device=device)
    ray.tune.report(trial_summary(rows))


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


def build_tuner(spec: ExperimentSpec, trials: tuple[EvalTrial, ...] | None = None):
    """A fresh ``ray.tune.Tuner`` over the evaluate stage's trials that still have rows to
    compute (``trials``: identified trials, default those of the current spec). When every row
    exists it runs every trial: each then only reads its stored rows and reports their means
    (Tune refuses an empty grid)."""
    from ray import tune

    from raysweep.console import tune_verbosity
    from raysweep.preflight import check_resources
    from raysweep.sweep.progress import StageProgress

    plan = make_plan(spec)
    check_resources(plan.unreachable_evaluate)  # GPUs the cluster can never offer
    if trials is None:
        trials = identify_trials(spec)
        pending = sorted({t.condition for t in trials if None in t.row_ids})
        if pending:
            raise RaysweepError(f"{spec.name}: the encoders of {', '.join(pending)} do not exist "
                                "yet: run the pretrain stage first (raysweep pretrain SPEC)")
    todo = missing_trials(spec, trials) or trials
    trainable = tune.with_resources(tune.with_parameters(evaluation_trainable, spec=spec),
                                    plan.eval_resources.as_ray())
    return tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search([
            {"condition": t.condition, "protocol": t.protocol, "seeds": list(t.seeds),
             "row_ids": list(t.row_ids)} for t in todo])},
        # Reused actors keep torch imported and the decoded data mapped between trials.
        tune_config=tune.TuneConfig(max_concurrent_trials=plan.eval_concurrency,
                                    reuse_actors=True,
                                    trial_name_creator=lambda t: EvalTrial(
                                        t.config["trial"]["condition"],
                                        t.config["trial"]["protocol"],
                                        tuple(t.config["trial"]["seeds"])).trial_name,
                                    trial_dirname_creator=lambda t: f"trial-{t.trial_id}"),
        run_config=tune.RunConfig(
            name=f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
            **ray_storage(spec.directory / TUNE_DIR),
            failure_config=tune.FailureConfig(max_failures=2),
            callbacks=[StageProgress("evaluate")], verbose=tune_verbosity()),
    )


def stage_refs(spec: ExperimentSpec) -> list[RowRef]:
    """Every row of the current spec's evaluate stage (identified; see :func:`identify_trials`)."""
    return planned_refs(identify_trials(spec))
