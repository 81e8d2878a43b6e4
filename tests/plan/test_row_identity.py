"""Content-addressed rows: a row's identity is everything that determines it, so a changed
setting, data file or encoder recomputes exactly the rows it affects, while labels, storage
paths and file locations recompute nothing. No Ray here: trials run through
:func:`evaluate_trial_rows` directly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from raysweep.config import spec_from_data
from raysweep.experiment.runner import stored_state
from raysweep.plan.identity import identify_trials, planned_refs
from raysweep.stages.evaluate import condition_labels, evaluate_trial_rows
from raysweep.store.results import ResultsStore, RowKey, RowRef

TARGET = {"sources": [{"kind": "digits", "classes": ["5", "6", "7"]}],
          "image_size": 16, "test_fraction": 0.3, "label_count": 30}


def spec_data(root: Path, **changes) -> dict:
    data = {
        "name": "ident", "storage": str(root),
        "evaluate": {
            "data": TARGET, "seeds": 2, "protocols": ["probe"],
            "settings": {"epochs": 1, "batch_size": 16, "lr_max": 1e-3, "tta_views": 0},
            "encoders": [
                {"name": "a", "encoder": {"name": "small_resnet"}, "keys": {"init": "r"}},
                {"name": "b", "encoder": {"name": "small_resnet"},
                 "overrides": {"head_lr": 3e-3}}],
        },
    }
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[last] = value
    return data


def ids(data: dict) -> dict[tuple[str, str, int], str]:
    spec = spec_from_data(data)
    return {(r.key.condition, r.key.protocol, r.key.seed): r.row_id
            for r in planned_refs(identify_trials(spec))}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))


def _changed(before: dict, after: dict) -> set[str]:
    return {key[0] for key in before if before[key] != after[key]}


@pytest.mark.parametrize(("change", "affected"), [
    ({"evaluate.settings.epochs": 2}, {"a", "b"}),
    ({"evaluate.settings.lr_max": 0.5}, {"a", "b"}),
    ({"evaluate.encoders.1.overrides": {"head_lr": 1e-2}}, {"b"}),
    ({"evaluate.data.label_count": 20}, {"a", "b"}),
    ({"evaluate.data.split_seed": 1}, {"a", "b"}),
    ({"evaluate.encoders.0.encoder": {"name": "resnet18"}}, {"a"}),
    # Labels and operational settings name or place things; they change no row.
    ({"evaluate.encoders.0.keys": {"init": "renamed"}}, set()),
    ({"evaluate.settings.batched_probes": False}, set()),
    ({"evaluate.settings.device": "cpu"}, set()),
    ({"storage": "/elsewhere/runs"}, set()),
    ({"evaluate.data.cache_dir": "/elsewhere/cache"}, set()),
])
def test_a_change_affects_exactly_the_rows_it_determines(tmp_path: Path, change, affected):
    before = ids(spec_data(tmp_path))
    assert len(set(before.values())) == len(before) == 4  # every row its own identity
    assert _changed(before, ids(spec_data(tmp_path, **change))) == affected


def _npz_copy(source: Path, target: Path, flip_first_label: bool = False) -> Path:
    with np.load(source) as arrays:
        content = {k: arrays[k] for k in arrays.files}
    if flip_first_label:
        content["train_labels"] = content["train_labels"].copy()
        content["train_labels"].flat[0] = 1 - content["train_labels"].flat[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez(target, **content)
    return target


def test_data_is_identified_by_content_not_path(tmp_path: Path, breastmnist_npz: Path):
    def with_npz(path: Path) -> dict:
        data = spec_data(tmp_path)
        data["evaluate"]["data"] = {"sources": [{"kind": "medmnist", "path": str(path)}],
                                    "image_size": 16, "label_count": 40}
        return data

    original = ids(with_npz(_npz_copy(breastmnist_npz, tmp_path / "one" / "b.npz")))
    moved = ids(with_npz(_npz_copy(breastmnist_npz, tmp_path / "two" / "moved.npz")))
    assert moved == original
    relabelled = ids(with_npz(_npz_copy(breastmnist_npz, tmp_path / "three" / "b.npz",
                                        flip_first_label=True)))
    assert _changed(original, relabelled) == {"a", "b"}


def test_encoder_weights_are_identified_by_content_not_path(tmp_path: Path):
    from raysweep.models import build_encoder

    weights = tmp_path / "w" / "encoder.pt"
    weights.parent.mkdir()
    torch.save(build_encoder("small_resnet", "random",
                             generator=torch.Generator().manual_seed(0)).state_dict(), weights)

    def with_file(path: Path) -> dict:
        return spec_data(tmp_path, **{"evaluate.encoders.0.encoder": {
            "name": "small_resnet", "weights": f"file:{path}"}})

    original = ids(with_file(weights))
    copy = tmp_path / "elsewhere" / "same.pt"
    copy.parent.mkdir()
    shutil.copy(weights, copy)
    assert ids(with_file(copy)) == original
    torch.save(build_encoder("small_resnet", "random",
                             generator=torch.Generator().manual_seed(1)).state_dict(), weights)
    assert _changed(original, ids(with_file(weights))) == {"a"}


def _run_all(data: dict) -> None:
    spec = spec_from_data(data)
    for trial in identify_trials(spec):
        evaluate_trial_rows(spec, trial)


def test_changed_setting_recomputes_exactly_the_affected_rows(tmp_path: Path):
    first = spec_from_data(spec_data(tmp_path))
    _run_all(spec_data(tmp_path))
    store = ResultsStore(first.directory)
    refs = planned_refs(identify_trials(first))
    run_ids = {r.key: store.read(r)["run_id"] for r in refs}
    assert stored_state(first) == "rows: 4 done, 0 stale, 0 new (4 in all)"

    changed_data = spec_data(tmp_path, **{"evaluate.encoders.1.overrides": {"head_lr": 1e-2}})
    changed = spec_from_data(changed_data)
    assert stored_state(changed) == "rows: 2 done, 2 stale, 0 new (4 in all)"
    _run_all(changed_data)
    new_refs = planned_refs(identify_trials(changed))
    assert store.status(new_refs).missing == ()
    new_run_ids = {r.key: store.read(r)["run_id"] for r in new_refs}
    assert {k.condition for k in run_ids if run_ids[k] != new_run_ids[k]} == {"b"}
    # The old rows stay on disk, but only the current spec's reach the results table.
    assert len(list(store.rows_dir.rglob("*.json"))) == 6
    table = store.consolidate(tuple(new_refs), condition_labels(changed))
    assert len(table) == 4 and set(table["row_id"]) == {r.row_id for r in new_refs}
    assert list(table.loc[table["condition"] == "a", "init"]) == ["r", "r"]
    # Back to the first spec: its rows are still there, nothing to compute.
    assert stored_state(first) == "rows: 4 done, 0 stale, 0 new (4 in all)"


def test_results_store_status_and_consolidation(tmp_path: Path):
    store = ResultsStore(tmp_path)
    key = RowKey("SL", "probe", 3)

    def row(row_id: str, acc: float) -> dict:
        return {"condition": "SL", "protocol": "probe", "seed": 3, "row_id": row_id,
                "accuracy": acc}

    store.write(row("aaaa", 0.5))
    store.write(row("aaaa", 0.6))  # the same row written twice replaces, never adds
    assert store.read(RowRef(key, "aaaa"))["accuracy"] == 0.6
    status = store.status([RowRef(key, "aaaa"), RowRef(key, "bbbb"),
                           RowRef(RowKey("SL", "probe", 4), "cccc"),
                           RowRef(RowKey("SSL", "probe", 0), None)])
    assert [len(status.done), len(status.stale), len(status.new), len(status.pending)] == [
        1, 1, 1, 1]
    assert "1 done, 1 stale, 1 new (4 in all); 1 more wait" in status.describe()
    # A damaged or planted row file is not a row: it is computed and written again.
    store.row_path(RowRef(key, "bbbb")).write_bytes(b"\x80\x04not json")
    assert not store.has(RowRef(key, "bbbb"))
    store.row_path(RowRef(key, "dddd")).write_text(json.dumps({**row("other", 0.1)}))
    assert not store.has(RowRef(key, "dddd"))  # a file under another row's name
    table = store.consolidate([RowRef(key, "aaaa"), RowRef(key, "bbbb")], {"SL": {"init": "x"}})
    assert table.to_dict("records") == [{**row("aaaa", 0.6), "init": "x"}]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_a_crashed_write_leaves_no_row(tmp_path: Path, monkeypatch):
    store = ResultsStore(tmp_path)
    ref = RowRef(RowKey("SL", "probe", 0), "aaaa")

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dumps", explode)
    with pytest.raises(OSError):
        store.write({"condition": "SL", "protocol": "probe", "seed": 0, "row_id": "aaaa"})
    monkeypatch.undo()
    assert not store.has(ref) and store.stored_for(ref.key) == []
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_a_gpus_auto_rows_and_a_cpus_are_different_rows(tmp_path: Path):
    """Under ``precision: auto`` the same spec planned for a GPU (bf16) and for a CPU (fp32)
    gives its fine-tuning and probe rows different identities; logistic rows (fp32 features
    on any device) and a spec that fixes its arithmetic keep one identity."""
    protocols = {"evaluate.protocols": ["finetune", "probe", "logistic"]}
    spec = spec_from_data(spec_data(tmp_path, **protocols))

    def on(device_is_gpu: bool, plan=spec) -> dict:
        return {(r.key.condition, r.key.protocol, r.key.seed): r.row_id
                for r in planned_refs(identify_trials(plan, on_gpu=device_is_gpu))}

    gpu, cpu = on(True), on(False)
    differ = {key[1] for key in cpu if cpu[key] != gpu[key]}
    assert differ == {"finetune", "probe"}
    fixed = spec_from_data(spec_data(tmp_path, **protocols, **{
        "evaluate.settings.precision": "fp32", "evaluate.settings.channels_last": False}))
    assert on(True, fixed) == on(False, fixed)


def test_a_row_with_an_undefined_metric_reads_back_and_an_infinite_one_does_not(tmp_path: Path):
    """A metric a protocol does not define is NaN in its row (the logistic protocol's
    ``lr_max``, an AUC on a test set of one class): such a row is read back as written, and
    consolidates; Infinity in a row is a tampered file, refused in one line naming it."""
    import math

    from raysweep.storage.reading import StoredFileError

    store = ResultsStore(tmp_path)
    key = RowKey("SL", "logistic", 0)
    path = store.write({"condition": "SL", "protocol": "logistic", "seed": 0, "row_id": "aaaa",
                        "accuracy": 0.5, "lr_max": math.nan})
    assert "NaN" in path.read_text()
    row = store.read(RowRef(key, "aaaa"))
    assert row["accuracy"] == 0.5 and math.isnan(row["lr_max"])
    table = store.table([RowRef(key, "aaaa")])
    assert math.isnan(table["lr_max"].iloc[0])
    path.write_text(path.read_text().replace("NaN", "Infinity"))
    with pytest.raises(StoredFileError, match="Infinity is not a finite number"):
        store.read(RowRef(key, "aaaa"))
