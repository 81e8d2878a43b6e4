"""What a tracker receives: :class:`TrackedRecord`, built from what raysweep has stored.

Trackers mirror the experiment directory, never the other way round: a record is made from a
stored result row (``rows/.../seed-NNNN-<row id>.json`` with the condition's labels), from a
finished pre-training run's ``metrics.jsonl`` and ``meta.json``, or from a finished search trial's
parameters and objective. Every record carries a ``key`` that identifies it in every tracker
(the row id, the run directory's name, the search trial), so that tracking the same thing twice
(a rerun, the catch-up at the end of a stage) adds nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from raysweep.storage.paths import AnyPath

__all__ = ["TrackedRecord", "pretrain_record", "row_record", "search_trial_record"]

RecordKind = Literal["row", "pretrain", "search"]

#: Row columns logged as parameters (besides the condition's labels): the protocol as run.
ROW_PARAMETERS = ("condition", "protocol", "seed", "test_set", "head_epochs", "epochs",
                  "batch_size", "tta_views", "bn_in_head_epoch", "seed_scope", "precision",
                  "channels_last")
#: Row columns logged as tags: identity and provenance.
ROW_TAGS = ("row_id", "training_id", "run_id", "spec_hash", "git_commit", "finished_at")
#: Longest parameter value kept (longer values, e.g. a data source list, are cut).
MAX_PARAM_CHARS = 500


@dataclass(frozen=True)
class TrackedRecord:
    """One tracked run.

    ``steps`` are ``(step, {metric: value})`` pairs: one step (0) for a result row or a
    search trial, one per epoch (``epoch`` of ``metrics.jsonl``) for a pre-training run.
    ``path`` is where file-based trackers put it (``rows/SSL/probe/seed-0001-<row id>``)."""

    kind: RecordKind
    key: str
    name: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    steps: tuple[tuple[int, dict[str, float]], ...] = ()

    @property
    def final_metrics(self) -> dict[str, float]:
        """Every metric's last value (what a row's or trial's summary shows)."""
        final: dict[str, float] = {}
        for _, metrics in self.steps:
            final.update(metrics)
        return final


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a finite or NaN number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:MAX_PARAM_CHARS]


def row_record(row: Mapping[str, Any], labels: Mapping[str, Any]) -> TrackedRecord:
    """A stored result row as a tracked run: its condition's labels (keys, encoder, encoder
    source) and protocol columns as parameters, every numeric column as a metric, its row id
    and provenance as tags. ``labels`` are the columns the results table adds to the row."""
    full = {**row, **labels}
    params = {k: _param(full[k]) for k in (*ROW_PARAMETERS, *labels)
              if k in full and full[k] is not None}
    tags = {k: str(full[k]) for k in ROW_TAGS if full.get(k) is not None}
    metrics = {k: number for k, v in full.items()
               if k not in params and k not in tags and (number := _number(v)) is not None}
    test_set = full.get("test_set")
    name = f"{full['condition']}/{full['protocol']}/seed-{int(full['seed']):04d}"
    name += f"/{test_set}" if test_set else ""
    path = f"rows/{full['condition']}/{full['protocol']}/"
    path += f"{test_set}/" if test_set else ""
    path += f"seed-{int(full['seed']):04d}-{full['row_id']}"
    return TrackedRecord(kind="row", key=str(full["row_id"]), name=name, path=path,
                         params=params, tags=tags, steps=((0, metrics),))


def _flat(prefix: str, value: Any, into: dict[str, str]) -> None:
    if isinstance(value, Mapping) and value:
        for key, inner in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), inner, into)
    elif value is not None:
        into[prefix] = _param(value)


def pretrain_record(run_dir: AnyPath, metrics_file: str, meta_file: str, *,
                    group: str = "pretrain") -> TrackedRecord | None:
    """A pre-training run as a tracked run: one step per epoch of ``metrics.jsonl`` (its
    numeric fields: loss terms, learning rate, images per second, proxy), the run's spec (from
    ``meta.json``, flattened to dotted keys) as parameters. None when the run has not finished
    (no ``meta.json``). ``group``: ``pretrain``, or ``search/<name>`` for a search's runs."""
    meta_path = run_dir / meta_file
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    steps = []
    for line in (run_dir / metrics_file).read_text().splitlines():
        if line.strip():
            epoch_metrics = json.loads(line)
            values = {k: number for k, v in epoch_metrics.items()
                      if k != "epoch" and (number := _number(v)) is not None}
            steps.append((int(epoch_metrics["epoch"]), values))
    params: dict[str, str] = {}
    _flat("", meta.get("spec", {}), params)
    tags = {"run_dir": str(run_dir), "result_hash": str(meta.get("result_hash", "")),
            "git_commit": str(meta.get("git_commit", ""))}
    return TrackedRecord(kind="pretrain", key=f"{group}/{run_dir.name}", name=run_dir.name,
                         path=f"{group}/{run_dir.name}", params=params, tags=tags,
                         steps=tuple(steps))


def search_trial_record(search: str, config: Mapping[str, Any],
                        result: Mapping[str, Any]) -> TrackedRecord:
    """A finished search trial: its sampled parameters and role, its objective and the other
    numeric values it reported (means over its seeds, the proxy)."""
    number = int(config.get("number", -1))
    role = str(config.get("role", "trial"))
    params = {"role": role, "number": str(number),
              **{str(k): _param(v) for k, v in dict(config.get("params", {})).items()}}
    metrics = {str(k): number_ for k, v in result.items()
               if (number_ := _number(v)) is not None and math.isfinite(number_)
               and not str(k).startswith(("time_", "timestamp", "pid", "training_iteration",
                                          "iterations_since_restore", "config"))}
    tags = {"pretrain_run": str(result.get("pretrain_run", ""))}
    name = f"{search}/{role}-{number:04d}" if number >= 0 else f"{search}/{role}"
    return TrackedRecord(kind="search", key=f"search/{search}/{role}-{number}", name=name,
                         path=f"search/{name}", params=params, tags=tags,
                         steps=((0, metrics),))
