"""Readers: one :class:`SourceListing` per :class:`~raysweep.config.SourceSpec`, without decoding.

A listing is the list of items of one source (files to decode, or rows of an in-memory array),
with each item's class (an index into the source's own class list, -1 for none) and the
source's own split when it has one. Nothing here decodes pixels: listings are cheap, so
``raysweep datasets describe`` and cache-key computation never touch image data.

Readers (``SourceSpec.kind``):

- ``folder``: one sub-folder per class, images found recursively inside it (extensions in
  :data:`~raysweep.data.decode.IMAGE_EXTENSIONS`, hidden files skipped), in natural path order.
  ``classes`` selects sub-folders (and fixes their order). An unlabelled folder may also hold
  images directly at its top level. A class sub-folder or an image that is a symbolic link
  leading out of the folder is refused unless the source says ``allow_outside_root: true``
  (links within the folder are followed; linked folders inside a class are not descended).
- ``manifest``: a CSV with header ``path,label[,split]`` (extra columns are ignored); image paths
  are relative to ``root`` (default: the CSV's folder), and a row whose path leaves it (``../``,
  an absolute path elsewhere, or a symbolic link inside the root that leads out of it) is refused
  unless the source says ``allow_outside_root: true``: a manifest from elsewhere cannot make
  raysweep read and hash arbitrary files. The file must be
  UTF-8. ``split`` values are ``train``, ``val`` (also ``valid`` / ``validation``) or ``test``.
  With ``classes`` given, a label outside it is an error naming the line: a manifest states its
  labels, so a typo must not silently drop rows.
- ``medmnist``: a MedMNIST ``.npz`` (``{train,val,test}_{images,labels}``), labels (N,) or
  (N, 1), images (N, H, W) grey or (N, H, W, 3) RGB. ``name`` resolves to ``<root>/<name>.npz``
  or ``<root>/<name>_<size>.npz`` (MedMNIST+); root defaults to ``~/.medmnist``, where the
  ``medmnist`` package downloads. ``classes`` selects official class names.
- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, classes ``0``..``9``,
  values 0..16 scaled to 0..255), real images that need no network: the offline demo set.
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import dataclasses
import io
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Literal

import numpy as np
from sklearn.datasets import load_digits

from raysweep.config import SourceSpec
from raysweep.data.decode import IMAGE_EXTENSIONS
from raysweep.errors import DataError
from raysweep.storage.paths import is_within

SPLITS: tuple[Literal["train", "val", "test"], ...] = ("train", "val", "test")
_SPLIT_ALIASES = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}

#: Official MedMNIST class names (label index order), used when the ``medmnist`` package
#: (whose ``INFO`` has them all) is not installed.
MEDMNIST_CLASSES: dict[str, tuple[str, ...]] = {
    "breastmnist": ("malignant", "normal, benign"),
    "pneumoniamnist": ("normal", "pneumonia"),
    "dermamnist": ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                   "benign keratosis-like lesions", "dermatofibroma", "melanoma",
                   "melanocytic nevi", "vascular lesions"),
}

DEFAULT_MEDMNIST_ROOT = "~/.medmnist"


def natural_key(text: str) -> tuple:
    """Sort key ordering ``class2`` before ``class10``."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", text) if part)


