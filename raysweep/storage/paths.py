"""Where an experiment lives: a local folder or an object-store URI, through one layer.

``storage:`` in a spec may be a local path (``~/raysweep_runs``, ``/nfs/runs``), a ``file://``
URI, or an object-store URI that ``pyarrow.fs`` (which Ray itself uses for its storage) opens:
``s3://bucket/runs``, ``gs://bucket/runs``, ``hdfs://...``. Query parameters pass through to
pyarrow, e.g. ``s3://bucket/runs?endpoint_override=minio.local:9000&scheme=http`` for an
S3-compatible server; credentials come from the usual environment (``AWS_ACCESS_KEY_ID``,
``GOOGLE_APPLICATION_CREDENTIALS``, ...), never from the spec. pyarrow's ``gs://`` URIs have no
way to ask for anonymous access, which a GCS emulator needs (fake-gcs-server,
gcp-storage-emulator): raysweep adds ``anonymous=true`` to them, e.g.
``gs://bucket/runs?endpoint_override=127.0.0.1:9023&scheme=http&anonymous=true``.

:func:`storage_path` turns such a location into a path object:

- a local folder (also ``file://``) is a :class:`pathlib.Path`, handled by the POSIX code of
  :mod:`raysweep.storage.atomic` (atomic rename, fsync, umask);
- anything else is a :class:`StoragePath`, a small path object over a ``pyarrow.fs``
  filesystem with the subset of :class:`pathlib.Path`'s interface raysweep uses (``/``,
  ``name``, ``parent``, ``exists``, ``is_file``, ``is_dir``, ``glob``, ``rglob``, ``iterdir``,
  ``read_bytes``, ``read_text``, ``write_bytes``, ``write_text``, ``mkdir``, ``unlink``), so that
  the code reading and writing artefacts works on both. An object is written in one request
  when its stream is closed, so readers never see half an object (the object-store form of an
  atomic rename).

:func:`ray_storage` gives Ray Train and Ray Tune the ``(storage_path, storage_filesystem)``
pair for either kind. Nothing is unpickled from any of them: raysweep reads JSON, YAML
(``safe_load``), Parquet and ``weights_only`` tensor files.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import posixpath
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path, PurePath, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow.fs

from raysweep.environment import STORE_TIMEOUT_ENV, store_timeout_s
from raysweep.errors import OutputError, SpecError
from raysweep.storage.redact import redact

__all__ = ["AnyPath", "StoragePath", "StorageStat", "check_reachable", "escaping_links", "is_remote", "is_within", "ray_storage", "read_bytes", "relative_to",
           "remove_tree", "resolved", "storage_path", "walk_files"]

#: URI schemes that name a local folder.
LOCAL_SCHEMES = ("", "file", "local")
#: URI schemes of Google Cloud Storage.
GCS_SCHEMES = ("gs", "gcs")


def is_remote(location: str) -> bool:
    """Whether ``location`` is an object-store (non-local) URI."""
    scheme = urlsplit(str(location)).scheme
    # A Windows drive letter ("C:\\runs") is not a scheme.
    return len(scheme) > 1 and scheme not in LOCAL_SCHEMES


@lru_cache(maxsize=32)
def _filesystem(base: str):
    """(``pyarrow.fs.FileSystem``, path of ``base`` in it) for an object-store URI."""

    try:
        if _is_anonymous_gcs(base):
            return _anonymous_gcs(base)
        return pyarrow.fs.FileSystem.from_uri(base)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several kinds
        text = " ".join(str(err).split())
        if any(word in text.lower() for word in _NO_CONNECTION):  # e.g. resolving an S3 region
            raise OutputError(redact(f"storage {base}: {_store_failure(err)}")) from None
        raise SpecError(redact(f"storage {base}: cannot open ({type(err).__name__}: "
                               f"{text[:300]})")) from None


#: Query parameter of ``gs://`` URIs that bounds the GCS client's retries (pyarrow's name).
_GCS_RETRY_LIMIT = "retry_limit_seconds"
#: Words of pyarrow's (the AWS and Google SDKs') errors that mean no connection was made.
_NO_CONNECTION = ("network_connection", "could not resolve", "couldn't resolve", "could not connect",
                  "failed to connect", "unavailable", "curlcode", "timed out", "timeout",
                  "connection refused", "name or service not known")


@lru_cache(maxsize=32)
def check_reachable(base: str) -> None:
    """Raise :class:`OutputError` (one line: the store cannot be reached, or what it answered)
    unless the object store of ``base`` answers one metadata request within
    :func:`raysweep.environment.store_timeout_s` seconds. The request runs on a filesystem of
    its own whose retries are bounded by that time (``retry_limit_seconds`` for GCS; the S3
    client gives up after its three attempts), in a thread given 5 s more: a store that never
    answers (no network, a firewall dropping packets) fails in seconds instead of hanging.
    Once per store and process (a success is remembered)."""



    timeout = store_timeout_s()
    probe_uri = base
    split = urlsplit(base)
    if split.scheme in ("gs", "gcs") and _GCS_RETRY_LIMIT not in split.query:
        probe_uri += ("&" if split.query else "?") + f"{_GCS_RETRY_LIMIT}={max(1, int(timeout))}"
    outcome: dict[str, BaseException] = {}

    def probe() -> None:
        try:
            filesystem, path = (_anonymous_gcs(probe_uri) if _is_anonymous_gcs(probe_uri)
                                else pyarrow.fs.FileSystem.from_uri(probe_uri))
            filesystem.get_file_info(path)
        except BaseException as err:  # noqa: BLE001 - reported by the caller's thread
            outcome["error"] = err

    thread = threading.Thread(target=probe, name="raysweep-store-probe", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if thread.is_alive():
        raise OutputError(redact(f"storage {base}: cannot reach the store: no answer within "
                                 f"{timeout:g} s (set {STORE_TIMEOUT_ENV} to wait longer)"))
    if "error" in outcome:
        raise OutputError(redact(f"storage {base}: {_store_failure(outcome['error'])}"))


def _store_failure(err: BaseException) -> str:
    """What a failed first request to a store says, in words and one line."""
    text = " ".join(str(err).split())[:240]
    if any(word in text.lower() for word in _NO_CONNECTION):
        return f"cannot reach the store ({text})"
    return f"the store refused the first request ({type(err).__name__}: {text})"


def _anonymous_gcs(base: str):
    """(``pyarrow.fs.GcsFileSystem`` without credentials, path) for a ``gs://`` URI with
    ``anonymous=true``; its other parameters as pyarrow reads them (``endpoint_override``,
    ``scheme``, ``project_id``, ``retry_limit_seconds``)."""

    parts = urlsplit(base)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    anonymous = query.pop("anonymous")
    if anonymous.lower() not in ("true", "1"):
        raise ValueError(f"anonymous={anonymous}: only true (or 1) is accepted")
    unknown = sorted(set(query) - {"endpoint_override", "scheme", "project_id",
                                   "retry_limit_seconds"})
    if unknown:
        raise ValueError(f"unexpected query parameter in GCS URI: {unknown[0]!r}")
    retry = query.pop("retry_limit_seconds", None)
    filesystem = pyarrow.fs.GcsFileSystem(
        anonymous=True, **query,
        **({"retry_time_limit": timedelta(seconds=float(retry))} if retry else {}))
    return filesystem, (parts.netloc + parts.path).rstrip("/")


def _is_anonymous_gcs(base: str) -> bool:
    """Whether ``base`` is a ``gs://`` URI asking for anonymous access (a local emulator)."""
    split = urlsplit(base)
    return split.scheme in GCS_SCHEMES and "anonymous" in parse_qs(split.query)


