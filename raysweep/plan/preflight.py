"""Checks of a spec against the files it names, before anything is written or trained.

:func:`spec_file_problems` lists, one line each, every problem that the spec's files reveal:
data sources that cannot be listed, evaluation data with fewer than two classes in its train
or test split, pre-training data smaller than one batch (or, for a supervised run, without
labelled training images; with ``validation_fraction``, a hold-out or a training share smaller
than one batch), external test sets whose sources cannot be listed or whose classes
do not map onto the training classes, weight files that are missing, unreadable or hold NaN/inf,
a storage root or decode cache that cannot be written, and pre-training runs that train on
images a condition evaluating them is tested on, unless they allow it
(:mod:`raysweep.plan.leakage`). :func:`check` raises them all at once as
:class:`~raysweep.errors.Problems`; ``raysweep validate``, ``raysweep run --dry-run`` and the
start of ``run`` / ``pretrain`` / ``evaluate`` / ``search`` call it.

Everything here only reads: sources are listed with the data layer's own listing and index
functions (no image is decoded, no cache entry or digest file written), weights are read with
``torch.load(weights_only=True)``, and writability is probed with a directory made and removed
at once in the nearest existing folder.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from raysweep.config import DatasetSpec, ExperimentSpec, PretrainSpec, SourceSpec
from raysweep.data import cache_root, index_dataset, listing_each_source_once, read_source
from raysweep.environment import CACHE_ENV
from raysweep.errors import OutputError, Problems, RaysweepError
from raysweep.evaluate.external import external_data, external_labels
from raysweep.models import build_encoder
from raysweep.plan.leakage import overlap_problems
from raysweep.plan.resources import gpu_wait, gpus_per_worker, unreachable_gpus_reason
from raysweep.ssl.methods import pretrain_method
from raysweep.ssl.pretrain.sharding import validation_split
from raysweep.storage.paths import StoragePath, escaping_links, resolved, storage_path
from raysweep.storage.redact import redact
from raysweep.tracking import tracking_problems

__all__ = ["check", "check_resources", "directory_problem", "experiment_links_problem",
           "output_file_problem", "pretrain_data_problems", "pretrain_gpu_problem",
           "refuse_escaping_links", "spec_file_problems"]


# ------------------------------------------------------------------------------- outputs


#: A file system with less free space than this is full (a run writes checkpoints and rows).
MIN_FREE_BYTES = 2**20


def directory_problem(path: str | os.PathLike[str] | StoragePath, what: str) -> str | None:
    """Why directory ``path`` cannot be created or written (None when it can): it is a file,
    a symbolic link loop, an ancestor is a file, the nearest existing ancestor refuses a new
    entry, or its file system is full."""

    located = storage_path(path)
    if isinstance(located, StoragePath):
        return _object_store_problem(located, what)
    path = located
    if resolved(path) is None:
        return f"{what} {path} is a symbolic link loop"
    if path.exists() and not path.is_dir():
        return f"{what} {path} is a file, not a directory"
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{what} {path} cannot be created: {probe} is a file, not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{what} {path} is not writable ({probe} refuses new files)"
    try:  # os.access says yes to root on read-only file systems: try for real
        Path(tempfile.mkdtemp(prefix=".raysweep-probe-", dir=probe)).rmdir()
    except OSError as err:
        return (f"{what} {path} is not writable (no folder can be made in {probe}: "
                f"{err.strerror or err})")
    free = _free_bytes(probe)
    if free is not None and free < MIN_FREE_BYTES:
        return f"{what} {path} is on a full file system ({free // 1024} KiB free in {probe})"
    return None


def _free_bytes(folder: Path) -> int | None:
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return None
    return stats.f_bavail * stats.f_frsize


def experiment_links_problem(directory: str | os.PathLike[str] | StoragePath) -> str | None:
    """Why the experiment ``directory`` must not be read or written: it holds a symbolic link
    that leads out of it (a planted ``report -> /elsewhere`` would have the report written
    there), named with its target; None when it holds none (or is in an object store)."""

    links = escaping_links(storage_path(directory))
    if not links:
        return None
    return (f"experiment directory {directory} holds a symbolic link out of it ({links[0]}): "
            "raysweep neither reads nor writes through such links; remove it")


def refuse_escaping_links(directory: str | os.PathLike[str] | StoragePath) -> None:
    """:class:`~raysweep.errors.OutputError` (:func:`experiment_links_problem`) when the
    experiment ``directory`` holds a symbolic link out of it: before anything in it is read."""
    problem = experiment_links_problem(directory)
    if problem:
        raise OutputError(problem)


def _object_store_problem(path, what: str) -> str | None:
    """Why object-store folder ``path`` cannot be written: writes and deletes a probe object."""


    probe = path / f".raysweep-probe-{uuid.uuid4().hex}"
    try:
        if path.is_file():
            return f"{what} {path} is an object, not a folder"
        probe.write_bytes(b"")
        probe.unlink()
    except OutputError as err:  # the store cannot be reached: its own line
        return str(err)
    except Exception as err:  # noqa: BLE001 - pyarrow and the store raise many kinds
        return redact(f"{what} {path} is not writable ({type(err).__name__}: "
                      f"{' '.join(str(err).split())[:200]})")
    return None


def output_file_problem(path: str | os.PathLike[str], what: str) -> str | None:
    """Why file ``path`` cannot be written (a directory there, or its folder unwritable)."""
    path = Path(os.path.expanduser(path))
    if path.is_dir():
        return f"{what} {path} is a directory; give a file name"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{what} {path} is not writable"
    problem = directory_problem(path.parent, f"the folder of {what}")
    return problem


# ---------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class _Use:
    """One place a dataset is used: its key path in the spec and what it must provide."""

    key: str
    dataset: DatasetSpec
    classify: bool = False  # needs >= 2 classes in train and test (evaluation, proxy)
    pretrain: PretrainSpec | None = None  # needs >= one batch of (labelled) images


def _uses(spec: ExperimentSpec) -> Iterator[_Use]:
    for index, run in enumerate(spec.pretrain):
        yield from _pretrain_uses(run, f"pretrain[{index}]")
    if spec.evaluate is not None:
        yield _Use("evaluate.data", spec.evaluate.data, classify=True)
        for index, cond in enumerate(spec.evaluate.encoders):
            if cond.data is not None:
                yield _Use(f"evaluate.encoders[{index}].data", cond.data, classify=True)
    for index, search in enumerate(spec.search):
        yield from _pretrain_uses(search.pretrain, f"search[{index}].pretrain")
        yield _Use(f"search[{index}].evaluate.data", search.evaluate.data, classify=True)


def _pretrain_uses(run: PretrainSpec, key: str) -> Iterator[_Use]:
    yield _Use(f"{key}.data", run.data, pretrain=run)
    if run.proxy_data is not None:
        yield _Use(f"{key}.proxy_data", run.proxy_data, classify=True)


class _DataChecker:
    """Lists each distinct source and indexes each distinct dataset once."""

    def __init__(self) -> None:
        self.source_errors: dict[SourceSpec, str | None] = {}
        self.datasets: dict[DatasetSpec, object] = {}

    def source_error(self, source: SourceSpec) -> str | None:
        if source not in self.source_errors:

            try:
                read_source(source)
                self.source_errors[source] = None
            except RaysweepError as err:
                self.source_errors[source] = str(err)
        return self.source_errors[source]

    def index(self, dataset: DatasetSpec):
        """The dataset's index (labels, splits; no pixels), or the error text."""
        if dataset not in self.datasets:

            try:
                self.datasets[dataset] = index_dataset(dataset)
            except RaysweepError as err:
                self.datasets[dataset] = str(err)
        return self.datasets[dataset]

    def problems(self, use: _Use) -> list[tuple[str, str]]:
        """(key path, reason) of every problem of one use."""
        failed = [(f"{use.key}.sources[{i}]", reason) for i, source in enumerate(use.dataset.sources)
                  if (reason := self.source_error(source)) is not None]
        if failed:
            return failed
        index = self.index(use.dataset)
        if isinstance(index, str):
            return [(use.key, index)]
        problems = []
        if use.classify:
            for split in ("train", "test"):
                try:
                    index.labelled_indices(split)
                except RaysweepError as err:  # one class in train is usually one in test too
                    problems.append((use.key, str(err)))
                    break
        if use.pretrain is not None:
            reason = _batch_problem(use.pretrain, index)
            if reason:
                problems.append((use.key, reason))
        return problems


