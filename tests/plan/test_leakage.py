"""Test images kept out of pre-training (raysweep.plan.leakage): a pre-training run that trains
on an image a condition evaluating it is tested on is refused by ``validate``, ``run
--dry-run`` and ``run`` in one line (exit 2, nothing written), by content whatever the file is
called, for the data's test split and external test sets alike; ``allow_test_overlap`` lets a
transductive design through, and the plan and the report say so."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from raysweep.cli import main
from raysweep.config import spec_from_data
from raysweep.plan.leakage import OVERLAP_FILE, find_overlaps, record_overlaps
from raysweep.plan.run_identity import NOT_IN_HASH, result_hash
from raysweep.report.validity import overlap_lines as report_overlap_lines

CLASSES = ("a", "b")
N_PER_SPLIT = {"train": 6, "test": 3}  # per class


def write_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def labelled_manifest(root: Path, seed: int = 0) -> tuple[Path, list[Path]]:
    """A manifest ``path,label,split`` of 18 distinct PNGs (12 train, 6 test); returns it and
    its test images."""
    rows, tests, counter = ["path,label,split"], [], seed * 1000
    for split, count in N_PER_SPLIT.items():
        for label in CLASSES:
            for i in range(count):
                name = f"{split}_{label}_{i}.png"
                write_png(root / name, counter)
                counter += 1
                rows.append(f"{name},{label},{split}")
                if split == "test":
                    tests.append(root / name)
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv", tests


def study(tmp: Path, pretrain_sources: list[dict], **evaluate: Any) -> dict[str, Any]:
    """Barlow Twins run ``bt`` on ``pretrain_sources``, evaluated on the manifest's test
    split."""
    data = {"sources": [{"kind": "manifest", "path": str(tmp / "target" / "manifest.csv")}],
            "image_size": 16}
    return {
        "name": "exp", "storage": str(tmp / "runs"),
        "pretrain": [{"name": "bt", "data": {"sources": pretrain_sources, "image_size": 16},
                      "encoder": {"name": "small_resnet"}, "batch_size": 4,
                      "projector": [16, 16], "epochs": 1}],
        "evaluate": {"data": data, "seeds": 1, "protocols": ["finetune"], **evaluate,
                     "encoders": [{"name": "bt", "encoder": {"name": "small_resnet",
                                                             "weights": "pretrain:bt"}}]},
    }


def spec_file(tmp: Path, data: dict) -> str:
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding the target manifest (``target/``), with the decode cache inside."""
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    labelled_manifest(tmp_path / "target")
    return tmp_path


def target_unlabelled(tmp: Path, **extra: Any) -> dict[str, Any]:
    return {"kind": "manifest", "path": str(tmp / "target" / "manifest.csv"), "labelled": False,
            **extra}


@pytest.mark.parametrize("command", [["validate"], ["run", "--dry-run"], ["run"]])
def test_pretraining_on_the_evaluations_own_file_is_refused_in_one_line(tmp: Path, capsys,
                                                                        command: list[str]):
    path = spec_file(tmp, study(tmp, [target_unlabelled(tmp)]))
    before = snapshot(tmp)
    assert main([command[0], path, *command[1:]]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {path}: pretrain[0]: pretrain run 'bt' trains on 6 of the 6 "
                          "images of test set 'test' (evaluate.data test split)")
    assert "allow_test_overlap" in err
    assert snapshot(tmp) == before  # nothing written: no run folder, no digests, no cache
    assert not (tmp / "runs").exists()


