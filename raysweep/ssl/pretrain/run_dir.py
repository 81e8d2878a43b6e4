"""Where a pre-training run lives, and whether it already finished.

``<storage>/pretrain/<spec.name>-<hash>/`` holds::

    encoder.pt      the encoder's plain state dict (torchvision keys minus ``fc.*``), loadable by
                    the ``file:PATH`` weight source
    metrics.jsonl   one JSON object per epoch (rewritten atomically after every epoch)
    meta.json       spec, provenance, resolved settings and ``"status": "finished"``
                    (written last: its status is the "finished" marker)
    train/          Ray Train's run directory (checkpoints, reported metrics)

The hash covers every field that determines the trained encoder. Excluded, being operational
or pure monitoring: ``name`` (already in the directory name), ``keys``, ``checkpoint_every``,
``max_failures``, ``resources_per_worker``, ``deterministic`` (only removes run-to-run jitter),
``channels_last`` (a memory layout), and the downstream proxy (``proxy``, ``proxy_every``,
``proxy_data``: it only observes). Included although "operational": ``num_workers`` (each rank
draws its own augmentation stream, so the views depend on the number of ranks) and ``use_gpu`` /
``precision`` as written in the spec (``auto`` is hashed as ``auto``: the resolved device and
precision are recorded in ``meta.json``). For ``file:PATH`` initial weights the SHA-256 of the
file's bytes is hashed too, so new weights at the same path give a new run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from raysweep.artefacts import stable_hash, to_jsonable
from raysweep.config import PretrainSpec

__all__ = [
    "ENCODER_FILE",
    "META_FILE",
    "METRICS_FILE",
    "NOT_IN_HASH",
    "is_finished",
    "result_hash",
    "run_directory",
]

ENCODER_FILE = "encoder.pt"
METRICS_FILE = "metrics.jsonl"
META_FILE = "meta.json"

#: PretrainSpec fields that do not change the trained encoder (see the module docstring).
NOT_IN_HASH = frozenset({
    "name", "keys", "checkpoint_every", "max_failures", "resources_per_worker",
    "deterministic", "channels_last", "proxy", "proxy_every", "proxy_data",
})


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def result_hash(spec: PretrainSpec) -> str:
    """A 12-hex-digit hash of everything in ``spec`` that determines the trained encoder."""
    fields: dict[str, Any] = {k: v for k, v in to_jsonable(spec).items() if k not in NOT_IN_HASH}
    weights = spec.encoder.weights
    if weights.startswith("file:"):
        path = Path(os.path.expanduser(weights[len("file:"):]))
        if path.is_file():
            fields["encoder_weights_sha256"] = _file_digest(path)
    return stable_hash(fields)


def run_directory(spec: PretrainSpec, storage_dir: str | os.PathLike[str]) -> Path:
    """``<storage_dir>/pretrain/<spec.name>-<result_hash(spec)>``."""
    root = Path(os.path.expanduser(os.fspath(storage_dir)))
    return root / "pretrain" / f"{spec.name}-{result_hash(spec)}"


def is_finished(run_dir: Path) -> bool:
    """True when ``meta.json`` says ``finished`` and the encoder and metrics files exist."""
    meta = run_dir / META_FILE
    if not (meta.is_file() and (run_dir / ENCODER_FILE).is_file()
            and (run_dir / METRICS_FILE).is_file()):
        return False
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("status") == "finished"
    except (OSError, ValueError):
        return False
