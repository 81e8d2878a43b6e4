"""Weight sources for encoders: one registry, nothing ever downloaded.

A weights spec is a string:

``random``
    keep the random initialisation.
``torchvision:IMAGENET1K_V1`` / ``torchvision:IMAGENET1K_V2``
    the torchvision ImageNet-supervised weights enum of the architecture (the paper's ``SL``),
    read from ``<torch hub dir>/checkpoints/<file name of the enum's url>`` (the hub dir is
    ``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``; where torchvision itself caches it).
``barlowtwins``
    the facebookresearch/barlowtwins torch.hub ``resnet50`` (the paper's ``SSL``), a plain
    torchvision ResNet-50 state dict from dl.fbaipublicfiles.com/barlowtwins/ljng/resnet50.pth.
``vicreg``
    the facebookresearch/vicreg torch.hub ``resnet50``, from
    dl.fbaipublicfiles.com/vicreg/resnet50.pth; with the ``resnet200x2`` encoder its
    ``resnet200w2`` (ResNet-200, 2x width), from dl.fbaipublicfiles.com/vicreg/resnet200x2.pth,
    read as ``<hub dir>/checkpoints/vicreg_resnet200x2.pth`` (:data:`HUB_VARIANTS`).
``file:PATH``
    a plain state dict, a DDP (``module.``-prefixed) one, a ``torch.compile`` (``_orig_mod.``)
    one, or a raysweep checkpoint (a dict whose ``encoder`` entry is the state dict); ``PATH``
    is a local path or an object-store URI (``s3://...``, :mod:`raysweep.storage.paths`).
``FORMAT:PATH``
    a public SSL checkpoint in one of the key layouts of :data:`raysweep.config.weight_formats.
    WEIGHT_FORMATS` (``moco:``, ``swav:``, ``solo-learn:``, ``vissl:``, ...; :data:`LAYOUTS`
    says where each keeps the encoder's tensors). Stricter than ``file:``: every tensor the
    layout places under the encoder must fit it, so a file of another layout or architecture
    is refused in one line naming the missing and the unexpected keys.

Both hub models are published under the same file name ``resnet50.pth``, so torch.hub would cache
them at the same path; raysweep therefore looks for them under distinct names,
``<hub dir>/checkpoints/barlowtwins_resnet50.pth`` and ``.../vicreg_resnet50.pth``.

Loading uses ``torch.load(..., weights_only=True)``, drops ``fc.*`` (the ImageNet classifier),
strips known prefixes, and fails with a one-line :class:`~raysweep.errors.WeightsError` on an
unreadable, empty or unsafe file (anything but tensors and plain containers is refused, never
unpickled), NaN or infinite values (named by tensor), a shape mismatch (a checkpoint of another
architecture) or missing encoder tensors (a partly initialised encoder would silently spoil a
study). Unexpected extra tensors
are reported with a warning and returned in the :class:`LoadReport`.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import get_model_weights

from raysweep.config.weight_formats import WEIGHT_FORMATS
from raysweep.errors import WeightsError
from raysweep.storage.checkpoints import torch_load
from raysweep.storage.paths import AnyPath, storage_path

__all__ = [
    "HUB_MODELS",
    "HUB_VARIANTS",
    "LAYOUTS",
    "KeyLayout",
    "WEIGHT_SOURCES",
    "LoadReport",
    "extract_state_dict",
    "hub_checkpoint_path",
    "load_encoder_weights",
    "resolve_weights",
    "weights_file",
]

StateDict = dict[str, torch.Tensor]

#: torch.hub ResNet-50 models: name -> (download url, file name in the hub checkpoints dir).
HUB_MODELS: dict[str, tuple[str, str]] = {
    "barlowtwins": (
        "https://dl.fbaipublicfiles.com/barlowtwins/ljng/resnet50.pth",
        "barlowtwins_resnet50.pth",
    ),
    "vicreg": ("https://dl.fbaipublicfiles.com/vicreg/resnet50.pth", "vicreg_resnet50.pth"),
}

#: torch.hub models of another architecture than ResNet-50: (name, encoder) -> (download url,
#: file name in the hub checkpoints dir). Same key layout as the ResNet-50 files.
HUB_VARIANTS: dict[tuple[str, str], tuple[str, str]] = {
    ("vicreg", "resnet200x2"): ("https://dl.fbaipublicfiles.com/vicreg/resnet200x2.pth",
                                "vicreg_resnet200x2.pth"),
}

#: Prefixes added by wrappers (DDP, torch.compile): stripped from every key.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: Prefixes naming the encoder inside a whole-model state dict: only those keys are kept.
SUBMODULE_PREFIXES = ("encoder.", "backbone.")


@dataclass(frozen=True)
class LoadReport:
    """What loading a weights spec did: its source, and the keys left out on either side."""

    source: str
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()


def hub_checkpoint_path(filename: str) -> Path:
    """``<torch hub dir>/checkpoints/<filename>`` (respects ``TORCH_HOME``, read at call time)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _read(path: AnyPath, spec: str, url: str | None = None) -> object:
    if not path.is_file():
        where = (f"download {url} and place it at {path} (or pass weights='file:PATH')" if url
                 else f"{path} does not exist")
        raise WeightsError(
            f"weights {spec!r}: file {path} not found; offline nothing is downloaded: {where}")
    if path.stat().st_size == 0:
        raise WeightsError(f"weights {spec!r}: cannot read {path}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():  # torch's note on the pickle protocol is not ours
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch_load(path)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"weights {spec!r}: cannot read {path}: refused by the safe loader, which reads "
            f"tensors and plain containers only and never runs code in a file "
            f"({_unpickling_cause(exc)})") from exc
    except Exception as exc:  # a damaged or foreign file fails in many ways
        detail = " ".join(str(exc).split())
        reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        raise WeightsError(f"weights {spec!r}: cannot read {path}: not a PyTorch checkpoint "
                           f"or a damaged one ({reason})") from exc