def _same_store(one: str, other: str) -> bool:
    """Whether two URIs name the same object store (scheme, host and options alike)."""
    a, b = urlsplit(one), urlsplit(other)
    return (a.scheme, a.netloc, sorted(a.query.split("&"))) == \
        (b.scheme, b.netloc, sorted(b.query.split("&")))


@dataclass(frozen=True)
class StorageStat:
    """What :meth:`StoragePath.stat` tells (the fields of ``os.stat_result`` raysweep reads)."""

    st_size: int
    st_mtime: float
    st_mtime_ns: int


@dataclass(frozen=True)
class StoragePath:
    """A file or folder in an object store: ``base`` (a URI, query parameters included) and the
    path ``parts`` below it. Picklable (Ray ships it to workers), immutable, hashable."""

    base: str
    parts: tuple[str, ...] = ()

    # -- naming --------------------------------------------------------------------------

    def __truediv__(self, other: str | os.PathLike[str]) -> StoragePath:
        extra = tuple(p for p in str(other).replace("\\", "/").split("/") if p not in ("", "."))
        return StoragePath(self.base, self.parts + extra)

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else posixpath.basename(self._base_path)

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def parent(self) -> StoragePath:
        if self.parts:
            return StoragePath(self.base, self.parts[:-1])
        return self

    def relative_to(self, other: StoragePath | str | os.PathLike[str]) -> PurePosixPath:
        """This path below ``other`` (``ValueError`` when it is not below it)."""
        if isinstance(other, StoragePath) and _same_store(self.base, other.base):
            mine = self.fs_path.strip("/").split("/")
            theirs = [p for p in other.fs_path.strip("/").split("/") if p]
            if mine[:len(theirs)] == theirs:
                return PurePosixPath(*mine[len(theirs):])
        raise ValueError(f"{self} is not below {other}")

    def with_name(self, name: str) -> StoragePath:
        return self.parent / name

    def with_suffix(self, suffix: str) -> StoragePath:
        return self.with_name(self.stem + suffix)

    @property
    def _base_path(self) -> str:
        return _filesystem(self.base)[1].rstrip("/")

    @property
    def filesystem(self):
        """The ``pyarrow.fs.FileSystem`` this path lives in (the store answered once in this
        process: :func:`check_reachable`)."""
        check_reachable(self.base)
        return _filesystem(self.base)[0]

    @property
    def fs_path(self) -> str:
        """The path inside :attr:`filesystem` (``bucket/key/...`` for S3)."""
        return "/".join((self._base_path, *self.parts)) if self.parts else self._base_path

    def __str__(self) -> str:
        split = urlsplit(self.base)
        path = "/".join((split.path.rstrip("/"), *self.parts))
        return redact(split._replace(path=path).geturl())

    # -- reading -------------------------------------------------------------------------

    def _info(self):
        return self.filesystem.get_file_info(self.fs_path)

    def exists(self) -> bool:

        return self._info().type != pyarrow.fs.FileType.NotFound

    def is_file(self) -> bool:

        return self._info().type == pyarrow.fs.FileType.File

    def is_dir(self) -> bool:

        return self._info().type == pyarrow.fs.FileType.Directory

    def stat(self) -> StorageStat:
        """Size and modification time, like :meth:`pathlib.Path.stat` (``FileNotFoundError``
        when missing)."""

        info = self._info()
        if info.type == pyarrow.fs.FileType.NotFound:
            raise FileNotFoundError(f"{self}: no such object")
        mtime_ns = int(info.mtime_ns or 0)
        return StorageStat(st_size=int(info.size or 0), st_mtime=mtime_ns / 1e9,
                           st_mtime_ns=mtime_ns)

    def read_bytes(self) -> bytes:

        info = self._info()
        if info.type != pyarrow.fs.FileType.File:
            raise FileNotFoundError(f"{self}: no such object")
        with self.filesystem.open_input_stream(self.fs_path) as stream:
            return stream.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    @contextlib.contextmanager
    def open_input(self) -> Iterator[Any]:
        """A readable binary stream of the object (for hashing large files in blocks)."""
        with self.filesystem.open_input_stream(self.fs_path) as stream:
            yield stream

    def _children(self, recursive: bool, files_only: bool = False) -> list[StoragePath]:

        # pyarrow's GCS listing of one level returns objects only, not the folders that
        # exist through the objects below them (no marker object): list all and cut.
        implied_folders = not recursive and self.filesystem.type_name == "gcs"
        selector = pyarrow.fs.FileSelector(self.fs_path, allow_not_found=True,
                                           recursive=recursive or implied_folders)
        found: dict[str, StoragePath] = {}
        prefix = self.fs_path.rstrip("/") + "/"
        for info in self.filesystem.get_file_info(selector):
            relative = info.path[len(prefix):] if info.path.startswith(prefix) else info.path
            is_file = info.type == pyarrow.fs.FileType.File
            if implied_folders and "/" in relative:
                relative, is_file = relative.split("/", 1)[0], False
            if is_file or not files_only:
                found[relative] = self / relative
        return sorted(found.values(), key=lambda p: p.parts)

    def iterdir(self) -> Iterator[StoragePath]:
        yield from self._children(recursive=False)

    def glob(self, pattern: str) -> Iterator[StoragePath]:
        """Paths matching ``pattern`` (``*``, ``?``, ``[...]`` per component; ``**`` = any
        depth), like :meth:`pathlib.Path.glob`."""
        parts = pattern.split("/")
        recursive = "**" in parts or len(parts) > 1
        depth = len(self.parts)
        for child in self._children(recursive=recursive):
            relative = child.parts[depth:]
            if _match(relative, parts):
                yield child

    def rglob(self, pattern: str) -> Iterator[StoragePath]:
        yield from self.glob("**/" + pattern)

    # -- writing -------------------------------------------------------------------------

    def write_bytes(self, data: bytes) -> int:
        """Write the whole object in one request (readers see the old object or the new one,
        never a part)."""
        with self.filesystem.open_output_stream(self.fs_path) as stream:
            stream.write(data)
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        self.filesystem.create_dir(self.fs_path, recursive=parents)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.filesystem.delete_file(self.fs_path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filesystem.delete_dir(self.fs_path)


def _match(relative: tuple[str, ...], pattern: list[str]) -> bool:
    """``fnmatch`` of path components, ``**`` matching any number of them."""
    if not pattern:
        return not relative
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(relative[i:], rest) for i in range(len(relative) + 1))
    return bool(relative) and fnmatch.fnmatchcase(relative[0], head) and _match(relative[1:], rest)


