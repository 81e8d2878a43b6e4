"""A dataset: the union of a :class:`~raysweep.config.DatasetSpec`'s sources, decoded once,
with its splits, label subset and oversampling.

``load_dataset`` does, in order, per source: list the items (:mod:`raysweep.data.sources`),
apply ``classes``, assign splits (the source's own, else stratified by ``split_seed``), keep
only ``split`` when given, then map (or decode into) the cache (:mod:`raysweep.data.cache`).
Then it unites the sources, takes the stratified label subset of the train split
(``label_fraction`` / ``label_count``), and records each item's oversampling ratio.

Oversampling (the paper's IUD = 2 x IU + DermNet; the oral-cancer OSCC class 10:1) is applied
to index lists, never by copying pixels: to :meth:`ImageDataset.unlabelled` (pre-training) and
to the classification *train* split of :meth:`ImageDataset.labelled`, never to val/test. See
:func:`raysweep.data.splits.oversample` for the exact semantics of fractional ratios.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from raysweep.config import DatasetSpec, SourceSpec
from raysweep.data.cache import (
    CacheTransaction,
    FileDigests,
    build_union,
    cache_root,
    check_skipped,
    source_entry,
    source_key,
    union_key,
)
from raysweep.data.sources import SPLITS, SourceListing, natural_key, read_source
from raysweep.data.splits import oversample, stratified_split, stratified_subset
from raysweep.errors import DataError
from raysweep.storage.atomic import stable_hash

#: A split of a dataset: its train, val or test items, or all of them.
SplitName = Literal["train", "val", "test", "all"]
_UNLABELLED_ROW = "(unlabelled)"


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Decoded images of a dataset with labels, splits and oversampling ratios.

    ``images`` uint8 (N, C, H, W), a read-only memmap of the cache (C = 1 grey, 3 RGB; a
    mixture of grey and RGB sources stores 3); ``labels`` int64 (N,) index into ``classes``,
    -1 for items of unlabelled sources; ``classes`` the union of the labelled sources' class
    names (sources that fix an order -- ``classes:`` given, MedMNIST, digits -- first, the rest
    in natural order); ``source_index`` int64 (N,) position in ``sources``; ``watermark`` bool
    (N,) from ``SourceSpec.watermark_cutout``; ``split`` int8 (N,) 0/1/2 = train/val/test;
    ``train_labelled`` int64 the labelled train indices kept by ``label_fraction`` /
    ``label_count`` (before oversampling); ``ratio`` float64 (N,) each item's oversampling ratio
    (source ``oversample`` x ``class_oversample`` of its class); ``stratum`` (N,) the
    ``"<source>:<class>"`` name each item is oversampled within.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    source_index: np.ndarray
    watermark: np.ndarray
    split: np.ndarray
    train_labelled: np.ndarray
    ratio: np.ndarray
    stratum: np.ndarray
    split_seed: int
    sources: tuple[SourceSpec, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def indices(self, split: SplitName) -> np.ndarray:
        """int64 indices of every item of ``split`` (train, val, test or all), labelled or not,
        without label subsetting or oversampling."""
        if split == "all":
            return np.arange(len(self), dtype=np.int64)
        return np.flatnonzero(self.split == _split_code(split)).astype(np.int64)

    def labelled_indices(self, split: SplitName) -> tuple[np.ndarray, np.ndarray]:
        """(indices int64, labels int64) for classification on ``split``.

        ``train``: the label subset, then oversampled (an index appears ``ratio`` times);
        ``val`` / ``test`` / ``all``: every labelled item, no oversampling. Raises
        :class:`DataError` for an empty split or a split with fewer than two classes.
        """
        if split == "train":
            chosen = self.train_labelled
            index = oversample(chosen, self.ratio[chosen], self.stratum[chosen],
                               seed=self.split_seed, purpose="train")
        else:
            index = self.indices(split)
            index = index[self.labels[index] >= 0]
        if len(index) == 0:
            raise DataError(f"dataset {self.name}: split {split!r} has no labelled images")
        present = np.unique(self.labels[index])
        if len(present) < 2:
            raise DataError(f"dataset {self.name}: split {split!r} has only class "
                            f"{self.classes[present[0]]!r}; classification needs at least two")
        return index, self.labels[index]

    def labelled(self, split: SplitName) -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 (n, C, H, W), labels int64 (n,)) of :meth:`labelled_indices`.

        A contiguous ascending run (e.g. a MedMNIST test split) is a zero-copy memmap slice;
        anything else is gathered into memory, so for very large splits prefer
        :meth:`labelled_indices` and gather batches from ``images``.
        """
        index, labels = self.labelled_indices(split)
        if np.array_equal(index, np.arange(index[0], index[0] + len(index))):
            return self.images[index[0]:index[0] + len(index)], labels
        return np.asarray(self.images[index]), labels

    def unlabelled(self) -> np.ndarray:
        """int64 indices for pre-training: every item (all splits kept by the sources' ``split``
        filters), each repeated by its oversampling ratio; labels are not used."""
        return oversample(np.arange(len(self), dtype=np.int64), self.ratio, self.stratum,
                          seed=self.split_seed, purpose="pretrain")

    def counts(self) -> pd.DataFrame:
        """Images per class (rows, plus ``(unlabelled)`` when present and ``total``) and split
        (columns ``train``, ``val``, ``test``, ``total``), the shape of the paper's Table 1.

        Extra columns appear when they differ from ``train``: ``train used`` (labelled training
        items after the label subset and oversampling) and ``pretrain`` (:meth:`unlabelled`).
        """
        rows = list(self.classes)
        unlabelled = bool((self.labels < 0).any())
        if unlabelled:
            rows.append(_UNLABELLED_ROW)

        def per_row(index: np.ndarray) -> np.ndarray:
            labels = self.labels[index]
            counts = np.bincount(labels[labels >= 0], minlength=len(self.classes))
            if unlabelled:
                counts = np.append(counts, int((labels < 0).sum()))
            return counts

        table: dict[str, np.ndarray] = {split: per_row(self.indices(split)) for split in SPLITS}
        table["total"] = per_row(self.indices("all"))
        train = self.indices("train")
        all_labels_used = len(self.train_labelled) == int((self.labels[train] >= 0).sum())
        if not all_labels_used or np.any(self.ratio[self.train_labelled] != 1.0):
            table["train used"] = per_row(oversample(
                self.train_labelled, self.ratio[self.train_labelled],
                self.stratum[self.train_labelled], seed=self.split_seed, purpose="train"))
        if not np.all(self.ratio == 1.0):
            table["pretrain"] = per_row(self.unlabelled())
        frame = pd.DataFrame(table, index=rows)
        frame.loc["total"] = frame.sum(axis=0)
        return frame