def _batch_problem(run: PretrainSpec, index) -> str | None:
    """Why ``run`` cannot train one batch on its indexed data (None when it can)."""
    if pretrain_method(run.method).needs_labels:
        try:
            count = len(index.labelled_indices("train")[0])
        except RaysweepError as err:
            return f"a {run.method} run needs labelled training images: {err}"
        kind = "labelled training images"
    else:
        count, kind = len(index.unlabelled()), "images"
    if run.validation_fraction and count:
        # the package of the pre-training loop imports torch and Ray: only when asked for

        indices = (index.labelled_indices("train")[0] if pretrain_method(run.method).needs_labels
                   else index.unlabelled())
        train, held = validation_split(indices, run.validation_fraction,
                                       seed=run.data.split_seed)
        if len(held) < run.batch_size:
            return (f"validation_fraction {run.validation_fraction:g} holds out {len(held)} "
                    f"images, fewer than one batch of {run.batch_size}")
        count, kind = len(train), f"{kind} left after the validation hold-out"
    if count < run.batch_size:
        return f"{count} {kind} are fewer than one batch of {run.batch_size}"
    return None


def pretrain_data_problems(run: PretrainSpec) -> list[str]:
    """The data problems of one pre-training run, one line each (its driver's preflight)."""
    checker = _DataChecker()
    return [f"pretrain {run.name}: {key}: {reason}"
            for use in _pretrain_uses(run, "pretrain") for key, reason in checker.problems(use)]