@dataclass(frozen=True)
class SourceListing:
    """The items of one source, in a fixed order, before decoding.

    ``labels`` int64 (n,) index into ``classes`` (-1: no label); ``splits`` int8 (n,) codes
    0/1/2 = train/val/test from the source itself, or None when it has no split;
    ``positions`` int64 (n,) positions in the source's full item order (array sources);
    ``names`` a readable identity per item (a relative path, ``train/17``), used in messages and
    to seed stratified splits; ``paths`` the files to decode, or None for array sources
    (``array_file`` is then the file whose bytes the arrays come from).
    """

    spec: SourceSpec
    label: str
    classes: tuple[str, ...]
    fixed_order: bool
    labels: np.ndarray
    splits: np.ndarray | None
    positions: np.ndarray
    names: tuple[str, ...]
    paths: tuple[Path, ...] | None
    array_file: Path | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, keep: np.ndarray) -> SourceListing:
        """The listing restricted to the items at ``keep`` (int positions or a bool mask)."""
        index = np.flatnonzero(keep) if keep.dtype == bool else np.asarray(keep, dtype=np.int64)
        return dataclasses.replace(
            self,
            labels=self.labels[index],
            splits=None if self.splits is None else self.splits[index],
            positions=self.positions[index],
            names=tuple(self.names[i] for i in index),
            paths=None if self.paths is None else tuple(self.paths[i] for i in index),
        )

    def select_classes(self, wanted: tuple[str, ...], key: str = "classes") -> SourceListing:
        """Keep only items of the classes ``wanted``, relabelled in that order."""
        unknown = [name for name in wanted if name not in self.classes]
        if unknown:
            raise DataError(f"{self.label}: {key}: unknown class {unknown[0]!r} "
                            f"(classes: {', '.join(self.classes)})")
        remap = np.full(len(self.classes) + 1, -1, dtype=np.int64)
        for new, name in enumerate(wanted):
            remap[self.classes.index(name)] = new
        new_labels = remap[self.labels]  # label -1 maps through the last slot to -1
        kept = self.select(new_labels >= 0)
        return dataclasses.replace(kept, classes=tuple(wanted), fixed_order=True,
                                   labels=new_labels[new_labels >= 0])


#: Listings made inside :func:`listing_each_source_once`, by the source's spec.
_LISTINGS: contextvars.ContextVar[dict[str, SourceListing] | None] = contextvars.ContextVar(
    "raysweep_source_listings", default=None)


@contextlib.contextmanager
def listing_each_source_once() -> Iterator[None]:
    """Inside the block, :func:`read_source` lists each source once and hands the same listing
    to every later call with an equal spec.

    The checks before a run name one source in every run and condition that reads it (the
    Chaves study lists its ISIC manifest, 25k rows each checked on disk, 33 times); one
    command's check is the block, so a file changed after it is seen by the next one. Nested
    blocks share the outermost one's listings."""
    if _LISTINGS.get() is not None:
        yield
        return
    token = _LISTINGS.set({})
    try:
        yield
    finally:
        _LISTINGS.reset(token)


def read_source(spec: SourceSpec) -> SourceListing:
    """List the items of ``spec`` (no decoding), with ``spec.classes`` applied (once per spec
    inside :func:`listing_each_source_once`).

    Raises :class:`DataError` naming the file, row or key for a missing path, a bad manifest,
    an unknown class, or a source with no images.
    """
    listings = _LISTINGS.get()
    if listings is None:
        return _list_source(spec)
    key = repr(spec)  # a frozen dataclass of plain values: equal specs, equal reprs
    if key not in listings:
        listings[key] = _list_source(spec)
    return listings[key]


def _list_source(spec: SourceSpec) -> SourceListing:
    if spec.kind == "folder":
        listing = _read_folder(spec)
    elif spec.kind == "manifest":
        listing = _read_manifest(spec)
    elif spec.kind == "medmnist":
        listing = _read_medmnist(spec)
    elif spec.kind == "digits":
        listing = _read_digits(spec)
    else:  # pragma: no cover - SourceSpec validates kind
        raise DataError(f"unknown source kind {spec.kind!r}")
    if spec.classes is not None and spec.kind != "folder":
        listing = listing.select_classes(tuple(spec.classes))
    if len(listing) == 0:
        raise DataError(f"empty source: {listing.label} (no images"
                        f"{' of the classes ' + ', '.join(spec.classes) if spec.classes else ''})")
    return listing


def iter_array_items(listing: SourceListing) -> Iterator[np.ndarray]:
    """The uint8 images of an array source, (H, W) or (H, W, 3), in listing order."""
    if listing.spec.kind == "digits":
        images = _digits_images()
        for position in listing.positions:
            yield images[position]
        return
    assert listing.array_file is not None
    with _open_npz(listing.array_file) as data:
        offset = 0
        for split in SPLITS:
            count = len(data[f"{split}_labels"])
            inside = listing.positions[(listing.positions >= offset)
                                       & (listing.positions < offset + count)]
            if len(inside):
                images = data[f"{split}_images"]
                for position in inside:
                    yield images[position - offset]
            offset += count


# ------------------------------------------------------------------------------------ folder


def _is_image(path: Path) -> bool:
    return (path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
            and path.is_file())