def load_dataset(spec: DatasetSpec, *, progress: bool = True) -> ImageDataset:
    """Read every source of ``spec``, decode once into the cache (or map the cached arrays),
    apply class filters, splits, the label subset and oversampling ratios.

    Raises :class:`DataError` (one line naming the file, row or key) for missing or corrupt
    files, bad manifests, unknown classes and empty sources.
    """
    planned = [_plan_source(source, spec) for source in spec.sources]
    root = cache_root(spec.cache_dir)
    digests = FileDigests(root)
    txn = CacheTransaction(root)
    try:
        dataset = _load_planned(spec, planned, txn, digests, progress)
        txn.commit()
    except BaseException:
        txn.discard()  # a refused load writes nothing: no entry, no digests.json
        raise
    digests.save()
    return dataset


def _load_planned(spec: DatasetSpec, planned: list[tuple[SourceListing, np.ndarray]],
                  txn: CacheTransaction, digests: FileDigests, progress: bool) -> ImageDataset:
    """Map (or decode into ``txn``) every planned source and their union; assemble.

    The dataset maps one entry: the single source, else the union. Only that entry's checksum
    is verified in full; a mixture's source entries are verified only when the union is built
    from them (a damaged one is rebuilt first)."""
    keys = [source_key(listing, spec.image_size, digests, progress=progress)
            for listing, _ in planned]
    single = len(planned) == 1

    def entries_of(verify: bool, warn: bool) -> list:
        found = [source_entry(listing, key, spec.image_size, txn, verify=verify,
                              progress=progress)
                 for (listing, _), key in zip(planned, keys, strict=True)]
        for (listing, _), entry in zip(planned, found, strict=True):
            check_skipped(entry, listing, warn=warn)
        return found

    entries = entries_of(verify=single, warn=True)
    channels = max(entry.images.shape[1] for entry in entries)
    if single:
        union = entries[0]
    else:
        union = txn.lookup(union_key(entries, channels), verify=True)
        if union is None:
            entries = entries_of(verify=True, warn=False)  # skipped files were named above
            union = build_union(entries, channels, spec.image_size, txn)
    kept = [(listing.select(entry.kept), codes[entry.kept])
            for (listing, codes), entry in zip(planned, entries, strict=True)]
    return _assemble(spec, kept, union.images)


