"""The experiment's results table: one row per (condition, protocol, seed), exactly once.

Each finished run writes its row as one JSON file, atomically, at a path made of its key::

    <experiment>/rows/<condition>/<protocol>/seed-0007.json

so a row either exists whole or not at all, and a second write of the same key replaces the
first instead of adding a duplicate. A run whose row exists is finished and is never trained
again. :meth:`ResultsStore.consolidate` gathers every row into ``results.parquet`` and
``results.csv`` (both written atomically), sorted by key.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from raysweep.artefacts import atomic_write_bytes, atomic_write_json, atomic_write_text

#: The columns that identify a row.
KEY_COLUMNS = ("condition", "protocol", "seed")


@dataclass(frozen=True)
class RowKey:
    condition: str
    protocol: str
    seed: int

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> RowKey:
        missing = [c for c in KEY_COLUMNS if c not in row]
        if missing:
            raise KeyError(f"result row lacks key column(s) {missing}")
        return cls(str(row["condition"]), str(row["protocol"]), int(row["seed"]))


class ResultsStore:
    """Rows of one experiment, under ``<experiment_dir>/rows``."""

    def __init__(self, experiment_dir: str | Path):
        self.experiment_dir = Path(experiment_dir)
        self.rows_dir = self.experiment_dir / "rows"
        self.parquet_path = self.experiment_dir / "results.parquet"
        self.csv_path = self.experiment_dir / "results.csv"

    def row_path(self, key: RowKey) -> Path:
        return self.rows_dir / key.condition / key.protocol / f"seed-{key.seed:04d}.json"

    def has(self, key: RowKey) -> bool:
        return self.row_path(key).is_file()

    def missing(self, keys: Iterable[RowKey]) -> list[RowKey]:
        return [key for key in keys if not self.has(key)]

    def write(self, row: Mapping[str, Any]) -> Path:
        """Write one row atomically (replacing an earlier row of the same key)."""
        return atomic_write_json(self.row_path(RowKey.of(row)), dict(row))

    def read(self, key: RowKey) -> dict[str, Any]:
        return json.loads(self.row_path(key).read_text(encoding="utf-8"))

    def rows(self) -> list[dict[str, Any]]:
        if not self.rows_dir.is_dir():
            return []
        return [json.loads(path.read_text(encoding="utf-8"))
                for path in sorted(self.rows_dir.glob("*/*/seed-*.json"))]

    def table(self) -> pd.DataFrame:
        """Every row as a DataFrame sorted by key (empty with key columns when none)."""
        rows = self.rows()
        if not rows:
            return pd.DataFrame(columns=list(KEY_COLUMNS))
        frame = pd.DataFrame(rows)
        duplicated = frame.duplicated(list(KEY_COLUMNS))
        if duplicated.any():  # impossible by construction; guard the promise anyway
            raise RuntimeError(f"duplicate result rows: {frame[duplicated][list(KEY_COLUMNS)]}")
        return frame.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)

    def consolidate(self) -> pd.DataFrame:
        """Write ``results.parquet`` and ``results.csv`` from every row; return the table."""
        frame = self.table()
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        atomic_write_bytes(self.parquet_path, buffer.getvalue())
        atomic_write_text(self.csv_path, frame.to_csv(index=False))
        return frame
