"""Readers on real files: image folders and manifests written here, the shared MedMNIST
``.npz`` files, scikit-learn's digits; and every bad input as a one-line DataError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raysweep.config import DatasetSpec, SourceSpec
from raysweep.data import listing_each_source_once, load_dataset, read_source
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


def test_a_source_is_listed_once_inside_a_check_and_afresh_after_it(tmp_path, image_writer,
                                                                    monkeypatch):
    import raysweep.data.sources as sources

    file = _manifest(tmp_path, image_writer, ["imgs/0.jpg,a", "imgs/1.jpg,b", "imgs/2.jpg,a"],
                     header="path,label")
    spec = SourceSpec(kind="manifest", path=str(file))
    reads: list[Path] = []
    real = sources._manifest_text
    monkeypatch.setattr(sources, "_manifest_text", lambda f: reads.append(f) or real(f))
    with listing_each_source_once():
        first = read_source(spec)
        with listing_each_source_once():  # a nested block shares the outer one's listings
            assert read_source(SourceSpec(kind="manifest", path=str(file))) is first
        other = read_source(SourceSpec(kind="manifest", path=str(file), classes=("b", "a")))
        assert len(reads) == 2 and other.classes == ("b", "a")  # another spec: listed anew
        (tmp_path / "imgs" / "1.jpg").unlink()
        assert read_source(spec) is first  # within one check, the listing made at its start
    with pytest.raises(DataError, match="line 3: image not found"):
        read_source(spec)  # the next check sees the file gone
    assert len(reads) == 3


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


def test_manifest_that_is_not_utf8_names_file_and_line(tmp_path, image_writer):
    image_writer(tmp_path / "imgs" / "0.jpg", 0)
    file = tmp_path / "latin1.csv"
    file.write_bytes("path,label\nimgs/0.jpg,n\u00e6vus\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        read_source(SourceSpec(kind="manifest", path=str(file)))
    assert _one_line(err) == (f"{file} line 2: not UTF-8 text (byte 0xe6); save the manifest "
                              "as UTF-8")
    file.write_bytes("path,label\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"line 1: not UTF-8 text \(byte 0xff\)"):
        read_source(SourceSpec(kind="manifest", path=str(file)))
    file.write_bytes(b"path,label\nimgs/0.jpg,a\x00b\n")
    with pytest.raises(DataError, match=r"line 2: a NUL byte \(a binary file, not a CSV"):
        read_source(SourceSpec(kind="manifest", path=str(file)))
    # UTF-8 with a byte-order mark (as spreadsheet programs write it) is read.
    file.write_bytes("path,label\nimgs/0.jpg,n\u00e6vus\n".encode("utf-8-sig"))
    assert read_source(SourceSpec(kind="manifest", path=str(file))).classes == ("n\u00e6vus",)


def test_manifest_paths_must_stay_inside_its_folder_or_root(tmp_path, image_writer):
    data = tmp_path / "data"
    image_writer(data / "imgs" / "0.jpg", 0)
    outside = tmp_path / "secret.png"
    image_writer(outside, 1)
    file = data / "m.csv"
    refused = {"../secret.png": "'../secret.png'", "imgs/../../secret.png":
               "'imgs/../../secret.png'", str(outside): repr(str(outside))}
    for row, shown in refused.items():
        file.write_text(f"path,label\nimgs/0.jpg,a\n{row},b\n")
        with pytest.raises(DataError) as err:
            read_source(SourceSpec(kind="manifest", path=str(file)))
        assert _one_line(err) == (f"{file} line 3: image path {shown} is outside {data} (the "
                                  "manifest's folder); set root: or allow_outside_root: true on "
                                  "the source to read it")
        listing = read_source(SourceSpec(kind="manifest", path=str(file),
                                         allow_outside_root=True))
        assert listing.paths[1].resolve() == outside
    # Inside the folder: relative with a harmless "..", or absolute.
    file.write_text(f"path,label\nimgs/../imgs/0.jpg,a\n{data / 'imgs' / '0.jpg'},b\n")
    assert len(read_source(SourceSpec(kind="manifest", path=str(file)))) == 2
    # An explicit root: the rows must stay inside it (the manifest's own folder no longer counts).
    elsewhere = tmp_path / "manifests" / "m.csv"
    elsewhere.parent.mkdir()
    elsewhere.write_text("path,label\nimgs/0.jpg,a\n")
    assert len(read_source(SourceSpec(kind="manifest", path=str(elsewhere), root=str(data)))) == 1
    elsewhere.write_text("path,label\nimgs/0.jpg,a\n../secret.png,b\n")
    with pytest.raises(DataError, match=rf"line 3: image path '../secret.png' is outside {data} "
                                        r"\(the manifest's root\)"):
        read_source(SourceSpec(kind="manifest", path=str(elsewhere), root=str(data)))


def test_manifest_outside_root_refused_before_anything_is_hashed_or_written(
        tmp_path, image_writer, cache_dir, capsys):
    """Through the CLI: exit 2, one line; no cache, no digests of the outside file."""
    from raysweep.cli import main

    image_writer(tmp_path / "data" / "0.jpg", 0)
    image_writer(tmp_path / "secret.jpg", 1)
    file = tmp_path / "data" / "m.csv"
    file.write_text("path,label\n0.jpg,a\n../secret.jpg,b\n")
    out = tmp_path / "views.png"
    assert main(["augment", "preview", "--pipeline", "supervised", "--source", str(file),
                 "--out", str(out), "--image-size", "16", "-n", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {file} line 3: image path '../secret.jpg' is outside ")
    assert err.count("\n") == 1
    assert not cache_dir.exists() and not out.exists()


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
    assert _one_line(err) == (
        f"medmnist file not found: no breastmnist.npz (or breastmnist_<size>.npz) in {tmp_path}; "
        f"download it with: mkdir -p {tmp_path} && python -c \"import medmnist; "
        f"medmnist.BreastMNIST(split='train', download=True, root='{tmp_path}')\" (the medmnist "
        "package: pip install 'raysweep[medmnist]'; add size=64, 128 or 224 for MedMNIST+), or "
        "set source.path")
    (tmp_path / "breastmnist.npz").symlink_to(breastmnist_npz)
    (tmp_path / "breastmnist_128.npz").symlink_to(breastmnist_npz)
    (tmp_path / "breastmnist_224.npz").symlink_to(breastmnist_npz)
    spec = SourceSpec(kind="medmnist", name="breastmnist", root=str(tmp_path))
    assert resolve_medmnist_file(spec).name == "breastmnist.npz"
    assert resolve_medmnist_file(spec, 100).name == "breastmnist_128.npz"
    assert resolve_medmnist_file(spec, 256).name == "breastmnist_224.npz"
    assert len(read_source(spec)) == 780


def _medmnist_arrays(images_dtype=np.uint8, labels_dtype=np.uint8) -> dict[str, np.ndarray]:
    return {**{f"{s}_images": np.zeros((2, 5, 5), images_dtype) for s in ("train", "val", "test")},
            **{f"{s}_labels": np.array([0, 1], labels_dtype) for s in ("train", "val", "test")}}


def test_medmnist_float_and_object_arrays_are_refused_and_never_unpickled(tmp_path, cache_dir):
    cases = {
        "floatimages": (_medmnist_arrays(images_dtype=np.float32),
                        "train_images has dtype float32; images must be uint8 (0..255)"),
        "floatlabels": (_medmnist_arrays(labels_dtype=np.float64),
                        "train_labels has dtype float64; labels must be integers"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(DataError) as err:
            read_source(SourceSpec(kind="medmnist", path=str(tmp_path / f"{name}.npz")))
        assert _one_line(err) == f"{tmp_path / name}.npz: {message}"
    # Object arrays hold pickles: loading them would run code. A planted one must not run.
    marker = tmp_path / "pwned"

    class Planted:
        def __reduce__(self):
            return (Path.touch, (marker,))

    for key in ("train_labels", "val_images"):
        arrays = _medmnist_arrays()
        arrays[key] = np.array([Planted(), Planted()], dtype=object)
        np.savez(tmp_path / "planted.npz", **arrays)  # numpy pickles object arrays on save
        with pytest.raises(DataError) as err:
            load_dataset(DatasetSpec(sources=(SourceSpec(kind="medmnist",
                                                         path=str(tmp_path / "planted.npz")),),
                                     image_size=8), progress=False)
        assert _one_line(err).startswith(f"{tmp_path / 'planted.npz'}: {key} has dtype object")
        assert not marker.exists()
    assert not cache_dir.exists()
    np.save(tmp_path / "single.npy", np.zeros((2, 5, 5), np.uint8))
    with pytest.raises(DataError) as err:
        read_source(SourceSpec(kind="medmnist", path=str(tmp_path / "single.npy")))
    assert "a single .npy array, not an .npz archive" in _one_line(err)


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


def test_medmnist_download_command_runs_and_produces_the_file_read(tmp_path, breastmnist_npz):
    """The command in the message runs as printed, against a stand-in ``medmnist`` package with
    the real one's dataset signature (MedMNIST(split, transform, target_transform, download,
    as_rgb, root, size, mmap_mode), which writes ``<root>/<flag>.npz``)."""
    import subprocess
    import sys

    fake = tmp_path / "fake_site" / "medmnist"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"""