def _test_set_problems(spec: ExperimentSpec, checker: _DataChecker) -> list[tuple[str, str]]:
    """(key path, reason) of every external test set whose sources cannot be listed or whose
    classes do not map onto the evaluation data's training classes."""
    if spec.evaluate is None or not spec.evaluate.test_sets:
        return []

    problems = []
    training = checker.index(spec.evaluate.data)
    for index, test_set in enumerate(spec.evaluate.test_sets):
        key = f"evaluate.test_sets[{index}]"
        failed = [(f"{key}.sources[{i}]", reason) for i, source in enumerate(test_set.sources)
                  if (reason := checker.source_error(source)) is not None]
        if failed:
            problems.extend(failed)
            continue
        found = checker.index(external_data(test_set, spec.evaluate.data))
        if isinstance(found, str):
            problems.append((key, found))
        elif not isinstance(training, str):  # the training data's own problem is named above
            try:
                external_labels(test_set, found, training.classes)
            except RaysweepError as err:
                problems.append((f"{key}.label_map", str(err)))
    return problems


# ------------------------------------------------------------------------------- weights


def _weight_uses(spec: ExperimentSpec) -> Iterator[tuple[str, str, str]]:
    """(key path, architecture, weights) of every encoder whose weights come from a file."""
    for index, run in enumerate(spec.pretrain):
        yield f"pretrain[{index}].encoder.weights", run.encoder.name, run.encoder.weights
    if spec.evaluate is not None:
        for index, cond in enumerate(spec.evaluate.encoders):
            yield (f"evaluate.encoders[{index}].encoder.weights", cond.encoder.name,
                   cond.encoder.weights)
    for index, search in enumerate(spec.search):
        yield (f"search[{index}].pretrain.encoder.weights", search.pretrain.encoder.name,
               search.pretrain.encoder.weights)


def _weights_problem(arch: str, weights: str) -> str | None:

    try:
        build_encoder(arch, weights)
    except RaysweepError as err:
        return str(err)
    return None


# ------------------------------------------------------------------------------- cluster


def pretrain_gpu_problem(run: PretrainSpec, cluster) -> str | None:
    """Why ``run``, trained on GPUs, can never get them on ``cluster`` (a
    :class:`~raysweep.plan.resources.ClusterResources`), or None: when the cluster has them
    now, or its autoscaler can add GPU nodes (Ray Train then waits for them)."""

    each = gpus_per_worker(run)
    needed = run.num_workers * each
    if gpu_wait(needed, cluster) != "never":
        return None
    return (f"pretrain {run.name}: training on GPUs needs {needed} whole GPUs "
            f"({run.num_workers} workers x {each}) but {unreachable_gpus_reason(needed, cluster)}")


def check_resources(problems: tuple[str, ...] | list[str]) -> None:
    """Raise :class:`Problems` when a plan asks for what its cluster can never offer
    (``Plan.unreachable_pretrain`` / ``unreachable_evaluate``)."""
    if problems:
        raise Problems(list(problems))


# ---------------------------------------------------------------------------------- all


def spec_file_problems(spec: ExperimentSpec, source: str = "<spec>") -> list[str]:
    """Every problem the files named by ``spec`` reveal, one line each, ``SOURCE: key: reason``
    (a problem shared by several keys is reported once, at its first key)."""
    lines: list[str] = []
    seen: set[str] = set()

    def add(key: str, reason: str) -> None:
        if reason not in seen:
            seen.add(reason)
            lines.append(f"{source}: {key}: {reason}")

    problem = directory_problem(spec.storage, "storage") or experiment_links_problem(
        spec.directory)
    if problem:
        add("storage", problem)

    for key, reason in tracking_problems(spec):  # a tracker's library missing, no folder
        add(key, reason)

    caches: dict[Path, tuple[str, str]] = {}
    for use in _uses(spec):  # an unset cache_dir is the folder RAYSWEEP_CACHE names: say so
        unset = use.dataset.cache_dir is None and os.environ.get(CACHE_ENV, "").strip()
        caches.setdefault(cache_root(use.dataset.cache_dir), (
            f"{use.key}.cache_dir",
            f"decode cache ({CACHE_ENV})" if unset else "decode cache"))
    for root, (key, what) in caches.items():
        problem = directory_problem(root, what)
        if problem:
            add(key, problem)
    checker = _DataChecker()
    before_data = len(lines)
    for use in _uses(spec):
        for key, reason in checker.problems(use):
            add(key, reason)
    for key, reason in _test_set_problems(spec, checker):
        add(key, reason)
    if len(lines) == before_data:  # test images in pre-training, once the data can be listed

        for key, reason in overlap_problems(spec):
            add(key, reason)
    checked: set[tuple[str, str]] = set()
    for key, arch, weights in _weight_uses(spec):
        if weights == "random" or weights.startswith("pretrain:") or (arch, weights) in checked:
            continue
        checked.add((arch, weights))
        problem = _weights_problem(arch, weights)
        if problem:
            add(key, problem)
    return lines


def check(spec: ExperimentSpec, source: str = "<spec>") -> None:
    """Raise :class:`Problems` listing every problem of :func:`spec_file_problems` (each
    source listed once, however many runs and conditions read it)."""
    with listing_each_source_once():
        problems = spec_file_problems(spec, source)
    if problems:
        raise Problems(problems)
