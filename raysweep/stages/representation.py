"""The representation step of the evaluate stage: each encoder's representation analysis
(:mod:`raysweep.evaluate.representation`), once per encoder and labelled data, not per seed.

Content-addressed like the result rows (:mod:`raysweep.plan.identity`): an analysis is
identified by a hash of the encoder (architecture and weight digest; for a random-init encoder
also the condition name that seeds it), the labelled data's fingerprint, the spec's
``evaluate.representations`` settings and :data:`REPRESENTATION_VERSION`, and written
atomically, once, to ``<experiment>/representations/<id>.json``. Conditions that evaluate the
same encoder on the same data share one analysis. A rerun computes only what is missing;
after a spec change the old files stay on disk but are left out of the consolidated
``<experiment>/representations.json``, which lists the current spec's conditions, each with
its analysis (the report's input).

The analyses run as Ray tasks with an evaluation trial's resources; :func:`compute_analysis`
is the plain function a task runs (and tests call directly).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from tqdm.auto import tqdm

from raysweep.config import ExperimentSpec
from raysweep.data import load_dataset
from raysweep.evaluate import labelled_features, representation_analysis
from raysweep.plan.identity import condition_identities
from raysweep.plan.trials import make_plan
from raysweep.runtime.failures import trial_error
from raysweep.stages.evaluate import condition_by_name, condition_encoder, condition_labels
from raysweep.storage.atomic import atomic_write_json, stable_hash, to_jsonable
from raysweep.storage.provenance import provenance

#: Bump when the analysis code changes the numbers an analysis holds.
REPRESENTATION_VERSION = 1
ANALYSIS_DIR = "representations"
CONSOLIDATED_FILE = "representations.json"


@dataclass(frozen=True)
class AnalysisRef:
    """A condition's analysis: its identity (None while the encoder does not exist yet)."""

    condition: str
    analysis_id: str | None


def analysis_refs(spec: ExperimentSpec, *, save_digests: bool = True) -> list[AnalysisRef]:
    """One per evaluated condition, in spec order; empty when the spec asks for none."""
    if spec.evaluate is None or spec.evaluate.representations is None:
        return []
    settings = to_jsonable(spec.evaluate.representations)
    refs = []
    for name, identity in condition_identities(spec, save_digests=save_digests).items():
        if identity is None:
            refs.append(AnalysisRef(name, None))
            continue
        key = {"version": REPRESENTATION_VERSION, "encoder": identity["encoder"],
               "data": identity["data"], "settings": settings}
        if identity["encoder"]["weights_sha256"] == "random":
            key["condition"] = name  # a random encoder's initialisation is seeded by the name
        refs.append(AnalysisRef(name, stable_hash(key, length=16)))
    return refs


def analysis_path(spec: ExperimentSpec, analysis_id: str) -> Path:
    return spec.directory / ANALYSIS_DIR / f"{analysis_id}.json"


def stored_analysis(spec: ExperimentSpec, analysis_id: str) -> dict[str, Any] | None:
    """The stored analysis, or None when it is missing or not a whole analysis of this id (a
    damaged file is computed again)."""
    try:
        record = json.loads(analysis_path(spec, analysis_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("id") == analysis_id else None


def compute_analysis(spec: ExperimentSpec, ref: AnalysisRef, *, device: str = "cpu"
                     ) -> dict[str, Any]:
    """The analysis of ``ref``: read when stored, else computed and written atomically."""

    assert spec.evaluate is not None and spec.evaluate.representations is not None
    if ref.analysis_id is None:
        raise ValueError(f"condition {ref.condition}: its encoder does not exist yet")
    stored = stored_analysis(spec, ref.analysis_id)
    if stored is not None:
        return stored
    cond = condition_by_name(spec, ref.condition)
    dataset = load_dataset(cond.data or spec.evaluate.data, progress=False)
    features = labelled_features(condition_encoder(spec, cond), dataset.labelled("train"),
                                 dataset.labelled("test"), class_names=dataset.classes,
                                 device=device)
    record = {"id": ref.analysis_id, "encoder": cond.encoder.name,
              "settings": to_jsonable(spec.evaluate.representations),
              **representation_analysis(features, spec.evaluate.representations),
              "provenance": provenance(spec)}
    atomic_write_json(analysis_path(spec, ref.analysis_id), record)
    return record


def _analysis_task(spec: ExperimentSpec, ref: AnalysisRef) -> str:

    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    compute_analysis(spec, ref, device=device)
    return ref.condition


def run_representation_stage(spec: ExperimentSpec) -> int:
    """Compute the missing analyses of ``spec`` as Ray tasks (the caller holds the experiment
    lock and Ray is initialised), then write ``representations.json``; return how many were
    computed. A failed task raises its error as one line."""


    refs = analysis_refs(spec)
    todo = {ref.analysis_id: ref for ref in refs
            if ref.analysis_id is not None and stored_analysis(spec, ref.analysis_id) is None}
    if todo:
        resources = make_plan(spec).eval_resources
        task = ray.remote(num_cpus=resources.cpu, num_gpus=resources.gpu,
                          max_retries=1)(_analysis_task)
        pending = {task.remote(spec, ref): ref for ref in todo.values()}
        with tqdm(total=len(pending), desc="representation analyses", unit="encoder") as bar:
            while pending:
                [done], _ = ray.wait(list(pending), num_returns=1)
                ref = pending.pop(done)
                try:
                    ray.get(done)
                except Exception as err:  # noqa: BLE001 - any task failure: one line
                    raise trial_error(err, what=f"representation analysis of {ref.condition}",
                                      log=None) from err
                bar.update(1)
    consolidate_analyses(spec, refs)
    return len(todo)


def consolidate_analyses(spec: ExperimentSpec, refs: list[AnalysisRef] | None = None) -> Path:
    """``representations.json``: ``{"conditions": [{"condition", "encoder_source", ...the
    analysis...}]}`` for the current spec's conditions whose analysis is stored (empty when the
    spec asks for none), written atomically."""

    refs = analysis_refs(spec) if refs is None else refs
    labels = condition_labels(spec) if spec.evaluate is not None else {}
    entries = []
    for ref in refs:
        record = None if ref.analysis_id is None else stored_analysis(spec, ref.analysis_id)
        if record is not None:
            entries.append({"condition": ref.condition, **labels.get(ref.condition, {}),
                            **record})
    return atomic_write_json(spec.directory / CONSOLIDATED_FILE, {"conditions": entries})