import shutil


class BreastMNIST:
    def __init__(self, split, transform=None, target_transform=None, download=False,
                 as_rgb=False, root=None, size=None, mmap_mode=None):
        assert split == "train" and download is True
        shutil.copy({str(breastmnist_npz)!r}, root + "/breastmnist.npz")
""")
    root = tmp_path / "downloads" / "medmnist"
    with pytest.raises(DataError) as err:
        read_source(SourceSpec(kind="medmnist", name="breastmnist", root=str(root)))
    command = _one_line(err).split("download it with: ")[1].split(" (the medmnist package")[0]
    command = command.replace("python -c", f"{sys.executable} -c", 1)
    subprocess.run(["bash", "-c", command], check=True,
                   env={"PYTHONPATH": str(fake.parent), "PATH": "/usr/bin:/bin"})
    assert len(read_source(SourceSpec(kind="medmnist", name="breastmnist",
                                      root=str(root)))) == 780


def test_medmnist_flag_without_file_through_the_cli(tmp_path, monkeypatch, capsys):
    from raysweep.cli import main

    monkeypatch.setenv("HOME", str(tmp_path))
    medmnist_root = tmp_path / ".medmnist"
    assert main(["datasets", "describe", "dermamnist"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: medmnist file not found: no dermamnist.npz (or "
                          f"dermamnist_<size>.npz) in {medmnist_root}; download it with: "
                          f"mkdir -p {medmnist_root} && python -c \"import medmnist; "
                          f"medmnist.DermaMNIST(split='train', download=True, "
                          f"root='{medmnist_root}')\" (the medmnist package: ")
    assert main(["datasets", "describe", "dermamnist_224"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: medmnist file not found: no dermamnist_224.npz in {medmnist_root}; "
                   f"download it with: mkdir -p {medmnist_root} && python -c \"import medmnist; "
                   f"medmnist.DermaMNIST(split='train', download=True, root='{medmnist_root}', "
                   "size=224)\" (the medmnist package: pip install 'raysweep[medmnist]'), or set "
                   "source.path\n")
    assert list(tmp_path.iterdir()) == []  # nothing written