def index_dataset(spec: DatasetSpec) -> ImageDataset:
    """Like :func:`load_dataset` but decoding nothing: labels, splits, ratios and counts of every
    listed item, for ``datasets describe``. ``images`` is a read-only all-zero placeholder of
    shape (N, 1, image_size, image_size) (it takes no memory); corrupt files are not detected."""
    planned = [_plan_source(source, spec) for source in spec.sources]
    total = sum(len(listing) for listing, _ in planned)
    placeholder = np.broadcast_to(np.zeros((1, 1, 1, 1), dtype=np.uint8),
                                  (total, 1, spec.image_size, spec.image_size))
    return _assemble(spec, planned, placeholder)


def dataset_name(spec: DatasetSpec) -> str:
    """A readable name of ``spec`` for messages: its sources joined by ``+``."""
    return " + ".join(_source_label(s) for s in spec.sources)


def _source_label(source: SourceSpec) -> str:
    if source.kind == "digits":
        return "digits"
    return source.path or source.name or source.kind


def _split_code(split: str) -> int:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (use train, val, test or all)")
    return SPLITS.index(split)


def _plan_source(source: SourceSpec, spec: DatasetSpec) -> tuple[SourceListing, np.ndarray]:
    """A source's listing and split codes, restricted to ``source.split`` when given."""
    listing = read_source(source)
    if listing.splits is not None:
        codes = listing.splits
    else:
        strata = [listing.classes[c] if c >= 0 else _UNLABELLED_ROW for c in listing.labels]
        identity = stable_hash([source.kind, list(listing.names)], length=24)
        codes = stratified_split(strata, test_fraction=spec.test_fraction,
                                 val_fraction=spec.val_fraction, seed=spec.split_seed,
                                 purpose=identity)
    if source.split is not None:
        if source.split not in SPLITS:
            raise DataError(f"{listing.label}: split: {source.split!r} is not train, val or test")
        keep = codes == SPLITS.index(source.split)
        if not keep.any():
            raise DataError(f"empty source: {listing.label} has no images in split "
                            f"{source.split!r}")
        listing, codes = listing.select(keep), codes[keep]
    for name in source.class_oversample:
        if name not in listing.classes:
            raise DataError(f"{listing.label}: class_oversample: unknown class {name!r} "
                            f"(classes: {', '.join(listing.classes)})")
    return listing, codes


def _union_classes(listings: list[SourceListing]) -> tuple[str, ...]:
    fixed: list[str] = []
    for listing in listings:
        if listing.spec.labelled and listing.fixed_order:
            fixed.extend(c for c in listing.classes if c not in fixed)
    rest = {c for listing in listings if listing.spec.labelled for c in listing.classes}
    return tuple(fixed + sorted(rest - set(fixed), key=natural_key))


def _assemble(spec: DatasetSpec, parts: list[tuple[SourceListing, np.ndarray]],
              images: np.ndarray) -> ImageDataset:
    name = dataset_name(spec)
    classes = _union_classes([listing for listing, _ in parts])
    labels, source_index, watermark, codes, ratio, stratum = [], [], [], [], [], []
    for position, (listing, split_codes) in enumerate(parts):
        source = listing.spec
        n = len(listing)
        own = np.asarray([listing.classes[c] if c >= 0 else "" for c in listing.labels],
                         dtype=object)
        if source.labelled:
            lookup = {c: classes.index(c) for c in listing.classes}
            labels.append(np.asarray([lookup[c] if c else -1 for c in own], dtype=np.int64))
        else:
            labels.append(np.full(n, -1, dtype=np.int64))
        source_index.append(np.full(n, position, dtype=np.int64))
        watermark.append(np.full(n, source.watermark_cutout, dtype=bool))
        codes.append(split_codes.astype(np.int8))
        ratio.append(np.asarray([source.oversample * source.class_oversample.get(c, 1.0)
                                 for c in own], dtype=np.float64))
        stratum.append(np.asarray([f"{position}:{c}" for c in own], dtype=object))
    labels_all = np.concatenate(labels)
    codes_all = np.concatenate(codes)
    train = np.flatnonzero((codes_all == 0) & (labels_all >= 0)).astype(np.int64)
    if spec.label_count is not None and spec.label_count > len(train):
        raise DataError(f"dataset {name}: label_count {spec.label_count} exceeds the "
                        f"{len(train)} labelled training images")
    train_classes = [classes[c] for c in labels_all[train]]
    subset = stratified_subset(train, train_classes, fraction=spec.label_fraction,
                               count=spec.label_count, per_class=spec.label_per_class,
                               rounding=spec.label_rounding, seed=spec.split_seed,
                               purpose="labels")
    return ImageDataset(
        name=name, images=images, labels=labels_all, classes=classes,
        source_index=np.concatenate(source_index), watermark=np.concatenate(watermark),
        split=codes_all, train_labelled=subset, ratio=np.concatenate(ratio),
        stratum=np.concatenate(stratum), split_seed=spec.split_seed,
        sources=tuple(spec.sources))

