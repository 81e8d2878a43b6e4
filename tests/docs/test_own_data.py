"""docs/your-own-data.md: the shipped spec, pointed at a tiny CSV of images, validates, plans
and reads the images as the page says. (Running it end to end goes through the same stages as
``raysweep demo``, tested in tests/experiment/test_demo.py; with Ray's start-up it takes minutes on
two cores, too long for the suite.)"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from raysweep.cli import main
from raysweep.config import load_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "search_spaces" / "own_data.yaml"
PAGE = ROOT / "docs" / "your-own-data.md"
CLASSES = ("benign", "malignant")
TRAIN_PER_CLASS, TEST_PER_CLASS = 60, 12


def write_images(folder: Path) -> Path:
    """A manifest of small RGB PNGs whose brightness depends on the class."""
    rng = np.random.default_rng(0)
    rows = []
    for index, label in enumerate(CLASSES):
        (folder / label).mkdir(parents=True)
        for split, count in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
            for item in range(count):
                pixels = rng.integers(0, 120, size=(12, 12, 3)) + 100 * index
                name = f"{label}/{split}_{item:03d}.png"
                Image.fromarray(pixels.astype(np.uint8)).save(folder / name)
                rows.append({"path": name, "label": label, "split": split})
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def pointed_at(manifest: Path, storage: Path) -> str:
    """The shipped spec with only its data path and storage changed."""
    text = SPEC.read_text(encoding="utf-8")
    assert text.count("~/data/my_images/manifest.csv") == 1
    assert text.count("storage: ~/raysweep_runs") == 1
    return (text.replace("~/data/my_images/manifest.csv", str(manifest))
                .replace("storage: ~/raysweep_runs", f"storage: {storage}"))


def test_the_page_shows_the_shipped_spec_and_it_is_short() -> None:
    spec = SPEC.read_text(encoding="utf-8")
    assert f"```yaml\n{spec}```" in PAGE.read_text(encoding="utf-8")
    lines = [line for line in spec.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) <= 22


def test_own_data_spec_validates_plans_and_reads_the_manifest(tmp_path: Path, monkeypatch,
                                                              capsys) -> None:
    from raysweep.data import load_dataset
    from raysweep.plan.resources import ClusterResources
    from raysweep.plan.trials import make_plan

    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    spec_file = tmp_path / "own_data.yaml"
    spec_file.write_text(pointed_at(write_images(tmp_path / "my_images"), tmp_path / "runs"))
    assert main(["validate", str(spec_file)]) == 0
    assert "ok: " in capsys.readouterr().out

    spec = load_spec(spec_file)
    plan = make_plan(spec, ClusterResources(cpus=4, gpus=0))
    assert [r.name for wave in plan.pretrain_waves for r in wave] == ["barlow-twins"]
    # 5 fine-tuning trials per encoder, one batched probe trial for the pre-trained one.
    assert sorted((t.condition, t.protocol, len(t.seeds)) for t in plan.eval_trials) == sorted(
        [("barlow-twins", "finetune", 1)] * 5 + [("barlow-twins", "probe", 5)]
        + [("random", "finetune", 1)] * 5)
    assert plan.n_rows == 15

    labelled = load_dataset(spec.evaluate.data)
    assert tuple(labelled.classes) == CLASSES
    train_x, train_y = labelled.labelled("train")
    test_x, test_y = labelled.labelled("test")
    assert len(train_y) == 100  # label_count: a stratified 100 of the 120 training labels
    assert np.bincount(np.asarray(train_y)).tolist() == [50, 50]
    assert len(test_y) == 2 * TEST_PER_CLASS
    assert labelled.images.shape[1:] == (3, 64, 64)
    # Pre-training sees the training images only: no test image, every training image.
    pretraining = load_dataset(spec.pretrain[0].data)
    assert len(pretraining.unlabelled()) == 2 * TRAIN_PER_CLASS
