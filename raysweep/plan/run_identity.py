"""The identity of a pre-training run: its result hash (the spec's fields that shape the
encoder, the data's fingerprint and the initial weights' digest; :data:`NOT_IN_HASH` and
:data:`ONLY_WHEN_SET` name the exceptions), its run directory, and ``pretrain:NAME`` weights
resolved to the parent run's ``encoder.pt``."""

from __future__ import annotations

import dataclasses
from typing import Any

from raysweep.config import ExperimentSpec, PretrainSpec
from raysweep.data.fingerprint import dataset_fingerprint
from raysweep.errors import WeightsError
from raysweep.models.weights import weights_file
from raysweep.storage.atomic import file_sha256, stable_hash, to_jsonable
from raysweep.storage.paths import AnyPath, storage_path
from raysweep.store.run_dirs import ENCODER_FILE


def resolved_run(spec: ExperimentSpec, run: PretrainSpec, *, save_digests: bool = True
                 ) -> PretrainSpec:
    """``run`` with ``pretrain:NAME`` initial weights replaced by ``file:<NAME's encoder.pt>``."""
    parent = spec.pretrain_parent(run.encoder.weights)
    if parent is None:
        return run
    path = pretrain_encoder_path(spec, parent, save_digests=save_digests)
    return run.replace(**{"encoder.weights": f"file:{path}"})


def pretrain_run_dir(spec: ExperimentSpec, run: PretrainSpec, *, save_digests: bool = True
                     ) -> AnyPath:
    """The run directory of ``run`` (``save_digests=False``: a dry run, writes nothing)."""
    return run_directory(resolved_run(spec, run, save_digests=save_digests), spec.directory,
                         save_digests=save_digests)


def pretrain_encoder_path(spec: ExperimentSpec, run: PretrainSpec, *,
                          save_digests: bool = True) -> AnyPath:
    """Where run ``run`` of ``spec`` leaves (or left) its ``encoder.pt``."""

    return pretrain_run_dir(spec, run, save_digests=save_digests) / ENCODER_FILE


#: PretrainSpec fields that do not change the trained encoder (see the module docstring).
NOT_IN_HASH = frozenset({
    "name", "keys", "checkpoint_every", "max_failures", "resources_per_worker",
    "deterministic", "channels_last", "proxy", "proxy_every", "proxy_data",
    "allow_test_overlap",
})


#: PretrainSpec fields hashed only when they differ from their defaults (see the module docstring).
ONLY_WHEN_SET = frozenset({
    "pct_start", "div_factor", "final_div_factor", "max_momentum", "base_momentum",
    "validation_fraction",
})


def weights_digest(weights: str, arch: str) -> str | None:
    """The SHA-256 of the file that weight source ``weights`` reads for ``arch``; None for
    ``random``, for a file that does not exist (yet) and for a source that cannot name a file
    (loading it reports why)."""

    try:
        path = weights_file(weights, arch)
    except WeightsError:
        return None
    return file_sha256(path) if path is not None and path.is_file() else None


def result_hash(spec: PretrainSpec, *, save_digests: bool = True) -> str:
    """A 12-hex-digit hash of everything in ``spec`` that determines the trained encoder.

    ``save_digests=False`` leaves the data cache's remembered file digests untouched (dry runs).
    """

    defaults = {f.name: f.default for f in dataclasses.fields(PretrainSpec)
                if f.name in ONLY_WHEN_SET}
    fields: dict[str, Any] = {
        k: v for k, v in to_jsonable(spec).items()
        if k not in NOT_IN_HASH and (k not in ONLY_WHEN_SET or v != defaults[k])}
    fields["data"] = dataset_fingerprint(spec.data, save_digests=save_digests)
    digest = weights_digest(spec.encoder.weights, spec.encoder.name)
    if digest is not None:
        fields["encoder_weights_sha256"] = digest
        if spec.encoder.weights.startswith("file:"):
            fields["encoder"] = {**fields["encoder"], "weights": "file"}
    return stable_hash(fields)


def run_directory(spec: PretrainSpec, storage_dir: Any, *, save_digests: bool = True) -> AnyPath:
    """``<storage_dir>/pretrain/<spec.name>-<result_hash(spec)>`` (a local folder or an
    object-store path, :func:`raysweep.storage.paths.storage_path`)."""
    root = storage_path(storage_dir)
    return root / "pretrain" / f"{spec.name}-{result_hash(spec, save_digests=save_digests)}"