#: A path raysweep reads or writes artefacts at: a local path or an object-store path.
AnyPath = Path | StoragePath


def storage_path(location: str | os.PathLike[str] | StoragePath) -> AnyPath:
    """A local :class:`~pathlib.Path` (``~`` expanded; ``file://`` URIs too) or a
    :class:`StoragePath` for an object-store URI."""
    if isinstance(location, (StoragePath, Path)):
        return location
    text = os.fspath(location)
    if is_remote(text):
        _filesystem(text)  # fail now, in one line, on a URI pyarrow cannot open
        return StoragePath(text)
    split = urlsplit(text)
    if split.scheme in ("file", "local"):
        if split.netloc not in ("", "localhost"):
            raise SpecError(f"storage {text}: a file:// URI names a local folder "
                            "(file:///path/to/runs), not a host")
        text = split.path
    return Path(os.path.expanduser(text))


def read_bytes(path: AnyPath | str) -> bytes:
    """The bytes of a local file or an object (``FileNotFoundError`` when missing)."""
    return storage_path(path).read_bytes()


def relative_to(path: AnyPath, root: AnyPath) -> PurePath:
    """``path`` below ``root``, both local or both in one object store (``ValueError`` when it
    is not below it)."""
    if isinstance(path, StoragePath):
        return path.relative_to(root)
    if isinstance(root, StoragePath):
        raise ValueError(f"{path} is not below {root}")
    return path.relative_to(root)


