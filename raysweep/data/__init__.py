"""Data: sources (image folder, CSV manifest, MedMNIST ``.npz``, bundled digits), mixing with
oversampling ratios, stratified splits and label subsets, and the decode-once cache.

Entry points: :func:`load_dataset` (a :class:`~raysweep.config.DatasetSpec` to an
:class:`ImageDataset`), :func:`to_float_rgb` (cache uint8 to model input), and
:func:`describe` (``raysweep datasets describe``).
"""

from raysweep.data.cache import cache_root
from raysweep.data.dataset import ImageDataset, dataset_name, index_dataset, load_dataset
from raysweep.data.decode import DECODER_VERSION, DataWarning
from raysweep.data.describe import describe
from raysweep.data.sources import SourceListing, read_source
from raysweep.data.splits import allocate, oversample, stratified_split, stratified_subset
from raysweep.data.tensors import to_float_rgb

__all__ = [
    "DECODER_VERSION", "DataWarning", "ImageDataset", "SourceListing", "allocate", "cache_root",
    "dataset_name", "describe", "index_dataset", "load_dataset", "oversample", "read_source",
    "stratified_split", "stratified_subset", "to_float_rgb",
]
