"""raysweep.store.searches"""

from __future__ import annotations

from raysweep.config import ExperimentSpec, SearchSpec
from raysweep.storage.paths import AnyPath


def search_directory(spec: ExperimentSpec, search: SearchSpec) -> AnyPath:
    """``<experiment>/search/<name>``: the study, the trials' pre-training runs and outputs."""
    return spec.directory / "search" / search.name


STUDY_FILE = "study.journal"