def refuse_link_out(spec: SourceSpec, path: Path, root: Path) -> None:
    """A :class:`DataError` when ``path`` (a symbolic link, or below one) leads out of
    ``root`` and the source does not say ``allow_outside_root: true``."""
    if spec.allow_outside_root or is_within(path, root):
        return
    raise DataError(f"{path} is a symbolic link to {os.path.realpath(path)}, outside "
                    f"{os.path.abspath(root)}; set allow_outside_root: true on the source to "
                    "read it")


def _images_under(spec: SourceSpec, directory: Path, root: Path) -> list[Path]:
    """The images below ``directory`` (hidden entries skipped, linked folders not descended);
    a linked image leading out of ``root`` is refused (:func:`refuse_link_out`)."""
    found: list[Path] = []
    pending = [directory]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                    if entry.is_symlink():
                        refuse_link_out(spec, Path(entry.path), root)
                    found.append(Path(entry.path))
    return sorted((p for p in found if _is_image(p)),
                  key=lambda p: natural_key(p.relative_to(directory).as_posix()))


def _read_folder(spec: SourceSpec) -> SourceListing:
    root = Path(os.path.expanduser(spec.path or ""))
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    sub_folders = sorted((d.name for d in root.iterdir()
                          if d.is_dir() and not d.name.startswith(".")), key=natural_key)
    loose = sorted((p for p in root.iterdir() if _is_image(p)), key=lambda p: natural_key(p.name))
    for path in loose:
        if path.is_symlink():
            refuse_link_out(spec, path, root)
    if loose and spec.labelled:
        raise DataError(f"image outside a class sub-folder: {loose[0]} (a labelled image folder "
                        "needs one sub-folder per class; set labelled: false to ignore labels)")
    if spec.classes is not None:
        for name in spec.classes:
            if name not in sub_folders:
                raise DataError(f"{root}: classes: no sub-folder {name!r} "
                                f"(sub-folders: {', '.join(sub_folders) or 'none'})")
        classes = tuple(spec.classes)
        loose = []  # an explicit class list selects sub-folders only
    else:
        classes = tuple(sub_folders)
    if not classes and not loose:
        raise DataError(f"empty source: {root} (no class sub-folders and no images)")
    paths: list[Path] = list(loose)
    labels: list[int] = [-1] * len(loose)
    for index, name in enumerate(classes):
        if (root / name).is_symlink():
            refuse_link_out(spec, root / name, root)
        found = _images_under(spec, root / name, root)
        paths.extend(found)
        labels.extend([index] * len(found))
    return SourceListing(
        spec=spec, label=str(root), classes=classes, fixed_order=spec.classes is not None,
        labels=np.asarray(labels, dtype=np.int64), splits=None,
        positions=np.arange(len(paths), dtype=np.int64),
        names=tuple(p.relative_to(root).as_posix() for p in paths), paths=tuple(paths))


# ---------------------------------------------------------------------------------- manifest


def _read_manifest(spec: SourceSpec) -> SourceListing:
    """The items of a ``path,label[,split]`` manifest; every image must exist (and lie inside
    the root unless ``allow_outside_root``), every label be one of ``classes`` when given."""
    file = Path(os.path.expanduser(spec.path or ""))
    if not file.is_file():
        raise DataError(f"manifest not found: {file}")
    root = Path(os.path.expanduser(spec.root)) if spec.root else file.parent
    rows, has_split = _manifest_rows(file, spec.labelled)
    allowed = tuple(spec.classes) if spec.classes is not None else None
    seen: dict[str, None] = {}
    paths, names, raw_labels, splits = [], [], [], []
    for line, rel, label, split in rows:
        where = f"{file} line {line}"
        path = _manifest_image(spec, root, rel, where)
        if label:
            if allowed is not None and label not in allowed:
                raise DataError(f"{where}: label {label!r} is not in classes "
                                f"({', '.join(allowed)})")
            seen.setdefault(label)
        elif spec.labelled:
            raise DataError(f"{where}: empty label (allowed only with labelled: false)")
        if has_split:
            splits.append(_manifest_split(split, where))
        paths.append(path)
        names.append(rel)
        raw_labels.append(label)
    classes = allowed if allowed is not None else tuple(sorted(seen, key=natural_key))
    lookup = {name: index for index, name in enumerate(classes)}
    return SourceListing(
        spec=spec, label=str(file), classes=classes, fixed_order=allowed is not None,
        labels=np.asarray([lookup.get(lab, -1) for lab in raw_labels], dtype=np.int64),
        splits=np.asarray(splits, dtype=np.int8) if has_split else None,
        positions=np.arange(len(paths), dtype=np.int64), names=tuple(names), paths=tuple(paths))