def test_the_opt_in_lets_a_transductive_run_through_and_the_plan_says_so(tmp: Path, capsys):
    data = study(tmp, [target_unlabelled(tmp)])
    data["pretrain"][0]["allow_test_overlap"] = True
    path = spec_file(tmp, data)
    before = snapshot(tmp)
    assert main(["validate", path]) == 0
    assert main(["run", path, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "allow_test_overlap: may train on test images" in out
    assert ("transductive: pretrain run 'bt' (allow_test_overlap) trains on 6 of the 6 images "
            "of test set 'test' (evaluate.data test split), scored by bt") in out
    assert snapshot(tmp) == before
    # the run records it for the report, whose opening says so
    spec = spec_from_data(data)
    [overlap] = record_overlaps(spec)
    assert (overlap.run, overlap.test_set, overlap.shared, overlap.allowed) == ("bt", "test", 6,
                                                                               True)
    [line] = report_overlap_lines(spec.directory)
    assert line.startswith("Transductive design: pretrain run 'bt' (allow_test_overlap) "
                           "trained on 6 of the 6 images of test set 'test'")


def test_the_opt_in_is_outside_the_runs_identity_unless_set():
    assert "allow_test_overlap" in NOT_IN_HASH
    base = spec_from_data({"name": "x", "pretrain": [{"name": "bt", "data": {
        "sources": [{"kind": "digits"}]}}]}).pretrain[0]
    assert (result_hash(base, save_digests=False)
            == result_hash(base.replace(allow_test_overlap=True), save_digests=False))


def test_the_training_split_of_the_same_file_is_accepted(tmp: Path, capsys):
    """The fix the refusal suggests: a source's ``split: train``."""
    path = spec_file(tmp, study(tmp, [target_unlabelled(tmp, split="train")]))
    assert main(["validate", path]) == 0, capsys.readouterr().err


def test_a_copy_under_another_name_in_another_folder_is_found(tmp: Path, capsys):
    _, tests = labelled_manifest(tmp / "target_again")  # same seeds: the same test images
    other = tmp / "elsewhere" / "unlabelled"
    for i in range(5):
        write_png(other / f"photo_{i}.png", 50_000 + i)
    (other / "nested").mkdir()
    shutil.copyfile(tests[2], other / "nested" / "IMG_0042.png")
    data = study(tmp, [{"kind": "folder", "path": str(other), "labelled": False}])
    spec = spec_from_data(data)
    [overlap] = find_overlaps(spec)
    assert (overlap.shared, overlap.test_images, overlap.train_images) == (1, 6, 6)
    assert main(["validate", spec_file(tmp, data)]) == 2
    assert "trains on 1 of the 6 images of test set 'test'" in capsys.readouterr().err


def test_an_external_test_set_is_checked_too(tmp: Path, capsys):
    external, external_tests = labelled_manifest(tmp / "external", seed=7)
    pool = tmp / "pool"
    for i in range(4):
        write_png(pool / f"{i}.png", 90_000 + i)
    shutil.copyfile(external_tests[0], pool / "copied.png")
    # an external set scores every image of its sources: a training image of it counts too
    shutil.copyfile(external.parent / "train_a_0.png", pool / "copied_train.png")
    data = study(tmp, [{"kind": "folder", "path": str(pool), "labelled": False}],
                 test_sets=[{"name": "outside", "sources": [{"kind": "manifest",
                                                             "path": str(external)}]}])
    assert main(["validate", spec_file(tmp, data)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert ("pretrain run 'bt' trains on 2 of the 18 images of test set 'outside' "
            "(evaluate.test_sets[0])") in err


def test_an_array_source_is_compared_by_pixels_and_split_train_keeps_its_test_out(tmp: Path):
    """The bundled digits (an array source): all of digits 5-9 overlap the evaluation's test
    split; their ``split: train`` (with the evaluation's split settings) does not."""
    digits = {"kind": "digits", "classes": ["5", "6", "7", "8", "9"]}
    data = {"name": "d", "storage": str(tmp / "runs"),
            "pretrain": [{"name": "bt", "data": {"sources": [{**digits, "labelled": False}],
                                                 "test_fraction": 0.3},
                          "encoder": {"name": "small_resnet"}},
                         {"name": "bt-train", "data": {"sources": [
                             {**digits, "labelled": False, "split": "train"}],
                             "test_fraction": 0.3}, "encoder": {"name": "small_resnet"}}],
            "evaluate": {"data": {"sources": [digits], "test_fraction": 0.3}, "encoders": [
                {"name": n, "encoder": {"name": "small_resnet", "weights": f"pretrain:{n}"}}
                for n in ("bt", "bt-train")]}}
    overlaps = find_overlaps(spec_from_data(data))
    assert [(o.run, o.shared, o.test_images) for o in overlaps] == [("bt", 269, 269)]


def test_a_supervised_run_on_the_evaluations_data_uses_its_training_labels_only(tmp: Path):
    data = study(tmp, [{"kind": "manifest", "path": str(tmp / "target" / "manifest.csv")}])
    data["pretrain"][0].update(method="supervised", augmentation="supervised")
    assert find_overlaps(spec_from_data(data)) == []


def test_the_parent_run_of_a_further_pre_training_is_checked(tmp: Path):
    """A condition's encoder carries every run of its chain: a leaking parent is named even
    when the run it evaluates is clean."""
    data = study(tmp, [target_unlabelled(tmp)])
    child = {**data["pretrain"][0], "name": "child", "encoder": {
        "name": "small_resnet", "weights": "pretrain:bt"},
        "data": {"sources": [target_unlabelled(tmp, split="train")], "image_size": 16}}
    data["pretrain"].append(child)
    data["evaluate"]["encoders"] = [{"name": "child", "encoder": {
        "name": "small_resnet", "weights": "pretrain:child"}}]
    [overlap] = find_overlaps(spec_from_data(data))
    assert (overlap.run, overlap.conditions, overlap.shared) == ("bt", ("child",), 6)


def test_the_record_lists_the_checked_runs_when_nothing_overlaps(tmp: Path):
    spec = spec_from_data(study(tmp, [target_unlabelled(tmp, split="train")]))
    assert record_overlaps(spec) == []
    record = json.loads((spec.directory / OVERLAP_FILE).read_text())
    assert (record["checked_runs"], record["overlaps"]) == (["bt"], [])
    [line] = report_overlap_lines(spec.directory)
    assert line.startswith("Test images: none of the 1 pre-training run(s) evaluated here (bt)")


def shipped_pre_pretrained(tmp: Path, *, allow: bool) -> dict[str, Any]:
    """``search_spaces/slides_pre_pretrained.yaml`` as shipped, its manifest replaced by the
    tiny one and its ResNet-50s by small random ones (the test is about the data)."""
    from raysweep.config import parse_yaml

    shipped = Path(__file__).resolve().parents[2] / "search_spaces" / "slides_pre_pretrained.yaml"
    data = parse_yaml(shipped.read_text())
    data["storage"] = str(tmp / "runs")
    run, evaluate = data["pretrain"][0], data["evaluate"]
    for dataset in (run["data"], evaluate["data"]):
        dataset["sources"][0]["path"] = str(tmp / "target" / "manifest.csv")
        dataset["image_size"] = 16
    run.update(encoder={"name": "small_resnet"}, projector=[16, 16], batch_size=4, epochs=1,
               allow_test_overlap=allow)
    for cond in evaluate["encoders"]:
        weights = cond["encoder"]["weights"]
        cond["encoder"] = {"name": "small_resnet",
                           "weights": weights if weights.startswith("pretrain:") else "random"}
    evaluate["seeds"] = 1
    return data


def test_the_shipped_pre_pretrained_study_trains_on_every_test_image_by_its_opt_in(tmp: Path,
                                                                                   capsys):
    """The slides' "pre-pretrained" encoder is transductive on purpose: its run trains on the
    test split of the manifest it is evaluated on, which the opt-in allows and the plan states;
    without the opt-in the same study is refused."""
    assert main(["validate", spec_file(tmp, shipped_pre_pretrained(tmp, allow=False))]) == 2
    assert "pretrain run 'pre-pretrained' trains on 6 of the 6 images" in capsys.readouterr().err
    data = shipped_pre_pretrained(tmp, allow=True)
    assert main(["run", spec_file(tmp, data), "--dry-run"]) == 0
    assert ("transductive: pretrain run 'pre-pretrained' (allow_test_overlap) trains on 6 of "
            "the 6 images of test set 'test'") in capsys.readouterr().out
    [overlap] = find_overlaps(spec_from_data(data))
    assert (overlap.shared, overlap.train_images, overlap.allowed) == (6, 18, True)
