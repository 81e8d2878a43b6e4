"""Where a pre-training run lives, and whether it already finished.

``<storage>/pretrain/<spec.name>-<hash>/`` holds::

    encoder.pt      the encoder's plain state dict (torchvision keys minus ``fc.*``), loadable by
                    the ``file:PATH`` weight source
    metrics.jsonl   one JSON object per epoch (rewritten atomically after every epoch)
    meta.json       spec, provenance, resolved settings and ``"status": "finished"``
                    (written last: its status is the "finished" marker)
    train/          Ray Train's run directory (checkpoints, reported metrics)

The hash covers everything that determines the trained encoder, by *content*, never by path, so
that an experiment directory copied or moved elsewhere (laptop to NFS, a renamed folder) finds
every finished run again:

- every spec field except the operational or purely observing ones (:data:`NOT_IN_HASH`:
  ``name`` (already in the directory name), ``keys``, ``checkpoint_every``, ``max_failures``,
  ``resources_per_worker``, ``deterministic`` (only removes run-to-run jitter),
  ``channels_last`` (a memory layout), the downstream proxy (``proxy``, ``proxy_every``,
  ``proxy_data``: it only observes) and ``allow_test_overlap`` (a permission of the
  test-overlap check, :mod:`raysweep.plan.leakage`: it changes no training). Included although
  "operational": ``num_workers`` (each rank draws its own augmentation stream, so the views
  depend on the number of ranks) and ``use_gpu`` / ``precision`` as written in the spec (``auto`` is hashed as ``auto``: the
  resolved device and precision are recorded in ``meta.json``);
- the 1cycle settings (:data:`ONLY_WHEN_SET`: ``pct_start``, ``div_factor``,
  ``final_div_factor``, ``max_momentum``, ``base_momentum``) and ``validation_fraction`` (the
  images held out from training) only when they differ from their defaults, so that every run
  stored before they were spec fields keeps its hash;
- the data as its content fingerprint (:func:`raysweep.data.fingerprint.dataset_fingerprint`)
  instead of its paths;
- initial weights read from a file (``file:PATH``, which is also how a further pre-training run
  names its parent run's ``encoder.pt``; torchvision and torch.hub weights) as the SHA-256 of
  the file's bytes; a ``file:`` path itself is not hashed. New weights at the same path give a
  new run; the same weights elsewhere give the same run.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from raysweep.storage.atomic import file_sha256, stable_hash, to_jsonable
from raysweep.config import PretrainSpec
from raysweep.storage.paths import AnyPath, storage_path
from raysweep.storage.reading import StoredFileError, check_within, read_json

__all__ = [
    "ENCODER_FILE",
    "META_FILE",
    "METRICS_FILE",
    "NOT_IN_HASH",
    "ONLY_WHEN_SET",
    "is_finished",
    "read_meta",
    "result_hash",
    "run_directory",
    "weights_digest",
]

ENCODER_FILE = "encoder.pt"
METRICS_FILE = "metrics.jsonl"
META_FILE = "meta.json"

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
    from raysweep.errors import WeightsError
    from raysweep.models.weights import weights_file

    try:
        path = weights_file(weights, arch)
    except WeightsError:
        return None
    return file_sha256(path) if path is not None and path.is_file() else None


def result_hash(spec: PretrainSpec, *, save_digests: bool = True) -> str:
    """A 12-hex-digit hash of everything in ``spec`` that determines the trained encoder.

    ``save_digests=False`` leaves the data cache's remembered file digests untouched (dry runs).
    """
    from raysweep.data.fingerprint import dataset_fingerprint

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


def is_finished(run_dir: AnyPath) -> bool:
    """True when ``meta.json`` says ``finished`` and the encoder and metrics files exist, all
    three inside ``run_dir`` (no symbolic link out of it). A ``meta.json`` that cannot be read
    as a JSON object, or a file that links out of the run, makes the run unfinished, with a
    warning naming it (the run is trained again)."""
    meta = run_dir / META_FILE
    if not (meta.is_file() and (run_dir / ENCODER_FILE).is_file()
            and (run_dir / METRICS_FILE).is_file()):
        return False
    try:
        for name in (ENCODER_FILE, METRICS_FILE):
            check_within(run_dir / name, run_dir)
        return read_json(meta, root=run_dir).get("status") == "finished"
    except StoredFileError as err:
        warnings.warn(f"{err}: the pre-training run counts as unfinished (it is trained again)",
                      stacklevel=2)
        return False


def read_meta(run_dir: AnyPath) -> dict[str, Any]:
    """``meta.json`` of a run as a JSON object (:class:`~raysweep.storage.reading.StoredFileError` or
    ``FileNotFoundError`` when it cannot be)."""
    return read_json(run_dir / META_FILE, root=run_dir)
