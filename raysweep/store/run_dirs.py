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

import warnings
from typing import Any

from raysweep.storage.paths import AnyPath
from raysweep.storage.reading import StoredFileError, check_within, read_json

__all__ = [
    "ENCODER_FILE",
    "META_FILE",
    "METRICS_FILE",
    "is_finished",
    "read_meta",
    ]

ENCODER_FILE = "encoder.pt"
METRICS_FILE = "metrics.jsonl"
META_FILE = "meta.json"


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


#: Ray Train's run name inside the run directory (its checkpoints live under it).
RAY_RUN_NAME = "train"


STATE_FILE = "state.pt"


#: Ray Train's checkpoint directories of a pre-training run (named by the driver's hooks).
_CHECKPOINT_GLOB = "checkpoint_[0-9]*"


def latest_checkpoint_epoch(run_dir: AnyPath) -> int | None:
    """Epochs covered by the newest complete checkpoint of a pre-training run, or None.

    Ray Train keeps them as ``<run_dir>/train/checkpoint_<epoch>`` (the epoch counted from 0);
    a directory without the state file is a copy that was cut short and is ignored.
    """

    epochs = [int(path.name.rsplit("_", 1)[1])
              for path in (run_dir / RAY_RUN_NAME).glob(_CHECKPOINT_GLOB)
              if (path / STATE_FILE).is_file()]
    return max(epochs) + 1 if epochs else None
