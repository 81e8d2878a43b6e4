"""What a search leaves besides its study: ``trials.parquet`` / ``trials.csv``, ``default.json``,
``best.json`` and ``best.yaml`` in ``<experiment>/search/<name>/`` (all written atomically and
rebuilt from the study after every run, so they always describe the whole study).

``trials.*``: one row per study trial: ``trial`` (number), ``state`` (complete, pruned,
fail, interrupted, running, waiting), ``value`` (the objective, complete trials only), one
column per searched key, ``value_seed<s>`` (the metric of seed ``s``), ``mean_<metric>``
(every overall probe metric, mean over the seeds), ``epochs_done`` and ``proxy_last`` (the last
epoch and proxy value reported; for pruned trials the epoch ASHA stopped them at),
``duration_s``, ``pretrain_run`` (the run directory under ``pretrain/``), ``retry_of`` and the
start and end times.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pandas as pd
import yaml
from optuna.trial import TrialState

from raysweep.config import SearchSpec
from raysweep.search.searcher import MEAN_PREFIX, OBJECTIVE, VALUES_PER_SEED
from raysweep.search.space import default_values, grouped
from raysweep.search.study import interrupted_numbers, state_counts, trial_state
from raysweep.storage.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from raysweep.storage.paths import AnyPath
from raysweep.storage.provenance import provenance
from raysweep.store.searches import STUDY_FILE

__all__ = ["BEST_JSON", "BEST_YAML", "DEFAULT_JSON", "TRIALS_CSV", "TRIALS_PARQUET",
           "best_yaml", "read_default", "trials_table", "write_default", "write_outputs"]

TRIALS_PARQUET = "trials.parquet"
TRIALS_CSV = "trials.csv"
DEFAULT_JSON = "default.json"
BEST_JSON = "best.json"
BEST_YAML = "best.yaml"


def trials_table(study: Any, search: SearchSpec) -> pd.DataFrame:
    """The study as one row per trial (columns in the module docstring)."""
    trials = study.get_trials(deepcopy=False)
    interrupted = interrupted_numbers(trials)
    rows = []
    for trial in trials:
        state = trial_state(trial, interrupted)
        attrs = trial.user_attrs
        steps = sorted(trial.intermediate_values)
        row: dict[str, Any] = {
            "trial": trial.number, "state": state,
            "value": trial.value if state == "complete" else math.nan,
            **{key: trial.params.get(key) for key in search.space},
        }
        for seed, value in zip(attrs.get("seeds", []), attrs.get("values_per_seed", []),
                               strict=False):
            row[f"value_seed{seed}"] = value
        for metric, value in (attrs.get("metric_means") or {}).items():
            row[f"mean_{metric}"] = value
        row["epochs_done"] = attrs.get("epochs_done", steps[-1] if steps else math.nan)
        row["proxy_last"] = trial.intermediate_values[steps[-1]] if steps else math.nan
        start, end = trial.datetime_start, trial.datetime_complete
        row["duration_s"] = (end - start).total_seconds() if start and end else math.nan
        row["pretrain_run"] = attrs.get("pretrain_run")
        row["retry_of"] = attrs.get("retry_of")
        row["datetime_start"] = start.isoformat() if start else None
        row["datetime_complete"] = end.isoformat() if end else None
        rows.append(row)
    columns = ["trial", "state", "value", *search.space]
    return pd.DataFrame(rows, columns=columns if not rows else None)


def write_default(directory: AnyPath, study: str, search: SearchSpec,
                  result: dict[str, Any]) -> AnyPath:
    """``default.json``: the default configuration's score (from its trial's final result),
    valid for the study named ``study``."""

    record = {
        "study_name": study, "params": default_values(search),
        "value": result[OBJECTIVE], "values_per_seed": list(result[VALUES_PER_SEED]),
        "seeds": list(result["seeds"]), "pretrain_run": result.get("pretrain_run"),
        "metric_means": {k[len(MEAN_PREFIX):]: v for k, v in result.items()
                         if k.startswith(MEAN_PREFIX)},
    }
    return atomic_write_json(directory / DEFAULT_JSON, record)


def read_default(directory: AnyPath, study: str) -> dict[str, Any] | None:
    """The stored default score when it belongs to the study named ``study``, else None."""

    path = directory / DEFAULT_JSON
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("study_name") != study:
        return None
    return record


def _best(study: Any) -> dict[str, Any] | None:

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    trial = study.best_trial
    return {"trial": trial.number, "value": trial.value, "params": dict(trial.params),
            "values_per_seed": trial.user_attrs.get("values_per_seed"),
            "seeds": trial.user_attrs.get("seeds"),
            "pretrain_run": trial.user_attrs.get("pretrain_run")}


def best_yaml(search: SearchSpec, best: dict[str, Any] | None,
              default: dict[str, Any] | None) -> str:
    """The best parameters as YAML to paste into a spec (comments say where)."""
    if best is None:
        return f"# search {search.name}: no trial has completed yet\n"
    compared = (f", default {default['value']:.4f}" if default else "")
    header = [
        f"# best of search {search.name}: trial {best['trial']}, mean {search.metric} "
        f"{best['value']:.4f} on the validation split{compared}",
        "# pretrain: keys go into a pretrain run (or pretrain.base of a grid);",
        "# evaluate: keys go into evaluate.settings",
    ]
    body = yaml.safe_dump(grouped(best["params"]), sort_keys=True, default_flow_style=False)
    return "\n".join(header) + "\n" + body


def write_outputs(directory: AnyPath, study: Any, search: SearchSpec) -> dict[str, Any]:
    """Write ``trials.parquet`` / ``.csv``, ``best.json`` and ``best.yaml``; return
    ``best.json``'s content."""
    table = trials_table(study, search)
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    atomic_write_bytes(directory / TRIALS_PARQUET, buffer.getvalue())
    atomic_write_text(directory / TRIALS_CSV, table.to_csv(index=False))
    best = _best(study)
    default = read_default(directory, study.study_name)
    record = {
        "search": search.name, "study_name": study.study_name, "storage": STUDY_FILE,
        "metric": search.metric, "direction": "maximize" if search.mode == "max" else "minimize",
        "num_samples": search.num_samples, "states": state_counts(study),
        "best": best, "default": default, "provenance": provenance(search),
    }
    atomic_write_json(directory / BEST_JSON, record)
    atomic_write_text(directory / BEST_YAML, best_yaml(search, best, default))
    return record
