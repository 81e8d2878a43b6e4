"""What made an artefact: the installed versions of the packages that shape a result, the git
commit of the raysweep checkout, and the spec with its hash (:func:`provenance`, recorded in
every ``meta.json``, row and report)."""


from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from raysweep.storage.atomic import stable_hash, to_jsonable

#: Packages whose versions are recorded in every artefact.
RECORDED_PACKAGES = (
    "raysweep", "torch", "torchvision", "ray", "kornia", "optuna", "numpy", "pandas",
    "scikit-learn", "scipy", "statsmodels",
)


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Installed versions of :data:`RECORDED_PACKAGES` (``"absent"`` for those not installed)."""
    versions = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the raysweep checkout (``+dirty`` when it has uncommitted changes), or
    ``"unknown"`` when raysweep is not run from a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def provenance(spec: Any = None) -> dict[str, Any]:
    """What every artefact records: the spec (as plain JSON), package versions, git commit."""
    record: dict[str, Any] = {"packages": package_versions(), "git_commit": git_commit()}
    if spec is not None:
        record["spec"] = to_jsonable(spec)
        record["spec_hash"] = stable_hash(spec)
    return record
