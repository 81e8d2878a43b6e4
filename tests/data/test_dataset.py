"""load_dataset on real files: pixels, splits, mixing counts, the decode-once cache, bad input,
describe, and to_float_rgb."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from raysweep.config import DatasetSpec, SourceSpec
from raysweep.data import DataWarning, describe, load_dataset, to_float_rgb
from raysweep.data import decode as decode_module
from raysweep.errors import DataError


def _entries(cache: Path) -> list[Path]:
    """Cache entry directories (and leftover temporary ones) under ``cache``."""
    return sorted(p for p in cache.iterdir() if p.is_dir()) if cache.exists() else []


@pytest.fixture(scope="module")
def pneumonia(pneumoniamnist_npz, tmp_path_factory):
    """pneumoniamnist (5856 images) decoded once for the module, at its own 28 px."""
    cache = tmp_path_factory.mktemp("pneumonia_cache")
    spec = DatasetSpec(sources=(SourceSpec(kind="medmnist", path=str(pneumoniamnist_npz)),),
                       image_size=28, cache_dir=str(cache))
    return load_dataset(spec, progress=False)


# ---------------------------------------------------------------------------------- medmnist


def test_breastmnist_pixels_splits_and_class_counts(breastmnist_npz, cache_dir):
    spec = DatasetSpec(sources=(SourceSpec(kind="medmnist", path=str(breastmnist_npz)),),
                       image_size=28)
    ds = load_dataset(spec, progress=False)
    data = np.load(breastmnist_npz)
    assert isinstance(ds.images, np.memmap) and ds.images.shape == (780, 1, 28, 28)
    assert ds.images.dtype == np.uint8
    offset = 0
    for split in ("train", "val", "test"):
        index = ds.indices(split)
        labels = data[f"{split}_labels"].reshape(-1)
        assert np.array_equal(index, np.arange(offset, offset + len(labels)))
        assert np.array_equal(ds.images[index, 0], data[f"{split}_images"])
        images, got = ds.labelled(split)
        assert np.array_equal(got, labels)
        assert np.shares_memory(images, ds.images) or isinstance(images, np.memmap)
        offset += len(labels)
    counts = ds.counts()
    for split in ("train", "val", "test"):
        expected = np.bincount(data[f"{split}_labels"].reshape(-1), minlength=2)
        assert counts.loc[["malignant", "normal, benign"], split].tolist() == expected.tolist()
    assert counts.loc["total", ["train", "val", "test", "total"]].tolist() == [546, 78, 156, 780]


def test_pneumoniamnist_n1_labels_and_resize(pneumonia, pneumoniamnist_npz, tmp_path):
    data = np.load(pneumoniamnist_npz)
    labels = np.concatenate([data[f"{s}_labels"][:, 0] for s in ("train", "val", "test")])
    assert np.array_equal(pneumonia.labels, labels)
    assert pneumonia.counts().loc["total", "total"] == 5856
    # A different image_size resizes exactly as PIL's bilinear resize does.
    spec = DatasetSpec(sources=(SourceSpec(kind="medmnist", path=str(pneumoniamnist_npz),
                                           split="val"),),
                       image_size=20, cache_dir=str(tmp_path / "c"))
    small = load_dataset(spec, progress=False)
    assert small.images.shape == (524, 1, 20, 20) and (small.split == 1).all()
    expected = np.asarray(Image.fromarray(data["val_images"][7]).resize(
        (20, 20), Image.Resampling.BILINEAR))
    assert np.array_equal(small.images[7, 0], expected)


# ------------------------------------------------------------------------------ folders etc.


def test_folder_pixels_grey_rgb_mixture_and_stratified_split(make_folder, cache_dir):
    rgb = make_folder("rgb", {"a": 6, "b": 4}, suffix=".png")
    grey = make_folder("grey", {"a": 5}, mode="L")
    ds = load_dataset(DatasetSpec(sources=(SourceSpec(kind="folder", path=str(rgb)),
                                           SourceSpec(kind="folder", path=str(grey))),
                                  image_size=12, test_fraction=0.4), progress=False)
    assert ds.images.shape == (15, 3, 12, 12) and ds.classes == ("a", "b")
    first = np.asarray(Image.open(rgb / "a" / "img0.png").convert("RGB"))
    assert np.array_equal(ds.images[0], first.transpose(2, 0, 1))
    grey_first = np.asarray(Image.open(grey / "a" / "img0.png"))
    assert all(np.array_equal(ds.images[10, c], grey_first) for c in range(3))
    # Stratified per source and class: round(0.4 * n) test items each.
    for source, cls, n in ((0, 0, 6), (0, 1, 4), (1, 0, 5)):
        members = (ds.source_index == source) & (ds.labels == cls)
        assert (ds.split[members] == 2).sum() == round(0.4 * n + 1e-9)
    train, test = set(ds.indices("train")), set(ds.indices("test"))
    assert not train & test and train | test == set(range(15))


def test_split_seed_gives_same_indices_independent_of_cache(digits_spec, tmp_path):
    first = load_dataset(digits_spec.replace(cache_dir=str(tmp_path / "one")), progress=False)
    again = load_dataset(digits_spec.replace(cache_dir=str(tmp_path / "two")), progress=False)
    other = load_dataset(digits_spec.replace(cache_dir=str(tmp_path / "one"), split_seed=1),
                         progress=False)
    for split in ("train", "val", "test"):
        assert np.array_equal(first.indices(split), again.indices(split))
    assert not np.array_equal(first.indices("test"), other.indices("test"))
    # Pinned: the same split seed gives these indices on every machine.
    assert first.indices("test")[:6].tolist() == PINNED_DIGITS_TEST
    counts = first.counts()
    for cls in first.classes:
        n = counts.loc[cls, "total"]
        assert abs(counts.loc[cls, "test"] - 0.2 * n) <= 1
        assert abs(counts.loc[cls, "val"] - 0.1 * n) <= 1


PINNED_DIGITS_TEST = [5, 6, 11, 12, 13, 20]


@pytest.fixture
def digits_spec() -> DatasetSpec:
    return DatasetSpec(sources=(SourceSpec(kind="digits"),), image_size=8, val_fraction=0.1)


def test_digits_pixels_are_scaled_sklearn_digits(digits_spec, cache_dir):
    from sklearn.datasets import load_digits

    ds = load_dataset(digits_spec, progress=False)
    expected = np.round(load_digits().images * 255 / 16).astype(np.uint8)
    assert np.array_equal(ds.images[:, 0], expected)
    assert ds.images[:, 0].max() == 255


# ---------------------------------------------------------------------------------- mixing


def test_iud_mixing_counts_are_exact(make_folder, tmp_path, image_writer, cache_dir):
    isic = make_folder("isic", {"mel": 5, "nev": 7})
    for i in range(4):
        image_writer(tmp_path / "ufes" / f"u{i}.jpg", 100 + i)
    manifest = tmp_path / "ufes" / "ufes.csv"
    manifest.write_text("path,label\n" + "".join(f"u{i}.jpg,\n" for i in range(4)))
    dermnet = make_folder("dermnet", {"x": 3, "y": 6})
    iu = (SourceSpec(kind="folder", path=str(isic), labelled=False, oversample=2),
          SourceSpec(kind="manifest", path=str(manifest), labelled=False, oversample=2))
    d = SourceSpec(kind="folder", path=str(dermnet), labelled=False, watermark_cutout=True)
    ds = load_dataset(DatasetSpec(sources=(*iu, d), image_size=12), progress=False)
    order = ds.unlabelled()
    n_iu, n_d = 12 + 4, 9
    assert len(order) == 2 * n_iu + n_d
    copies = np.bincount(order, minlength=len(ds))
    assert (copies[ds.source_index < 2] == 2).all() and (copies[ds.source_index == 2] == 1).all()
    assert (ds.labels == -1).all() and ds.classes == ()
    assert ds.watermark.tolist() == [False] * n_iu + [True] * n_d
    assert ds.counts().loc["(unlabelled)", "pretrain"] == 2 * n_iu + n_d


def test_class_oversampling_applies_to_train_and_pretrain_not_test(make_folder, cache_dir):
    root = make_folder("oral", {"normal": 10, "oscc": 5})
    spec = DatasetSpec(sources=(SourceSpec(kind="folder", path=str(root),
                                           class_oversample={"oscc": 10}),),
                       image_size=12, test_fraction=0.2)
    ds = load_dataset(spec, progress=False)
    oscc = ds.classes.index("oscc")
    train_idx, train_labels = ds.labelled_indices("train")
    raw_train = ds.indices("train")
    n_oscc_train = int((ds.labels[raw_train] == oscc).sum())
    assert (train_labels == oscc).sum() == 10 * n_oscc_train == 40
    assert (train_labels != oscc).sum() == 8
    test_idx, _ = ds.labelled_indices("test")
    assert np.array_equal(test_idx, ds.indices("test"))
    assert len(ds.unlabelled()) == 10 + 10 * 5
    images, labels = ds.labelled("train")
    assert images.shape == (48, 3, 12, 12) and np.array_equal(labels, train_labels)


def test_fractional_oversample_and_label_count(make_folder, cache_dir):
    root = make_folder("f", {"a": 20, "b": 10})
    spec = DatasetSpec(sources=(SourceSpec(kind="folder", path=str(root), oversample=1.5),),
                       image_size=12, test_fraction=0.5, label_count=6)
    ds = load_dataset(spec, progress=False)
    assert len(ds.unlabelled()) == 30 + 15  # 1 copy each + round(0.5 * n) per stratum
    assert len(ds.train_labelled) == 6
    assert np.bincount(ds.labels[ds.train_labelled]).tolist() == [4, 2]
    assert set(ds.train_labelled) <= set(ds.indices("train"))
    with pytest.raises(DataError, match=r"label_count 99 exceeds the 15 labelled training"):
        load_dataset(spec.replace(label_count=99), progress=False)


# ----------------------------------------------------------------------------------- cache


def test_cache_hit_decodes_nothing(make_folder, breastmnist_npz, cache_dir, monkeypatch):
    root = make_folder("f", {"a": 3, "b": 3}, suffix=".jpg")
    specs = [DatasetSpec(sources=(SourceSpec(kind="folder", path=str(root)),), image_size=10),
             DatasetSpec(sources=(SourceSpec(kind="medmnist", path=str(breastmnist_npz)),),
                         image_size=16)]
    first = [load_dataset(spec, progress=False) for spec in specs]
    calls = []

    def forbidden(*args, **kwargs):
        calls.append(args)
        raise AssertionError("decoded on a cache hit")

    for name in ("decode_image", "resize_array", "probe_channels"):
        monkeypatch.setattr(decode_module, name, forbidden)
    second = [load_dataset(spec, progress=False) for spec in specs]
    assert calls == []
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)


def test_changed_file_is_decoded_again(make_folder, cache_dir, image_writer):
    root = make_folder("f", {"a": 2, "b": 2})
    spec = DatasetSpec(sources=(SourceSpec(kind="folder", path=str(root)),), image_size=12)
    before = np.array(load_dataset(spec, progress=False).images)
    new_pixels = image_writer(root / "a" / "img0.png", 999)
    after = load_dataset(spec, progress=False).images
    assert np.array_equal(after[0], new_pixels.transpose(2, 0, 1))
    assert not np.array_equal(before[0], after[0]) and np.array_equal(before[1:], after[1:])
    assert len(_entries(cache_dir)) == 2


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_corrupt_image_is_an_error_and_leaves_no_cache_entry(make_folder, cache_dir):
    root = make_folder("f", {"a": 3, "b": 3}, suffix=".jpg", size=32)
    _truncate(root / "b" / "img1.jpg")
    spec = DatasetSpec(sources=(SourceSpec(kind="folder", path=str(root)),), image_size=12)
    with pytest.raises(DataError) as err:
        load_dataset(spec, progress=False)
    assert str(err.value).startswith(f"corrupt image: {root / 'b' / 'img1.jpg'} (")
    assert "\n" not in str(err.value)
    assert _entries(cache_dir) == []


def test_failure_mid_decode_leaves_nothing(make_folder, cache_dir, monkeypatch):
    root = make_folder("f", {"a": 4})
    real = decode_module.decode_image
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(decode_module, "decode_image", flaky)
    spec = DatasetSpec(sources=(SourceSpec(kind="folder", path=str(root)),), image_size=12)
    with pytest.raises(KeyboardInterrupt):
        load_dataset(spec, progress=False)
    assert _entries(cache_dir) == []
    monkeypatch.setattr(decode_module, "decode_image", real)
    assert len(load_dataset(spec, progress=False)) == 4


def test_skip_corrupt_warns_with_count_and_names(make_folder, cache_dir, tmp_path):
    root = make_folder("f", {"a": 3, "b": 3}, suffix=".jpg", size=32)
    _truncate(root / "a" / "img2.jpg")
    (root / "b" / "img0.jpg").write_bytes(b"not a jpeg at all")
    spec = DatasetSpec(sources=(SourceSpec(kind="folder", path=str(root), skip_corrupt=True),),
                       image_size=12)
    for _ in range(2):  # the miss and the hit both warn
        with pytest.warns(DataWarning) as record:
            ds = load_dataset(spec, progress=False)
        message = str(record[0].message)
        assert message.startswith(f"skipped 2 corrupt image(s) in {root}: ")
        assert "img2.jpg" in message and "img0.jpg" in message
        assert len(ds) == 4 and np.bincount(ds.labels).tolist() == [2, 2]
    good = np.asarray(Image.open(root / "b" / "img1.jpg").convert("RGB").resize(
        (12, 12), Image.Resampling.BILINEAR))
    assert np.array_equal(ds.images[2], good.transpose(2, 0, 1))
    # The same files without skip_corrupt: an error even though a cache entry exists.
    with pytest.raises(DataError, match="corrupt image: "):
        load_dataset(spec.replace(**{"sources": [{"kind": "folder", "path": str(root)}]}),
                     progress=False)


# ------------------------------------------------------------------------------- bad usage


def test_single_class_and_unlabelled_use_for_classification(make_folder, cache_dir):
    root = make_folder("one", {"nevus": 6})
    ds = load_dataset(DatasetSpec(sources=(SourceSpec(kind="folder", path=str(root)),),
                                  image_size=12), progress=False)
    with pytest.raises(DataError) as err:
        ds.labelled("train")
    assert str(err.value) == (f"dataset {root}: split 'train' has only class 'nevus'; "
                              "classification needs at least two")
    unl = load_dataset(DatasetSpec(sources=(SourceSpec(kind="folder", path=str(root),
                                                       labelled=False),), image_size=12),
                       progress=False)
    with pytest.raises(DataError, match=r"split 'test' has no labelled images"):
        unl.labelled("test")
    assert len(unl.unlabelled()) == 6


def test_source_split_filter_and_unknown_keys(breastmnist_npz, make_folder, cache_dir):
    ds = load_dataset(DatasetSpec(sources=(SourceSpec(kind="medmnist", path=str(breastmnist_npz),
                                                      split="test"),), image_size=28),
                      progress=False)
    assert len(ds) == 156 and ds.indices("train").size == 0
    root = make_folder("f", {"a": 2, "b": 2})
    with pytest.raises(DataError, match=r"class_oversample: unknown class 'c'"):
        load_dataset(DatasetSpec(sources=(SourceSpec(kind="folder", path=str(root),
                                                     class_oversample={"c": 2}),)))
    with pytest.raises(DataError, match=r"has no images in split 'val'"):
        load_dataset(DatasetSpec(sources=(SourceSpec(kind="folder", path=str(root),
                                                     split="val"),)))


# -------------------------------------------------------------------------------- describe


def test_describe_breastmnist_prints_table_one(breastmnist_npz, cache_dir):
    text = describe(str(breastmnist_npz))
    lines = text.splitlines()
    assert lines[1].startswith("780 images, 2 classes")
    header = lines[2].split()
    assert header == ["train", "val", "test", "total"]
    rows = {line.rsplit(None, 4)[0].strip(): line.split()[-4:] for line in lines[3:]}
    data = np.load(breastmnist_npz)
    expected = {s: np.bincount(data[f"{s}_labels"]) for s in ("train", "val", "test")}
    assert rows["malignant"] == [str(expected[s][0]) for s in ("train", "val", "test")] + ["210"]
    assert rows["normal, benign"] == [str(expected[s][1]) for s in ("train", "val", "test")] + [
        "570"]
    assert rows["total"] == ["546", "78", "156", "780"]
    assert not cache_dir.exists()  # describe decodes nothing


def test_describe_spec_folder_and_bad_target(tmp_path, make_folder, breastmnist_npz):
    root = make_folder("skin", {"mel": 5, "nev": 10})
    spec = tmp_path / "exp.yaml"
    spec.write_text(f"""