def _manifest_rows(file: Path, labelled: bool) -> tuple[list[tuple[int, str, str, str]], bool]:
    """The manifest's non-blank rows as ``(line, path, label, split)`` (stripped; empty when a
    cell is), and whether it has a ``split`` column. Raises :class:`DataError` for a header
    without ``path`` (and ``label`` when ``labelled``) or a CSV that cannot be parsed."""
    reader = csv.DictReader(io.StringIO(_manifest_text(file), newline=""))
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
    except csv.Error as err:
        raise DataError(f"{file} line {reader.line_num}: unreadable CSV ({err})") from None
    reader.fieldnames = header
    for column in ("path", "label") if labelled else ("path",):
        if column not in header:
            raise DataError(f"{file}: header must name columns path,label[,split]; "
                            f"column {column!r} is missing (header: {','.join(header)})")
    rows: list[tuple[int, str, str, str]] = []
    try:
        for row in reader:
            if not any((value or "").strip() for value in row.values()
                       if isinstance(value, str)):
                continue  # blank line
            rows.append((reader.line_num, (row.get("path") or "").strip(),
                         (row.get("label") or "").strip(), (row.get("split") or "").strip()))
    except csv.Error as err:
        raise DataError(f"{file} line {reader.line_num}: unreadable CSV ({err})") from None
    return rows, "split" in header


def _manifest_image(spec: SourceSpec, root: Path, rel: str, where: str) -> Path:
    """The image a manifest row names (``rel``, relative to ``root``); a :class:`DataError`
    at ``where`` when it is empty, outside the root or not a file."""
    if not rel:
        raise DataError(f"{where}: empty path")
    path = root / rel  # an absolute ``rel`` stays itself
    if not spec.allow_outside_root and not _inside(path, root):
        raise DataError(f"{where}: image path {rel!r} is outside "
                        f"{os.path.abspath(root)} (the manifest's "
                        f"{'root' if spec.root else 'folder'}); set root: or "
                        "allow_outside_root: true on the source to read it")
    if not path.is_file():
        raise DataError(f"{where}: image not found: {path}")
    try:
        refuse_link_out(spec, path, root)
    except DataError as err:
        raise DataError(f"{where}: {err}") from None
    return path


def _manifest_split(split: str, where: str) -> int:
    """The split code (0 train, 1 val, 2 test) of a manifest row's ``split`` cell."""
    code = _SPLIT_ALIASES.get(split.lower())
    if code is None:
        raise DataError(f"{where}: split {split!r} is not train, val or test")
    return code


