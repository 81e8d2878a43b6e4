"""``raysweep datasets convert-isic``: ISIC 2019's one-hot ground truth to a manifest.

ISIC 2019 (https://challenge.isic-archive.com/data/#2019) ships its labels as
``ISIC_2019_Training_GroundTruth.csv``: a header ``image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK`` and
one row per image (``ISIC_0000000``, the file ``ISIC_0000000.jpg`` of
``ISIC_2019_Training_Input/``) with ``1.0`` in the column of its class and ``0.0`` elsewhere. The
converter writes the manifest raysweep's ``manifest`` source reads: ``path,label[,split]``, one
row per image in the ground truth's order, labels named as in the paper's Table 1 (or the
column codes), paths relative to the manifest's folder.

A row with no class or with several is refused (one line naming the file, line and image), as is
a value other than 0/1, an unknown column, a repeated image or a missing image file; nothing is
written then. Splits: none (raysweep then makes a stratified split from the spec's
``split_seed``), one ``split`` for every row, or a seeded draw of a given number of training
images per class with the rest ``test`` (``--train-per-class``; ``paper`` = the per-class training
counts of Haggerty & Chandra's ISIC2019*, Table 1 -- the same counts, not the same images, which
the paper does not list).
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raysweep.errors import DataError
from raysweep.storage.atomic import atomic_write_text

#: ISIC 2019 class columns (ground-truth order) and their names in the paper's Table 1.
ISIC2019_CLASSES: dict[str, str] = {
    "MEL": "melanoma", "NV": "nevus", "BCC": "basal cell carcinoma", "AK": "actinic keratosis",
    "BKL": "benign keratosis", "DF": "dermatofibroma", "VASC": "vascular lesion",
    "SCC": "squamous cell carcinoma", "UNK": "unknown",
}

#: Training images per class of the paper's ISIC2019* (Table 1; 2,554 in all).
PAPER_TRAIN_COUNTS: dict[str, int] = {
    "AK": 306, "BCC": 500, "BKL": 467, "DF": 55, "MEL": 500, "NV": 500, "SCC": 171, "VASC": 55,
}

SPLIT_NAMES = ("train", "val", "test")
LABEL_STYLES = ("names", "codes")


@dataclass(frozen=True)
class IsicManifest:
    """What :func:`convert_isic` wrote: ``counts`` images per label, ``split_counts`` images per
    split (empty without a split column), ``root`` the folder the paths are relative to when it
    is not the manifest's own (the source then needs ``root:``)."""

    out: Path
    counts: dict[str, int]
    split_counts: dict[str, int]
    root: Path | None

    def summary(self) -> str:
        """One line for the command line."""
        total = sum(self.counts.values())
        classes = ", ".join(f"{label} {n}" for label, n in self.counts.items())
        text = f"wrote {self.out}: {total} images, {len(self.counts)} classes ({classes})"
        if self.split_counts:
            text += "; splits " + ", ".join(f"{s} {n}" for s, n in self.split_counts.items())
        if self.root is not None:
            text += (f"; paths are relative to {self.root}: use {{kind: manifest, path: "
                     f"{self.out}, root: {self.root}}}")
        return text


def parse_train_counts(text: str) -> dict[str, int]:
    """``AK=306,BCC=500,...`` (or ``paper``) to {class code: training images}."""
    if text.strip() == "paper":
        return dict(PAPER_TRAIN_COUNTS)
    counts: dict[str, int] = {}
    for part in text.split(","):
        code, _, number = part.strip().partition("=")
        code = code.strip().upper()
        if code not in ISIC2019_CLASSES or not number.strip().isdigit():
            raise DataError(f"--train-per-class: {part.strip()!r} is not CODE=COUNT with CODE in "
                            f"{', '.join(ISIC2019_CLASSES)} (or give 'paper')")
        if code in counts:
            raise DataError(f"--train-per-class: {code} is given twice")
        counts[code] = int(number)
    return counts


