"""The evaluate stage's additions: ``logistic`` rows (one trial per condition, identified by
their own settings only), validation curves when the data has a validation split, and the
representation analyses (once per encoder and data, content-addressed, idempotent). Rows of
the paper's protocols keep the identity they had before these settings existed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from raysweep.config import EvaluationSpec, spec_from_data
from raysweep.errors import DataError
from raysweep.plan.identity import identify_trials, planned_refs
from raysweep.plan.trials import EvalTrial, eval_trials
from raysweep.report import write_report
from raysweep.stages.evaluate import condition_labels, evaluate_trial_rows
from raysweep.stages.representation import (
    CONSOLIDATED_FILE,
    analysis_path,
    analysis_refs,
    compute_analysis,
    consolidate_analyses,
    run_representation_stage,
)
from raysweep.storage.atomic import stable_hash, to_jsonable
from raysweep.store.results import ResultsStore

TARGET = {"sources": [{"kind": "digits", "classes": ["5", "6", "7"]}],
          "image_size": 16, "test_fraction": 0.3, "label_count": 30}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))


def spec_data(root: Path, **evaluate) -> dict:
    stage = {"data": TARGET, "seeds": 2, "protocols": ["finetune", "probe", "logistic"],
             "settings": {"epochs": 1, "batch_size": 16, "lr_max": 1e-3, "tta_views": 0,
                          "logistic": {"c_min": 0.01, "c_max": 1.0, "c_num": 3}},
             "encoders": [{"name": "a", "encoder": {"name": "small_resnet"}},
                          {"name": "b", "encoder": {"name": "small_resnet"},
                           "protocols": ["logistic"]}]}
    stage.update(evaluate)
    return {"name": "extras", "storage": str(root), "evaluate": stage}


def ids(data: dict) -> dict[tuple[str, str, int], str]:
    return {(r.key.condition, r.key.protocol, r.key.seed): r.row_id
            for r in planned_refs(identify_trials(spec_from_data(data)))}


def changed(before: dict, after: dict) -> set[tuple[str, str]]:
    return {key[:2] for key in before if before[key] != after[key]}


def test_each_protocol_is_identified_by_its_own_settings(tmp_path: Path) -> None:
    base = spec_data(tmp_path)
    before = ids(base)
    assert len(set(before.values())) == len(before) == 8

    def with_settings(**changes) -> dict:
        data = spec_data(tmp_path)
        data["evaluate"]["settings"] = {**data["evaluate"]["settings"], **changes}
        return data

    assert changed(before, ids(with_settings(epochs=3))) == {("a", "finetune"), ("a", "probe")}
    assert changed(before, ids(with_settings(logistic={"c_num": 5}))) == {
        ("a", "logistic"), ("b", "logistic")}
    assert changed(before, ids(with_settings(validation_curves=True))) == {("a", "finetune")}


def test_rows_of_the_paper_protocols_keep_their_identity(tmp_path: Path) -> None:
    """The identity formula of rows computed before the logistic and validation settings (and
    the downstream optimiser, precision and augmentation fields) existed: every EvaluationSpec
    field of that time but device and batched_probes."""
    from raysweep.data.fingerprint import dataset_fingerprint

    data = spec_data(tmp_path)
    spec = spec_from_data(data)
    old_fields = {k: v for k, v in to_jsonable(EvaluationSpec(**{
        k: v for k, v in data["evaluate"]["settings"].items() if k != "logistic"})).items()
        if k not in ("device", "batched_probes", "validation_curves", "logistic", "optimizer",
                     "schedule", "milestones", "gamma", "precision", "channels_last",
                     "train_augmentation")}
    shared = {"version": 1, "condition": "a",
              "encoder": {"arch": "small_resnet", "weights_sha256": "random"},
              "data": dataset_fingerprint(spec.evaluate.data), "settings": old_fields}
    got = ids(data)
    for protocol in ("finetune", "probe"):
        for seed in (0, 1):
            assert got[("a", protocol, seed)] == stable_hash(
                {**shared, "protocol": protocol, "seed": seed}, length=16)


def test_logistic_is_one_trial_per_condition_and_writes_every_seed(tmp_path: Path) -> None:
    spec = spec_from_data(spec_data(tmp_path, seeds=3))
    logistic = [t for t in eval_trials(spec) if t.protocol == "logistic"]
    assert logistic == [EvalTrial("a", "logistic", (0, 1, 2)),
                        EvalTrial("b", "logistic", (0, 1, 2))]
    rows = evaluate_trial_rows(spec, logistic[1])
    assert [r["seed"] for r in rows] == [0, 1, 2]
    assert all(r["protocol"] == "logistic" and r["condition"] == "b" for r in rows)
    assert {"row_id", "accuracy", "f1_weighted", "logistic_c"} <= set(rows[0])
    store = ResultsStore(spec.directory)
    stamps = [store.row_path(ref).stat().st_mtime_ns
              for ref in planned_refs(identify_trials(spec, tuple(logistic[1:])))]
    assert evaluate_trial_rows(spec, logistic[1]) == rows  # stored rows, nothing recomputed
    assert stamps == [store.row_path(ref).stat().st_mtime_ns
                      for ref in planned_refs(identify_trials(spec, tuple(logistic[1:])))]


def test_validation_curves_appear_when_the_data_has_a_validation_fraction(
        tmp_path: Path) -> None:
    data = spec_data(tmp_path, protocols=["finetune"],
                     data={**TARGET, "val_fraction": 0.2},
                     encoders=[{"name": "a", "encoder": {"name": "small_resnet"}}])
    data["evaluate"]["settings"] = {**data["evaluate"]["settings"], "epochs": 2,
                                    "validation_curves": True}
    spec = spec_from_data(data)
    trials = identify_trials(spec)
    for trial in trials:
        [row] = evaluate_trial_rows(spec, trial)
        curve = json.loads(row["val_curve"])
        assert [r["epoch"] for r in curve] == [1, 2]
    store = ResultsStore(spec.directory)
    store.consolidate(planned_refs(trials), condition_labels(spec))
    paths = write_report(spec.directory)
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert "## Validation curves" in markdown
    figure = paths.out_dir / "figures" / "validation-curves-finetune.png"
    assert figure in paths.figures and figure.read_bytes().startswith(b"\x89PNG")
    table = pd.read_csv(paths.tables["validation-curves-finetune"]["csv"])
    last = table[(table.epoch == 2) & (table.metric == "accuracy")]
    rows = store.table(planned_refs(trials))
    accuracies = [json.loads(c)[-1]["accuracy"] for c in rows["val_curve"]]
    assert last["mean"].item() == pytest.approx(sum(accuracies) / 2)
    assert last["n"].item() == 2

    # without a validation split the run says how to get one
    data["evaluate"]["data"] = TARGET
    no_val = spec_from_data(data)
    with pytest.raises(DataError, match="val_fraction"):
        evaluate_trial_rows(no_val, identify_trials(no_val)[0])


def encoder_file(path: Path) -> str:
    from raysweep.models import build_encoder

    encoder = build_encoder("small_resnet", generator=torch.Generator().manual_seed(1))
    torch.save(encoder.state_dict(), path)
    return f"file:{path}"


def test_analyses_are_once_per_encoder_and_data_and_idempotent(tmp_path: Path) -> None:
    weights = encoder_file(tmp_path / "enc.pt")
    data = spec_data(tmp_path, representations={"max_points": 40, "perplexity": 5},
                     encoders=[{"name": "file-1", "encoder": {"name": "small_resnet",
                                                              "weights": weights}},
                               {"name": "file-2", "encoder": {"name": "small_resnet",
                                                              "weights": weights},
                                "overrides": {"head_lr": 0.01}},
                               {"name": "rand-1", "encoder": {"name": "small_resnet"}},
                               {"name": "rand-2", "encoder": {"name": "small_resnet"}}])
    spec = spec_from_data(data)
    refs = {r.condition: r.analysis_id for r in analysis_refs(spec)}
    # the same encoder on the same data: one analysis; random inits differ by condition
    assert refs["file-1"] == refs["file-2"]
    assert len({refs["file-1"], refs["rand-1"], refs["rand-2"]}) == 3
    # fewer labels: other training features, another analysis; fastai settings: the same one
    fewer = spec_from_data({**data, "evaluate": {**data["evaluate"],
                                                 "data": {**TARGET, "label_count": 20}}})
    assert analysis_refs(fewer)[0].analysis_id != refs["file-1"]
    retuned = spec_from_data({**data, "evaluate": {**data["evaluate"],
                                                   "settings": {"epochs": 7}}})
    assert {r.condition: r.analysis_id for r in analysis_refs(retuned)} == refs
    resampled = spec_from_data({**data, "evaluate": {**data["evaluate"], "representations": {
        "max_points": 40, "perplexity": 6}}})
    assert analysis_refs(resampled)[0].analysis_id != refs["file-1"]

    first_ref = analysis_refs(spec)[0]
    record = compute_analysis(spec, first_ref)
    path = analysis_path(spec, first_ref.analysis_id)
    stamp = path.stat().st_mtime_ns
    assert compute_analysis(spec, analysis_refs(spec)[1]) == record  # shared, not recomputed
    assert path.stat().st_mtime_ns == stamp
    assert len(record["embedding"]["index"]) == min(record["n_test"], 40)
    assert 0 <= record["knn_accuracy"] <= 1 and -1 <= record["silhouette"] <= 1
    consolidate_analyses(spec)
    listed = json.loads((spec.directory / CONSOLIDATED_FILE).read_text())["conditions"]
    assert [e["condition"] for e in listed] == ["file-1", "file-2"]  # the stored ones
    assert listed[0]["encoder_source"] == weights

    path.write_text("{not json")  # a damaged file is computed again
    assert compute_analysis(spec, first_ref)["knn_accuracy"] == record["knn_accuracy"]

    off = spec_from_data({**data, "evaluate": {k: v for k, v in data["evaluate"].items()
                                               if k != "representations"}})
    assert analysis_refs(off) == []
    consolidate_analyses(off)  # analyses switched off: the report gets none
    assert json.loads((spec.directory / CONSOLIDATED_FILE).read_text()) == {"conditions": []}


@pytest.mark.slow
@pytest.mark.ray
def test_representation_stage_runs_each_missing_analysis_once(ray_session,
                                                              tmp_path: Path) -> None:
    spec = spec_from_data(spec_data(tmp_path, representations={"max_points": 30,
                                                               "perplexity": 5}))
    assert run_representation_stage(spec) == 2
    listed = json.loads((spec.directory / CONSOLIDATED_FILE).read_text())["conditions"]
    assert [e["condition"] for e in listed] == ["a", "b"]
    assert all(len(e["embedding"]["tsne"]) == 30 for e in listed)
    assert run_representation_stage(spec) == 0
