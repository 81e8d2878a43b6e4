"""Optuna searches inside Ray Tune over pre-training knobs (Barlow Twins lambda, sparsity alpha,
lr_max, augmentation strength, ...).

A trial is a Tune *driver* function (Ray 2.60, Train V2): it builds and fits the pre-training
``TorchTrainer`` (forwarding rank 0's per-epoch reports to Tune with ``TuneReportCallback``, so
ASHA can stop a poor trial on the downstream proxy metric), then scores the encoder with the
search's evaluation (batched linear probes over its seeds: ``OptunaSearch`` refuses
``grid_search``, so seeds are looped inside the trial) and reports the mean of ``metric``.
Every trial's row goes to ``<experiment>/search/<name>/trials.csv`` for the report's search
history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raysweep.artefacts import atomic_write_text
from raysweep.config import ExperimentSpec, SearchParam, SearchSpec
from raysweep.errors import SpecError
from raysweep.sweep.experiment import RunSummary


def tune_space(space: dict[str, SearchParam]) -> dict[str, Any]:
    """The spec's search space as Ray Tune distributions (OptunaSearch converts them)."""
    from ray import tune

    converted = {}
    for key, param in space.items():
        if param.type == "uniform":
            converted[key] = tune.uniform(param.low, param.high)
        elif param.type == "loguniform":
            converted[key] = tune.loguniform(param.low, param.high)
        elif param.type == "int":
            converted[key] = tune.randint(int(param.low), int(param.high) + 1)
        else:
            converted[key] = tune.choice(list(param.choices))
    return converted


def trial_specs(search: SearchSpec, params: dict[str, Any], trial_id: str):
    """The pre-training run and evaluation settings of one trial's parameters."""
    pretrain = {k[len("pretrain."):]: v for k, v in params.items() if k.startswith("pretrain.")}
    evaluate = {k[len("evaluate."):]: v for k, v in params.items() if k.startswith("evaluate.")}
    run = search.pretrain.replace(name=f"{search.pretrain.name}-{trial_id}", **pretrain)
    settings = search.evaluate.settings.replace(**evaluate) if evaluate else search.evaluate.settings
    return run, settings


def score_encoder(search: SearchSpec, encoder_path: Path, settings) -> dict[str, float]:
    """Mean (over the search's seeds) of every metric of batched linear probes."""
    from raysweep.data import load_dataset
    from raysweep.evaluate import probe
    from raysweep.models import build_encoder

    stage = search.evaluate
    dataset = load_dataset(stage.data, progress=False)
    encoder = build_encoder(search.pretrain.encoder.name, f"file:{encoder_path}")
    seeds = list(range(stage.first_seed, stage.first_seed + stage.seeds))
    rows = probe(encoder, dataset.labelled("train"), dataset.labelled("test"),
                 settings=settings, seeds=seeds, class_names=dataset.classes)
    metrics = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and k != "seed"]
    return {m: sum(float(r[m]) for r in rows) / len(rows) for m in metrics}


def search_trainable(config: dict[str, Any], search: SearchSpec, storage: str) -> None:
    """Tune driver function of one search trial."""
    import ray.tune  # --- Ray: this trial's Tune calls ---
    from ray.tune.integration.ray_train import TuneReportCallback

    from raysweep.ssl.pretrain import run_pretrain

    trial_id = ray.tune.get_context().get_trial_id()
    run, settings = trial_specs(search, config, trial_id)
    callbacks = [TuneReportCallback()] if search.scheduler == "asha" else None
    result = run_pretrain(run, storage_dir=storage, callbacks=callbacks)
    scores = score_encoder(search, Path(result.encoder_path), settings)
    ray.tune.report({**scores, "epoch": run.epochs + run.frozen_epochs + 1})


def build_search_tuner(spec: ExperimentSpec, search: SearchSpec):
    """The ``ray.tune.Tuner`` of one search (OptunaSearch, optional ASHA on the proxy)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from raysweep.sweep.plan import make_plan

    storage = str(spec.directory / "search" / search.name)
    searcher = OptunaSearch(metric=search.metric, mode=search.mode, seed=search.seed)
    scheduler = None
    if search.scheduler == "asha":
        if not search.pretrain.proxy_every:
            raise SpecError(f"search {search.name}: scheduler asha needs pretrain.proxy_every > 0 "
                            "(it stops trials on the downstream proxy metric)")
        scheduler = ASHAScheduler(time_attr="epoch", metric=f"proxy_{search.pretrain.proxy}_acc",
                                  mode="max", max_t=search.pretrain.epochs
                                  + search.pretrain.frozen_epochs + 1, grace_period=1)
    concurrency = search.max_concurrent_trials or make_plan(spec).pretrain_concurrency
    trainable = tune.with_parameters(search_trainable, search=search, storage=storage)
    return tune.Tuner(
        trainable,
        param_space=tune_space(dict(search.space)),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                    num_samples=search.num_samples,
                                    max_concurrent_trials=concurrency),
        run_config=tune.RunConfig(name="tune", storage_path=storage),
    )


def run_searches(spec: ExperimentSpec, *, only: list[str] | None = None) -> RunSummary:
    """Run the spec's searches; write each one's ``trials.csv``; summarise the best trial."""
    import time

    from raysweep.sweep.experiment import ensure_ray, record_experiment

    started = time.perf_counter()
    searches = [s for s in spec.search if not only or s.name in only]
    if not searches:
        raise SpecError(f"{spec.name}: no search to run"
                        + (f" named {only[0]!r}" if only else " (the spec has no `search:`)"))
    record_experiment(spec)
    ensure_ray()
    last = None
    for search in searches:
        grid = build_search_tuner(spec, search).fit()
        frame = grid.get_dataframe()
        frame.insert(0, "trial", range(len(frame)))
        frame = frame.rename(columns={search.metric: "value"})
        out = spec.directory / "search" / search.name / "trials.csv"
        atomic_write_text(out, frame.to_csv(index=False))
        best = grid.get_best_result(metric=search.metric, mode=search.mode)
        atomic_write_text(out.with_name("best.json"), json.dumps(
            {"metric": search.metric, "value": best.metrics.get(search.metric),
             "config": best.config}, indent=2, default=str) + "\n")
        last = out
    return RunSummary(experiment_dir=spec.directory, results=last or spec.directory, report=None,
                      n_rows=0, n_new_rows=0, n_pretrain_runs=0,
                      seconds=time.perf_counter() - started)