name: demo
pretrain:
  - name: ssl
    data: {{sources: [{{kind: folder, path: {root}, labelled: false, oversample: 2}}]}}
evaluate:
  data: {{sources: [{{kind: medmnist, path: {breastmnist_npz}}}], image_size: 28}}
  encoders: [{{name: rand, encoder: {{name: small_resnet}}}}]
""")
    text = describe(str(spec))
    assert "evaluate.data: " in text and "pretrain[ssl].data: " in text
    assert "(unlabelled)" in text and " 30" in text  # pretrain column: 2 x 15
    folder_text = describe(str(root))
    assert folder_text.splitlines()[1].startswith("15 images, 2 classes; splits: stratified")
    with pytest.raises(DataError, match=r"cannot read nowhere\.txt"):
        describe("nowhere.txt")


# --------------------------------------------------------------------------------- tensors


def test_to_float_rgb():
    grey = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8)
    out = to_float_rgb(grey)
    assert out.shape == (1, 3, 2, 2) and out.dtype == torch.float32
    expected = torch.tensor([[0.0, 1.0], [0.2, 0.4]])
    assert all(torch.allclose(out[0, c], expected) for c in range(3))
    rgb = torch.arange(12, dtype=torch.uint8).reshape(1, 3, 2, 2)
    assert torch.equal(to_float_rgb(rgb) * 255, rgb.float())
    with pytest.raises(TypeError):
        to_float_rgb(grey.float())
    with pytest.raises(ValueError):
        to_float_rgb(torch.zeros(1, 2, 4, 4, dtype=torch.uint8))


def test_no_warnings_on_a_clean_load(make_folder, cache_dir):
    root = make_folder("f", {"a": 2, "b": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(DatasetSpec(sources=(SourceSpec(kind="folder", path=str(root)),),
                                 image_size=12), progress=False)


def test_concurrent_build_keeps_the_first_entry(make_folder, cache_dir):
    """Two processes missing at once: the loser's move fails and it keeps the winner's entry."""
    from raysweep.data import cache as cache_module

    root = make_folder("f", {"a": 2, "b": 2})
    spec = DatasetSpec(sources=(SourceSpec(kind="folder", path=str(root)),), image_size=12)
    ds = load_dataset(spec, progress=False)
    (entry,) = _entries(cache_dir)

    def write(tmp: Path):
        (tmp / "images.u8").write_bytes(b"\x00" * (4 * 3 * 12 * 12))
        return (4, 3, 12, 12), list(range(4)), []

    txn = cache_module.CacheTransaction(cache_dir)
    txn.build(entry.name, write, {})
    txn.commit()
    again = cache_module.read_entry(entry, entry.name, verify=True)
    assert np.array_equal(again.images, ds.images)  # the winner's pixels, not the zeros
    assert _entries(cache_dir) == [entry]  # no temporary directory left behind
