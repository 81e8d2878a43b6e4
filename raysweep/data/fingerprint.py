"""A dataset's content fingerprint: what identifies the data a result was computed on.

Two dataset specs with the same fingerprint give the same images, labels, splits, label subset
and oversampling, wherever the files live: the fingerprint hashes the *content* of every listed
file (the cache's source keys: per-file SHA-256, or the ``.npz`` / bundled file and the rows
taken, the image size and the decoder version) together with the assembled labels, class names,
split codes, kept training labels, oversampling ratios and strata, watermark flags and the split
seed. No image is decoded, so it costs a listing and, for files not seen before, one read of
each file (digests are remembered in the cache's ``digests.json`` by path, size and mtime).

Results (rows, pre-trained encoders) are keyed by it, so editing a data file in place, relabelling
a manifest or changing a split recomputes what depended on it, while moving the files elsewhere
does not.
"""

from __future__ import annotations

import hashlib

import numpy as np

from raysweep.config import DatasetSpec
from raysweep.data.cache import FileDigests, cache_root, source_key
from raysweep.data.dataset import _assemble, _plan_source
from raysweep.storage.atomic import stable_hash

__all__ = ["dataset_fingerprint"]


def _array_digest(values: np.ndarray) -> str:
    if values.dtype == object:
        return hashlib.sha256("\x1f".join(map(str, values)).encode("utf-8")).hexdigest()
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


def dataset_fingerprint(spec: DatasetSpec, *, save_digests: bool = True) -> str:
    """A 24-hex-digit content fingerprint of ``spec`` (see the module docstring).

    ``save_digests=False`` writes nothing (for ``--dry-run``): digests of files not seen before
    are computed but not remembered. Raises :class:`~raysweep.errors.DataError` when a source
    cannot be listed (a missing file, a bad manifest).
    """
    planned = [_plan_source(source, spec) for source in spec.sources]
    digests = FileDigests(cache_root(spec.cache_dir))
    keys = [source_key(listing, spec.image_size, digests, progress=False)
            for listing, _ in planned]
    if save_digests:
        digests.save()
    placeholder = np.broadcast_to(np.zeros((1, 1, 1, 1), dtype=np.uint8),
                                  (sum(len(listing) for listing, _ in planned), 1, 1, 1))
    dataset = _assemble(spec, planned, placeholder)
    return stable_hash({
        "sources": keys,
        "classes": list(dataset.classes),
        "labels": _array_digest(dataset.labels),
        "split": _array_digest(dataset.split),
        "train_labelled": _array_digest(dataset.train_labelled),
        "ratio": _array_digest(dataset.ratio),
        "stratum": _array_digest(dataset.stratum),
        "watermark": _array_digest(dataset.watermark),
        "source_index": _array_digest(dataset.source_index),
        "split_seed": dataset.split_seed,
    }, length=24)