def remove_tree(path: AnyPath) -> None:
    """Delete a folder and everything in it (nothing when it does not exist)."""

    if isinstance(path, StoragePath):
        path.rmtree()
    else:
        shutil.rmtree(path, ignore_errors=True)


def walk_files(root: AnyPath) -> Iterator[tuple[tuple[str, ...], AnyPath]]:
    """Every file under ``root`` (recursively) as (its path parts below ``root``, its path)."""
    if isinstance(root, StoragePath):
        for stored in root._children(recursive=True, files_only=True):
            yield stored.parts[len(root.parts):], stored
        return
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path.relative_to(root).parts, path


def ray_storage(path: AnyPath) -> dict[str, Any]:
    """``RunConfig`` keyword arguments that put a Ray Train / Tune run at ``path``."""
    if isinstance(path, StoragePath):
        return {"storage_path": path.fs_path, "storage_filesystem": path.filesystem}
    return {"storage_path": str(path)}


# ----------------------------------------------------------------------- symbolic links


def resolved(path: str | os.PathLike[str]) -> Path | None:
    """``path`` with every symbolic link resolved (``~`` expanded), or None when links form a
    loop or cannot be read."""
    try:
        return Path(os.path.expanduser(path)).resolve(strict=False)
    except (OSError, RuntimeError):  # RuntimeError: "Symlink loop" (Python < 3.13)
        return None


def is_within(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Whether ``path``, its symbolic links followed, lies in ``root`` (its links followed
    too): a link inside a folder that points elsewhere is *not* within it.

    A path written below ``root`` with no ``..`` and no link among its parts below ``root``
    is within it whatever ``root`` itself resolves to: answered by one ``lstat`` per part
    (a manifest of 25,000 rows is checked in a fraction of a second); any other path is
    resolved in full."""
    if _plainly_below(os.fspath(path), os.fspath(root)):
        return True
    target, base = resolved(path), resolved(root)
    return target is not None and base is not None and (target == base or base in target.parents)


def _plainly_below(path: str, root: str) -> bool:
    """Whether ``path`` is written as ``root/part/...`` (no ``.`` or ``..`` parts) and no part
    below ``root`` is a symbolic link: then it resolves into ``root`` by construction."""
    path, root = os.path.expanduser(path), os.path.expanduser(root).rstrip(os.sep) or os.sep
    if not path.startswith(root + os.sep) or not os.path.isdir(root):
        return False
    current = root
    for part in path[len(root) + 1:].split(os.sep):
        if part in ("", ".", ".."):
            return False
        current = os.path.join(current, part)
        if os.path.islink(current):
            return False
    return True


def escaping_links(root: AnyPath, limit: int = 3) -> list[str]:
    """Up to ``limit`` symbolic links under the local folder ``root`` that lead out of it (or
    into a loop), as ``name -> target`` relative to ``root``; links are listed, never
    followed. An object store has no links: always empty."""
    if isinstance(root, StoragePath) or not os.path.isdir(root):
        return []
    found: list[str] = []
    for base, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = Path(base) / name
            if path.is_symlink() and not is_within(path, root):
                found.append(f"{path.relative_to(root).as_posix()} -> {os.readlink(path)}")
                if len(found) >= limit:
                    return found
    return found