#: Paragraphs of torch's weights-only refusal that advise rather than explain.
_TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation",
                 "Re-running `torch.load`", "In PyTorch 2.6")


def _unpickling_cause(exc: BaseException) -> str:
    """The cause in torch's weights-only refusal (the global or opcode it met), without its
    advice to load with ``weights_only=False``, which would run the file's code."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    parts = [" ".join(part.split()) for part in text.split("\n")]
    kept = [part for part in parts if part and not part.startswith(_TORCH_ADVICE)]
    cause = " ".join(kept).split(" Please use `torch.serialization")[0].strip()
    return cause or type(exc).__name__


def extract_state_dict(obj: object, spec: str) -> StateDict:
    """The encoder's state dict inside a loaded checkpoint object, prefixes stripped, no ``fc``.

    Accepts a plain state dict, a raysweep checkpoint ``{"encoder": state_dict, ...}`` or a
    ``{"state_dict": ...}`` wrapper; strips ``module.``/``_orig_mod.`` and, in a whole-model
    dict, keeps only the ``encoder.``/``backbone.`` entries.
    """
    if isinstance(obj, Mapping):
        for key in ("encoder", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"weights {spec!r}: the file holds no state dict")
    state: StateDict = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(
                f"weights {spec!r}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                "expected a state dict or a raysweep checkpoint with an 'encoder' entry"
            )
        key = str(key)
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        state[key] = value
    for prefix in SUBMODULE_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            break
    return _checked_tensors({k: v for k, v in state.items() if not k.startswith("fc.")}, spec)


def _checked_tensors(state: Mapping[str, object], spec: str) -> StateDict:
    """``state`` when every entry is a finite tensor, else a one-line :class:`WeightsError`."""
    checked: StateDict = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"weights {spec!r}: entry {key!r} is a {type(value).__name__}, "
                               "not a tensor")
        if (value.is_floating_point() or value.is_complex()) and not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise WeightsError(f"weights {spec!r}: tensor {key} holds {bad} NaN or infinite "
                               f"value(s) of {value.numel()}; a diverged run's weights?")
        checked[key] = value
    return checked


@dataclass(frozen=True)
class KeyLayout:
    """Where a checkpoint format keeps the encoder's tensors.

    ``containers``: the nested entries tried in order (``()`` is the loaded object itself);
    ``prefixes``: the encoder's key prefix, the first one any key has (``""`` matches all);
    ``heads``: prefixes, after that one, of heads left out; ``rename`` maps the remaining
    names onto the encoder's torchvision names."""

    containers: tuple[tuple[str, ...], ...] = (("state_dict",), ())
    prefixes: tuple[str, ...] = ("",)
    heads: tuple[str, ...] = ("fc.",)
    rename: Callable[[str], str] | None = None


#: lightly's ``nn.Sequential(*list(resnet.children())[:-1])``: child index -> torchvision name.
_SEQUENTIAL_RESNET = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3",
                      "7": "layer4"}


def _sequential_names(key: str) -> str:
    head, _, rest = key.partition(".")
    return f"{_SEQUENTIAL_RESNET[head]}.{rest}" if head in _SEQUENTIAL_RESNET else key


_HUB = KeyLayout(prefixes=("module.", ""), heads=("fc.", "projection_head.", "prototypes."))
_VISSL_TRUNK = ("classy_state_dict", "base_model", "model", "trunk")

