"""The decode-once cache: every source decoded and resized once into a memory-mapped uint8 array.

Layout: ``<cache>/<key>/images.u8`` (raw uint8, C-order, shape (N, C, S, S)) and
``<cache>/<key>/meta.json`` (shape, item names, skipped files, provenance). ``<cache>`` is
``DatasetSpec.cache_dir``, else ``$RAYSWEEP_CACHE``, else ``~/.cache/raysweep``.

One entry per *source* (so the paper's I, IU and IUD mixtures decode ISIC once), plus, for a
mixture of several sources, one *union* entry that concatenates the source entries (a byte copy,
grey sources replicated to RGB when the mixture holds RGB), so a dataset is one memmap.

The key is :func:`~raysweep.artefacts.stable_hash` of (reader kind, the item list with a sha256
content digest of each file -- or of the ``.npz`` / bundled data file and the selected rows --,
``image_size``, :data:`~raysweep.data.decode.DECODER_VERSION`). Content digests are remembered in
``<cache>/digests.json`` keyed on (absolute path, size, mtime_ns), so unchanged files are not
re-read. Labels and splits are not part of the key: they come from the (cheap) listing on every
load, so relabelling a manifest never re-decodes and never reads stale labels from the cache.

An entry is built in a temporary directory and moved into place with ``os.replace`` once
``meta.json`` is written: a failure (a corrupt image, Ctrl-C) mid-decode leaves no entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from raysweep.artefacts import atomic_write_json, provenance, stable_hash
from raysweep.data import decode
from raysweep.data.sources import SourceListing, iter_array_items
from raysweep.errors import DataError

#: Show a progress bar when decoding or hashing more than this many images.
PROGRESS_THRESHOLD = 200

_IMAGES = "images.u8"
_META = "meta.json"


def cache_root(cache_dir: str | None = None) -> Path:
    """``cache_dir``, else ``$RAYSWEEP_CACHE``, else ``~/.cache/raysweep`` (user-expanded)."""
    chosen = cache_dir or os.environ.get("RAYSWEEP_CACHE") or "~/.cache/raysweep"
    return Path(os.path.expanduser(chosen))


class FileDigests:
    """sha256 of file contents, remembered per (absolute path, size, mtime_ns) in
    ``<root>/digests.json`` so that an unchanged file is hashed once."""

    def __init__(self, root: Path):
        self.file = root / "digests.json"
        self._known: dict[str, list] = {}
        self._dirty = False
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(self.file.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                self._known = loaded

    def digest(self, path: Path) -> str:
        resolved = str(Path(path).resolve())
        stat = os.stat(resolved)
        known = self._known.get(resolved)
        if known is not None and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
            return str(known[2])
        sha = hashlib.sha256()
        with open(resolved, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        value = sha.hexdigest()
        self._known[resolved] = [stat.st_size, stat.st_mtime_ns, value]
        self._dirty = True
        return value

    def save(self) -> None:
        if self._dirty:
            with contextlib.suppress(OSError):
                atomic_write_json(self.file, self._known)
            self._dirty = False


@dataclass(frozen=True)
class CacheEntry:
    """A decoded source (or union): ``images`` uint8 memmap (n, C, S, S); ``kept`` int64 (n,)
    the listing positions decoded (all of them unless corrupt files were skipped)."""

    key: str
    directory: Path
    images: np.ndarray
    kept: np.ndarray
    skipped: tuple[tuple[str, str], ...]


def source_key(listing: SourceListing, image_size: int, digests: FileDigests, *,
               progress: bool = True) -> str:
    """The cache key of ``listing`` decoded at ``image_size`` (see the module docstring)."""
    if listing.paths is not None:
        show = progress and len(listing.paths) > PROGRESS_THRESHOLD
        items = [digests.digest(path) for path in tqdm(
            listing.paths, desc=f"hashing {Path(listing.label).name}", unit="file",
            disable=not show, leave=False)]
    else:
        source_file = (digests.digest(listing.array_file) if listing.array_file is not None
                       else "sklearn-digits")
        rows = hashlib.sha256(np.ascontiguousarray(listing.positions, dtype="<i8").tobytes())
        items = [source_file, rows.hexdigest()]
    return stable_hash({"reader": listing.spec.kind, "items": items, "image_size": image_size,
                        "decoder": decode.DECODER_VERSION}, length=24)


def open_entry(directory: Path) -> CacheEntry | None:
    """The entry in ``directory`` when it is complete (its ``meta.json`` exists), else None."""
    meta_file = directory / _META
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    shape = tuple(meta["shape"])
    images = (np.memmap(directory / _IMAGES, dtype=np.uint8, mode="r", shape=shape)
              if shape[0] else np.zeros(shape, dtype=np.uint8))
    kept = meta["kept"]  # "all" or the listing positions kept (corrupt files skipped)
    kept = np.arange(shape[0]) if kept == "all" else np.asarray(kept, dtype=np.int64)
    return CacheEntry(key=directory.name, directory=directory, images=images, kept=kept,
                      skipped=tuple(tuple(s) for s in meta.get("skipped", [])))


def load_source(listing: SourceListing, image_size: int, root: Path, digests: FileDigests, *,
                progress: bool = True) -> CacheEntry:
    """Map the cached decode of ``listing``, decoding it into the cache first on a miss.

    A hit decodes nothing. Corrupt images raise :class:`DataError` (``corrupt image: <path>
    (<reason>)``) unless the source has ``skip_corrupt``, which excludes them with a
    :class:`~raysweep.data.decode.DataWarning` naming them (repeated on every load).
    """
    key = source_key(listing, image_size, digests, progress=progress)
    entry = open_entry(root / key)
    if entry is None:
        entry = _build(root, key, lambda tmp: _decode_source(listing, image_size, tmp, progress),
                       {"source": listing.label, "reader": listing.spec.kind,
                        "image_size": image_size})
    if entry.skipped:
        if not listing.spec.skip_corrupt:
            path, reason = entry.skipped[0]
            raise decode.corrupt(Path(path), reason)
        shown = ", ".join(path for path, _ in entry.skipped[:3])
        more = f" and {len(entry.skipped) - 3} more" if len(entry.skipped) > 3 else ""
        warnings.warn(f"skipped {len(entry.skipped)} corrupt image(s) in {listing.label}: "
                      f"{shown}{more}", decode.DataWarning, stacklevel=3)
    if len(entry.kept) == 0:
        raise DataError(f"empty source: {listing.label} (every image is corrupt)")
    return entry


def load_union(parts: list[CacheEntry], channels: int, image_size: int, root: Path) -> CacheEntry:
    """One memmap holding ``parts`` one after another, with ``channels`` channels (grey parts
    replicated to RGB when ``channels`` is 3); cached under a key of the parts' keys."""
    if len(parts) == 1 and parts[0].images.shape[1] == channels:
        return parts[0]
    key = stable_hash({"union": [p.key for p in parts], "channels": channels,
                       "decoder": decode.DECODER_VERSION}, length=24)
    entry = open_entry(root / key)
    if entry is not None:
        return entry

    def write(tmp: Path) -> tuple[tuple[int, ...], list[int], list]:
        total = sum(len(p.images) for p in parts)
        shape = (total, channels, image_size, image_size)
        out = np.memmap(tmp / _IMAGES, dtype=np.uint8, mode="w+", shape=shape)
        offset = 0
        for part in parts:
            for start in range(0, len(part.images), 1024):
                block = np.asarray(part.images[start:start + 1024])
                if block.shape[1] != channels:
                    block = np.repeat(block, channels, axis=1)
                out[offset + start:offset + start + len(block)] = block
            offset += len(part.images)
        out.flush()
        del out
        return shape, list(range(total)), []

    return _build(root, key, write, {"union_of": [p.key for p in parts]})


