"""One content digest per image of a dataset, so that two datasets can be compared image by
image whatever the files are called or where they lie (the test-overlap check,
:mod:`raysweep.plan.leakage`).

What is digested:

- an image *file* (folder and manifest sources): the SHA-256 of its bytes, the very digest the
  cache keys and data fingerprints use (:class:`~raysweep.data.cache.FileDigests`: remembered in
  ``digests.json`` by path, size and mtime, and within the process), so the check reads no file
  a fingerprint has not read already and decodes nothing;
- an image of an *array* source (a MedMNIST ``.npz``, the bundled digits): the SHA-256 of its
  stored pixels at their own resolution (dtype, shape and bytes of the array row), remembered
  in ``<cache>/image-digests/<key>.npy``, keyed by the array file's digest and the rows taken.

Bytes rather than decoded pixels: decoding every image to compare it would cost what the decode
cache costs, at every ``validate``, and pixels decoded at the spec's image size would differ
between a pre-training run and an evaluation of another size. What the choice cannot catch: a
copy that is re-encoded (JPEG saved again, PNG converted to JPEG), resized, cropped, rotated or
has its metadata rewritten (EXIF stripped): its bytes differ. Nor a second photograph of the
same lesion, nor a file source holding the images of an array source (PNG exports of a
MedMNIST ``.npz``). Identical bytes under any name, in any folder, or in two manifests are
caught.

A digest is the first :data:`DIGEST_BYTES` bytes of the SHA-256 (128 bits: a false match among
a million images has probability below 10**-26).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from raysweep.config import DatasetSpec
from raysweep.data.cache import FileDigests, cache_root
from raysweep.data.dataset import _plan_source
from raysweep.data.sources import SourceListing, iter_array_items
from raysweep.storage.atomic import atomic_write_bytes, stable_hash

__all__ = ["DIGEST_BYTES", "dataset_image_digests"]

#: Bytes kept of each image's SHA-256.
DIGEST_BYTES = 16

#: Array-source digests computed or read in this process, by their cache key.
_ARRAY_DIGESTS: dict[str, np.ndarray] = {}


def dataset_image_digests(spec: DatasetSpec, *, save: bool = False) -> np.ndarray:
    """uint8 (N, :data:`DIGEST_BYTES`): one digest per item of ``spec``, in the order of
    :func:`~raysweep.data.dataset.index_dataset` (its sources' items after ``classes`` and
    ``split``, one source after another), so that the index's splits select rows.

    ``save=False`` writes nothing (``validate``, dry runs): new file and array digests are
    remembered in this process only. Raises :class:`~raysweep.errors.DataError` when a source
    cannot be listed.
    """
    root = cache_root(spec.cache_dir)
    files = FileDigests(root)
    parts = [_listing_digests(listing, files, root, save)
             for listing, _ in (_plan_source(source, spec) for source in spec.sources)]
    if save:
        files.save()
    if not parts:
        return np.zeros((0, DIGEST_BYTES), dtype=np.uint8)
    return np.concatenate(parts)


def _listing_digests(listing: SourceListing, files: FileDigests, root: Path,
                     save: bool) -> np.ndarray:
    if listing.paths is not None:
        hexes = [files.digest(path)[:2 * DIGEST_BYTES] for path in listing.paths]
        return np.frombuffer(bytes.fromhex("".join(hexes)),
                             dtype=np.uint8).reshape(len(hexes), DIGEST_BYTES)
    return _array_digests(listing, files, root, save)


def _array_digests(listing: SourceListing, files: FileDigests, root: Path,
                   save: bool) -> np.ndarray:
    """The digests of an array source's rows, from this process, the cache or computed."""
    source = (files.digest(listing.array_file) if listing.array_file is not None
              else "sklearn-digits")
    rows = hashlib.sha256(np.ascontiguousarray(listing.positions, dtype="<i8").tobytes())
    key = stable_hash({"array_file": source, "rows": rows.hexdigest(),
                       "digest_bytes": DIGEST_BYTES}, length=24)
    if key in _ARRAY_DIGESTS:
        return _ARRAY_DIGESTS[key]
    stored = root / "image-digests" / f"{key}.npy"
    digests = _read_stored(stored, len(listing))
    if digests is None:
        digests = np.stack([_pixel_digest(image) for image in iter_array_items(listing)]) \
            if len(listing) else np.zeros((0, DIGEST_BYTES), dtype=np.uint8)
        if save:
            buffer = io.BytesIO()
            np.save(buffer, digests, allow_pickle=False)
            atomic_write_bytes(stored, buffer.getvalue())
    _ARRAY_DIGESTS[key] = digests
    return digests


def _pixel_digest(image: np.ndarray) -> np.ndarray:
    sha = hashlib.sha256(f"{image.dtype.str}{image.shape}".encode())
    sha.update(np.ascontiguousarray(image).tobytes())
    return np.frombuffer(sha.digest()[:DIGEST_BYTES], dtype=np.uint8)


def _read_stored(path: Path, rows: int) -> np.ndarray | None:
    """The stored digests at ``path`` when they are a (rows, DIGEST_BYTES) uint8 array, else
    None (missing, damaged or foreign: computed again)."""
    if not os.path.isfile(path):
        return None
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if loaded.dtype != np.uint8 or loaded.shape != (rows, DIGEST_BYTES):
        return None
    return loaded
