"""Data: sources (image folder, CSV manifest, MedMNIST ``.npz``, bundled digits), mixing with
oversampling ratios, stratified splits and label subsets, and the decode-once cache.

Entry points: :func:`load_dataset` (a :class:`~raysweep.config.DatasetSpec` to an
:class:`ImageDataset`), :func:`to_float_rgb` (cache uint8 to model input), and
:func:`describe` (``raysweep datasets describe``).

The names below are imported on first use, so that importing one light module of this package
(e.g. :mod:`raysweep.data.decode` in a decode worker process) does not import torch and pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DECODER_VERSION": "raysweep.data.decode",
    "DataWarning": "raysweep.data.decode",
    "ImageDataset": "raysweep.data.dataset",
    "SourceListing": "raysweep.data.sources",
    "allocate": "raysweep.data.splits",
    "cache_root": "raysweep.data.cache",
    "dataset_name": "raysweep.data.dataset",
    "describe": "raysweep.data.describe",
    "index_dataset": "raysweep.data.dataset",
    "listing_each_source_once": "raysweep.data.sources",
    "load_dataset": "raysweep.data.dataset",
    "oversample": "raysweep.data.splits",
    "read_source": "raysweep.data.sources",
    "stratified_split": "raysweep.data.splits",
    "stratified_subset": "raysweep.data.splits",
    "to_float_rgb": "raysweep.data.tensors",
}

__all__ = [
    "DECODER_VERSION", "DataWarning", "ImageDataset", "SourceListing", "allocate", "cache_root",
    "dataset_name", "describe", "index_dataset", "listing_each_source_once", "load_dataset",
    "oversample", "read_source",
    "stratified_split", "stratified_subset", "to_float_rgb",
]
assert sorted(__all__) == sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from raysweep.data.cache import cache_root
    from raysweep.data.dataset import ImageDataset, dataset_name, index_dataset, load_dataset
    from raysweep.data.decode import DECODER_VERSION, DataWarning
    from raysweep.data.describe import describe
    from raysweep.data.sources import SourceListing, listing_each_source_once, read_source
    from raysweep.data.splits import allocate, oversample, stratified_split, stratified_subset
    from raysweep.data.tensors import to_float_rgb
