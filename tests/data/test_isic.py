"""``raysweep datasets convert-isic`` on a tiny synthetic ISIC 2019 ground truth: the manifest
it writes is read back by the manifest source with the right labels, splits and pixels; every
bad row is refused in one line naming it, with nothing written."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from raysweep.cli import main
from raysweep.config import SourceSpec
from raysweep.data import read_source
from raysweep.data.isic import PAPER_TRAIN_COUNTS, convert_isic, parse_train_counts
from raysweep.errors import DataError

HEADER = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"
#: image -> class code of the synthetic ground truth (ISIC's float 0/1 notation).
TRUTH = {"ISIC_0000000": "NV", "ISIC_0000001": "MEL", "ISIC_0000002": "NV",
         "ISIC_0000003_downsampled": "BCC", "ISIC_0000004": "SCC", "ISIC_0000005": "MEL",
         "ISIC_0000006": "NV", "ISIC_0000007": "VASC"}
CODES = HEADER.split(",")[1:]


def _row(image: str, *hot: str) -> str:
    return ",".join([image, *("1.0" if code in hot else "0.0" for code in CODES)])


@pytest.fixture
def isic(tmp_path, image_writer):
    """(ground truth csv, image folder inside tmp_path/isic, manifest path)."""
    base = tmp_path / "isic"
    images = base / "ISIC_2019_Training_Input"
    for index, image in enumerate(TRUTH):
        image_writer(images / f"{image}.jpg", index, size=10)
    truth = base / "ISIC_2019_Training_GroundTruth.csv"
    truth.write_text("\n".join([HEADER, *(_row(i, c) for i, c in TRUTH.items())]) + "\n")
    return truth, images, base / "manifest.csv"


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["datasets", "convert-isic", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_convert_writes_a_manifest_the_manifest_source_reads(isic, capsys):
    truth, images, out = isic
    status, stdout, err = _run(capsys, str(truth), "--images", str(images), "--out", str(out))
    assert status == 0 and err == ""
    assert stdout == (f"wrote {out}: 8 images, 5 classes (melanoma 2, nevus 3, basal cell "
                      "carcinoma 1, vascular lesion 1, squamous cell carcinoma 1)\n")
    names = {"MEL": "melanoma", "NV": "nevus", "BCC": "basal cell carcinoma",
             "SCC": "squamous cell carcinoma", "VASC": "vascular lesion"}
    assert out.read_text() == "path,label\n" + "".join(
        f"ISIC_2019_Training_Input/{image}.jpg,{names[code]}\n" for image, code in TRUTH.items())
    listing = read_source(SourceSpec(kind="manifest", path=str(out)))
    assert [listing.classes[c] for c in listing.labels] == [names[c] for c in TRUTH.values()]
    assert listing.paths == tuple(images / f"{image}.jpg" for image in TRUTH)
    assert listing.splits is None


def test_split_and_code_labels(isic, capsys):
    truth, images, out = isic
    assert _run(capsys, str(truth), "--images", str(images), "--out", str(out), "--split",
                "test", "--labels", "codes")[0] == 0
    listing = read_source(SourceSpec(kind="manifest", path=str(out)))
    assert set(listing.splits.tolist()) == {2}
    assert [listing.classes[c] for c in listing.labels] == list(TRUTH.values())


def test_train_per_class_draws_exact_counts_by_seed(isic):
    truth, images, out = isic
    counts = {"NV": 2, "MEL": 1, "BCC": 1}
    drawn = {}
    for seed in (0, 1, 2, 3):
        written = convert_isic(truth, images, out, train_per_class=counts, seed=seed,
                               labels="codes", overwrite=True)
        listing = read_source(SourceSpec(kind="manifest", path=str(out)))
        train = [listing.names[i] for i in np.flatnonzero(listing.splits == 0)]
        per_class = Counter(listing.classes[listing.labels[i]]
                            for i in np.flatnonzero(listing.splits == 0))
        assert per_class == Counter(counts)  # exactly N per class, the rest test
        assert written.split_counts == {"train": 4, "test": 4}
        assert train == sorted(train, key=listing.names.index)  # rows keep the truth's order
        drawn[seed] = tuple(train)
    again = convert_isic(truth, images, out, train_per_class=counts, seed=0, labels="codes",
                         overwrite=True)
    assert again.split_counts == {"train": 4, "test": 4}
    listing = read_source(SourceSpec(kind="manifest", path=str(out)))
    assert tuple(listing.names[i] for i in np.flatnonzero(listing.splits == 0)) == drawn[0]
    assert len(set(drawn.values())) > 1  # the seed matters
    assert parse_train_counts("paper") == PAPER_TRAIN_COUNTS
    assert sum(PAPER_TRAIN_COUNTS.values()) == 2554  # Table 1's training total
    assert parse_train_counts("ak=3, NV=2") == {"AK": 3, "NV": 2}


def test_images_outside_the_manifest_folder_need_root(isic, tmp_path, capsys):
    truth, images, _ = isic
    out = tmp_path / "manifests" / "isic.csv"
    status, stdout, _ = _run(capsys, str(truth), "--images", str(images), "--out", str(out))
    assert status == 0
    assert stdout.rstrip("\n").endswith(f"; paths are relative to {images}: use {{kind: "
                                        f"manifest, path: {out}, root: {images}}}")
    assert out.read_text().splitlines()[1] == "ISIC_0000000.jpg,nevus"
    listing = read_source(SourceSpec(kind="manifest", path=str(out), root=str(images)))
    assert listing.paths[0] == images / "ISIC_0000000.jpg"


BAD_ROWS = {
    "no class": (_row("ISIC_9", ), "line 3: image ISIC_9 has no class (every column is 0); "
                 "a manifest row needs exactly one class"),
    "two classes": (_row("ISIC_9", "MEL", "NV"), "line 3: image ISIC_9 has 2 classes (MEL, NV); "
                    "a manifest row needs exactly one class"),
    "not a number": (_row("ISIC_9", "MEL").replace("0.0", "x", 1),
                     "line 3: image ISIC_9: NV is 'x', expected 0 or 1"),
    "a half": (_row("ISIC_9", "MEL").replace("0.0", "0.5", 1),
               "line 3: image ISIC_9: NV is '0.5', expected 0 or 1"),
    "short row": ("ISIC_9,1.0,0.0", "line 3: 3 values for 10 columns"),
    "repeated image": (_row("ISIC_0000000", "NV"), "line 3: image ISIC_0000000 repeats line 2"),
    "missing file": (_row("ISIC_9", "NV"), "line 3: image ISIC_9: file not found: "),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_rows_are_refused_in_one_line_and_nothing_is_written(case, isic, capsys):
    truth, images, out = isic
    row, message = BAD_ROWS[case]
    truth.write_text(f"{HEADER}\n{_row('ISIC_0000000', 'NV')}\n{row}\n")
    status, stdout, err = _run(capsys, str(truth), "--images", str(images), "--out", str(out))
    assert status == 2 and stdout == ""
    assert err.startswith(f"error: {truth} {message}") and err.count("\n") == 1
    assert not out.exists()


def test_bad_files_and_arguments_are_refused_in_one_line(isic, tmp_path, capsys):
    truth, images, out = isic
    out.write_text("keep me\n")
    cases = [
        ([str(truth), "--images", str(images), "--out", str(out)],
         f"{out} exists (pass --force to replace it)"),
        ([str(truth), "--images", str(tmp_path / "nope"), "--out", str(tmp_path / "m.csv")],
         f"image folder not found: {tmp_path / 'nope'}"),
        ([str(tmp_path / "nope.csv"), "--images", str(images), "--out", str(tmp_path / "m.csv")],
         f"ground truth not found: {tmp_path / 'nope.csv'}"),
        ([str(truth), "--images", str(images), "--out", str(tmp_path / "m.csv"), "--split",
          "training"], "--split: 'training' is not one of train, val, test"),
        ([str(truth), "--images", str(images), "--out", str(tmp_path / "m.csv"),
          "--train-per-class", "NV=9"],
         "--train-per-class: NV=9 but the ground truth has 3 NV images"),
        ([str(truth), "--images", str(images), "--out", str(tmp_path / "m.csv"),
          "--train-per-class", "XX=1"], "--train-per-class: 'XX=1' is not CODE=COUNT"),
        ([str(truth), "--images", str(images), "--out", str(tmp_path / "m.csv"), "--seed", "-1",
          "--train-per-class", "paper"], "--seed: '-1' is not a non-negative integer"),
        ([str(truth), "--images", str(images), "--out", str(tmp_path / "m.csv"), "--labels",
          "long"], "--labels: 'long' is not one of names, codes"),
        ([str(truth), "--images", str(images), "--out", str(tmp_path / "m.txt")],
         f"{tmp_path / 'm.txt'}: the manifest must be a .csv file"),
    ]
    for argv, message in cases:
        status, stdout, err = _run(capsys, *argv)
        assert (status, stdout) == (2, ""), argv
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert out.read_text() == "keep me\n"
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "m.txt").exists()
    bad_headers = {
        "image,MEL,NV,FOO\n": "class columns must be distinct ISIC 2019 codes",
        "name,MEL,NV\n": "the header must start with 'image'",
        HEADER + "\n": "no images (only a header)",
    }
    for header, message in bad_headers.items():
        truth.write_text(header)
        with pytest.raises(DataError, match=re.escape(message)):
            convert_isic(truth, images, tmp_path / "m.csv")
    cafe = "ISIC_caf\u00e9"
    truth.write_bytes(f"{HEADER}\n{_row(cafe, 'NV')}\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        convert_isic(truth, images, tmp_path / "m.csv")
    assert str(err.value) == f"{truth} line 2: not UTF-8 text (byte 0xe9)"
    assert not (tmp_path / "m.csv").exists()


def test_force_replaces_and_the_file_is_written_atomically(isic):
    truth, images, out = isic
    out.write_text("old\n")
    convert_isic(truth, images, out, overwrite=True)
    assert out.read_text().startswith("path,label\n")
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        ["ISIC_2019_Training_Input", "ISIC_2019_Training_GroundTruth.csv", "manifest.csv"])
    with pytest.raises(DataError, match="not both"):
        convert_isic(truth, images, out, overwrite=True, split="train",
                     train_per_class={"NV": 1})
    assert Path(out).read_text().startswith("path,label\n")
