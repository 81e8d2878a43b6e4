"""Where a search's Optuna journal is read and written, for local and object-store experiments.

Optuna's ``JournalFileBackend`` appends JSON lines to a local file under a file lock. A local
experiment folder (NFS included) keeps the journal there directly:
``<experiment>/search/<name>/study.journal`` is the file every process of the search opens.

An object store (``storage: s3://...``, ``gs://...``) has neither appends nor locks, so the
journal's home there is one object, ``.../search/<name>/study.journal``, and the search runner
works on a *local working copy* of it, ``<cache>/search-journals/<hash of the object's
URI>/study.journal`` (``<cache>``: ``$RAYSWEEP_CACHE``, else ``~/.cache/raysweep``):

- at the start the object is downloaded over the working copy (or the copy is removed when the
  object does not exist): the object is the truth, and the experiment's lock
  (:mod:`raysweep.store.lock`) keeps any other runner from writing it meanwhile;
- after every finished trial, and at the end of the run (also after an error or a Ctrl-C), the
  working copy is uploaded as one whole-object write (readers see the old journal or the new
  one), up to its last complete line.

A runner killed between two uploads therefore loses only what its running trials had written
(their intermediate values; their pre-training checkpoints are in the store and are continued
if the sampler asks the same parameters again); every finished trial is in the store. Optuna
and optuna-dashboard open the downloaded object like any journal file.

The working copy lives on the search driver's node. With ASHA, each trial's epochs are
reported to the study from its Ray Train controller, which may run on another node: those
reports then go through a zero-CPU Ray task pinned to the driver's node
(:class:`raysweep.search.pruning.ProxyPruner`, ``node_id``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.storages.journal import BaseJournalBackend, JournalStorage

from raysweep.data.cache import cache_root
from raysweep.storage.atomic import atomic_write_bytes
from raysweep.storage.paths import AnyPath, StoragePath
from raysweep.storage.reading import StoredFileError, parse_json, read_text
from raysweep.store.searches import STUDY_FILE

__all__ = ["StudyJournal", "check_journal", "complete_lines"]


def complete_lines(data: bytes) -> bytes:
    """``data`` up to and including its last newline (a journal line being appended by
    another process is left for the next upload)."""
    end = data.rfind(b"\n")
    return data[:end + 1] if end >= 0 else b""


@dataclass(frozen=True)
class StudyJournal:
    """The journal of one search: ``home`` (where it is kept, in the experiment's storage) and
    ``local`` (the file Optuna opens: ``home`` itself for a local experiment, else a working
    copy)."""

    home: AnyPath
    local: Path

    @classmethod
    def of(cls, directory: AnyPath) -> StudyJournal:
        """The journal of the search folder ``directory``."""
        home = directory / STUDY_FILE
        if isinstance(home, Path):
            return cls(home=home, local=home)
        return cls(home=home, local=working_copy_path(home))

    @property
    def is_copy(self) -> bool:
        """Whether Optuna works on a local copy that must be uploaded to :attr:`home`."""
        return self.local != self.home

    def download(self) -> bool:
        """Replace the working copy by the stored journal (no copy when none is stored);
        return whether one was stored. Nothing to do for a local experiment."""
        if not self.is_copy:
            return self.home.is_file()
        try:
            data = self.home.read_bytes()
        except FileNotFoundError:
            self.local.unlink(missing_ok=True)
            return False
        atomic_write_bytes(self.local, data)
        return True

    def upload(self) -> None:
        """Store the working copy's complete lines in :attr:`home` (one whole-object write);
        nothing for a local experiment, or while the copy is empty."""
        if not self.is_copy or not self.local.is_file():
            return
        data = complete_lines(self.local.read_bytes())
        if data:
            atomic_write_bytes(self.home, data)


class _Replayed:
    """An Optuna journal backend over log records already in memory (nothing is written)."""

    def __init__(self, logs: list[dict[str, Any]]):
        self.logs = logs

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        return self.logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise StoredFileError(Path(STUDY_FILE), "read-only while being checked")


def check_journal(path: AnyPath, *, root: AnyPath | None = None) -> None:
    """:class:`~raysweep.storage.reading.StoredFileError` (one line naming the journal) unless ``path``
    is an Optuna journal that replays: UTF-8 text (:func:`raysweep.storage.reading.read_text`: not a
    folder, not a link out of ``root``), one JSON object per complete line, and every record
    accepted by Optuna's own replay (trial states, parameter values, study ids), run in memory
    over the records read. A journal that does not exist is ``FileNotFoundError``."""

    text = read_text(path, root=root)
    lines = text.splitlines()
    logs = []
    for number, line in enumerate(lines, start=1):
        if number == len(lines) and (not line.strip() or not text.endswith("\n")):
            continue  # a last line still being appended (Optuna skips it too)
        if not line.strip():  # Optuna's reader fails on a blank line before the last
            raise StoredFileError(path, f"line {number} is blank", root=root)
        try:
            record = parse_json(line)
        except ValueError as err:
            raise StoredFileError(path, f"line {number} is not JSON ({err})", root=root) from None
        if not isinstance(record, dict) or not isinstance(record.get("op_code"), int):
            raise StoredFileError(path, f"line {number} is no Optuna journal record",
                                  root=root)
        logs.append(record)
    BaseJournalBackend.register(_Replayed)
    try:
        storage = JournalStorage(_Replayed(logs))  # type: ignore[arg-type]
        for study in storage.get_all_studies():
            storage.get_all_trials(study._study_id, deepcopy=False)
    except StoredFileError:
        raise
    except Exception as err:  # noqa: BLE001 - Optuna's replay raises many kinds
        text = " ".join(str(err).split())[:120] or type(err).__name__
        raise StoredFileError(path, f"Optuna cannot replay it: {text}", root=root) from None


def working_copy_path(home: StoragePath) -> Path:
    """``<cache>/search-journals/<sha256 of home's URI, 16 hex>/study.journal``."""

    key = hashlib.sha256(f"{home.base}|{'/'.join(home.parts)}".encode()).hexdigest()[:16]
    return cache_root() / "search-journals" / key / home.name
