"""The studies of the papers: external test sets with shared training, label budgets as a
study axis, per-condition seeds, and row identities that stay what they were. No Ray here:
trials run through :func:`evaluate_trial_rows` directly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import raysweep.stages.evaluate
from raysweep.config import spec_from_data
from raysweep.experiment.demo import demo_spec_dict
from raysweep.experiment.runner import stored_state
from raysweep.plan.budgets import label_arms, label_budgets
from raysweep.plan.identity import ROW_IDENTITY_VERSION, identify_trials, planned_refs
from raysweep.plan.resources import ClusterResources
from raysweep.plan.trials import eval_trials, make_plan
from raysweep.stages.evaluate import condition_labels, evaluate_trial_rows
from raysweep.storage.atomic import stable_hash, to_jsonable
from raysweep.store.results import ResultsStore

TARGET = {"sources": [{"kind": "digits", "classes": ["5", "6", "7"]}],
          "image_size": 16, "label_count": 30}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))


def ids(data: dict) -> dict[str, str]:
    """``condition/protocol/seed`` (``/test set`` for an external one) -> row identity."""
    spec = spec_from_data(data)
    return {"/".join([r.key.condition, r.key.protocol, str(r.key.seed)]
                     + ([r.key.test_set] if r.key.test_set != "test" else [])): r.row_id
            for r in planned_refs(identify_trials(spec, save_digests=False)) if r.row_id}


# --------------------------------------------------------------------- identities stay valid

#: A spec's row identities computed by the code before external test sets, label budgets,
#: downstream optimisers and per-condition seeds existed (identity version 1).
PINNED_SPEC = {
    "name": "pin", "storage": "/nonexistent/runs", "evaluate": {
        "data": {"sources": [{"kind": "digits", "classes": ["5", "6", "7"]}],
                 "image_size": 16, "test_fraction": 0.3, "label_count": 30},
        "seeds": 2, "protocols": ["finetune", "probe", "logistic"],
        "settings": {"epochs": 1, "batch_size": 16, "lr_max": 1e-3, "tta_views": 0,
                     "validation_curves": True,
                     # the default of that time (now log_loss: a new default, new rows)
                     "logistic": {"select_by": "accuracy"}},
        "encoders": [{"name": "a", "encoder": {"name": "small_resnet"}},
                     {"name": "b", "encoder": {"name": "small_resnet"},
                      "overrides": {"head_lr": 3e-3}}]}}
PINNED_IDS = {
    "a/finetune/0": "30b3b05d415bc971", "a/finetune/1": "eb0c428e04b0a990",
    "a/probe/0": "3d6124eff947c8fb", "a/probe/1": "3802283386cbfd8a",
    "a/logistic/0": "eee49fb0770458a4", "a/logistic/1": "75eb583f0bc9878e",
    "b/finetune/0": "1049d7a471a90025", "b/finetune/1": "40a7898ab3598591",
    "b/probe/0": "8bf6b6ccd6bacbc1", "b/probe/1": "0ec4edad4b49a3e7",
    "b/logistic/0": "420e5f5a72d7f3a7", "b/logistic/1": "a6022073c89b8e51",
}
#: The demo's random-init rows (the rows of its pre-trained encoders depend on their weights).
PINNED_DEMO = {
    "random/finetune/0": "2f053b066867dde0", "random/finetune/1": "54ef925d09dcebe8",
    "random/finetune/2": "b8c8b9b9f83cc1e4", "random/finetune/3": "829dac297114256b",
    "random/finetune/4": "d199ecc259c6124b",
}
PINNED_SMOKE = {
    "random/finetune/0": "0963e34814a01e80", "random/finetune/1": "3a9dd9d30688ecaf",
    "random/finetune/2": "16ba22e1ffccbd81", "random/finetune/3": "80bfdac3eb15dbc7",
    "random/finetune/4": "2db6421bcdd72136",
}
#: The EvaluationSpec fields of identity version 1, and those it left out of the shared part.
V1_FIELDS = ("head_epochs", "head_lr", "bn_in_head_epoch", "epochs", "batch_size", "lr_max",
             "lr_finder_iters", "lr_finder_start", "lr_finder_end", "pct_start", "div_factor",
             "final_div_factor", "max_momentum", "base_momentum", "weight_decay",
             "augmentation", "strength", "tta_views", "seed_scope")


def v1_row_ids(data: dict) -> dict[str, str]:
    """Row identities by identity version 1's formula, written out independently: condition,
    encoder digest, data fingerprint, the version-1 settings (plus validation_curves when on,
    for fine-tuning; the logistic settings alone for logistic rows), protocol and seed."""
    from raysweep.data.fingerprint import dataset_fingerprint

    spec = spec_from_data(data)
    stage = spec.evaluate
    out = {}
    for cond in stage.encoders:
        settings = stage.settings.replace(**cond.overrides) if cond.overrides else stage.settings
        full = to_jsonable(settings)
        shared = {"version": 1, "condition": cond.name,
                  "encoder": {"arch": cond.encoder.name, "weights_sha256": "random"},
                  "data": dataset_fingerprint(cond.data or stage.data, save_digests=False)}
        for protocol in cond.protocols or stage.protocols:
            if protocol == "logistic":
                part = {"logistic": full["logistic"]}
            else:
                part = {k: full[k] for k in V1_FIELDS}
                if protocol == "finetune" and settings.validation_curves:
                    part["validation_curves"] = True
            for seed in range(stage.first_seed, stage.first_seed + stage.seeds):
                out[f"{cond.name}/{protocol}/{seed}"] = stable_hash(
                    {**shared, "settings": part, "protocol": protocol, "seed": seed}, length=16)
    return out


def test_specs_without_the_new_fields_keep_their_row_identities():
    assert ROW_IDENTITY_VERSION == 1
    assert v1_row_ids(PINNED_SPEC) == PINNED_IDS  # the independent formula, checked
    assert ids(PINNED_SPEC) == PINNED_IDS
    demo = ids(demo_spec_dict(storage="/nonexistent/runs"))
    assert {k: v for k, v in demo.items() if k.startswith("random/")} == PINNED_DEMO
    smoke = ids(demo_spec_dict(smoke=True, storage="/nonexistent/runs"))
    assert {k: v for k, v in smoke.items() if k.startswith("random/")} == PINNED_SMOKE
    # the new fields at their defaults, written out, change nothing either
    explicit = json.loads(json.dumps(PINNED_SPEC))
    explicit["evaluate"]["settings"].update(optimizer="fastai_adam", schedule="onecycle",
                                            milestones=[0.6, 0.8], gamma=0.1,
                                            train_augmentation=True)
    explicit["evaluate"]["data"].update(label_rounding="nearest", label_per_class=None)
    explicit["evaluate"]["test_sets"] = []
    explicit["evaluate"]["encoders"][0]["seeds"] = 2
    assert ids(explicit) == PINNED_IDS
    # logistic's C chosen by log-loss (today's default) is another computation: its rows only
    default_selection = json.loads(json.dumps(PINNED_SPEC))
    del default_selection["evaluate"]["settings"]["logistic"]
    changed = ids(default_selection)
    assert {k for k in PINNED_IDS if changed[k] != PINNED_IDS[k]} == {
        k for k in PINNED_IDS if "/logistic/" in k}


@pytest.mark.parametrize(("change", "protocols"), [
    ({"optimizer": "adamw"}, {"finetune", "probe"}),
    ({"schedule": "multistep"}, {"finetune", "probe"}),
    ({"gamma": 0.5}, {"finetune", "probe"}),
    ({"train_augmentation": False}, {"finetune", "probe"}),
])
def test_a_downstream_optimiser_changes_the_rows_it_trains_only(change, protocols):
    data = json.loads(json.dumps(PINNED_SPEC))
    data["evaluate"]["settings"].update(change)
    changed = {key for key, row in ids(data).items() if PINNED_IDS[key] != row}
    assert {key.split("/")[1] for key in changed} == protocols  # logistic rows stay valid
    assert len(changed) == 8


def test_external_test_sets_enter_their_own_rows_identity_only():
    def with_sets(*test_sets) -> dict[str, str]:
        data = json.loads(json.dumps(PINNED_SPEC))
        data["evaluate"]["test_sets"] = list(test_sets)
        return ids(data)

    def of(rows: dict[str, str], test_set: str) -> dict[str, str]:
        return {k: v for k, v in rows.items() if k.endswith("/" + test_set)}

    six_seven = {"name": "ext", "sources": [{"kind": "digits", "classes": ["6", "7"]}]}
    five = {"name": "five", "sources": [{"kind": "digits", "classes": ["5"]}]}
    first = with_sets(six_seven, five)
    # the test split's rows keep their identity; each external set adds one row per key
    assert {k: v for k, v in first.items() if k.count("/") == 2} == PINNED_IDS
    assert len(of(first, "ext")) == len(of(first, "five")) == len(PINNED_IDS)
    assert len(set(first.values())) == 3 * len(PINNED_IDS)
    # a change to one test set (its label map, its images) changes that set's rows only
    for changed in ({**six_seven, "label_map": {"6": None}},
                    {**six_seven, "sources": [{"kind": "digits", "classes": ["5", "6"]}]}):
        rows = with_sets(changed, five)
        assert {k for k in rows if rows[k] != first[k]} == set(of(first, "ext"))
    # removing one keeps the other's rows; the identity is stable
    assert with_sets(five) == {k: v for k, v in first.items() if not k.endswith("/ext")}
    assert with_sets(six_seven, five) == first


# --------------------------------------------------------------- external test sets, one run


def _external_spec(root: Path) -> dict:
    return {
        "name": "ext", "storage": str(root),
        "evaluate": {
            "data": TARGET, "seeds": 2, "protocols": ["finetune"],
            "settings": {"epochs": 1, "head_epochs": 0, "batch_size": 16, "lr_max": 1e-3,
                         "tta_views": 0},
            "encoders": [{"name": "r", "encoder": {"name": "small_resnet"}}],
            "test_sets": [
                # the evaluation data's own test images again: the same metrics as `test`
                {"name": "again", "sources": [{"kind": "digits", "classes": ["5", "6", "7"],
                                               "split": "test"}]},
                # two of the three training classes (8 has none: left out)
                {"name": "partial", "sources": [{"kind": "digits", "classes": ["5", "6", "8"],
                                                 "split": "test"}],
                 "label_map": {"8": None}},
            ],
        },
    }


def test_two_external_test_sets_give_one_row_each_from_one_training_run(tmp_path: Path,
                                                                       monkeypatch):
    calls = []
    real = raysweep.stages.evaluate.finetune

    def counting(*args, **kwargs):
        calls.append((kwargs["seed"], tuple(kwargs["test_sets"])))
        return real(*args, **kwargs)

    monkeypatch.setattr(raysweep.stages.evaluate, "finetune", counting)  # where it is called
    spec = spec_from_data(_external_spec(tmp_path))
    trials = identify_trials(spec)
    for trial in trials:
        evaluate_trial_rows(spec, trial)
    # fine-tuned once per seed, scored on every test set
    assert sorted(calls) == [(0, ("again", "partial")), (1, ("again", "partial"))]
    refs = planned_refs(trials)
    assert [(r.key.seed, r.key.test_set) for r in refs] == [
        (seed, t) for seed in (0, 1) for t in ("test", "again", "partial")]
    table = ResultsStore(spec.directory).consolidate(refs, condition_labels(spec))
    assert len(table) == 2 * 3
    assert list(table["test_set"]) == ["test", "again", "partial"] * 2
    for seed, rows in table.groupby("seed"):
        # one row per test set, each its own identity, all of one training run
        assert rows["row_id"].nunique() == 3 and rows["run_id"].nunique() == 1
        assert set(rows["training_id"]) == set(rows[rows.test_set == "test"]["row_id"])
        assert rows["lr_max"].nunique() == 1 and rows["time_train_s"].nunique() == 1
        test, again, partial = (rows[rows.test_set == t].iloc[0]
                                for t in ("test", "again", "partial"))
        # the same images, the same trained model, no TTA: the same numbers
        for column in ("accuracy", "f1_weighted", "f1_macro", "balanced_accuracy", "auc_ovr",
                       "f1/5", "f1/7", "support/7", "confusion_matrix"):
            assert test[column] == again[column], (seed, column)
        # a set holding two of the three classes: scored over the classes present
        assert partial["support/7"] == 0 and partial["support/5"] > 0
        assert "support/8" not in table.columns
        assert partial["f1_macro"] == pytest.approx((partial["f1/5"] + partial["f1/6"]) / 2)
        weights = np.array([partial["support/5"], partial["support/6"]], dtype=float)
        f1s = np.array([partial["f1/5"], partial["f1/6"]])
        assert partial["f1_weighted"] == pytest.approx(float(weights @ f1s / weights.sum()))
        matrix = np.array(json.loads(partial["confusion_matrix"]))
        assert matrix[2].sum() == 0 and matrix.sum() == weights.sum()
        assert partial["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())

    # A change to one test set (here its label map, naming class 6 as itself: the same
    # numbers, another identity) makes its rows stale and leaves the others done; the rerun
    # trains again and writes that set's rows only.
    data = _external_spec(tmp_path)
    data["evaluate"]["test_sets"][1]["label_map"] = {"8": None, "6": "6"}
    changed = spec_from_data(data)
    assert stored_state(changed) == "rows: 4 done, 2 stale, 0 new (6 in all)"
    calls.clear()
    for trial in identify_trials(changed):
        evaluate_trial_rows(changed, trial)
    assert sorted(calls) == [(0, ("partial",)), (1, ("partial",))]
    again = ResultsStore(changed.directory).consolidate(planned_refs(identify_trials(changed)),
                                                        condition_labels(changed))
    kept = again.test_set != "partial"
    assert again[kept].equals(table[kept])  # the same rows, not rewritten (same run_id)
    assert not set(again[~kept].run_id) & set(table[~kept].run_id)
    assert list(again[~kept].training_id) == list(table[~kept].training_id)
    for column in ("accuracy", "f1_macro", "auc_ovr", "confusion_matrix"):
        assert list(again[~kept][column]) == list(table[~kept][column])
    # one more test set: its rows are new, the others done
    data["evaluate"]["test_sets"].append({"name": "more", "sources": [
        {"kind": "digits", "classes": ["7"], "split": "test"}]})
    assert stored_state(spec_from_data(data)) == "rows: 6 done, 0 stale, 2 new (8 in all)"


def test_a_class_the_training_data_lacks_must_be_mapped(tmp_path: Path):
    data = _external_spec(tmp_path)
    data["evaluate"]["test_sets"][1]["label_map"] = {}
    spec = spec_from_data(data)
    from raysweep.errors import DataError

    with pytest.raises(DataError, match=r"test set partial: class '8' is not a training class"):
        evaluate_trial_rows(spec, identify_trials(spec)[0])
    assert not (spec.directory / "rows").exists()  # nothing written
    from raysweep.plan.preflight import spec_file_problems

    problems = spec_file_problems(spec, "s.yaml")
    assert problems == ["s.yaml: evaluate.test_sets[1].label_map: test set partial: class '8' "
                        "is not a training class (5, 6, 7); map it in label_map (or to null "
                        "to leave its images out)"]


# ------------------------------------------------------------------------------ label budgets

def _tiny_png(index: int = 0, salt: int = 0) -> bytes:
    """An 8 x 8 PNG of one colour, distinct per (index, salt): distinct images, as real data
    has (the test-overlap check compares images by their bytes)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    colour = (index % 256, (index // 256) % 256, (90 + salt) % 256)
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _isic_like_manifest(folder: Path, n_train: int = 14_805, n_test: int = 200) -> Path:
    """A manifest of ``n_train`` training and ``n_test`` test images (tiny PNGs), melanoma vs
    benign in ISIC 2019's proportions (about 22 % melanoma)."""
    images = folder / "images"
    images.mkdir(parents=True)
    lines = ["path,label,split"]
    for index in range(n_train + n_test):
        name = f"images/{index:05d}.png"
        (folder / name).write_bytes(_tiny_png(index))
        label = "melanoma" if index % 9 < 2 else "benign"
        lines.append(f"{name},{label},{'train' if index < n_train else 'test'}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def _chaves_data(manifest: Path, storage: Path) -> dict:
    from raysweep.config import parse_yaml

    text = (Path(__file__).resolve().parents[2] / "search_spaces" / "chaves_isic2019.yaml")
    data = parse_yaml(text.read_text())
    data["storage"] = str(storage)
    for dataset in ("isic2019", "isic2019_unlabelled"):
        data["datasets"][dataset]["sources"][0]["path"] = str(manifest)
    return data


@pytest.fixture(scope="module")
def isic_manifest(tmp_path_factory) -> Path:
    """An ISIC 2019-sized manifest (14,805 training images), made once for the module."""
    return _isic_like_manifest(tmp_path_factory.mktemp("isic"))


@pytest.mark.slow
def test_the_label_fraction_spec_plans_148_1480_and_14805_labels(tmp_path: Path,
                                                                  isic_manifest: Path):
    manifest = isic_manifest
    spec = spec_from_data(_chaves_data(manifest, tmp_path / "runs"))
    budgets = {b.condition: (b.used, b.available) for b in label_budgets(spec)}
    for method in ("supervised", "simclr", "barlow_twins", "supcon"):
        assert budgets[f"{method}-100pct"] == (14_805, 14_805)
        assert budgets[f"{method}-10pct"] == (1_480, 14_805)
        assert budgets[f"{method}-1pct"] == (148, 14_805)
    assert label_arms(spec)["simclr-1pct"] == "simclr"
    text = make_plan(spec, ClusterResources(8, 0)).describe()
    assert "10% of the training labels, rounded down: 1,480 of 14,805: supervised-10pct, " \
           "simclr-10pct, barlow_twins-10pct, supcon-10pct" in text
    assert "1% of the training labels, rounded down: 148 of 14,805" in text
    assert "all training labels: 14,805 of 14,805" in text
    # UCL pre-training sees every training image, whatever the label budget; SCL (SupCon)
    # trains on exactly the labelled images of its budget's fine-tuning, no other label
    from raysweep.data import index_dataset

    runs = {run.name: run for run in spec.pretrain}
    assert all(len(index_dataset(runs[m].data).unlabelled()) == 14_805
               for m in ("simclr", "barlow_twins"))
    conditions = {c.name: c for c in spec.evaluate.encoders}
    for budget in ("100pct", "10pct", "1pct"):
        run, condition = runs[f"supcon-{budget}"], conditions[f"supcon-{budget}"]
        assert run.method == "supcon" and condition.encoder.weights == f"pretrain:supcon-{budget}"
        # the same data spec: the same stratified subset (the budget's counts are checked above)
        assert run.data == condition.data == conditions[f"supervised-{budget}"].data
    trained, _ = index_dataset(runs["supcon-1pct"].data).labelled_indices("train")
    assert len(trained) == 148


def test_the_chaves_spec_validates_naming_its_five_ssl_encoders_formats(capsys):
    """``raysweep validate --spec-only``: no file is read, each public checkpoint's format said."""
    from raysweep.cli import main

    spec = Path(__file__).resolve().parents[2] / "search_spaces" / "chaves_isic2019.yaml"
    assert main(["validate", "--spec-only", str(spec)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("experiment 'chaves_isic2019' (5 pretrain runs, 27 evaluated "
                             "encoders, 0 searches)")
    formats = {line.split(": format ")[1].split(",")[0]: line for line in lines[1:]}
    assert list(formats) == ["simclr", "swav", "byol", "moco", "infomin"]
    assert "module.encoder_q.*); used by moco_v2-100pct, moco_v2-10pct, moco_v2-1pct" in \
        formats["moco"]
    assert "SwAV ResNet-50 in torch hub format" in formats["swav"]


# ---------------------------------------------------------------------- per-condition seeds


def test_a_condition_may_have_fewer_seeds_paired_with_the_first_ones():
    data = json.loads(json.dumps(PINNED_SPEC))
    data["evaluate"]["first_seed"] = 3
    data["evaluate"]["encoders"][1]["seeds"] = 1
    spec = spec_from_data(data)
    seeds = {(t.condition, t.protocol): t.seeds for t in eval_trials(spec)
             if t.protocol != "finetune"}
    assert seeds[("a", "probe")] == (3, 4) and seeds[("b", "probe")] == (3,)
    plan = make_plan(spec, ClusterResources(2, 0))
    assert plan.n_rows == 3 * 2 + 3 * 1
    assert "b: small_resnet:random; finetune, logistic, probe; 3 trials; 1 seeds" in \
        plan.describe()


# ------------------------------------------------------------------- the Chaves spec's dry run

def _external_manifest(path: Path, labels: list[str], split: str | None = None) -> None:
    """A small manifest of one tiny PNG per label (``split`` column when given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["path,label" + (",split" if split else "")]
    salt = sum(path.as_posix().encode()) % 97 + 1
    for index, label in enumerate(labels):
        (path.parent / f"{path.stem}-{index}.png").write_bytes(_tiny_png(index, salt))
        lines.append(f"{path.stem}-{index}.png,{label}" + (f",{split}" if split else ""))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_the_chaves_dry_run_prints_its_test_sets_and_label_budgets(tmp_path: Path, capsys,
                                                                   monkeypatch,
                                                                   isic_manifest: Path):
    """``raysweep run --dry-run search_spaces/chaves_isic2019.yaml`` as shipped, its data
    under a home of synthetic manifests of the study's sizes."""
    from raysweep.cli import main

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(home / ".cache" / "torch"))
    (home / "data").mkdir(parents=True)
    (home / "data" / "isic2019_melanoma").symlink_to(isic_manifest.parent)
    derm7pt = ["melanoma", "nevus", "seborrheic_keratosis", "lentigo", "dermatofibroma",
               "vascular_lesion", "melanosis", "basal_cell_carcinoma", "miscellaneous"]
    _external_manifest(home / "data" / "derm7pt" / "dermoscopic.csv", derm7pt, split="test")
    _external_manifest(home / "data" / "derm7pt" / "clinical.csv", derm7pt, split="test")
    _external_manifest(home / "data" / "isic2020" / "manifest.csv", ["benign", "malignant"])
    _external_manifest(home / "data" / "pad_ufes_20" / "manifest.csv",
                       ["MEL", "NEV", "SEK", "ACK", "BCC", "SCC"])
    spec = Path(__file__).resolve().parents[2] / "search_spaces" / "chaves_isic2019.yaml"
    code = main(["run", str(spec), "--dry-run"])
    captured = capsys.readouterr()
    out = captured.out
    # 27 conditions x 10 seeds, each fine-tuned once and scored on 5 test sets
    assert "stage evaluate: 270 Tune trials, 1350 result rows (27 encoders, 10 seeds, 5 test " \
           "sets)" in out
    assert "  test sets: 5, every trained model scored on each" in out
    for line in ("    test (the evaluation data's test split)",
                 "    derm7pt_dermoscopic: ~/data/derm7pt/dermoscopic.csv; labels melanoma -> "
                 "melanoma, nevus -> benign",
                 "    derm7pt_clinical: ~/data/derm7pt/clinical.csv",
                 "    isic2020: ~/data/isic2020/manifest.csv; labels malignant -> melanoma",
                 "    pad_ufes_20: ~/data/pad_ufes_20/manifest.csv; labels MEL -> melanoma"):
        assert line in out, line
    assert "    all training labels: 14,805 of 14,805: supervised-100pct, simclr-100pct, " \
           "barlow_twins-100pct, supcon-100pct" in out
    assert "    10% of the training labels, rounded down: 1,480 of 14,805: supervised-10pct, " \
           "simclr-10pct, barlow_twins-10pct, supcon-10pct, simclr_imagenet-10pct, " in out
    assert "    1% of the training labels, rounded down: 148 of 14,805: supervised-1pct, " \
           "simclr-1pct, barlow_twins-1pct, supcon-1pct, simclr_imagenet-1pct, " in out
    # the ImageNet weights are not there: one problem per missing file, after the plan
    assert code == 2
    assert captured.err.count("error: ") == 6 and "resnet50-0676ba61.pth" in captured.err
    for name in ("simclr_resnet50-1x.pth", "swav_800ep_pretrain.pth.tar", "byol_resnet50x1.pth",
                 "moco_v2_800ep_pretrain.pth.tar", "InfoMin_800.pth"):
        assert f"{home}/weights/{name} not found" in captured.err, name
    assert not (home / "raysweep_runs").exists()
