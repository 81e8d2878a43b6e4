"""Reading an experiment directory for the report.

Layout (docs/design.md): ``<dir>/results.parquet`` (required, one row per (condition, seed));
optional ``<dir>/pretrain/<hash>/metrics.jsonl`` (+ ``meta.json`` with the run's ``name``) for
pre-training loss curves; optional ``<dir>/search/<name>/trials.csv`` (written by the search stage,
:mod:`raysweep.search.outputs`;
columns ``trial``, ``value``, params...; ``meta.json`` may say ``"direction":
"minimize"``) for search history; optional ``<dir>/representations.json`` (the evaluate stage's
representation analyses, ``raysweep.stages.representation``). Absent optional parts give empty results; present but unreadable ones raise
a :class:`~raysweep.errors.DataError` naming the file.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pandas as pd

from raysweep.errors import DataError
from raysweep.search.outputs import TRIALS_CSV
from raysweep.storage.reading import StoredFileError, parse_json, read_json, read_parquet, read_text

REQUIRED_COLUMNS = ("condition", "seed")


def load_results(experiment_dir: str | Path) -> pd.DataFrame:
    """``<experiment_dir>/results.parquet`` as a DataFrame (``condition`` as str)."""
    path = Path(experiment_dir) / "results.parquet"
    if not Path(experiment_dir).is_dir():
        raise DataError(f"experiment directory {experiment_dir} does not exist")
    if not path.is_file() and not path.is_symlink():
        raise DataError(f"{path} not found: run the evaluate stage first")
    results = read_parquet(path, root=Path(experiment_dir))
    if results.empty:
        raise DataError(f"{path} has no rows")
    missing = [c for c in REQUIRED_COLUMNS if c not in results.columns]
    if missing:
        raise DataError(f"{path} has no column(s) {missing}")
    results["condition"] = results["condition"].astype(str)
    return results


#: The monitored terms of ``metrics.jsonl`` kept beside ``loss`` (the thesis' Figure 7.1): the
#: contrastive top-1 accuracy, and the validation loss and accuracy of a held-out share.
MONITORED = ("contrastive_top1", "val_loss", "val_contrastive_top1")
CURVE_COLUMNS = ["run", "epoch", "loss", *MONITORED]


def load_pretrain_curves(experiment_dir: str | Path) -> pd.DataFrame:
    """All pre-training logs as one long table with columns ``run``, ``epoch``, ``loss`` and
    the :data:`MONITORED` terms (NaN where a run did not log them).

    Records without both ``epoch`` and ``loss`` (other record kinds) are skipped. An
    unparsable *last* line is skipped too (a run still writing, or killed mid-line); an
    unparsable line elsewhere is an error naming the file and line.
    """
    frames = []
    for log in sorted(Path(experiment_dir).glob("pretrain/*/metrics.jsonl")):
        name = _run_name(log.parent, experiment_dir)
        lines = read_text(log, root=Path(experiment_dir)).splitlines()
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = parse_json(line)
            except ValueError as exc:
                if number == len(lines):
                    break
                raise DataError(f"{log} line {number} is not valid JSON") from exc
            if isinstance(record, dict) and "epoch" in record and "loss" in record:
                records.append({"run": name, "epoch": record["epoch"], "loss": record["loss"],
                                **{key: record.get(key) for key in MONITORED}})
        if records:
            frames.append(pd.DataFrame(records, columns=CURVE_COLUMNS))
    if not frames:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    curves = pd.concat(frames, ignore_index=True)
    for column in ("loss", *MONITORED):
        curves[column] = pd.to_numeric(curves[column], errors="coerce")
    return curves


@dataclasses.dataclass(frozen=True)
class SearchHistory:
    name: str
    path: Path
    trials: pd.DataFrame
    maximize: bool


def load_search_histories(experiment_dir: str | Path) -> list[SearchHistory]:
    """Each ``search/<name>/`` holding a ``trials.csv``."""
    histories = []
    for folder in sorted(p for p in Path(experiment_dir).glob("search/*") if p.is_dir()):
        path = folder / TRIALS_CSV
        if not path.is_file() and not path.is_symlink():
            continue
        text = read_text(path, root=Path(experiment_dir))
        try:
            trials = pd.read_csv(io.StringIO(text))
        except Exception as exc:
            raise StoredFileError(path, f"not CSV: {type(exc).__name__}",
                                  root=Path(experiment_dir)) from exc
        missing = [c for c in ("trial", "value") if c not in trials.columns]
        if missing:
            raise DataError(f"{path} has no column(s) {missing}")
        meta = _read_meta(folder, experiment_dir)
        maximize = str(meta.get("direction", "maximize")).lower() not in ("minimize", "min")
        histories.append(SearchHistory(folder.name, path, trials, maximize))
    return histories


def _read_meta(folder: Path, root: str | Path) -> dict:
    """``folder/meta.json`` (a JSON object; {} when absent) read within ``root``."""
    path = folder / "meta.json"
    if not path.is_file() and not path.is_symlink():
        return {}
    return read_json(path, root=Path(root))


def _run_name(folder: Path, root: str | Path) -> str:
    return str(_read_meta(folder, root).get("name", folder.name))


#: What every entry of ``representations.json`` holds (besides the condition's labels).
REPRESENTATION_KEYS = ("condition", "knn_accuracy", "linear_separability", "silhouette",
                       "n_train", "n_test", "class_names", "embedding")
EMBEDDING_KEYS = ("labels", "pca", "tsne")


def load_representations(experiment_dir: str | Path) -> list[dict]:
    """The entries of ``<experiment_dir>/representations.json`` (one per condition), or an
    empty list when there is no such file. A file that is not such a list raises a
    :class:`DataError` naming it and what is wrong."""
    path = Path(experiment_dir) / "representations.json"
    if not path.is_file() and not path.is_symlink():
        return []
    data = read_json(path, root=Path(experiment_dir))
    entries = data.get("conditions") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise DataError(f"{path} has no list of 'conditions'")
    for index, entry in enumerate(entries):
        missing = [k for k in REPRESENTATION_KEYS if not isinstance(entry, dict) or k not in entry]
        if not missing:
            embedding = entry["embedding"]
            missing = [f"embedding.{k}" for k in EMBEDDING_KEYS
                       if not isinstance(embedding, dict) or k not in embedding]
        if missing:
            raise DataError(f"{path}: entry {index} has no {', '.join(missing)}")
        n = len(entry["embedding"]["labels"])
        if any(len(entry["embedding"][k]) != n for k in ("pca", "tsne")):
            raise DataError(f"{path}: entry {index} ({entry['condition']}) has embeddings "
                            "and labels of different lengths")
    return entries
