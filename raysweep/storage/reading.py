"""Reading back what an experiment stored: one reader for every file of its directory.

:mod:`raysweep.storage.atomic` writes the files of an experiment (rows, ``meta.json``, the lock,
``results.parquet``, a search's journal, ``gpu_memory/*.json``); this module reads them, and
anything else raysweep reads that a person with write access could have tampered with (an
autoscaler YAML). Whatever a file holds, a reader returns its content in the expected shape or
raises :class:`StoredFileError`, a one-line :class:`~raysweep.errors.RaysweepError` that names
the file and what is wrong with it; the caller decides whether that refuses the command or is a
named warning (``rows/A/probe/seed-0003-....json is unreadable (not JSON): counted as missing,
not stale``). A reader never unpickles, never follows a symbolic link out of the folder the file
belongs to (``root``), never reads a folder as a file and never reads more than ``limit`` bytes.

- :func:`read_bytes` / :func:`read_text`: the bytes (UTF-8 text) of a stored file;
- :func:`read_json`: a JSON object (``dict``) or list, numbers finite;
- :func:`read_yaml`: YAML through ``yaml.safe_load``, numbers finite;
- :func:`read_parquet`: a Parquet table as a DataFrame;
- :func:`check_fields`: the fields of a JSON object against their types and ranges.

A missing file is ``FileNotFoundError``, as for :mod:`pathlib` (the caller knows whether a
file is optional).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from raysweep.errors import RaysweepError
from raysweep.storage.paths import AnyPath, StoragePath, is_within, relative_to

__all__ = ["MAX_STORED_BYTES", "StoredFileError", "check_fields", "check_within", "display",
           "int_field",
           "parse_json", "read_bytes", "read_json", "read_parquet", "read_text", "read_yaml",
           "str_field"]

#: The largest stored file read whole (a journal of many thousand trials is a few MB).
MAX_STORED_BYTES = 256 * 2**20


class StoredFileError(RaysweepError):
    """A stored file cannot be read as what it should be; ``path`` is the file and ``reason``
    the short why (``not JSON``, ``a directory``, ...)."""

    def __init__(self, path: AnyPath, reason: str, *, root: AnyPath | None = None):
        self.path = path
        self.reason = reason
        super().__init__(f"{display(path, root)} is unreadable ({reason})")

    def __reduce__(self):  # Ray ships errors between processes by pickling
        return (type(self), (self.path, self.reason))


def display(path: AnyPath, root: AnyPath | None = None) -> str:
    """``path`` as messages show it: below ``root`` when given (``rows/A/...``), else whole."""
    if root is not None:
        try:
            return relative_to(path, root).as_posix()
        except ValueError:
            pass
    return str(path)


def check_within(path: AnyPath, root: AnyPath | None) -> None:
    """:class:`StoredFileError` when the local ``path`` is a symbolic link that leads out of
    ``root`` (nothing when it does not exist, or lives in an object store)."""
    if (root is None or isinstance(path, StoragePath) or isinstance(root, StoragePath)
            or not os.path.lexists(path)):
        return
    if not is_within(path, root):
        target = os.readlink(path) if os.path.islink(path) else os.path.realpath(path)
        raise StoredFileError(path, f"a symbolic link to {target}, outside {root}", root=root)


def read_bytes(path: AnyPath, *, root: AnyPath | None = None,
               limit: int = MAX_STORED_BYTES) -> bytes:
    """The bytes of the stored file ``path`` (``root``: the folder it must stay in)."""
    if isinstance(path, StoragePath):
        try:
            info = path.stat()
        except FileNotFoundError:
            raise
        if path.is_dir():
            raise StoredFileError(path, "a folder, not a file", root=root)
        if info.st_size > limit:
            raise StoredFileError(path, f"{info.st_size} bytes, more than {limit}", root=root)
        return path.read_bytes()
    check_within(path, root)
    try:
        if Path(path).is_dir():
            raise StoredFileError(path, "a folder, not a file", root=root)
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise StoredFileError(path, err.strerror or type(err).__name__, root=root) from None
    if len(data) > limit:
        raise StoredFileError(path, f"more than {limit} bytes", root=root)
    return data


def read_text(path: AnyPath, *, root: AnyPath | None = None,
              limit: int = MAX_STORED_BYTES) -> str:
    """The UTF-8 text of a stored file."""
    data = read_bytes(path, root=root, limit=limit)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StoredFileError(path, "not UTF-8 text: binary or damaged", root=root) from None
    if "\x00" in text:
        raise StoredFileError(path, "a NUL byte: binary or damaged", root=root)
    return text


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def _not_a_number(name: str) -> float:
    if name != "NaN":
        raise ValueError(f"{name} is not a finite number")
    return math.nan


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def parse_json(text: str, *, allow_nan: bool = False) -> Any:
    """``json.loads`` refusing Infinity, numbers too large for a float (``1e400``) and, unless
    ``allow_nan``, NaN."""
    return json.loads(text, parse_constant=_not_a_number if allow_nan else _refuse_constant,
                      parse_float=_finite_float)


def read_json(path: AnyPath, *, root: AnyPath | None = None, kind: type = dict,
              limit: int = MAX_STORED_BYTES, allow_nan: bool = False) -> Any:
    """The JSON value of a stored file, which must be a ``kind`` (``dict`` or ``list``).
    ``allow_nan``: NaN is a value the file may hold (a result row's metric that is undefined,
    such as the logistic protocol's ``lr_max`` or an AUC on one class); Infinity never is."""
    text = read_text(path, root=root, limit=limit)
    if not text.strip():
        raise StoredFileError(path, "empty", root=root)
    try:
        data = parse_json(text, allow_nan=allow_nan)
    except json.JSONDecodeError as err:
        raise StoredFileError(path, f"not JSON: {err.msg} at line {err.lineno}",
                              root=root) from None
    except (ValueError, RecursionError) as err:
        raise StoredFileError(path, str(err) or type(err).__name__, root=root) from None
    if not isinstance(data, kind):
        found = "an object" if isinstance(data, dict) else (
            "a list" if isinstance(data, list) else type(data).__name__)
        expected = "an object" if kind is dict else "a list"
        raise StoredFileError(path, f"JSON {found}, not {expected}", root=root)
    return data


def read_yaml(path: AnyPath, *, root: AnyPath | None = None,
              limit: int = MAX_STORED_BYTES) -> Any:
    """The value of a stored YAML file (``yaml.safe_load``; infinite numbers refused)."""

    text = read_text(path, root=root, limit=limit)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise StoredFileError(path, f"not YAML{where}", root=root) from None
    except (ValueError, RecursionError) as err:
        raise StoredFileError(path, str(err) or type(err).__name__, root=root) from None
    infinite = _infinite_number(data)
    if infinite is not None:
        raise StoredFileError(path, f"{infinite}: not a finite number", root=root)
    return data


def _infinite_number(data: Any, key: str = "") -> str | None:
    """The key path of the first non-finite number in ``data`` (None when all are finite)."""
    if isinstance(data, float) and not math.isfinite(data):
        return key or "a value"
    if isinstance(data, int) and not isinstance(data, bool) and abs(data) > 2**63:
        return key or "a value"
    if isinstance(data, Mapping):
        for name, item in data.items():
            found = _infinite_number(item, f"{key}.{name}" if key else str(name))
            if found:
                return found
    if isinstance(data, list):
        for index, item in enumerate(data):
            found = _infinite_number(item, f"{key}[{index}]")
            if found:
                return found
    return None


def read_parquet(path: AnyPath, *, root: AnyPath | None = None,
                 limit: int = 4 * MAX_STORED_BYTES):
    """A stored Parquet file as a pandas DataFrame."""

    data = read_bytes(path, root=root, limit=limit)
    try:
        return pd.read_parquet(io.BytesIO(data))
    except Exception as err:  # noqa: BLE001 - pyarrow raises many unrelated kinds
        text = " ".join(str(err).split())[:120]
        raise StoredFileError(path, f"not Parquet: {text or type(err).__name__}",
                              root=root) from None


#: A field check: the value to its usable form, or ``ValueError`` naming what it must be.
FieldCheck = Callable[[Any], Any]


def int_field(low: int, high: int) -> FieldCheck:
    """An int (not a bool) in ``[low, high]``."""
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"an integer in [{low}, {high}]")
        return value
    return check


def str_field(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


def check_fields(data: Mapping[str, Any], path: AnyPath, fields: Mapping[str, FieldCheck], *,
                 root: AnyPath | None = None) -> dict[str, Any]:
    """``fields`` of the JSON object ``data`` (read from ``path``), each passed through its
    check; :class:`StoredFileError` naming the first missing or wrong field."""
    checked = {}
    for name, check in fields.items():
        if name not in data:
            raise StoredFileError(path, f"no {name!r}", root=root)
        try:
            checked[name] = check(data[name])
        except ValueError as err:
            raise StoredFileError(path, f"{name!r} is {_shown(data[name])}, not {err}",
                                  root=root) from None
    return checked


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 30 else shown[:27] + "..."
