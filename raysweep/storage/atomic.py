"""Atomic file writes and provenance for every artefact raysweep produces.

Nothing is ever half-written: each writer writes a temporary file (``.<name>.<random>.tmp``) in
the target's directory, flushes and fsyncs it, gives it the mode a plain ``open`` would (0666
minus the umask: 0644 under the usual umask 022, so colleagues on shared storage can read the
results), ``os.replace``-s it over the target (atomic on POSIX and on the same filesystem), then
fsyncs the directory so that the rename itself survives a power cut. A writer killed before the
rename leaves only its temporary file, which :func:`remove_stale_temporaries` deletes at the
next run. Every artefact records the spec, the package versions and the git commit that made it
(:func:`provenance`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, overload

import torch

from raysweep.storage.paths import AnyPath, StoragePath, walk_files

#: Suffix of the temporary files of :func:`atomic_open` (they also start with a dot).
TEMPORARY_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (``/proc``), else by
    setting and restoring it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename or creation inside ``directory`` durable (a no-op where directories cannot
    be opened, e.g. on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
            os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success move it over ``path`` with
    the umask's mode and fsync the directory.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports 'w' and 'wb', not {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMPORARY_SUFFIX,
                               dir=target.parent)
    try:
        with os.fdopen(fd, mode, encoding="utf-8" if mode == "w" else None) as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~current_umask())  # mkstemp creates 0600
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        fsync_directory(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(root: str | os.PathLike[str], *, older_than_s: float = 60.0
                             ) -> list[Path]:
    """Delete the temporary files that killed :func:`atomic_open` writers left under ``root``
    (``.<name>.<random>.tmp``, last modified more than ``older_than_s`` ago, so that a live
    writer's file is never touched); returns what was removed."""
    root = Path(root)
    if not root.is_dir():
        return []
    cutoff = time.time() - older_than_s
    removed = []
    for path in root.rglob(f".*{TEMPORARY_SUFFIX}"):
        with contextlib.suppress(OSError):
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
    return removed


@overload
def atomic_write_bytes(path: StoragePath, data: bytes) -> StoragePath: ...
@overload
def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path: ...
def atomic_write_bytes(path: str | os.PathLike[str] | StoragePath, data: bytes) -> AnyPath:
    """Write ``data`` to a local path (:func:`atomic_open`) or an object-store path (one
    request); returns the path."""
    if isinstance(path, StoragePath):
        path.write_bytes(data)
        return path
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


@overload
def atomic_write_text(path: StoragePath, text: str) -> StoragePath: ...
@overload
def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path: ...
def atomic_write_text(path: str | os.PathLike[str] | StoragePath, text: str) -> AnyPath:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths, tuples and numpy scalars to plain JSON types (recursively)."""
    if isinstance(obj, StoragePath):  # an object-store path: its URI
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    return obj


@overload
def atomic_write_json(path: StoragePath, obj: Any) -> StoragePath: ...
@overload
def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path: ...
def atomic_write_json(path: str | os.PathLike[str] | StoragePath, obj: Any) -> AnyPath:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


@overload
def atomic_torch_save(obj: Any, path: StoragePath) -> StoragePath: ...
@overload
def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path: ...
def atomic_torch_save(obj: Any, path: str | os.PathLike[str] | StoragePath) -> AnyPath:
    """``torch.save`` through a temporary file, or in one request to an object store (the
    result loads with ``weights_only=True`` as long as ``obj`` holds only tensors and plain
    containers/scalars)."""

    if isinstance(path, StoragePath):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        path.write_bytes(buffer.getvalue())
        return path
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
    return Path(path)


#: (resolved path, size, mtime_ns) -> sha256: a file is hashed once per process while unchanged.
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str] | StoragePath) -> str:
    """The SHA-256 hex digest of a file's (or an object's) bytes, remembered while its size and
    modification time stay."""
    opener: Callable[[], contextlib.AbstractContextManager[Any]]
    if isinstance(path, StoragePath):
        stored = path.stat()
        key = (str(path), stored.st_size, stored.st_mtime_ns)
        opener = path.open_input
    else:
        resolved = os.path.realpath(path)
        local = os.stat(resolved)
        key = (resolved, local.st_size, local.st_mtime_ns)
        opener = lambda: open(resolved, "rb")  # noqa: E731 - one-line opener
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with opener() as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FILE_DIGESTS[key] = digest.hexdigest()
    return _FILE_DIGESTS[key]


def stable_hash(obj: Any, length: int = 12) -> str:
    """A hex digest of ``obj``'s canonical JSON form: same content, same hash, on every machine."""
    canonical = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:length]


def copy_tree(source: AnyPath, target: AnyPath, *,
              skip: Callable[[tuple[str, ...]], bool] = lambda parts: False) -> int:
    """Copy every file under ``source`` to the same place under ``target`` (local folders and
    object stores in any combination), each written atomically; files whose relative parts
    ``skip`` accepts are left out. Returns how many files were copied."""

    copied = 0
    for parts, path in walk_files(source):
        if skip(parts):
            continue
        destination = target
        for part in parts:
            destination = destination / part
        atomic_write_bytes(destination, path.read_bytes())
        copied += 1
    return copied