def _build(root: Path, key: str, write, description: dict) -> CacheEntry:
    """Run ``write(tmp_dir) -> (shape, kept, skipped)`` in a temporary directory, then write
    ``meta.json`` (the commit marker) and move the directory to ``root/key`` atomically."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        shape, kept, skipped = write(tmp)
        compact = "all" if kept == list(range(shape[0])) and not skipped else kept
        atomic_write_json(tmp / _META, {"shape": list(shape), "kept": compact, "skipped": skipped,
                                        **description, "provenance": provenance()})
        try:
            os.replace(tmp, root / key)
        except OSError:
            if open_entry(root / key) is None:  # not a finished concurrent build: a real error
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    entry = open_entry(root / key)
    assert entry is not None
    return entry


def _decode_source(listing: SourceListing, image_size: int, tmp: Path, progress: bool):
    """Decode every item of ``listing`` into ``tmp/images.u8``; (shape, kept, skipped)."""
    skip = listing.spec.skip_corrupt
    skipped: list[list[str]] = []
    candidates = list(range(len(listing)))
    if listing.paths is not None:
        probed = []
        for index in candidates:
            try:
                probed.append((index, decode.probe_channels(listing.paths[index])))
            except DataError as err:
                if not skip:
                    raise
                skipped.append([str(listing.paths[index]), _reason(err)])
        channels = 3 if any(c == 3 for _, c in probed) else 1
        candidates = [index for index, _ in probed]
        items = ((index, listing.paths[index]) for index in candidates)
    else:
        arrays = iter_array_items(listing)
        first = next(arrays)
        channels = 3 if first.ndim == 3 else 1
        items = enumerate(_chain(first, arrays))
    shape = (len(candidates), channels, image_size, image_size)
    file = tmp / _IMAGES
    out = (np.memmap(file, dtype=np.uint8, mode="w+", shape=shape) if shape[0]
           else np.zeros(shape, dtype=np.uint8))
    kept: list[int] = []
    show = progress and len(candidates) > PROGRESS_THRESHOLD
    for index, item in tqdm(items, total=len(candidates), disable=not show, unit="img",
                            desc=f"decoding {Path(listing.label).name} at {image_size}px"):
        try:
            if isinstance(item, Path):
                pixels = decode.decode_image(item, channels, image_size)
            else:
                pixels = decode.resize_array(item, channels, image_size)
        except DataError as err:
            if not skip or not isinstance(item, Path):
                raise
            skipped.append([str(item), _reason(err)])
            continue
        out[len(kept)] = pixels
        kept.append(index)
    if isinstance(out, np.memmap):
        out.flush()
    del out
    if len(kept) < shape[0]:
        os.truncate(file, len(kept) * channels * image_size * image_size)
    if not kept:
        file.unlink(missing_ok=True)
    return (len(kept), channels, image_size, image_size), kept, skipped


def _chain(first, rest):
    yield first
    yield from rest


def _reason(err: DataError) -> str:
    return str(getattr(err, "reason", err))
