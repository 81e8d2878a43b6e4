"""Test images in pre-training: which pre-training run trains on images that a condition
evaluating its encoder is tested on (docs/protocol.md "Test images stay out of pre-training").

A condition evaluates an encoder pre-trained by a chain of runs (``pretrain:NAME``, whose
initial weights may be another run's output, and so on); every run of the chain is checked
against every test set the condition is scored on: its data's test split (``test``) and each
external test set (the images it scores). Images are compared by content, one digest per image
(:mod:`raysweep.data.image_digests`: the bytes of a file, the pixels of an array row), so a
copy under another name or in another folder is found.

A run that shares images with a test set is refused (:func:`overlap_problems`, one line per run
and test set, by ``validate``, ``run --dry-run`` and before any stage runs) unless it says
``allow_test_overlap: true``: a deliberately transductive design (the Haggerty & Chandra
slides' "pre-pretrained" encoder, pre-trained on the target's train and test images). The
plan, the run and the report then state each such overlap (:func:`overlap_lines`,
``test_overlap.json`` in the experiment directory).

Searches are not checked: a search trial is scored on a validation split and never reads a
test split.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from raysweep.config import (
    IN_DISTRIBUTION,
    DatasetSpec,
    EncoderCondition,
    ExperimentSpec,
    ExternalTestSet,
    PretrainSpec,
)
from raysweep.data import index_dataset
from raysweep.data.image_digests import dataset_image_digests
from raysweep.errors import RaysweepError
from raysweep.evaluate.external import external_data, external_labels
from raysweep.ssl.methods import pretrain_method
from raysweep.storage.atomic import atomic_write_json

__all__ = ["OVERLAP_FILE", "TestOverlap", "checked_runs", "find_overlaps", "overlap_lines",
           "overlap_problems", "record_overlaps"]

#: The experiment directory's record of the overlaps the spec allows (read by the report).
OVERLAP_FILE = "test_overlap.json"


@dataclass(frozen=True)
class TestOverlap:
    """Test images a pre-training run trains on: ``shared`` of the ``test_images`` images of
    test set ``test_set`` (``test``: the data's test split at spec key ``data_key``), scored by
    ``conditions``; ``allowed`` when the run says ``allow_test_overlap``."""

    __test__ = False  # not a pytest class

    run: str
    run_key: str
    test_set: str
    data_key: str
    conditions: tuple[str, ...]
    shared: int
    test_images: int
    train_images: int
    allowed: bool

    def refusal(self) -> str:
        """Why a refused overlap is refused, in one line (the spec's key is ``run_key``)."""
        return (f"pretrain run {self.run!r} trains on {self.shared} of the "
                f"{self.test_images} images of test set {self.test_set!r} ({self.data_key}) "
                f"that condition(s) {', '.join(self.conditions)} are tested on; pre-train on "
                "images the evaluation does not test on (a source's split: train with the "
                "evaluation's split_seed, test_fraction and val_fraction), or set "
                "allow_test_overlap: true on the run for a transductive design")

    def statement(self) -> str:
        """The line the plan, the run and the report give an allowed overlap."""
        return (f"transductive: pretrain run {self.run!r} (allow_test_overlap) trains on "
                f"{self.shared} of the {self.test_images} images of test set {self.test_set!r} "
                f"({self.data_key}), scored by {', '.join(self.conditions)}")


@dataclass(frozen=True)
class _TestSet:
    name: str
    key: str
    data: DatasetSpec
    external: ExternalTestSet | None


def _lineage(spec: ExperimentSpec, cond: EncoderCondition) -> Iterator[tuple[int, PretrainSpec]]:
    """(index, run) of every run whose training the condition's encoder carries: the run it
    evaluates, that run's parent run, and so on."""
    index = {run.name: position for position, run in enumerate(spec.pretrain)}
    run = spec.pretrain_parent(cond.encoder.weights)
    seen: set[str] = set()
    while run is not None and run.name not in seen:  # cycles are refused by the spec itself
        seen.add(run.name)
        yield index[run.name], run
        run = spec.pretrain_parent(run.encoder.weights)


def _test_sets(spec: ExperimentSpec, position: int, cond: EncoderCondition) -> list[_TestSet]:

    assert spec.evaluate is not None
    data = cond.data or spec.evaluate.data
    key = f"evaluate.encoders[{position}].data" if cond.data else "evaluate.data"
    sets = [_TestSet(IN_DISTRIBUTION, f"{key} test split", data, None)]
    sets.extend(_TestSet(t.name, f"evaluate.test_sets[{i}]", external_data(t, data), t)
                for i, t in enumerate(spec.evaluate.test_sets))
    return sets


class _Digests:
    """Each dataset's image digests and index, computed once."""

    def __init__(self, save: bool) -> None:
        self.save = save
        self._digests: dict[DatasetSpec, np.ndarray] = {}
        self._indexes: dict[DatasetSpec, object] = {}

    def of(self, data: DatasetSpec) -> np.ndarray:

        if data not in self._digests:
            self._digests[data] = dataset_image_digests(data, save=self.save)
        return self._digests[data]

    def index(self, data: DatasetSpec):

        if data not in self._indexes:
            self._indexes[data] = index_dataset(data)
        return self._indexes[data]

    def trained(self, run: PretrainSpec) -> set[bytes]:
        """The digests of the images ``run`` trains on (the labelled training split for a
        supervised run, every listed image otherwise)."""

        index = self.index(run.data)
        chosen = (index.labelled_indices("train")[0] if pretrain_method(run.method).needs_labels
                  else index.indices("all"))
        digests = self.of(run.data)
        return {digests[i].tobytes() for i in np.unique(chosen)}

    def tested(self, test_set: _TestSet, training_classes) -> np.ndarray:
        """The digests of the images ``test_set`` scores, (n, DIGEST_BYTES)."""

        index = self.index(test_set.data)
        if test_set.external is None:
            chosen = index.labelled_indices("test")[0]
        else:
            chosen = external_labels(test_set.external, index, training_classes)[0]
        return self.of(test_set.data)[chosen]


def find_overlaps(spec: ExperimentSpec, *, save_digests: bool = False) -> list[TestOverlap]:
    """Every (pre-training run, test set) pair that shares images, with the conditions that
    meet it, in spec order. Reads the data's listings and digests only (nothing is decoded);
    ``save_digests=False`` writes nothing. Raises :class:`RaysweepError` when a dataset cannot
    be listed (the data checks name that first)."""
    if spec.evaluate is None or not spec.pretrain:
        return []
    digests = _Digests(save_digests)
    found: dict[tuple[str, str], tuple[int, PretrainSpec, _TestSet, list[str], int, int]] = {}
    trained: dict[str, set[bytes]] = {}
    for position, cond in enumerate(spec.evaluate.encoders):
        lineage = list(_lineage(spec, cond))
        if not lineage:
            continue
        classes = digests.index(cond.data or spec.evaluate.data).classes
        for test_set in _test_sets(spec, position, cond):
            tested = digests.tested(test_set, classes)
            for index, run in lineage:
                if run.name not in trained:
                    trained[run.name] = digests.trained(run)
                shared = sum(row.tobytes() in trained[run.name] for row in tested)
                if not shared:
                    continue
                entry = found.setdefault((run.name, test_set.key),
                                         (index, run, test_set, [], shared, len(tested)))
                entry[3].append(cond.name)
    return [TestOverlap(run=run.name, run_key=f"pretrain[{index}]", test_set=test_set.name,
                        data_key=test_set.key, conditions=tuple(conditions), shared=shared,
                        test_images=n_test, train_images=len(trained[run.name]),
                        allowed=run.allow_test_overlap)
            for index, run, test_set, conditions, shared, n_test in sorted(
                found.values(), key=lambda e: (e[0], e[2].key))]


def overlap_problems(spec: ExperimentSpec) -> list[tuple[str, str]]:
    """(key path, reason) of every overlap the spec does not allow; none when the data cannot
    be listed (its own problem is reported instead)."""
    try:
        overlaps = find_overlaps(spec)
    except RaysweepError:
        return []
    return [(o.run_key, o.refusal()) for o in overlaps if not o.allowed]


def overlap_lines(spec: ExperimentSpec) -> list[str]:
    """One line per allowed overlap (``run --dry-run`` and ``run`` print them)."""
    try:
        return [o.statement() for o in find_overlaps(spec) if o.allowed]
    except RaysweepError:
        return []


def checked_runs(spec: ExperimentSpec) -> list[str]:
    """The pre-training runs whose encoders some condition evaluates (directly or as a
    parent), in spec order: the runs the check compares with test sets."""
    if spec.evaluate is None:
        return []
    names = {run.name for cond in spec.evaluate.encoders for _, run in _lineage(spec, cond)}
    return [run.name for run in spec.pretrain if run.name in names]


def record_overlaps(spec: ExperimentSpec) -> list[TestOverlap]:
    """Write ``test_overlap.json`` in the experiment directory for the report: the runs
    checked and every allowed overlap (a refused one never gets this far); returns the
    overlaps."""
    overlaps = [o for o in find_overlaps(spec, save_digests=True) if o.allowed]
    atomic_write_json(spec.directory / OVERLAP_FILE, {
        "checked_runs": checked_runs(spec),
        "compared_by": "image content: file bytes, array pixels (raysweep.data.image_digests)",
        "overlaps": [asdict(o) for o in overlaps]})
    return overlaps