#: Format name (:data:`raysweep.config.weight_formats.WEIGHT_FORMATS`) -> its key layout.
LAYOUTS: dict[str, KeyLayout] = {
    "solo-learn": KeyLayout(prefixes=("backbone.",)),
    "lightly": KeyLayout(prefixes=("backbone.",), rename=_sequential_names),
    "moco": KeyLayout(prefixes=("module.encoder_q.", "encoder_q.")),
    "swav": _HUB,
    "dino": _HUB,
    "byol": KeyLayout(prefixes=("module.", "")),
    "simclr": KeyLayout(prefixes=("module.", "")),
    "infomin": KeyLayout(containers=(("model",), ()), prefixes=("module.encoder.", "encoder.")),
    "vissl": KeyLayout(containers=(_VISSL_TRUNK, ("model_state_dict",), ()),
                       prefixes=("_feature_blocks.", "trunk._feature_blocks.", "trunk.")),
    "mmpretrain": KeyLayout(prefixes=("backbone.",)),
    "timm": KeyLayout(prefixes=("module.", "")),
}


def _container(obj: object, layout: KeyLayout) -> Mapping | None:
    for path in layout.containers:
        node = obj
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and node:
            return node
    return None


def _key_starts(keys: list[str]) -> str:
    starts = sorted({key.split(".", 1)[0] + "." for key in keys})
    return ", ".join(starts[:4]) + (", ..." if len(starts) > 4 else "")


def layout_state_dict(obj: object, fmt: str, spec: str) -> StateDict:
    """The encoder's state dict (torchvision names, no heads) in a checkpoint of format ``fmt``.

    One-line :class:`WeightsError` when the file has no such entry or no key under the
    layout's prefix (naming what the file's keys start with)."""
    layout = LAYOUTS[fmt]
    found = _container(obj, layout)
    if found is None:
        where = " or ".join(".".join(path) for path in layout.containers if path)
        raise WeightsError(f"weights {spec!r}: not a {fmt} checkpoint: no state dict under "
                           f"{where} nor at the top level ({WEIGHT_FORMATS[fmt]})")
    keys = [str(key) for key in found]
    prefix = next((p for p in layout.prefixes if any(k.startswith(p) for k in keys)), None)
    if prefix is None:
        raise WeightsError(
            f"weights {spec!r}: not a {fmt} checkpoint: no key starts with "
            f"{' or '.join(layout.prefixes)} ({WEIGHT_FORMATS[fmt]}); this file's keys start "
            f"with {_key_starts(keys)}")
    state: dict[str, object] = {}
    for key, value in found.items():
        name = str(key)
        if not name.startswith(prefix):
            continue
        name = name[len(prefix):]
        if name.startswith(layout.heads):
            continue
        state[layout.rename(name) if layout.rename else name] = value
    return _checked_tensors(state, spec)


def _random(argument: str, arch: str, spec: str) -> StateDict | None:
    if argument:
        raise WeightsError(f"weights {spec!r}: 'random' takes no argument")
    return None


def _torchvision_file(argument: str, arch: str, spec: str) -> tuple[Path, str]:
    """(hub cache path, download url) of a torchvision weights enum member."""
    try:
        enum = get_model_weights(arch)
    except ValueError as exc:
        raise WeightsError(f"weights {spec!r}: torchvision has no weights for {arch}") from exc
    names = [w.name for w in enum]
    if argument not in names:
        raise WeightsError(f"weights {spec!r}: {arch} has torchvision weights {names}, not {argument!r}")
    url = enum[argument].url
    return hub_checkpoint_path(os.path.basename(urlparse(url).path)), url


def _torchvision(argument: str, arch: str, spec: str) -> StateDict:
    path, url = _torchvision_file(argument, arch, spec)
    return extract_state_dict(_read(path, spec, url), spec)


def _hub_file(name: str, arch: str, spec: str) -> tuple[str, str]:
    """(download url, hub file name) of hub model ``name`` for encoder ``arch``."""
    if (name, arch) in HUB_VARIANTS:
        return HUB_VARIANTS[(name, arch)]
    if arch != "resnet50":
        archs = ["resnet50", *(a for n, a in HUB_VARIANTS if n == name)]
        published = " and ".join(archs) if len(archs) > 1 else "a resnet50"
        raise WeightsError(f"weights {spec!r}: {name} publishes {published} only, not {arch}")
    return HUB_MODELS[name]


def _hub(name: str) -> Callable[[str, str, str], StateDict]:
    def resolve(argument: str, arch: str, spec: str) -> StateDict:
        if argument:
            raise WeightsError(f"weights {spec!r}: {name!r} takes no argument")
        url, filename = _hub_file(name, arch, spec)
        return extract_state_dict(_read(hub_checkpoint_path(filename), spec, url), spec)

    return resolve


