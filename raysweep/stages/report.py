"""The report stage: the report written wherever the experiment lives (a local folder or an
object store), with the experiment spec's ``report:`` section as its settings."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from raysweep.report import write_report
from raysweep.storage.atomic import copy_tree
from raysweep.storage.paths import AnyPath, StoragePath

#: Parts of an experiment the report never reads (large, or not results): not copied to the
#: local folder a report of an object-store experiment is made in.
_NOT_REPORT_INPUTS = ("rows", "checkpoints", "tune", "report")


def _report_input(parts: tuple[str, ...]) -> bool:
    if parts[0] in _NOT_REPORT_INPUTS:
        return False
    if parts[0] == "search":  # a search's outputs and study, not its trials' runs
        return len(parts) == 3
    return not (parts[0] == "pretrain" and (len(parts) < 3 or parts[2] not in (
        "metrics.jsonl", "meta.json")))


def write_report_at(directory: AnyPath, *, out_dir: AnyPath | None = None, **kwargs: Any):
    """:func:`raysweep.report.write_report` of the experiment in ``directory`` into
    ``out_dir`` (default ``<directory>/report``); an experiment or output in an object store is
    read into (and the report written from) a temporary local folder, then copied there.
    Returns the :class:`raysweep.report.ReportPaths`, in ``out_dir``."""

    out = out_dir if out_dir is not None else directory / "report"
    if isinstance(directory, Path) and isinstance(out, Path):
        return write_report(directory, out_dir=out, **kwargs)
    with tempfile.TemporaryDirectory(prefix="raysweep-report-") as tmp:
        local = Path(tmp) / "experiment"
        if isinstance(directory, StoragePath):
            copy_tree(directory, local, skip=lambda parts: not _report_input(parts))
        else:
            local = directory
        written = Path(tmp) / "report"
        paths = write_report(local, out_dir=written, **kwargs)
        copy_tree(written, out)
    return _moved(paths, written, out)


def _moved(value: Any, source: Path, target: AnyPath) -> Any:
    """``value`` (paths, containers of paths, dataclasses of them) with ``source`` replaced by
    ``target``."""
    if isinstance(value, Path):
        moved = target
        for part in value.relative_to(source).parts:
            moved = moved / part
        return moved
    if isinstance(value, dict):
        return {k: _moved(v, source, target) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_moved(v, source, target) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _moved(getattr(value, f.name), source,
                                                             target)
                                             for f in dataclasses.fields(value)})
    return value
