"""The experiment's results: one row per (condition, protocol, seed, test set) of the *current*
spec.

Each finished run writes its rows as JSON files, atomically, at paths made of their key and
their identity (:mod:`raysweep.plan.identity`: a hash of everything that determines the row)::

    <experiment>/rows/<condition>/<protocol>/seed-0007-<row_id>.json             (test split)
    <experiment>/rows/<condition>/<protocol>/<test set>/seed-0007-<row_id>.json  (external)

so a row either exists whole or not at all, a second write of the same row replaces the first
instead of adding a duplicate, and a row computed under other settings, data or encoder weights
has another name: it is never taken for a row of the current spec. A row file is read back by
:func:`raysweep.storage.reading.read_json` and checked against its name (its key and identity): a file
that is unreadable, of another shape or another row (damaged, planted, a symbolic link out of
the experiment) counts as missing, is named in one warning line, and is computed and written
again; it is never counted as stale. Such *stale* rows stay on
disk (nothing is deleted) but are left out of :meth:`ResultsStore.consolidate`, which gathers the
current spec's rows into ``results.parquet`` and ``results.csv`` (both written atomically),
sorted by key, with the condition's labels (its keys, encoder name and weight source) taken from
the current spec.

External test sets (``evaluate.test_sets``): one training run is scored on every test set, and
each test set gets a row of its own (its key's ``test_set``; the data's own test split is
``test``, whose rows are stored where they were before test sets existed). The table then has a
``test_set`` column; a table of an experiment without external test sets has none.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from raysweep.config import IN_DISTRIBUTION
from raysweep.storage.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from raysweep.storage.paths import AnyPath, storage_path
from raysweep.storage.reading import (
    StoredFileError,
    check_fields,
    display,
    int_field,
    read_json,
    str_field,
)

#: The columns that identify a row within an experiment.
KEY_COLUMNS = ("condition", "protocol", "seed")

#: The column naming the test set of a table row, present when an experiment has external test
#: sets.
TEST_SET_COLUMN = "test_set"


@dataclass(frozen=True)
class RowKey:
    """What a row is of: a condition, a protocol, a seed and the test set it is scored on
    (``test``, the data's own test split, unless an external test set)."""

    condition: str
    protocol: str
    seed: int
    test_set: str = IN_DISTRIBUTION

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> RowKey:
        missing = [c for c in KEY_COLUMNS if c not in row]
        if missing:
            raise KeyError(f"result row lacks key column(s) {missing}")
        return cls(str(row["condition"]), str(row["protocol"]), int(row["seed"]),
                   str(row.get(TEST_SET_COLUMN, IN_DISTRIBUTION)))


@dataclass(frozen=True)
class RowRef:
    """A row of the current spec: its key and its identity (None while it cannot be known,
    e.g. before the encoder it evaluates has been pre-trained)."""

    key: RowKey
    row_id: str | None


@dataclass(frozen=True)
class RowStatus:
    """The rows of a spec against what is stored: ``done`` (stored with the current identity),
    ``stale`` (stored only under other identities: settings, data or encoder changed), ``new``
    (nothing stored for the key, or a file at the row's own path that is not its row:
    ``unreadable`` has a line naming it), ``pending`` (identity not known yet)."""

    done: tuple[RowRef, ...] = field(default=())
    stale: tuple[RowRef, ...] = field(default=())
    new: tuple[RowRef, ...] = field(default=())
    pending: tuple[RowRef, ...] = field(default=())
    unreadable: tuple[str, ...] = field(default=())  # one line per unreadable row file

    @property
    def missing(self) -> tuple[RowRef, ...]:
        return self.stale + self.new + self.pending

    def describe(self) -> str:
        total = len(self.done) + len(self.missing)
        text = (f"rows: {len(self.done)} done, {len(self.stale)} stale, {len(self.new)} new "
                f"({total} in all)")
        if self.pending:
            text += (f"; {len(self.pending)} more wait for their encoders' pre-training and "
                     "count as new until then")
        return text


class ResultsStore:
    """Rows of one experiment, under ``<experiment_dir>/rows``."""

    def __init__(self, experiment_dir: str | AnyPath):
        self.experiment_dir = storage_path(experiment_dir)
        self.rows_dir = self.experiment_dir / "rows"
        self.parquet_path = self.experiment_dir / "results.parquet"
        self.csv_path = self.experiment_dir / "results.csv"

    def _key_dir(self, key: RowKey) -> AnyPath:
        directory = self.rows_dir / key.condition / key.protocol
        return directory if key.test_set == IN_DISTRIBUTION else directory / key.test_set

    def row_path(self, ref: RowRef) -> AnyPath:
        if ref.row_id is None:
            raise ValueError(f"row {ref.key} has no identity yet")
        return self._key_dir(ref.key) / f"seed-{ref.key.seed:04d}-{ref.row_id}.json"

    def has(self, ref: RowRef) -> bool:
        """Whether the row is stored, whole: a file that is not a JSON object of this row (a
        damaged or planted file) counts as missing, so the row is computed and written again."""
        return ref.row_id is not None and self.problem(ref) is None

    def problem(self, ref: RowRef) -> str | None:
        """Why the stored file of ``ref`` is not its row (None when it is); ``"missing"`` when
        there is no file."""
        try:
            self.read(ref)
        except FileNotFoundError:
            return "missing"
        except StoredFileError as err:
            return err.reason
        return None

    def read(self, ref: RowRef) -> dict[str, Any]:
        """The stored row of ``ref``, checked against its name (key and identity);
        :class:`~raysweep.storage.reading.StoredFileError` when the file is not that row."""
        path = self.row_path(ref)
        row = read_json(path, root=self.experiment_dir, allow_nan=True)  # undefined metrics
        checked = check_fields(row, path, {"condition": str_field, "protocol": str_field,
                                           "seed": int_field(0, 2**31), "row_id": str_field},
                               root=self.experiment_dir)
        found = (checked["condition"], checked["protocol"], checked["seed"], checked["row_id"])
        wanted = (ref.key.condition, ref.key.protocol, ref.key.seed, ref.row_id)
        if found != wanted:
            raise StoredFileError(path, f"it holds the row {'/'.join(map(str, found))}, not "
                                        f"{'/'.join(map(str, wanted))}",
                                  root=self.experiment_dir)
        return row

    def unreadable_line(self, ref: RowRef, reason: str) -> str:
        return (f"{display(self.row_path(ref), self.experiment_dir)} is unreadable ({reason}): "
                "counted as missing, not stale")

    def stored_for(self, key: RowKey) -> list[AnyPath]:
        """Every stored row file of ``key``, whatever its identity (a pre-identity
        ``seed-0007.json`` included)."""
        directory = self._key_dir(key)
        if not directory.is_dir():
            return []
        stem = f"seed-{key.seed:04d}"
        # By name: object-store paths have no order of their own (all share ``directory``).
        return sorted((p for p in directory.glob(f"{stem}*.json")
                       if p.stem == stem or p.stem.startswith(stem + "-")),
                      key=lambda p: p.name)

    def status(self, refs: Iterable[RowRef], *, warn: bool = True) -> RowStatus:
        """Each ref done, stale, new or pending (see :class:`RowStatus`); a file at a ref's own
        path that is not its row counts as new, with a line in ``unreadable`` (and a warning,
        unless ``warn`` is False)."""
        done, stale, new, pending, unreadable = [], [], [], [], []
        for ref in refs:
            if ref.row_id is None:
                pending.append(ref)
                continue
            problem = self.problem(ref)
            if problem is None:
                done.append(ref)
            elif problem != "missing":
                new.append(ref)
                unreadable.append(self.unreadable_line(ref, problem))
            elif self.stored_for(ref.key):
                stale.append(ref)
            else:
                new.append(ref)
        if warn:
            for line in unreadable:
                warnings.warn(line, stacklevel=2)
        return RowStatus(tuple(done), tuple(stale), tuple(new), tuple(pending),
                         tuple(unreadable))

    def write(self, row: Mapping[str, Any]) -> AnyPath:
        """Write one row atomically (replacing an earlier write of the same row). The row
        carries its key columns and its ``row_id``."""
        if not row.get("row_id"):
            raise KeyError("result row lacks its row_id")
        return atomic_write_json(self.row_path(RowRef(RowKey.of(row), str(row["row_id"]))),
                                 dict(row))

    def rows(self, refs: Iterable[RowRef]) -> list[dict[str, Any]]:
        """The stored rows among ``refs`` (missing ones left out), in the order given."""
        return [row for ref in refs if (row := self._row_or_none(ref)) is not None]

    def _row_or_none(self, ref: RowRef) -> dict[str, Any] | None:
        if ref.row_id is None:
            return None
        try:
            return self.read(ref)
        except (FileNotFoundError, StoredFileError):
            return None

    def table(self, refs: Iterable[RowRef],
              labels: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
        """The stored rows of ``refs`` as a DataFrame sorted by key (within a seed, the test
        sets in the order of ``refs``), with ``labels[condition]`` (column -> value) set on
        every row of that condition, and a ``test_set`` column when some ref is of an external
        test set (empty with key columns when no row is stored)."""
        refs = list(refs)
        stored = [(ref, row) for ref in refs if (row := self._row_or_none(ref)) is not None]
        if not stored:
            return pd.DataFrame(columns=list(KEY_COLUMNS))
        labels = labels or {}
        external = any(ref.key.test_set != IN_DISTRIBUTION for ref in refs)
        frame = pd.DataFrame([
            {**row, **({TEST_SET_COLUMN: ref.key.test_set} if external else {}),
             **labels.get(str(row["condition"]), {})} for ref, row in stored])
        return frame.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)

    def consolidate(self, refs: Iterable[RowRef],
                    labels: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
        """Write ``results.parquet`` and ``results.csv`` from the stored rows of ``refs`` (the
        current spec's); return the table."""
        frame = self.table(refs, labels)
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        atomic_write_bytes(self.parquet_path, buffer.getvalue())
        atomic_write_text(self.csv_path, frame.to_csv(index=False))
        return frame