def _manifest_text(file: Path) -> str:
    """The manifest's text (UTF-8, with or without a byte-order mark)."""
    try:
        raw = file.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read manifest {file} ({err.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(f"{file} line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); "
                        "save the manifest as UTF-8") from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise DataError(f"{file} line {line}: a NUL byte (a binary file, not a CSV manifest)")
    return text


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` lies in ``root`` after resolving ``.`` and ``..`` by name (symbolic
    links are not followed: a link placed inside the folder is the folder owner's choice)."""
    resolved = os.path.normpath(os.path.abspath(path))
    base = os.path.normpath(os.path.abspath(root))
    return os.path.commonpath([resolved, base]) == base


# ---------------------------------------------------------------------------------- medmnist


def resolve_medmnist_file(spec: SourceSpec, image_size: int | None = None) -> Path:
    """The ``.npz`` file a medmnist source reads: ``path``, else ``<root>/<name>.npz`` or
    ``<root>/<name>_<size>.npz``. Among several sizes the smallest at least ``image_size`` wins
    (the largest when none is), so a 224 px MedMNIST+ file serves a 256 px run."""
    if spec.path:
        file = Path(os.path.expanduser(spec.path))
        if not file.is_file():
            raise DataError(f"medmnist file not found: {file}")
        return file
    name = str(spec.name)
    root = Path(os.path.expanduser(spec.root or DEFAULT_MEDMNIST_ROOT))
    sized = re.fullmatch(r"(?P<flag>[a-z0-9]+)_(?P<size>\d+)", name)
    if sized is not None:  # a MedMNIST+ name with its size, e.g. dermamnist_224
        if not (root / f"{name}.npz").is_file():
            command = medmnist_download_command(sized["flag"], root, int(sized["size"]))
            raise DataError(f"medmnist file not found: no {name}.npz in {root}; download it "
                            f"with: {command} (the medmnist package: pip install "
                            "'raysweep[medmnist]'), or set source.path")
        return root / f"{name}.npz"
    candidates: dict[int, Path] = {}
    if (root / f"{name}.npz").is_file():
        candidates[28] = root / f"{name}.npz"
    if root.is_dir():
        for file in root.glob(f"{name}_*.npz"):
            size = file.stem[len(name) + 1:]
            if size.isdigit():
                candidates.setdefault(int(size), file)
    if not candidates:
        raise DataError(f"medmnist file not found: no {name}.npz (or {name}_<size>.npz) in "
                        f"{root}; download it with: {medmnist_download_command(name, root)} "
                        "(the medmnist package: pip install 'raysweep[medmnist]'; add size=64, "
                        "128 or 224 for MedMNIST+), or set source.path")
    sizes = sorted(candidates)
    big_enough = [s for s in sizes if image_size is None or s >= image_size]
    return candidates[big_enough[0] if big_enough else sizes[-1]]


#: The ``medmnist`` package's class of each 2D flag (its ``INFO[flag]["python_class"]``).
MEDMNIST_PYTHON_CLASSES = {
    "pathmnist": "PathMNIST", "chestmnist": "ChestMNIST", "dermamnist": "DermaMNIST",
    "octmnist": "OCTMNIST", "pneumoniamnist": "PneumoniaMNIST", "retinamnist": "RetinaMNIST",
    "breastmnist": "BreastMNIST", "bloodmnist": "BloodMNIST", "tissuemnist": "TissueMNIST",
    "organamnist": "OrganAMNIST", "organcmnist": "OrganCMNIST", "organsmnist": "OrganSMNIST",
}


def medmnist_download_command(flag: str, root: Path, size: int | None = None) -> str:
    """A shell command that downloads ``<root>/<flag>.npz`` (``<flag>_<size>.npz`` with a size)
    with the ``medmnist`` package, whose dataset classes download one set (``python -m medmnist
    download`` fetches every set)."""
    name = MEDMNIST_PYTHON_CLASSES.get(flag)
    dataset = (f"medmnist.{name}" if name is not None
               else f"getattr(medmnist, medmnist.INFO[{flag!r}]['python_class'])")
    size_arg = f", size={size}" if size is not None else ""
    return (f"mkdir -p {root} && python -c \"import medmnist; "
            f"{dataset}(split='train', download=True, root='{root}'{size_arg})\"")


def medmnist_flag(file: Path) -> str:
    """``breastmnist`` for ``breastmnist.npz`` and ``breastmnist_224.npz``."""
    return re.sub(r"_\d+$", "", file.stem).lower()


def medmnist_classes(flag: str, count: int) -> tuple[str, ...]:
    """Official class names of a MedMNIST flag, else ``"0"`` .. ``"count-1"``."""
    try:  # the medmnist package is optional: use its INFO when it is installed
        from medmnist import INFO  # type: ignore[import-not-found]

        labels = INFO[flag]["label"]
        return tuple(labels[str(i)] for i in range(len(labels)))
    except (ImportError, KeyError):
        pass
    names = MEDMNIST_CLASSES.get(flag)
    if names is not None and len(names) >= count:
        return names
    return tuple(str(i) for i in range(count))


def _open_npz(file: Path):
    """``np.load`` of an ``.npz`` archive; never unpickles (object arrays are refused). A file
    that is no zip archive is refused by its first bytes: given anything else, ``np.load``
    guesses a pickle and would advise loading it unsafely."""
    try:
        with open(file, "rb") as handle:
            magic = handle.read(4)
    except OSError as err:
        raise DataError(f"cannot read medmnist file {file} ({err.strerror or err})") from None
    if magic not in (b"PK\x03\x04", b"PK\x05\x06", b"\x93NUM"):  # zip entry, empty zip, .npy
        shown = "empty" if not magic else "not a zip archive: damaged, or another format"
        raise DataError(f"cannot read medmnist file {file} ({shown}; a MedMNIST file is an "
                        ".npz archive of {train,val,test}_{images,labels})")
    try:
        data = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot read medmnist file {file} ({_first_line(err)})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DataError(f"cannot read medmnist file {file} (a single .npy array, not an .npz "
                        "archive of {train,val,test}_{images,labels})")
    return data


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _read_medmnist(spec: SourceSpec) -> SourceListing:
    file = resolve_medmnist_file(spec)
    labels_parts, splits = [], []
    with _open_npz(file) as data:
        for code, split in enumerate(SPLITS):
            for key in (f"{split}_images", f"{split}_labels"):
                if key not in data.files:
                    raise DataError(f"{file}: missing array {key!r} (a MedMNIST file has "
                                    "{train,val,test}_{images,labels})")
            try:
                images_shape, images_dtype = _npy_header(data, f"{split}_images")
                _, labels_dtype = _npy_header(data, f"{split}_labels")
                if labels_dtype.kind not in "iu":
                    raise DataError(f"{file}: {split}_labels has dtype {labels_dtype}; "
                                    "labels must be integers")
                if images_dtype != np.uint8:
                    raise DataError(f"{file}: {split}_images has dtype {images_dtype}; "
                                    "images must be uint8 (0..255)")
                labels = data[f"{split}_labels"]
            except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
                if isinstance(err, DataError):
                    raise
                raise DataError(f"cannot read medmnist file {file} "
                                f"({_first_line(err)})") from None
            if labels.ndim == 2 and labels.shape[1] != 1:
                raise DataError(f"{file}: {split}_labels has shape {labels.shape}: multi-label "
                                "MedMNIST sets are not supported (labels must be (N,) or (N, 1))")
            if labels.ndim not in (1, 2):
                raise DataError(f"{file}: {split}_labels has shape {labels.shape}, "
                                "expected (N,) or (N, 1)")
            labels = labels.reshape(-1).astype(np.int64)
            if len(images_shape) not in (3, 4) or images_shape[0] != len(labels) or (
                    len(images_shape) == 4 and images_shape[3] != 3):
                raise DataError(f"{file}: {split}_images has shape {images_shape}, expected "
                                f"({len(labels)}, H, W) or ({len(labels)}, H, W, 3)")
            if len(labels) and labels.min() < 0:
                raise DataError(f"{file}: {split}_labels has a negative label")
            labels_parts.append(labels)
            splits.append(np.full(len(labels), code, dtype=np.int8))
    all_labels = np.concatenate(labels_parts)
    count = int(all_labels.max()) + 1 if len(all_labels) else 0
    classes = medmnist_classes(medmnist_flag(file), count)
    if count > len(classes):
        raise DataError(f"{file}: label {count - 1} outside the {len(classes)} classes")
    names = tuple(f"{split}/{i}" for split, part in zip(SPLITS, labels_parts, strict=True)
                  for i in range(len(part)))
    return SourceListing(
        spec=spec, label=str(file), classes=classes, fixed_order=True, labels=all_labels,
        splits=np.concatenate(splits), positions=np.arange(len(all_labels), dtype=np.int64),
        names=names, paths=None, array_file=file)


def _npy_header(data, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an array inside an ``.npz`` from its header, without loading it."""
    with data.zip.open(f"{key}.npy") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    return tuple(shape), np.dtype(dtype)


# ------------------------------------------------------------------------------------ digits


def digits_data_file() -> Path | None:
    """The file scikit-learn reads the digits from (its bytes key the cache), if found."""
    try:
        path = Path(str(files("sklearn.datasets.data") / "digits.csv.gz"))
    except (ImportError, ModuleNotFoundError, TypeError):
        return None
    return path if path.is_file() else None


def _digits_images() -> np.ndarray:

    images = load_digits().images  # (1797, 8, 8) float, values 0..16
    return np.round(images * (255.0 / 16.0)).astype(np.uint8)


def _read_digits(spec: SourceSpec) -> SourceListing:

    target = load_digits().target.astype(np.int64)
    return SourceListing(
        spec=spec, label="digits", classes=tuple(str(i) for i in range(10)), fixed_order=True,
        labels=target, splits=None, positions=np.arange(len(target), dtype=np.int64),
        names=tuple(f"digits/{i}" for i in range(len(target))), paths=None,
        array_file=digits_data_file())