def convert_isic(ground_truth: Path, images: Path, out: Path, *, split: str | None = None,
                 train_per_class: dict[str, int] | None = None, seed: int = 0,
                 labels: str = "names", extension: str = ".jpg",
                 overwrite: bool = False) -> IsicManifest:
    """Write the manifest ``out`` for the ISIC ground truth ``ground_truth`` whose images are
    ``images/<image><extension>`` (see the module docstring). Raises :class:`DataError` with one
    line naming the file, line and image at fault, before anything is written."""
    ground_truth, images, out = (Path(os.path.expanduser(p)) for p in (ground_truth, images, out))
    if split is not None and split not in SPLIT_NAMES:
        raise DataError(f"--split: {split!r} is not one of {', '.join(SPLIT_NAMES)}")
    if split is not None and train_per_class is not None:
        raise DataError("give --split or --train-per-class, not both")
    if seed < 0:
        raise DataError(f"--seed: {seed} is negative")
    if labels not in LABEL_STYLES:
        raise DataError(f"--labels: {labels!r} is not one of {', '.join(LABEL_STYLES)}")
    if not images.is_dir():
        raise DataError(f"image folder not found: {images}")
    if out.is_dir():
        raise DataError(f"{out} is a directory; --out names the manifest .csv to write")
    if out.exists() and not overwrite:
        raise DataError(f"{out} exists (pass --force to replace it)")
    if out.suffix.lower() != ".csv":
        raise DataError(f"{out}: the manifest must be a .csv file")

    rows = _read_ground_truth(ground_truth)
    root = _common_root(images, out.parent)
    base = out.parent if root is None else images
    paths, codes = [], []
    for line, image, code in rows:
        file = images / f"{image}{extension}"
        if not file.is_file():
            raise DataError(f"{ground_truth} line {line}: image {image}: file not found: {file}")
        paths.append(os.path.relpath(file, base))
        codes.append(code)
    splits = _splits(codes, [image for _, image, _ in rows], split, train_per_class, seed)

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "split"] if splits else ["path", "label"])
    for index, (path, code) in enumerate(zip(paths, codes, strict=True)):
        label = ISIC2019_CLASSES[code] if labels == "names" else code
        writer.writerow([Path(path).as_posix(), label, *([splits[index]] if splits else [])])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, buffer.getvalue())
    by_code = Counter(codes)
    counts = {(ISIC2019_CLASSES[c] if labels == "names" else c): by_code[c]
              for c in ISIC2019_CLASSES if by_code[c]}
    split_counts = {s: n for s in SPLIT_NAMES if (n := sum(1 for x in splits if x == s))}
    return IsicManifest(out=out, counts=counts, split_counts=split_counts, root=root)


def _read_ground_truth(file: Path) -> list[tuple[int, str, str]]:
    """(line, image, class code) of every row of an ISIC one-hot ground-truth CSV."""
    if not file.is_file():
        raise DataError(f"ground truth not found: {file}")
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(f"{file} line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x})") \
            from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader, [])]
    if not header or header[0] != "image":
        raise DataError(f"{file}: the header must start with 'image' followed by class columns "
                        f"({','.join(ISIC2019_CLASSES)}); found {','.join(header) or 'nothing'}")
    columns = header[1:]
    unknown = [c for c in columns if c not in ISIC2019_CLASSES]
    if unknown or len(set(columns)) != len(columns) or len(columns) < 2:
        raise DataError(f"{file}: class columns must be distinct ISIC 2019 codes "
                        f"({','.join(ISIC2019_CLASSES)}); found {','.join(columns)}")
    rows: list[tuple[int, str, str]] = []
    seen: dict[str, int] = {}
    for values in reader:
        line = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise DataError(f"{file} line {line}: {len(values)} values for {len(header)} columns")
        image = values[0].strip()
        if not image:
            raise DataError(f"{file} line {line}: empty image name")
        if image in seen:
            raise DataError(f"{file} line {line}: image {image} repeats line {seen[image]}")
        seen[image] = line
        hot = []
        for column, value in zip(columns, values[1:], strict=True):
            number = _zero_or_one(value)
            if number is None:
                raise DataError(f"{file} line {line}: image {image}: {column} is "
                                f"{value.strip()!r}, expected 0 or 1")
            if number:
                hot.append(column)
        if len(hot) != 1:
            what = "no class (every column is 0)" if not hot else \
                f"{len(hot)} classes ({', '.join(hot)})"
            raise DataError(f"{file} line {line}: image {image} has {what}; a manifest row needs "
                            "exactly one class")
        rows.append((line, image, hot[0]))
    if not rows:
        raise DataError(f"{file}: no images (only a header)")
    return rows


def _zero_or_one(value: str) -> int | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number in (0.0, 1.0) else None


def _common_root(images: Path, folder: Path) -> Path | None:
    """None when ``images`` lies inside ``folder`` (paths relative to the manifest), else the
    absolute image folder the paths are relative to."""
    images_abs = os.path.normpath(os.path.abspath(images))
    folder_abs = os.path.normpath(os.path.abspath(folder))
    if os.path.commonpath([images_abs, folder_abs]) == folder_abs:
        return None
    return Path(images_abs)


def _splits(codes: list[str], images: list[str], split: str | None,
            train_per_class: dict[str, int] | None, seed: int) -> list[str]:
    """The split of each row: none, ``split`` for all, or ``train_per_class[code]`` images per
    class drawn by ``seed`` (from the images sorted by name, so the draw does not depend on the
    row order) and the rest ``test``."""
    if split is not None:
        return [split] * len(codes)
    if train_per_class is None:
        return []
    assigned = ["test"] * len(codes)
    rng = np.random.default_rng(seed)
    for code in ISIC2019_CLASSES:
        wanted = train_per_class.get(code, 0)
        members = sorted((i for i, c in enumerate(codes) if c == code), key=lambda i: images[i])
        if wanted > len(members):
            raise DataError(f"--train-per-class: {code}={wanted} but the ground truth has "
                            f"{len(members)} {code} images")
        for position in rng.permutation(len(members))[:wanted]:
            assigned[members[position]] = "train"
    return assigned
