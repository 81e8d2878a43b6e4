"""Where a search lives in the experiment directory: ``<experiment>/search/<name>/`` holds its
study journal (:data:`STUDY_FILE`), its trials' pre-training runs and its outputs."""

from __future__ import annotations

from raysweep.config import ExperimentSpec, SearchSpec
from raysweep.storage.paths import AnyPath


def search_directory(spec: ExperimentSpec, search: SearchSpec) -> AnyPath:
    """``<experiment>/search/<name>``: the study, the trials' pre-training runs and outputs."""
    return spec.directory / "search" / search.name


STUDY_FILE = "study.journal"
