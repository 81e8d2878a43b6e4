"""External test sets: their images, their labels mapped onto the training classes.

An :class:`~raysweep.config.ExternalTestSet` names its sources and a ``label_map`` (docs/protocol.md
"External test sets"). It is read as a dataset of its own at the evaluation data's image size
and decode cache (:func:`external_data`), all of its labelled images are used (every split of
its sources; a source's ``split`` keeps one), and each of its classes becomes the training
class of the same name, the one ``label_map`` names, or nothing (``null``: its images are left
out). A class it neither maps nor shares with the training data is an error, as is a
``label_map`` entry naming a class the set does not have or a training class that does not
exist: a typo there would silently change what is measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from raysweep.config import DatasetSpec, ExternalTestSet
from raysweep.data import load_dataset
from raysweep.errors import DataError

__all__ = ["class_mapping", "external_data", "external_labels", "load_external", "load_externals"]


def external_data(test_set: ExternalTestSet, data: DatasetSpec) -> DatasetSpec:
    """The dataset of ``test_set`` scored beside the evaluation data ``data``: its sources at
    ``data``'s image size, in ``data``'s decode cache."""
    return DatasetSpec(sources=test_set.sources, image_size=data.image_size,
                       cache_dir=data.cache_dir)


def class_mapping(test_set: ExternalTestSet, set_classes: Sequence[str],
                  training_classes: Sequence[str]) -> np.ndarray:
    """int64 (len(set_classes),): the training class index of each of the set's classes, -1
    for a class left out (``label_map`` value ``null``). Raises :class:`DataError` naming the
    test set for an unmapped class the training data lacks, and for a ``label_map`` entry
    whose class the set lacks or whose target is no training class."""
    training = {name: index for index, name in enumerate(training_classes)}
    label_map: Mapping[str, str | None] = test_set.label_map
    where = f"test set {test_set.name}"
    unknown_keys = sorted(set(label_map) - set(set_classes))
    if unknown_keys:
        raise DataError(f"{where}: label_map names class {unknown_keys[0]!r}, which the set "
                        f"does not have (its classes: {', '.join(set_classes)})")
    bad_targets = sorted({t for t in label_map.values() if t is not None} - set(training))
    if bad_targets:
        raise DataError(f"{where}: label_map maps onto {bad_targets[0]!r}, which is not a "
                        f"training class ({', '.join(training_classes)})")
    mapping = np.full(len(set_classes), -1, dtype=np.int64)
    unmapped = []
    for index, name in enumerate(set_classes):
        target = label_map[name] if name in label_map else name
        if target is None:
            continue
        if target not in training:
            unmapped.append(name)
            continue
        mapping[index] = training[target]
    if unmapped:
        raise DataError(f"{where}: class {unmapped[0]!r} is not a training class "
                        f"({', '.join(training_classes)}); map it in label_map (or to null to "
                        "leave its images out)")
    return mapping


def external_labels(test_set: ExternalTestSet, dataset, training_classes: Sequence[str]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(indices int64, labels int64)`` of the set's images that are scored, labels indexing
    ``training_classes``, from its (indexed or loaded) ``dataset``."""
    mapping = class_mapping(test_set, dataset.classes, training_classes)
    index = dataset.indices("all")
    index = index[dataset.labels[index] >= 0]
    labels = mapping[dataset.labels[index]]
    kept = labels >= 0
    if not kept.any():
        raise DataError(f"test set {test_set.name}: no image is left to score (every class is "
                        "mapped to null)")
    return index[kept], labels[kept]


def load_external(test_set: ExternalTestSet, data: DatasetSpec,
                  training_classes: Sequence[str], *, progress: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (n, C, H, W), labels int64 (n,))`` of ``test_set`` beside the evaluation
    data ``data``, labels indexing ``training_classes`` (decoded once into the cache)."""

    dataset = load_dataset(external_data(test_set, data), progress=progress)
    index, labels = external_labels(test_set, dataset, training_classes)
    return np.asarray(dataset.images[index]), labels


def load_externals(test_sets: Sequence[ExternalTestSet], data: DatasetSpec,
                   training_classes: Sequence[str], *, progress: bool = False
                   ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (images, labels)}`` of every external test set, in spec order (empty without
    any): what the protocols' ``test_sets`` arguments take."""
    return {t.name: load_external(t, data, training_classes, progress=progress)
            for t in test_sets}
