"""Readers on real files: image folders and manifests written here, the shared MedMNIST
``.npz`` files, scikit-learn's digits; and every bad input as a one-line DataError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raysweep.config import SourceSpec
from raysweep.data import read_source
from raysweep.data.sources import resolve_medmnist_file
from raysweep.errors import DataError


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


# ------------------------------------------------------------------------------------ folder


def test_folder_classes_in_natural_order_with_labels(make_folder):
    root = make_folder("f", {"class10": 2, "class2": 3, "benign": 1})
    (root / "class2" / "notes.txt").write_text("not an image")
    (root / "class2" / ".hidden.png").write_bytes(b"junk")
    listing = read_source(SourceSpec(kind="folder", path=str(root)))
    assert listing.classes == ("benign", "class2", "class10")
    assert np.bincount(listing.labels).tolist() == [1, 3, 2]
    assert all(listing.paths[i].parent.name == listing.classes[c]
               for i, c in enumerate(listing.labels))
    assert listing.splits is None


def test_folder_classes_select_sub_folders_and_fix_order(make_folder):
    root = make_folder("f", {"a": 2, "b": 3, "c": 1})
    listing = read_source(SourceSpec(kind="folder", path=str(root), classes=["c", "a"]))
    assert listing.classes == ("c", "a") and listing.fixed_order
    assert np.bincount(listing.labels).tolist() == [1, 2]
    with pytest.raises(DataError, match=r"no sub-folder 'z'") as err:
        read_source(SourceSpec(kind="folder", path=str(root), classes=["a", "z"]))
    assert str(root) in _one_line(err)


def test_folder_bad_inputs(make_folder, tmp_path, image_writer):
    with pytest.raises(DataError, match="image folder not found"):
        read_source(SourceSpec(kind="folder", path=str(tmp_path / "missing")))
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    with pytest.raises(DataError, match=r"^empty source: .*empty") as err:
        read_source(SourceSpec(kind="folder", path=str(empty)))
    _one_line(err)
    root = make_folder("loose", {"a": 1})
    image_writer(root / "stray.png", 1)
    with pytest.raises(DataError, match=r"image outside a class sub-folder: .*stray\.png"):
        read_source(SourceSpec(kind="folder", path=str(root)))
    # Unlabelled use of the same folder accepts the loose image (label -1).
    listing = read_source(SourceSpec(kind="folder", path=str(root), labelled=False))
    assert sorted(listing.labels.tolist()) == [-1, 0]


# ---------------------------------------------------------------------------------- manifest


def _manifest(tmp_path: Path, image_writer, rows: list[str], header: str = "path,label,split",
              n_images: int = 4) -> Path:
    for i in range(n_images):
        image_writer(tmp_path / "imgs" / f"{i}.jpg", i)
    file = tmp_path / "labels.csv"
    file.write_text("\n".join([header, *rows]) + "\n")
    return file


def test_manifest_labels_splits_and_root(tmp_path, image_writer):
    file = _manifest(tmp_path, image_writer, [
        "imgs/0.jpg,nevus,train", "imgs/1.jpg,melanoma,train", "imgs/2.jpg,nevus,test",
        "imgs/3.jpg,melanoma,Valid"])
    listing = read_source(SourceSpec(kind="manifest", path=str(file)))
    assert listing.classes == ("melanoma", "nevus")
    assert listing.labels.tolist() == [1, 0, 1, 0]
    assert listing.splits.tolist() == [0, 0, 2, 1]
    # root: image paths relative to another folder.
    moved = tmp_path / "elsewhere.csv"
    moved.write_text("path,label\n0.jpg,x\n1.jpg,y\n")
    listing = read_source(SourceSpec(kind="manifest", path=str(moved),
                                     root=str(tmp_path / "imgs")))
    assert listing.paths == (tmp_path / "imgs" / "0.jpg", tmp_path / "imgs" / "1.jpg")
    assert listing.splits is None


def test_manifest_label_outside_classes_names_file_and_line(tmp_path, image_writer):
    file = _manifest(tmp_path, image_writer, ["imgs/0.jpg,nevus,train",
                                              "imgs/1.jpg,melanomma,train"])
    with pytest.raises(DataError) as err:
        read_source(SourceSpec(kind="manifest", path=str(file), classes=["nevus", "melanoma"]))
    assert _one_line(err) == (f"{file} line 3: label 'melanomma' is not in classes "
                              "(nevus, melanoma)")


def test_manifest_missing_image_names_line_and_path(tmp_path, image_writer):
    file = _manifest(tmp_path, image_writer, ["imgs/0.jpg,a,train", "imgs/9.jpg,b,test"])
    with pytest.raises(DataError) as err:
        read_source(SourceSpec(kind="manifest", path=str(file)))
    assert _one_line(err) == f"{file} line 3: image not found: {tmp_path / 'imgs' / '9.jpg'}"


def test_manifest_header_blank_label_and_split_errors(tmp_path, image_writer):
    file = _manifest(tmp_path, image_writer, ["imgs/0.jpg,a"], header="file,label")
    with pytest.raises(DataError, match="column 'path' is missing"):
        read_source(SourceSpec(kind="manifest", path=str(file)))
    file = _manifest(tmp_path, image_writer, ["imgs/0.jpg,a,train", "imgs/1.jpg,,train"])
    with pytest.raises(DataError, match=r"line 3: empty label"):
        read_source(SourceSpec(kind="manifest", path=str(file)))
    listing = read_source(SourceSpec(kind="manifest", path=str(file), labelled=False))
    assert listing.labels.tolist() == [0, -1]
    file = _manifest(tmp_path, image_writer, ["imgs/0.jpg,a,training"])
    with pytest.raises(DataError, match=r"line 2: split 'training' is not train, val or test"):
        read_source(SourceSpec(kind="manifest", path=str(file)))
    with pytest.raises(DataError, match="manifest not found"):
        read_source(SourceSpec(kind="manifest", path=str(tmp_path / "nope.csv")))
    header_only = tmp_path / "h.csv"
    header_only.write_text("path,label\n")
    with pytest.raises(DataError, match=r"^empty source: .*h\.csv"):
        read_source(SourceSpec(kind="manifest", path=str(header_only)))


# ---------------------------------------------------------------------------------- medmnist


@pytest.mark.parametrize("fixture", ["breastmnist_npz", "pneumoniamnist_npz"])
def test_medmnist_labels_and_splits_match_the_file(fixture, request):
    path = request.getfixturevalue(fixture)
    listing = read_source(SourceSpec(kind="medmnist", path=str(path)))
    data = np.load(path)
    expected = np.concatenate([data[f"{s}_labels"].reshape(-1) for s in ("train", "val", "test")])
    assert np.array_equal(listing.labels, expected)
    sizes = [len(data[f"{s}_labels"]) for s in ("train", "val", "test")]
    assert np.bincount(listing.splits).tolist() == sizes
    official = {"breastmnist": ("malignant", "normal, benign"),
                "pneumoniamnist": ("normal", "pneumonia")}
    assert listing.classes == official[path.stem]


def test_medmnist_name_resolution_and_missing_file_message(tmp_path, breastmnist_npz):
    with pytest.raises(DataError) as err:
        read_source(SourceSpec(kind="medmnist", name="breastmnist", root=str(tmp_path)))
    assert _one_line(err) == (f"medmnist file not found: put breastmnist.npz in {tmp_path} "
                              "(python -m medmnist download --flag breastmnist, or copy it "
                              "there), or set source.path")
    (tmp_path / "breastmnist.npz").symlink_to(breastmnist_npz)
    (tmp_path / "breastmnist_128.npz").symlink_to(breastmnist_npz)
    (tmp_path / "breastmnist_224.npz").symlink_to(breastmnist_npz)
    spec = SourceSpec(kind="medmnist", name="breastmnist", root=str(tmp_path))
    assert resolve_medmnist_file(spec).name == "breastmnist.npz"
    assert resolve_medmnist_file(spec, 100).name == "breastmnist_128.npz"
    assert resolve_medmnist_file(spec, 256).name == "breastmnist_224.npz"
    assert len(read_source(spec)) == 780


def test_medmnist_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": rng.integers(0, 255, (4, 5, 5, 3), dtype=np.uint8)
              for s in ("train", "val", "test")}
    multi = {**arrays, **{f"{s}_labels": np.zeros((4, 3), np.uint8)
                          for s in ("train", "val", "test")}}
    np.savez(tmp_path / "chestmnist.npz", **multi)
    with pytest.raises(DataError, match=r"multi-label MedMNIST sets are not supported"):
        read_source(SourceSpec(kind="medmnist", path=str(tmp_path / "chestmnist.npz")))
    np.savez(tmp_path / "partial.npz", train_images=arrays["train_images"])
    with pytest.raises(DataError, match=r"partial\.npz: missing array 'train_labels'"):
        read_source(SourceSpec(kind="medmnist", path=str(tmp_path / "partial.npz")))
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=r"cannot read medmnist file .*broken\.npz"):
        read_source(SourceSpec(kind="medmnist", path=str(tmp_path / "broken.npz")))
    good = {**arrays, **{f"{s}_labels": np.array([0, 1, 2, 1]) for s in ("train", "val", "test")}}
    np.savez(tmp_path / "rgbset.npz", **good)
    listing = read_source(SourceSpec(kind="medmnist", path=str(tmp_path / "rgbset.npz"),
                                     classes=["2", "0"]))
    assert listing.classes == ("2", "0") and listing.labels.tolist() == [1, 0] * 3
    with pytest.raises(DataError, match=r"classes: unknown class '7'"):
        read_source(SourceSpec(kind="medmnist", path=str(tmp_path / "rgbset.npz"),
                               classes=["7"]))


# ------------------------------------------------------------------------------------ digits


def test_digits_listing():
    from sklearn.datasets import load_digits

    listing = read_source(SourceSpec(kind="digits"))
    assert len(listing) == 1797 and listing.classes == tuple("0123456789")
    assert np.array_equal(listing.labels, load_digits().target)
    assert listing.splits is None