def _file(argument: str, arch: str, spec: str) -> StateDict:
    if not argument:
        raise WeightsError(f"weights {spec!r}: give a path, as in 'file:/path/to/encoder.pt'")
    return extract_state_dict(_read(storage_path(argument), spec), spec)


def _layout(fmt: str) -> Callable[[str, str, str], StateDict]:
    def resolve(argument: str, arch: str, spec: str) -> StateDict:
        if not argument:
            raise WeightsError(f"weights {spec!r}: give a path, as in '{fmt}:/path/to/file'")
        return layout_state_dict(_read(storage_path(argument), spec), fmt, spec)

    return resolve


#: Weight-source registry: kind (the part before ``:``) -> resolver(argument, arch, spec).
WEIGHT_SOURCES: dict[str, Callable[[str, str, str], StateDict | None]] = {
    "random": _random,
    "torchvision": _torchvision,
    "barlowtwins": _hub("barlowtwins"),
    "vicreg": _hub("vicreg"),
    "file": _file,
    **{fmt: _layout(fmt) for fmt in LAYOUTS},
}


def resolve_weights(spec: str, arch: str) -> StateDict | None:
    """The state dict named by ``spec`` for architecture ``arch`` (``None`` for ``random``)."""
    kind, _, argument = spec.partition(":")
    if kind not in WEIGHT_SOURCES:
        raise WeightsError(
            f"unknown weights {spec!r}; use one of: random, torchvision:IMAGENET1K_V1, "
            "torchvision:IMAGENET1K_V2, barlowtwins, vicreg, file:PATH, or FORMAT:PATH with "
            f"FORMAT one of {', '.join(LAYOUTS)}"
        )
    return WEIGHT_SOURCES[kind](argument, arch, spec)


def weights_file(spec: str, arch: str) -> AnyPath | None:
    """The file that weights ``spec`` are read from for ``arch`` (None for ``random``), whether
    or not it exists: what identifies the weights by content (its bytes' digest)."""
    kind, _, argument = spec.partition(":")
    if kind == "random":
        return None
    if kind == "torchvision":
        return _torchvision_file(argument, arch, spec)[0]
    if kind in HUB_MODELS:
        return hub_checkpoint_path(_hub_file(kind, arch, spec)[1])
    if (kind == "file" or kind in LAYOUTS) and argument:
        return storage_path(argument)
    resolve_weights(spec, arch)  # raises the one-line error of an unknown or malformed spec
    return None


def load_encoder_weights(encoder: nn.Module, state: StateDict, spec: str) -> LoadReport:
    """Copy ``state`` into ``encoder``; one-line :class:`WeightsError` on any mismatch.

    Shape mismatches and missing encoder tensors are errors; extra tensors are warned about,
    except for a ``FORMAT:PATH`` source, whose layout accounts for every tensor it keeps: there
    they are errors too. ``num_batches_tracked`` counters may be absent (older checkpoints) and
    are then left as is.
    """
    arch = getattr(encoder, "arch", type(encoder).__name__)
    own = encoder.state_dict()
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    if mismatched:
        k = mismatched[0]
        raise WeightsError(
            f"weights {spec!r} do not fit {arch}: {k} has shape {tuple(state[k].shape)} in the "
            f"file but {tuple(own[k].shape)} in the encoder ({len(mismatched)} tensors differ; "
            "a checkpoint of another architecture?)"
        )
    missing = tuple(
        k for k in own if k not in state and not k.endswith("num_batches_tracked")
    )
    unexpected = tuple(k for k in state if k not in own)
    strict = spec.partition(":")[0] in LAYOUTS
    if missing or (strict and unexpected):
        raise WeightsError(f"weights {spec!r} do not fit {arch}: {_key_counts(missing, unexpected)}"
                           " (a checkpoint of another architecture or layout?)")
    if unexpected:
        warnings.warn(
            f"weights {spec!r}: {len(unexpected)} tensors not used by {arch}, e.g. "
            f"{unexpected[0]}",
            stacklevel=2,
        )
    encoder.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return LoadReport(spec, missing=tuple(k for k in own if k not in state), unexpected=unexpected)


def _key_counts(missing: tuple[str, ...], unexpected: tuple[str, ...]) -> str:
    """``3 encoder tensors missing from the file (a, b, c) and 1 unexpected (d)``."""
    def some(keys: tuple[str, ...]) -> str:
        return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} encoder tensors are missing from the file ({some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} tensors in the file are unexpected ({some(unexpected)})")
    return " and ".join(parts)
