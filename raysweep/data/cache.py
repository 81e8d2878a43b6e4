"""The decode-once cache: every source decoded and resized once into a memory-mapped uint8 array.

Layout: ``<cache>/<key>/images.u8`` (raw uint8, C-order, shape (N, C, S, S)) and
``<cache>/<key>/meta.json`` (shape, kept items, skipped files, byte size and checksums of
``images.u8``, provenance). ``<cache>`` is ``DatasetSpec.cache_dir``, else ``$RAYSWEEP_CACHE``,
else ``~/.cache/raysweep``.

One entry per *source* (so the paper's I, IU and IUD mixtures decode ISIC once), plus, for a
mixture of several sources, one *union* entry that concatenates the source entries (a byte copy,
grey sources replicated to RGB when the mixture holds RGB), so a dataset is one memmap.

The key is :func:`~raysweep.storage.atomic.stable_hash` of (reader kind, the item list with a sha256
content digest of each file -- or of the ``.npz`` / bundled data file and the selected rows --,
``image_size``, :data:`~raysweep.data.decode.DECODER_VERSION`, :data:`CACHE_FORMAT`). Content
digests are remembered in ``<cache>/digests.json`` keyed on (absolute path, size, mtime_ns), so
unchanged files are not re-read. Labels and splits are not part of the key: they come from the
(cheap) listing on every load, so relabelling a manifest never re-decodes and never reads stale
labels from the cache.

Writing: one load is one :class:`CacheTransaction`. New entries are decoded (on every core, see
:mod:`raysweep.data.decode_pool`) into temporary directories ``.tmp-<key>-<host>-<pid>-<rand>``
and moved into place with ``os.replace`` only when the whole load succeeded; a refused image, a
bad label or Ctrl-C leaves the cache (entries and ``digests.json``) as it was. Leftover temporary
directories of killed builds are removed by the next build: on this host when their process is
gone and they are older than :data:`STALE_TMP_AGE_S`; from other hosts (a shared cache) only after
:data:`FOREIGN_TMP_AGE_S`, since their process cannot be checked from here.

Damage: ``meta.json`` records the size of ``images.u8`` and a CRC-32 of every 64 MiB block of it.
Opening an entry always checks ``meta.json`` and the file size (a ``stat``); the full checksum is
checked once per process for each entry whose pixels a dataset maps (the union, or the single
source; a mixture's source entries only when a union is built from them). CRC-32 over 64 MiB
blocks, computed by threads (zlib releases the GIL), detects torn writes and flipped bytes (every
error burst up to 32 bits, others with probability 1 - 2**-32) at several times the speed of
sha256 in Python: for a 25k x 3 x 256 x 256 entry (4.9 GB) a few seconds once per process, against
tens of minutes of decoding or hours of training that read it. A damaged entry is reported in one
:class:`~raysweep.data.decode.DataWarning` line naming it, rebuilt, and replaced at commit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import mmap
import os
import re
import shutil
import socket
import time
import uuid
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from raysweep.data import decode
from raysweep.data.decode_pool import decode_into, decode_workers
from raysweep.data.sources import SourceListing, iter_array_items
from raysweep.environment import cache_folder
from raysweep.errors import DataError, OutputError
from raysweep.storage.atomic import atomic_write_json, stable_hash
from raysweep.storage.provenance import provenance

#: Part of every key: bump when the entry layout or ``meta.json`` changes incompatibly.
CACHE_FORMAT = 2

#: Show a progress bar when decoding or hashing more than this many images.
PROGRESS_THRESHOLD = 200

#: Bytes per CRC-32 block of ``images.u8``.
CHECKSUM_BLOCK = 64 << 20

#: A temporary build directory of this host is removed when its process is gone and it is older
#: than this (seconds). Directories of other hosts: :data:`FOREIGN_TMP_AGE_S`.
STALE_TMP_AGE_S = 600
FOREIGN_TMP_AGE_S = 24 * 3600

_IMAGES = "images.u8"
_META = "meta.json"
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"
_TMP_NAME = re.compile(r"\.tmp-(?P<key>[0-9a-z]+)-(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-"
                       r"(?P<rand>[0-9a-f]{8})")

#: Entries whose full checksum this process has verified (or written), by file identity.
_INTACT: set[tuple] = set()


def cache_root(cache_dir: str | None = None) -> Path:
    """``cache_dir``, else ``$RAYSWEEP_CACHE`` (a local folder: :mod:`raysweep.environment`),
    else ``~/.cache/raysweep`` (user-expanded)."""
    if cache_dir:
        return Path(os.path.expanduser(cache_dir))
    return cache_folder() or Path(os.path.expanduser("~/.cache/raysweep"))


#: Digests this process has computed or read, by absolute path: [size, mtime_ns, sha256] (so
#: that a dry run, which remembers nothing on disk, still hashes each file once).
_PROCESS_DIGESTS: dict[str, list] = {}


class FileDigests:
    """sha256 of file contents, remembered per (absolute path, size, mtime_ns) in
    ``<root>/digests.json`` so that an unchanged file is hashed once, and in this process
    (whether or not :meth:`save` is called). A damaged or foreign ``digests.json`` only costs
    re-hashing."""

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
        for known in (self._known.get(resolved), _PROCESS_DIGESTS.get(resolved)):
            if (isinstance(known, list) and len(known) == 3 and known[0] == stat.st_size
                    and known[1] == stat.st_mtime_ns and isinstance(known[2], str)):
                if self._known.get(resolved) is not known:
                    self._known[resolved] = known
                    self._dirty = True
                return known[2]
        sha = hashlib.sha256()
        with open(resolved, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        value = sha.hexdigest()
        self._known[resolved] = _PROCESS_DIGESTS[resolved] = [stat.st_size, stat.st_mtime_ns,
                                                              value]
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


class DamagedEntry(Exception):
    """A cache entry whose ``meta.json`` or ``images.u8`` is not what was written."""


# ------------------------------------------------------------------------------- checksums


def block_checksums(file: Path, size: int) -> list[str]:
    """CRC-32 (8 hex digits) of each :data:`CHECKSUM_BLOCK`-byte block of the first ``size``
    bytes of ``file``, computed by a few threads over a read-only mapping."""
    if size == 0:
        return []
    starts = range(0, size, CHECKSUM_BLOCK)
    with open(file, "rb") as handle, \
            mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            def crc(start: int) -> str:
                with view[start:start + CHECKSUM_BLOCK] as block:
                    return f"{zlib.crc32(block) & 0xFFFFFFFF:08x}"

            threads = max(1, min(len(starts), 8, os.cpu_count() or 1))
            if threads == 1:
                return [crc(start) for start in starts]
            with ThreadPoolExecutor(max_workers=threads) as pool:
                return list(pool.map(crc, starts))
        finally:
            view.release()


def _identity(file: Path, blocks: list[str]) -> tuple:
    stat = os.stat(file)
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, tuple(blocks))


# --------------------------------------------------------------------------------- opening


def read_entry(directory: Path, key: str, *, verify: bool) -> CacheEntry:
    """Map the entry in ``directory``; raises :class:`DamagedEntry` naming what is wrong.

    ``meta.json`` and the size of ``images.u8`` are always checked; with ``verify`` the block
    checksums too (once per process and file)."""
    try:
        text = (directory / _META).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DamagedEntry("meta.json is missing") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DamagedEntry(f"meta.json is unreadable: {err}") from None
    if not text.strip():
        raise DamagedEntry("meta.json is empty")
    try:
        meta = json.loads(text)
    except ValueError:
        raise DamagedEntry("meta.json is not valid JSON") from None
    shape, kept, skipped, size, blocks = _checked_meta(meta)
    images_file = directory / _IMAGES
    images: np.ndarray  # a read-only memmap, or zeros for an entry without images
    if size:
        try:
            actual = images_file.stat().st_size
        except FileNotFoundError:
            raise DamagedEntry(f"{_IMAGES} is missing") from None
        if actual != size:
            raise DamagedEntry(f"{_IMAGES} has {actual} bytes, meta.json says {size}")
        if verify:
            identity = _identity(images_file, blocks)
            if identity not in _INTACT:
                found = block_checksums(images_file, size)
                bad = [i for i, (a, b) in enumerate(zip(found, blocks, strict=True)) if a != b]
                if bad:
                    raise DamagedEntry(f"{_IMAGES} fails its checksum in {len(bad)} of "
                                       f"{len(blocks)} block(s), first at byte "
                                       f"{bad[0] * CHECKSUM_BLOCK}")
                _INTACT.add(identity)
        images = np.memmap(images_file, dtype=np.uint8, mode="r", shape=shape)
    else:
        images = np.zeros(shape, dtype=np.uint8)
    return CacheEntry(key=key, directory=directory, images=images, kept=kept, skipped=skipped)


def _checked_meta(meta: Any) -> tuple[tuple[int, ...], np.ndarray, tuple, int, list[str]]:
    """(shape, kept, skipped, images bytes, block checksums) of a ``meta.json``, or
    :class:`DamagedEntry` when a field is missing or inconsistent."""
    def bad(what: str) -> DamagedEntry:
        return DamagedEntry(f"meta.json: {what}")

    if not isinstance(meta, dict):
        raise bad("not an object")
    shape = meta.get("shape")
    if (not isinstance(shape, list) or len(shape) != 4
            or not all(isinstance(s, int) and s >= 0 for s in shape)):
        raise bad(f"shape {shape!r} is not 4 non-negative integers")
    kept = meta.get("kept")
    if kept == "all":
        kept_array = np.arange(shape[0], dtype=np.int64)
    elif (isinstance(kept, list) and len(kept) == shape[0]
          and all(isinstance(k, int) for k in kept)):
        kept_array = np.asarray(kept, dtype=np.int64)
    else:
        raise bad("kept is not 'all' or one position per image")
    skipped = meta.get("skipped", [])
    if not isinstance(skipped, list) or not all(
            isinstance(s, list) and len(s) == 2 and all(isinstance(x, str) for x in s)
            for s in skipped):
        raise bad("skipped is not a list of [file, reason]")
    size = meta.get("images_bytes")
    if size != math.prod(shape):
        raise bad(f"images_bytes {size!r} does not match shape {shape}")
    checksum = meta.get("checksum")
    blocks = checksum.get("blocks") if isinstance(checksum, dict) else None
    if (not isinstance(checksum, dict) or checksum.get("algorithm") != "crc32"
            or checksum.get("block_bytes") != CHECKSUM_BLOCK or not isinstance(blocks, list)
            or len(blocks) != math.ceil(size / CHECKSUM_BLOCK)
            or not all(isinstance(b, str) for b in blocks)):
        raise bad("checksum is missing or does not cover images.u8")
    return tuple(shape), kept_array, tuple(tuple(s) for s in skipped), size, blocks


# ----------------------------------------------------------------------------- transaction


class CacheTransaction:
    """The cache writes of one load: entries are built in temporary directories, readable at
    once, and moved into place by :meth:`commit`; :meth:`discard` removes them (and the cache
    directories this transaction created), leaving the cache as it was."""

    def __init__(self, root: Path):
        self.root = root
        self._pending: dict[str, Path] = {}
        self._damaged: set[str] = set()
        self._created: list[Path] = []
        self._cleaned = False

    def lookup(self, key: str, *, verify: bool) -> CacheEntry | None:
        """The entry ``key`` (built in this transaction, or committed), None on a miss. A
        damaged entry is a miss, reported in one warning line; the rebuild replaces it."""
        if key in self._pending:
            return read_entry(self._pending[key], key, verify=False)
        directory = self.root / key
        if not directory.exists():
            return None
        try:
            return read_entry(directory, key, verify=verify)
        except DamagedEntry as err:
            warnings.warn(f"damaged cache entry {directory} ({err}): rebuilding it",
                          decode.DataWarning, stacklevel=4)
            self._damaged.add(key)
            return None

    def build(self, key: str, write: Callable[[Path], tuple], description: dict) -> CacheEntry:
        """Run ``write(tmp_dir) -> (shape, kept, skipped)``, then write ``meta.json`` with the
        size and checksums of ``images.u8``; the entry is installed at :meth:`commit`."""
        tmp = self._new_directory(key)
        self._pending[key] = tmp
        try:
            shape, kept, skipped = write(tmp)
            images_file = tmp / _IMAGES
            size = images_file.stat().st_size if images_file.exists() else 0
            blocks = block_checksums(images_file, size)
            compact = ("all" if list(kept) == list(range(shape[0])) and not skipped
                       else list(kept))
            atomic_write_json(tmp / _META, {
                "format": CACHE_FORMAT, "shape": list(shape), "kept": compact,
                "skipped": skipped, "images_bytes": size,
                "checksum": {"algorithm": "crc32", "block_bytes": CHECKSUM_BLOCK,
                             "blocks": blocks},
                **description, "provenance": provenance()})
        except OSError as err:  # a full or failing cache disk: one line, the entry removed
            del self._pending[key]
            shutil.rmtree(tmp, ignore_errors=True)
            raise OutputError(
                f"decode cache {self.root} cannot hold the images of {description.get('source')}"
                f" ({err.strerror or type(err).__name__}); free space there or set "
                "RAYSWEEP_CACHE to another folder") from None
        if size:
            _INTACT.add(_identity(images_file, blocks))
        return read_entry(tmp, key, verify=False)

    def commit(self) -> None:
        """Move every entry built into place (a finished concurrent build of the same key wins;
        a damaged entry is replaced)."""
        for key, tmp in list(self._pending.items()):
            self._install(key, tmp)
            del self._pending[key]

    def discard(self) -> None:
        """Remove every entry built, and the cache directories this transaction created."""
        for tmp in self._pending.values():
            shutil.rmtree(tmp, ignore_errors=True)
        self._pending.clear()
        for directory in self._created:  # innermost first; only while empty
            with contextlib.suppress(OSError):
                directory.rmdir()

    def _new_directory(self, key: str) -> Path:
        if not self._cleaned:
            missing = [p for p in (self.root, *self.root.parents) if not p.exists()]
            self.root.mkdir(parents=True, exist_ok=True)
            self._created = missing
            remove_stale_builds(self.root)
            self._cleaned = True
        tmp = self.root / _tmp_name(key)
        tmp.mkdir()
        return tmp

    def _install(self, key: str, tmp: Path) -> None:
        final = self.root / key
        for _ in range(3):
            try:
                os.replace(tmp, final)  # fails when ``final`` is a non-empty directory
                return
            except OSError:
                if not final.exists():
                    raise
            try:  # a concurrent build finished first: keep it (its bytes are the same)
                read_entry(final, key, verify=key in self._damaged)
                shutil.rmtree(tmp, ignore_errors=True)
                return
            except DamagedEntry:
                aside = self.root / _tmp_name(key)
                with contextlib.suppress(FileNotFoundError):
                    os.replace(final, aside)
                shutil.rmtree(aside, ignore_errors=True)
        raise DataError(f"cannot install cache entry {final}: it keeps being replaced")


def _tmp_name(key: str) -> str:
    return f".tmp-{key}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def remove_stale_builds(root: Path, *, now: float | None = None) -> list[Path]:
    """Remove the temporary build directories of killed builds under ``root`` (see the module
    docstring); returns those removed."""
    now = time.time() if now is None else now
    removed = []
    for child in root.iterdir():
        if not child.name.startswith(".tmp-") or not child.is_dir():
            continue
        age = now - _newest_mtime(child)
        match = _TMP_NAME.fullmatch(child.name)
        if match is not None and match["host"] == _HOST:
            stale = age > STALE_TMP_AGE_S and not _pid_alive(int(match["pid"]))
        else:
            stale = age > FOREIGN_TMP_AGE_S
        if stale:
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


def _newest_mtime(directory: Path) -> float:
    newest = 0.0
    with contextlib.suppress(OSError):
        newest = directory.stat().st_mtime
        for child in directory.iterdir():
            with contextlib.suppress(OSError):
                newest = max(newest, child.stat().st_mtime)
    return newest


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# ---------------------------------------------------------------------------------- loading


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
                        "decoder": decode.DECODER_VERSION, "format": CACHE_FORMAT}, length=24)


def source_entry(listing: SourceListing, key: str, image_size: int, txn: CacheTransaction, *,
                 verify: bool, progress: bool = True) -> CacheEntry:
    """The cache entry ``key`` of ``listing``, decoded into ``txn`` on a miss (or damage)."""
    entry = txn.lookup(key, verify=verify)
    if entry is None:
        entry = txn.build(key, lambda tmp: _decode_source(listing, image_size, tmp, progress),
                          {"source": listing.label, "reader": listing.spec.kind,
                           "image_size": image_size})
    return entry


def check_skipped(entry: CacheEntry, listing: SourceListing, *, warn: bool = True) -> None:
    """Corrupt images of ``entry``: a :class:`DataError` (``corrupt image: <path> (<reason>)``)
    unless the source has ``skip_corrupt``, which excludes them with a
    :class:`~raysweep.data.decode.DataWarning` naming them (repeated on every load)."""
    if entry.skipped:
        if not listing.spec.skip_corrupt:
            path, reason = entry.skipped[0]
            raise decode.corrupt(Path(path), reason)
        if not warn:
            return
        shown = ", ".join(path for path, _ in entry.skipped[:3])
        more = f" and {len(entry.skipped) - 3} more" if len(entry.skipped) > 3 else ""
        warnings.warn(f"skipped {len(entry.skipped)} corrupt image(s) in {listing.label}: "
                      f"{shown}{more}", decode.DataWarning, stacklevel=4)
    if len(entry.kept) == 0:
        raise DataError(f"empty source: {listing.label} (every image is corrupt)")


def union_key(parts: list[CacheEntry], channels: int) -> str:
    """The key of the union of ``parts`` at ``channels`` channels."""
    return stable_hash({"union": [p.key for p in parts], "channels": channels,
                        "decoder": decode.DECODER_VERSION, "format": CACHE_FORMAT}, length=24)


def build_union(parts: list[CacheEntry], channels: int, image_size: int,
                txn: CacheTransaction) -> CacheEntry:
    """One memmap holding ``parts`` one after another, with ``channels`` channels (grey parts
    replicated to RGB when ``channels`` is 3), built into ``txn``."""

    def write(tmp: Path) -> tuple[tuple[int, ...], list[int], list]:
        total = sum(len(p.images) for p in parts)
        shape = (total, channels, image_size, image_size)
        if total == 0:
            return shape, [], []
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

    return txn.build(union_key(parts, channels), write, {"union_of": [p.key for p in parts]})


def _decode_source(listing: SourceListing, image_size: int, tmp: Path, progress: bool):
    """Decode every item of ``listing`` into ``tmp/images.u8``; (shape, kept, skipped).

    Items that fail are refused (:class:`DataError`, the first in listing order) unless the
    source has ``skip_corrupt``: then they are left out and the rows after them move up, exactly
    as if they had never been listed."""
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
        items = [listing.paths[index] for index in candidates]
    else:
        arrays = iter_array_items(listing)
        first = next(arrays)
        channels = 3 if first.ndim == 3 else 1
        items = _chain(first, arrays)
    shape = (len(candidates), channels, image_size, image_size)
    file = tmp / _IMAGES
    if shape[0] == 0:
        return shape, [], skipped
    row = channels * image_size * image_size
    with open(file, "wb") as handle:
        handle.truncate(shape[0] * row)
    show = progress and len(candidates) > PROGRESS_THRESHOLD
    failures = decode_into(file, shape, items, workers=decode_workers(),
                           stop_at_failure=not skip,
                           desc=f"decoding {Path(listing.label).name} at {image_size}px",
                           show=show)
    if failures and (not skip or listing.paths is None):
        _, name, reason = failures[0]
        raise decode.corrupt(Path(name), reason)
    failed = {slot for slot, _, _ in failures}
    kept_slots = [slot for slot in range(shape[0]) if slot not in failed]
    if failed:
        out = np.memmap(file, dtype=np.uint8, mode="r+", shape=shape)
        for new, slot in enumerate(kept_slots):  # new <= slot: moving rows up in order is safe
            if new != slot:
                out[new] = out[slot]
        out.flush()
        del out
        os.truncate(file, len(kept_slots) * row)
        skipped += [[name, reason] for _, name, reason in failures]
    if not kept_slots:
        file.unlink(missing_ok=True)
    kept = [candidates[slot] for slot in kept_slots]
    return (len(kept), channels, image_size, image_size), kept, skipped


def _chain(first, rest):
    yield first
    yield from rest


def _reason(err: DataError) -> str:
    return str(getattr(err, "reason", err))
