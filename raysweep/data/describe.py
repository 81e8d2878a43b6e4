"""``raysweep datasets describe TARGET``: images per class and split, like the paper's Table 1.

TARGET is an experiment spec (``.yaml``/``.yml``: every dataset in it -- ``evaluate.data``, each
pretrain run's ``data`` and ``proxy_data``, each search's -- identical datasets once), a MedMNIST
``.npz`` file, a MedMNIST name resolved in ``~/.medmnist`` (e.g. ``breastmnist``), a ``.csv``
manifest, an image folder, or ``digits``. Non-spec targets use :class:`DatasetSpec` defaults
(their own splits, else a stratified 80/20 split with split seed 0).

Describe reads only file lists and labels: it decodes no image and writes nothing to the cache,
so it is quick on large folders (and corrupt images are only found by ``load_dataset``).
"""

from __future__ import annotations

import re
from pathlib import Path

from raysweep.config import DatasetSpec, SourceSpec, load_spec
from raysweep.data.dataset import index_dataset
from raysweep.errors import DataError
from raysweep.storage.atomic import stable_hash


def describe(target: str) -> str:
    """The per-split, per-class count tables of ``target`` as text (see the module docstring).

    Raises :class:`~raysweep.errors.DataError` / :class:`~raysweep.errors.SpecError` with one
    line naming the file, row or key at fault.
    """
    blocks = []
    for keys, spec in _datasets(target):
        dataset = index_dataset(spec)
        frame = dataset.counts()
        how = []
        for source in spec.sources:
            own = source.kind == "medmnist" or _has_split_column(source)
            how.append("the source's own split" if own else
                       f"stratified (split_seed {spec.split_seed}, test {spec.test_fraction:g}, "
                       f"val {spec.val_fraction:g})")
        prefix = f"{', '.join(keys)}: " if keys else ""
        header = (f"{prefix}{dataset.name}\n"
                  f"{len(dataset)} images, {len(dataset.classes)} classes; splits: "
                  f"{'; '.join(dict.fromkeys(how))}")
        blocks.append(f"{header}\n{frame.to_string()}")
    return "\n\n".join(blocks)


def _has_split_column(source: SourceSpec) -> bool:
    if source.kind != "manifest" or not source.path:
        return False
    with open(Path(source.path).expanduser(), encoding="utf-8-sig") as handle:
        header = handle.readline().strip().split(",")
    return "split" in [h.strip() for h in header]


def _datasets(target: str) -> list[tuple[list[str], DatasetSpec]]:
    path = Path(target).expanduser()
    if path.suffix.lower() in (".yaml", ".yml"):
        return _spec_datasets(path)
    return [([], DatasetSpec(sources=(source_for(target),)))]


def source_for(target: str) -> SourceSpec:
    """The :class:`SourceSpec` a command-line TARGET names: ``digits``, a MedMNIST ``.npz`` file
    or name (``breastmnist``, read from ``~/.medmnist``), a ``.csv`` manifest or an image folder."""
    path = Path(target).expanduser()
    if target == "digits":
        return SourceSpec(kind="digits")
    if path.suffix.lower() == ".npz":
        return SourceSpec(kind="medmnist", path=str(path))
    if path.suffix.lower() == ".csv":
        return SourceSpec(kind="manifest", path=str(path))
    if path.is_dir():
        return SourceSpec(kind="folder", path=str(path))
    if re.fullmatch(r"[a-z0-9]+mnist(_\d+)?", target):
        return SourceSpec(kind="medmnist", name=target)
    raise DataError(f"cannot read {target}: not a spec .yaml, a MedMNIST .npz or name, "
                    "a .csv manifest, an image folder or 'digits'")


def _spec_datasets(path: Path) -> list[tuple[list[str], DatasetSpec]]:
    spec = load_spec(path)
    found: list[tuple[str, DatasetSpec]] = []
    if spec.evaluate is not None:
        found.append(("evaluate.data", spec.evaluate.data))
    for run in spec.pretrain:
        found.append((f"pretrain[{run.name}].data", run.data))
        if run.proxy_data is not None:
            found.append((f"pretrain[{run.name}].proxy_data", run.proxy_data))
    for search in spec.search:
        found.append((f"search[{search.name}].pretrain.data", search.pretrain.data))
        found.append((f"search[{search.name}].evaluate.data", search.evaluate.data))
    if not found:
        raise DataError(f"{path}: no datasets to describe (no evaluate or pretrain section)")
    grouped: dict[str, tuple[list[str], DatasetSpec]] = {}
    for key, data in found:
        grouped.setdefault(stable_hash(data), ([], data))[0].append(key)
    return list(grouped.values())
