"""Typed, frozen, validated specs: the single source of every default (docs/design.md principle 4).

A spec file is YAML (read with ``yaml.safe_load``) describing an :class:`ExperimentSpec`: named
datasets, a ``pretrain`` stage, an ``evaluate`` stage, optional ``search`` and ``report``
sections. Every default below is the paper's (docs/protocol.md) unless marked otherwise.

Validation is strict: an unknown key, a wrong type or an out-of-range value raises
:class:`~raysweep.errors.SpecError` with one line naming the file and the key path, and for an
unknown key the closest valid key::

    spec.yaml: pretrain.base.lamda_offdiag: unknown key (did you mean 'lambda_offdiag'?)

The same checks run when specs are built in Python (``__post_init__``), so a notebook user gets
the same errors. A spec file is checked whole: :func:`spec_from_data` reports every problem it
finds at once (:class:`~raysweep.errors.SpecProblems`, one line each), not only the first.

Numbers: PyYAML reads ``1e-3`` (no dot) as a string; float fields therefore also accept numeric
strings, and simple fractions such as ``1/8192`` (the paper's lambda).
"""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
import itertools
import math
import re
import string
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from raysweep.errors import SpecError, SpecProblems
from raysweep.ssl.methods import METHODS

# --------------------------------------------------------------------------------------------
# Field checks: each returns None when the value is fine, else a short reason.
# --------------------------------------------------------------------------------------------

Check = Callable[[Any], "str | None"]


def _positive(value: Any) -> str | None:
    return None if value is None or value > 0 else f"must be > 0, got {value!r}"


def _non_negative(value: Any) -> str | None:
    return None if value is None or value >= 0 else f"must be >= 0, got {value!r}"


def _unit_interval_open_closed(value: Any) -> str | None:
    return None if value is None or 0 < value <= 1 else f"must be in (0, 1], got {value!r}"


def _unit_interval_open(value: Any) -> str | None:
    return None if value is None or 0 < value < 1 else f"must be in (0, 1), got {value!r}"


def _fraction_or_zero(value: Any) -> str | None:
    return None if value is None or 0 <= value < 1 else f"must be in [0, 1), got {value!r}"


def _between(lo: float, hi: float) -> Check:
    def check(value: Any) -> str | None:
        return None if value is None or lo <= value <= hi else (
            f"must be in [{lo}, {hi}], got {value!r}")
    return check


def _non_empty(value: Any) -> str | None:
    return None if value is None or len(value) > 0 else "must not be empty"


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")


def _name(value: Any) -> str | None:
    if value is None or _NAME_RE.match(value):
        return None
    return f"must be a name of letters, digits and _ . + = - (no spaces or slashes), got {value!r}"


def spec_field(default: Any = dataclasses.MISSING, *, checks: tuple[Check, ...] = (),
               doc: str = "", default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with validation checks and a one-line doc (shown by ``--help`` tools)."""
    kwargs: dict[str, Any] = {"metadata": {"checks": checks, "doc": doc}}
    if default_factory is not dataclasses.MISSING:
        kwargs["default_factory"] = default_factory
    elif default is not dataclasses.MISSING:
        kwargs["default"] = default
    return field(**kwargs)


def join_key_path(path: tuple[str, ...]) -> str:
    """``("pretrain", "[0]", "lambda_offdiag")`` -> ``pretrain[0].lambda_offdiag``."""
    text = ""
    for part in path:
        text += part if (part.startswith("[") or not text) else f".{part}"
    return text or "<top level>"


class _FieldError(SpecError):
    """A validation failure at a key path (joined into one line by :func:`load_spec`)."""

    def __init__(self, path: tuple[str, ...], reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{join_key_path(path)}: {reason}")

    def under(self, *prefix: str) -> _FieldError:
        return _FieldError(tuple(prefix) + self.path, self.reason)


#: Set while :func:`_collect` builds a spec whose cross-field problems it gathers itself.
_DEFER_CROSS_CHECKS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "raysweep_defer_cross_checks", default=False)


class Spec:
    """Base of every spec dataclass: type and range checks on construction."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            coerced = _coerce(value, hints[f.name], (f.name,))
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)
            for check in f.metadata.get("checks", ()):
                reason = check(coerced)
                if reason:
                    raise _FieldError((f.name,), reason)
        if not _DEFER_CROSS_CHECKS.get():
            self.validate()

    def validate(self) -> None:
        """Raise the first of :meth:`problems` (the Python API's fail-fast behaviour)."""
        problems = self.problems()
        if problems:
            raise problems[0]

    def problems(self) -> list[_FieldError]:
        """Cross-field checks: one ``_FieldError`` per problem, each naming its key."""
        return []

    def replace(self, **changes: Any):
        """A validated copy with ``changes`` applied (dotted keys reach into nested specs)."""
        return from_dict(type(self), _apply_overrides(to_dict(self), changes))


class FrozenMapping(dict):
    """A read-only dict for mapping fields of frozen specs: picklable (Ray ships specs to
    workers, which ``types.MappingProxyType`` cannot do), comparable and hashable."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("spec mappings are read-only; use spec.replace(...)")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _refuse  # type: ignore[assignment]

    def __reduce__(self):
        return (FrozenMapping, (dict(self),))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(repr(sorted(self.items(), key=repr)))


# --------------------------------------------------------------------------------------------
# Type coercion: YAML values -> typed dataclass fields.
# --------------------------------------------------------------------------------------------

_FRACTION_RE = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*/\s*(\d+(?:\.\d*)?)\s*$")


def _parse_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _FRACTION_RE.match(value)
        if match:
            denominator = float(match.group(2))
            return float(match.group(1)) / denominator if denominator else None
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (Mapping, dict, typing.Mapping):
        return f"mapping of {_type_name(typing.get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: tuple[str, ...]) -> Any:
    """Check ``value`` against type ``tp`` (converting YAML lists/dicts); raise _FieldError."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except _FieldError as err:
                errors.append(err)
        # Report the deepest error when a nested spec was clearly meant, and the one arm's
        # own reason for an optional value (``float | None``: "expected a finite number").
        deepest = max(errors, key=lambda e: len(e.path))
        if len(deepest.path) > len(path) or len(errors) == 1:
            raise deepest
        raise _FieldError(path, f"expected {_type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed and type(value) in {type(a) for a in allowed}:
            return value
        hint = _closest(str(value), [str(a) for a in allowed])
        raise _FieldError(path, f"must be one of {', '.join(map(repr, allowed))}, got "
                                f"{value!r}{hint}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _FieldError(path, f"expected {_type_name(tp)}, got {_describe(value)}")
        args = typing.get_args(tp)
        item_tp = args[0]
        return tuple(_coerce(v, item_tp, path + (f"[{i}]",)) for i, v in enumerate(value))
    if origin in (Mapping, dict, typing.Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _FieldError(path, f"expected {_type_name(tp)}, got {_describe(value)}")
        args = typing.get_args(tp) or (str, Any)
        return FrozenMapping({
            _coerce(k, args[0], path): _coerce(v, args[1], path + (str(k),))
            for k, v in value.items()})
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _FieldError(path, f"expected a mapping ({tp.__name__}), got {_describe(value)}")
        try:
            return from_dict(tp, value)
        except _FieldError as err:
            raise err.under(*path) from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _FieldError(path, f"expected true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _FieldError(path, f"expected an integer, got {_describe(value)}")
    if tp is float:
        parsed = _parse_float(value)
        if parsed is None or not math.isfinite(parsed):
            raise _FieldError(path, f"expected a finite number, got {_describe(value)}")
        return parsed
    if tp is str:
        if isinstance(value, str):
            return value
        raise _FieldError(path, f"expected a string, got {_describe(value)}")
    if isinstance(value, tp):
        return value
    raise _FieldError(path, f"expected {_type_name(tp)}, got {_describe(value)}")


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def from_dict(cls: type, data: Mapping[str, Any]):
    """Build spec ``cls`` from a plain mapping; unknown keys are errors naming the closest key.

    Raises the first problem (:func:`spec_from_data` reports them all)."""
    problems = _field_problems(cls, data)
    if problems:
        raise problems[0]
    return cls(**data)


def _field_problems(cls: type, data: Mapping[str, Any]) -> list[_FieldError]:
    """Unknown and missing keys of ``data`` for spec class ``cls`` (all of them)."""
    names = [f.name for f in dataclasses.fields(cls)]
    problems = []
    for key in data:
        if key not in names:
            hint = _closest(str(key), names) or f" (valid keys: {', '.join(names)})"
            problems.append(_FieldError((str(key),), f"unknown key{hint}"))
    problems.extend(_FieldError((f.name,), "required key is missing")
                    for f in dataclasses.fields(cls)
                    if f.name not in data and f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING)
    return problems


def _spec_classes(tp: Any) -> list[type]:
    """The spec dataclasses among ``tp`` and its union members."""
    members = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
    return [m for m in members if isinstance(m, type) and dataclasses.is_dataclass(m)]


def _collect_value(value: Any, tp: Any, path: tuple[str, ...]) -> tuple[Any, list[_FieldError]]:
    """Like :func:`_coerce`, but descends into nested specs and gathers every problem."""
    classes = _spec_classes(tp)
    if classes and isinstance(value, Mapping):
        return _collect(classes[0], value, path)
    origin = typing.get_origin(tp)
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        item_tp = typing.get_args(tp)[0]
        if _spec_classes(item_tp):
            built, problems = [], []
            for index, item in enumerate(value):
                item_value, item_problems = _collect_value(item, item_tp, path + (f"[{index}]",))
                built.append(item_value)
                problems.extend(item_problems)
            return tuple(built), problems
    if origin in (Mapping, dict, typing.Mapping) and isinstance(value, Mapping):
        value_tp = typing.get_args(tp)[1]
        if _spec_classes(value_tp):
            built_map, problems = {}, []
            for key, item in value.items():
                built_map[key], item_problems = _collect_value(item, value_tp, path + (str(key),))
                problems.extend(item_problems)
            return built_map, problems
    try:
        return _coerce(value, tp, path), []
    except _FieldError as err:
        return None, [err]


def _collect(cls: type, data: Any, path: tuple[str, ...] = ()) -> tuple[Any, list[_FieldError]]:
    """Build spec ``cls`` from ``data`` and return ``(spec, [])``, or ``(None, problems)`` with
    every problem found: unknown, missing and mistyped keys, ranges, cross-field checks.

    Children are built first; a spec's cross-field checks run only once its own fields are
    fine (they would otherwise report consequences of the same mistake twice).
    """
    if isinstance(data, cls):
        return data, []
    if not isinstance(data, Mapping):
        return None, [_FieldError(path, f"expected a mapping ({cls.__name__}), got "
                                        f"{_describe(data)}")]
    problems = [err.under(*path) for err in _field_problems(cls, data)]
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        built, field_problems = _collect_value(data[f.name], hints[f.name], path + (f.name,))
        if not field_problems:
            for check in f.metadata.get("checks", ()):
                reason = check(built)
                if reason:
                    field_problems = [_FieldError(path + (f.name,), reason)]
                    break
        problems.extend(field_problems)
        values[f.name] = built
    if problems:
        return None, problems
    token = _DEFER_CROSS_CHECKS.set(True)
    try:
        spec = cls(**values)
    except _FieldError as err:
        return None, [err.under(*path)]
    finally:
        _DEFER_CROSS_CHECKS.reset(token)
    cross = [err.under(*path) for err in spec.problems()]
    return (None, cross) if cross else (spec, [])


def to_dict(spec: Any) -> Any:
    """A spec as plain dicts/lists (the inverse of :func:`from_dict`)."""
    if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
        return {f.name: to_dict(getattr(spec, f.name)) for f in dataclasses.fields(spec)}
    if isinstance(spec, Mapping):
        return {k: to_dict(v) for k, v in spec.items()}
    if isinstance(spec, (list, tuple)):
        return [to_dict(v) for v in spec]
    return spec


def _apply_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any],
                     path: tuple[str, ...] = ()) -> dict[str, Any]:
    """Copy of ``base`` with dotted-key ``overrides`` applied (``encoder.weights: x``)."""
    result = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for dotted, value in overrides.items():
        parts = str(dotted).split(".")
        target = result
        for depth, part in enumerate(parts[:-1]):
            nested = target.get(part)
            if nested is None:
                nested = {}
            elif not isinstance(nested, Mapping):
                raise _FieldError(path + tuple(parts[:depth + 1]),
                                  "is not a mapping, cannot set a key inside it")
            target[part] = dict(nested)
            target = target[part]
        target[parts[-1]] = value
    return result


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

SourceKind = Literal["folder", "manifest", "medmnist", "digits"]


@dataclass(frozen=True)
class SourceSpec(Spec):
    """One image source. ``kind`` selects the reader (``raysweep.data.sources``):

    - ``folder``: ``path`` is a directory with one sub-folder per class.
    - ``manifest``: ``path`` is a CSV with columns ``path,label[,split]``; image paths are
      relative to ``root`` (default: the manifest's directory) and must lie inside it unless
      ``allow_outside_root``. The layout of ISIC, UFES-20 and DermNet downloads.
    - ``medmnist``: ``name`` (e.g. ``breastmnist``) read as ``<root>/<name>.npz`` (root defaults
      to ``~/.medmnist``, where the ``medmnist`` package downloads), or ``path`` to an ``.npz``.
    - ``digits``: scikit-learn's bundled 8x8 handwritten digits (offline demo set).
    """

    kind: SourceKind = spec_field(doc="reader: folder | manifest | medmnist | digits")
    path: str | None = spec_field(None, doc="directory, manifest CSV or .npz file")
    root: str | None = spec_field(None, doc="manifest image root / medmnist download root")
    allow_outside_root: bool = spec_field(
        False, doc="manifest: accept image paths outside its folder (or root): ../, absolute")
    name: str | None = spec_field(None, doc="medmnist dataset flag, e.g. breastmnist")
    split: str | None = spec_field(None, doc="use only this split of a source that has splits")
    classes: tuple[str, ...] | None = spec_field(
        None, checks=(_non_empty,), doc="keep only these classes (and fix their order)")
    labelled: bool = spec_field(True, doc="false: labels are ignored (pre-training only)")
    oversample: float = spec_field(
        1.0, checks=(_positive,), doc="copies of this source in a mixture (IUD = 2 x IU + D)")
    class_oversample: Mapping[str, float] = spec_field(
        default_factory=dict, doc="copies per class (OSCC 10:1), on top of `oversample`")
    skip_corrupt: bool = spec_field(False, doc="warn about and skip unreadable images")
    watermark_cutout: bool = spec_field(False, doc="apply the centre cutout (DermNet)")

    def problems(self) -> list[_FieldError]:
        problems = []
        if self.kind in ("folder", "manifest") and not self.path:
            problems.append(_FieldError(("path",), f"required for a {self.kind} source"))
        if self.kind == "medmnist" and not (self.path or self.name):
            problems.append(_FieldError(("name",), "a medmnist source needs `name` or `path`"))
        problems.extend(_FieldError(("class_oversample", cls_name), f"must be > 0, got {ratio!r}")
                        for cls_name, ratio in self.class_oversample.items() if not ratio > 0)
        return problems


#: Bounds of ``DatasetSpec.image_size``: the 8 px digits up to 4096 px (16 Mpx per image).
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 4096


@dataclass(frozen=True)
class DatasetSpec(Spec):
    """A dataset: the union of ``sources`` (with their oversampling ratios), decoded once at
    ``image_size`` into the cache, split into train/val/test.

    Splits: a source's own split (MedMNIST's, a manifest's ``split`` column) is used when it has
    one; otherwise a stratified split by ``split_seed`` with ``test_fraction`` / ``val_fraction``.
    ``label_fraction`` / ``label_count`` then keep a stratified subset of the train split's
    labels (the thesis' 100 / 250 / 1000 labels; Chaves et al.'s 1 / 10 / 100 %), or
    ``label_per_class`` a class-balanced one (the thesis' 25 per class, section 5.2). The split
    seed is separate from training seeds.
    """

    sources: tuple[SourceSpec, ...] = spec_field(checks=(_non_empty,), doc="sources to unite")
    image_size: int = spec_field(256, checks=(_between(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),),
                                 doc="square side in pixels (paper: 256)")
    split_seed: int = spec_field(0, checks=(_non_negative,), doc="seed of splits and subsets")
    test_fraction: float = spec_field(0.2, checks=(_unit_interval_open,),
                                      doc="test share when a source has no split")
    val_fraction: float = spec_field(0.0, checks=(_fraction_or_zero,),
                                     doc="validation share when a source has no split")
    label_fraction: float = spec_field(1.0, checks=(_unit_interval_open_closed,),
                                       doc="stratified share of training labels kept")
    label_count: int | None = spec_field(None, checks=(_positive,),
                                         doc="exact number of training labels kept (stratified)")
    label_rounding: Literal["nearest", "down"] = spec_field(
        "nearest", doc="label_fraction x labels: nearest (halves up) or down (Chaves: 10% of "
                       "14,805 = 1,480)")
    label_per_class: int | None = spec_field(
        None, checks=(_positive,),
        doc="class-balanced subset: this many training labels of each class (all of a "
            "smaller class; the thesis' 25 per class)")
    cache_dir: str | None = spec_field(None, doc="decode cache (default ~/.cache/raysweep)")

    def problems(self) -> list[_FieldError]:
        problems = []
        if self.label_count is not None and self.label_fraction != 1.0:
            problems.append(_FieldError(("label_count",),
                                        "give label_count or label_fraction, not both"))
        if self.label_per_class is not None and (self.label_count is not None
                                                 or self.label_fraction != 1.0):
            problems.append(_FieldError(("label_per_class",),
                                        "give label_per_class, label_count or label_fraction, "
                                        "not two of them"))
        if self.test_fraction + self.val_fraction >= 1:
            problems.append(_FieldError(("val_fraction",),
                                        "test_fraction + val_fraction must be < 1"))
        return problems


# --------------------------------------------------------------------------------------------
# Encoders, pre-training, evaluation
# --------------------------------------------------------------------------------------------

#: Augmentation pipelines of ``raysweep.augment`` (named here so that specs validate without
#: importing kornia). Two-view pipelines are for SSL; single-view ones for fine-tuning and TTA.
TWO_VIEW_PIPELINES = ("barlow_twins", "simclr", "simclr_medical", "simclr_short",
                      "simclr_grey")
AUGMENTATION_PIPELINES = TWO_VIEW_PIPELINES + ("supervised", "supervised_upright")


def _augmentation(value: Any) -> str | None:
    if value in AUGMENTATION_PIPELINES:
        return None
    return (f"unknown pipeline {value!r}{_closest(str(value), list(AUGMENTATION_PIPELINES))}; "
            f"choose one of {', '.join(AUGMENTATION_PIPELINES)}")

EncoderName = Literal["resnet18", "resnet34", "resnet50", "small_resnet"]

PRETRAIN_PREFIX = "pretrain:"


def pretrain_reference(weights: str) -> str | None:
    """The run name in a ``pretrain:NAME`` weight source, else None."""
    return weights[len(PRETRAIN_PREFIX):] if weights.startswith(PRETRAIN_PREFIX) else None


@dataclass(frozen=True)
class EncoderSpec(Spec):
    """An encoder architecture and its initial weights (``raysweep.models.weights`` registry):
    ``random``, ``torchvision:IMAGENET1K_V1`` / ``V2``, ``barlowtwins``, ``vicreg``,
    ``file:PATH``, or ``pretrain:NAME`` (the output of this experiment's pretrain run NAME)."""

    name: EncoderName = spec_field("resnet50", doc="architecture")
    weights: str = spec_field("random", doc="weight source")

    def problems(self) -> list[_FieldError]:
        known = ("random", "torchvision:", "barlowtwins", "vicreg", "file:", "pretrain:")
        if not any(self.weights == k or (k.endswith(":") and self.weights.startswith(k)
                                         and len(self.weights) > len(k)) for k in known):
            hint = _closest(self.weights, ["random", "barlowtwins", "vicreg",
                                           "torchvision:IMAGENET1K_V1", "torchvision:IMAGENET1K_V2"])
            return [_FieldError(("weights",), f"unknown weight source {self.weights!r}{hint}; "
                                              "use random, torchvision:ENUM, barlowtwins, vicreg, "
                                              "file:PATH or pretrain:NAME")]
        return []


def _pretrain_method(value: Any) -> str | None:
    if value in METHODS:
        return None
    return (f"unknown method {value!r}{_closest(str(value), list(METHODS))}; "
            f"choose one of {', '.join(METHODS)}")


Trainable = Literal["encoder", "last_block"]


@dataclass(frozen=True)
class PretrainSpec(Spec):
    """One pre-training run (Ray Train ``TorchTrainer``), from scratch or *further* from given
    weights (docs/protocol.md "Further pre-training"): a fresh projector; ``frozen_epochs`` with the
    encoder frozen (Adam, ``frozen_lr``); then ``epochs`` of 1cycle training of the ``trainable``
    part (``encoder`` = the paper's SSL, ``last_block`` = SSL_p)."""

    name: str = spec_field(checks=(_name,), doc="run name (unique within the experiment)")
    data: DatasetSpec = spec_field(doc="pre-training data (labels ignored unless supervised)")
    method: str = spec_field("barlow_twins", checks=(_pretrain_method,),
                             doc="training objective (raysweep.ssl.methods)")
    encoder: EncoderSpec = spec_field(default_factory=EncoderSpec, doc="architecture + weights")
    further: bool = spec_field(True, doc="further pre-training protocol (frozen first epoch)")
    trainable: Trainable = spec_field("encoder", doc="encoder (SSL) or last_block (SSL_p)")
    epochs: int = spec_field(100, checks=(_positive,), doc="epochs after the frozen epoch")
    frozen_epochs: int = spec_field(1, checks=(_non_negative,), doc="encoder-frozen epochs")
    frozen_lr: float = spec_field(1e-3, checks=(_positive,), doc="Adam lr while frozen")
    batch_size: int = spec_field(128, checks=(_positive,), doc="global batch (paper: 128)")
    grad_accum_steps: int = spec_field(1, checks=(_positive,), doc="micro-batches per step")
    optimizer: Literal["adam", "adamw"] = spec_field("adam", doc="adam (paper) | adamw (SimCLR)")
    schedule: Literal["onecycle", "cosine"] = spec_field("onecycle", doc="lr schedule")
    lr_max: float | None = spec_field(None, checks=(_positive,),
                                      doc="peak lr; null = LR finder on rank 0")
    lr_min: float = spec_field(1e-5, checks=(_positive,), doc="cosine schedule's final lr")
    lr_finder_iters: int = spec_field(100, checks=(_positive,), doc="LR finder iterations")
    pct_start: float = spec_field(0.25, checks=(_unit_interval_open,), doc="1cycle warm-up share")
    div_factor: float = spec_field(25.0, checks=(_positive,), doc="1cycle: lr_max / initial lr")
    final_div_factor: float = spec_field(1e5, checks=(_positive,),
                                         doc="1cycle: lr_max / final lr (fastai's div_final)")
    max_momentum: float = spec_field(0.95, checks=(_between(0.0, 1.0),),
                                     doc="1cycle: Adam beta1 max")
    base_momentum: float = spec_field(0.85, checks=(_between(0.0, 1.0),),
                                      doc="1cycle: Adam beta1 min")
    weight_decay: float = spec_field(1.5e-6, checks=(_non_negative,), doc="(code: 1.5e-6)")
    lambda_offdiag: float = spec_field(1 / 8192, checks=(_non_negative,),
                                       doc="Barlow Twins off-diagonal weight (eq. 1)")
    alpha: float = spec_field(0.01, checks=(_non_negative,),
                              doc="sparsity weight on the projector's last layer (eq. 2)")
    temperature: float = spec_field(0.07, checks=(_positive,), doc="SimCLR NT-Xent temperature")
    projector: tuple[int, ...] = spec_field((8192, 8192, 8192), checks=(_non_empty,),
                                            doc="projector widths")
    augmentation: str = spec_field("barlow_twins", checks=(_augmentation,),
                                   doc="view pipeline (raysweep.augment)")
    strength: float = spec_field(1.0, checks=(_between(0.0, 2.0),), doc="augmentation strength")
    seed: int = spec_field(0, checks=(_non_negative,), doc="training seed")
    num_workers: int = spec_field(1, checks=(_positive,), doc="DDP workers")
    use_gpu: bool | None = spec_field(None, doc="null = use GPUs when the cluster has them")
    resources_per_worker: Mapping[str, float] = spec_field(default_factory=dict,
                                                           doc="e.g. {CPU: 4}")
    precision: Literal["auto", "fp32", "bf16"] = spec_field("auto", doc="auto = bf16 on GPU")
    channels_last: bool | None = spec_field(None, doc="null = on for GPUs")
    checkpoint_every: int = spec_field(1, checks=(_positive,), doc="epochs between checkpoints")
    max_failures: int = spec_field(3, checks=(_non_negative,), doc="worker failures tolerated")
    deterministic: bool = spec_field(False, doc="deterministic algorithms (bit-reproducible CPU)")
    proxy_every: int = spec_field(0, checks=(_non_negative,),
                                  doc="kNN/linear proxy every k epochs (0 = off)")
    proxy: Literal["knn", "linear"] = spec_field("knn", doc="downstream proxy metric")
    proxy_data: DatasetSpec | None = spec_field(None, doc="labelled data for the proxy")
    keys: Mapping[str, str] = spec_field(default_factory=dict,
                                         doc="condition keys (initial, further_data, ...)")

    def problems(self) -> list[_FieldError]:
        problems = [_FieldError(("projector", f"[{index}]"), f"must be > 0, got {width}")
                    for index, width in enumerate(self.projector) if width <= 0]
        if self.proxy_every and self.proxy_data is None:
            problems.append(_FieldError(("proxy_data",), "required when proxy_every > 0"))
        if self.base_momentum > self.max_momentum:
            problems.append(_FieldError(("base_momentum",), "must not exceed max_momentum"))
        ranks = self.num_workers * self.grad_accum_steps
        if self.batch_size % ranks:
            problems.append(_FieldError(
                ("batch_size",), f"{self.batch_size} must be a multiple of num_workers x "
                                 f"grad_accum_steps = {ranks} ({self.num_workers} x "
                                 f"{self.grad_accum_steps})"))
        gpus = self.resources_per_worker.get("GPU")
        if gpus is not None and (gpus < 0 or gpus != int(gpus)):
            problems.append(_FieldError(("resources_per_worker", "GPU"), f"must be a whole number "
                                        f"of GPUs (DDP ranks never share one), got {gpus!r}"))
        elif gpus is not None and self.use_gpu is not None and bool(gpus) != self.use_gpu:
            problems.append(_FieldError(("resources_per_worker", "GPU"), f"is {gpus:g} but "
                                        f"use_gpu is {str(self.use_gpu).lower()}"))
        method = METHODS.get(self.method)
        if method and method.needs_labels and not any(s.labelled for s in self.data.sources):
            problems.append(_FieldError(("data", "sources"), f"a {self.method} run needs a "
                                                             "labelled source (every source "
                                                             "has labelled: false)"))
        return problems


Protocol = Literal["finetune", "probe", "logistic"]

#: Metrics the logistic protocol may choose its regularisation by (``log_loss``: the lowest).
LogisticSelection = Literal["accuracy", "f1_weighted", "f1_macro", "balanced_accuracy",
                            "log_loss"]


@dataclass(frozen=True)
class LogisticSpec(Spec):
    """The ``logistic`` protocol (SimCLR's linear evaluation, Chen et al. 2020, appendix B.5;
    VISSL's): standardised frozen features, an L2-regularised multinomial logistic regression
    (scikit-learn, L-BFGS), its inverse regularisation C chosen on a stratified validation share
    of the labelled training data among ``c_num`` log-spaced values in [c_min, c_max], then
    refit on all the labelled training data (``raysweep.evaluate.logistic``)."""

    c_min: float = spec_field(1e-5, checks=(_positive,), doc="smallest C (strongest L2)")
    c_max: float = spec_field(1e3, checks=(_positive,), doc="largest C")
    c_num: int = spec_field(17, checks=(_between(1, 1000),),
                            doc="log-spaced C values (1: c_min only, no selection)")
    val_fraction: float = spec_field(0.2, checks=(_unit_interval_open,),
                                     doc="training-label share held out to choose C")
    select_by: LogisticSelection = spec_field("accuracy", doc="validation metric choosing C")
    class_weight: Literal["none", "balanced"] = spec_field(
        "none", doc="balanced: loss weights inversely proportional to class frequency")
    max_iter: int = spec_field(1000, checks=(_positive,), doc="L-BFGS iterations per fit")
    tol: float = spec_field(1e-4, checks=(_positive,), doc="L-BFGS tolerance")

    def problems(self) -> list[_FieldError]:
        if self.c_max < self.c_min:
            return [_FieldError(("c_max",), "must not be below c_min")]
        if self.c_num == 1 and self.c_max != self.c_min:
            return [_FieldError(("c_num",), "1 value: set c_max equal to c_min (that C)")]
        return []


#: Downstream optimisers: fastai's Adam (``AdamW``, betas (0.9, 0.99), eps 1e-5, the paper's
#: code), or torch's ``Adam`` / ``AdamW`` with torch's defaults (the thesis' Table 3.2).
DownstreamOptimizer = Literal["fastai_adam", "adam", "adamw"]
#: Downstream learning-rate schedules: fastai's 1cycle (the paper), ``MultiStepLR`` (the thesis'
#: frozen backbone) or a constant rate (the thesis' unfrozen backbone).
DownstreamSchedule = Literal["onecycle", "multistep", "constant"]


def _ascending_fractions(value: Any) -> str | None:
    if value is None:
        return None
    if any(not 0 < v <= 1 for v in value):
        return f"every milestone must be a fraction in (0, 1], got {list(value)}"
    if list(value) != sorted(value):
        return f"milestones must ascend, got {list(value)}"
    return None


@dataclass(frozen=True)
class EvaluationSpec(Spec):
    """The fine-tuning / linear-probe protocol (docs/protocol.md "Fine-tuning", fastai defaults),
    fine-tuning's optional validation curves, and the ``logistic`` protocol's settings.

    The optimiser and schedule default to the paper's (fastai's Adam, 1cycle at the LR finder's
    lr_max); ``optimizer`` / ``schedule`` select the thesis' downstream setups instead
    (docs/protocol.md "Downstream optimisers"): torch's AdamW with ``MultiStepLR`` for a frozen
    backbone, torch's Adam at a constant rate for an unfrozen one. Under ``multistep`` and
    ``constant`` the rate is ``lr_max`` (or the LR finder's when null)."""

    head_epochs: int = spec_field(1, checks=(_non_negative,), doc="head-only epochs")
    head_lr: float = spec_field(1e-3, checks=(_positive,), doc="Adam lr of the head-only epoch")
    bn_in_head_epoch: Literal["trainable", "frozen"] = spec_field(
        "trainable", doc="BatchNorm during the head epoch (fastai freeze: trainable)")
    epochs: int = spec_field(40, checks=(_positive,), doc="1cycle epochs")
    batch_size: int = spec_field(64, checks=(_positive,), doc="batch size")
    lr_max: float | None = spec_field(None, checks=(_positive,), doc="null = LR finder")
    lr_finder_iters: int = spec_field(100, checks=(_positive,), doc="LR finder iterations")
    lr_finder_start: float = spec_field(1e-7, checks=(_positive,), doc="LR finder first lr")
    lr_finder_end: float = spec_field(10.0, checks=(_positive,), doc="LR finder last lr")
    pct_start: float = spec_field(0.25, checks=(_unit_interval_open,), doc="1cycle warm-up share")
    div_factor: float = spec_field(25.0, checks=(_positive,), doc="lr_max / initial lr")
    final_div_factor: float = spec_field(1e5, checks=(_positive,),
                                         doc="lr_max / final lr (fastai's div_final)")
    max_momentum: float = spec_field(0.95, checks=(_between(0.0, 1.0),), doc="Adam beta1 max")
    base_momentum: float = spec_field(0.85, checks=(_between(0.0, 1.0),), doc="Adam beta1 min")
    weight_decay: float = spec_field(0.0, checks=(_non_negative,), doc="(code: 0)")
    optimizer: DownstreamOptimizer = spec_field(
        "fastai_adam", doc="fastai_adam (the paper's code) | adam | adamw (torch defaults; "
                           "the thesis' Table 3.2)")
    schedule: DownstreamSchedule = spec_field(
        "onecycle", doc="onecycle (fastai) | multistep (x gamma at milestones) | constant")
    milestones: tuple[float, ...] = spec_field(
        (0.6, 0.8), checks=(_non_empty, _ascending_fractions),
        doc="multistep: fractions of `epochs` at which the lr is multiplied by gamma")
    gamma: float = spec_field(0.1, checks=(_positive,), doc="multistep: lr factor per milestone")
    augmentation: str = spec_field("supervised", checks=(_augmentation,),
                                   doc="training and TTA pipeline (supervised_upright: no flips)")
    strength: float = spec_field(1.0, checks=(_between(0.0, 2.0),), doc="augmentation strength")
    tta_views: int = spec_field(3, checks=(_non_negative,), doc="TTA views (0 = no TTA)")
    seed_scope: Literal["head", "all"] = spec_field(
        "head", doc="head: only the head init varies with the seed (paper)")
    batched_probes: bool = spec_field(True, doc="probe K seeds in one pass")
    device: str = spec_field("auto", doc="auto | cpu | cuda")
    validation_curves: bool = spec_field(
        False, doc="fine-tuning: metrics on the data's val split after every epoch")
    logistic: LogisticSpec = spec_field(default_factory=LogisticSpec,
                                        doc="the logistic protocol's settings")

    def problems(self) -> list[_FieldError]:
        problems = []
        if self.lr_finder_end <= self.lr_finder_start:
            problems.append(_FieldError(("lr_finder_end",), "must be greater than lr_finder_start"))
        if self.base_momentum > self.max_momentum:
            problems.append(_FieldError(("base_momentum",), "must not exceed max_momentum"))
        return problems


#: At most this many seeds per condition (the paper's 35; more is a typo such as ``1e23``).
MAX_SEEDS = 10_000
#: Seed indices stay below 2**31 (they are mixed into 64-bit generator seeds).
MAX_FIRST_SEED = 2**31 - 1 - MAX_SEEDS


@dataclass(frozen=True)
class EncoderCondition(Spec):
    """One encoder evaluated in the ``evaluate`` stage: a readable ``name`` (the condition), the
    encoder (weights may be ``pretrain:NAME``), its condition ``keys`` for the results table, and
    per-condition protocol overrides (e.g. the random-init baseline at 40 / 80 / 160 epochs)."""

    name: str = spec_field(checks=(_name,), doc="condition name")
    encoder: EncoderSpec = spec_field(default_factory=EncoderSpec, doc="architecture + weights")
    protocols: tuple[Protocol, ...] | None = spec_field(None, checks=(_non_empty,),
                                                        doc="null = the stage's protocols")
    keys: Mapping[str, str] = spec_field(default_factory=dict, doc="condition keys")
    overrides: Mapping[str, Any] = spec_field(default_factory=dict,
                                              doc="EvaluationSpec fields changed for this one")
    data: DatasetSpec | None = spec_field(None, doc="null = the stage's data (e.g. a label budget)")
    seeds: int | None = spec_field(
        None, checks=(_between(1, MAX_SEEDS),),
        doc="null = the stage's seeds; fewer for a costly baseline (the paper's Table 5: 5)")

    def problems(self) -> list[_FieldError]:
        _, problems = _collect(EvaluationSpec, _apply_overrides(to_dict(EvaluationSpec()),
                                                                self.overrides))
        return [err.under("overrides") for err in problems]


def _duplicate_names(names: list[str], path: tuple[str, ...]) -> list[_FieldError]:
    return [_FieldError(path + (f"[{index}]", "name"), f"duplicate name {name!r}")
            for index, name in enumerate(names) if name in names[:index]]


@dataclass(frozen=True)
class RepresentationSpec(Spec):
    """Representation analysis of every evaluated encoder, once per encoder and labelled data
    (``raysweep.evaluate.representation``): kNN accuracy, a linear-separability score and the
    silhouette coefficient of its frozen features on the test set, PCA and t-SNE embeddings of
    up to ``max_points`` test images (Jiang, thesis section 7.1)."""

    knn_k: int = spec_field(20, checks=(_positive,), doc="neighbours of the kNN classifier")
    separability_folds: int = spec_field(5, checks=(_between(2, 100),),
                                         doc="cross-validation folds of the separability score")
    max_points: int = spec_field(2000, checks=(_between(10, 100_000),),
                                 doc="test images embedded in 2-D (a stratified subset)")
    tsne_pca_dims: int = spec_field(50, checks=(_positive,), doc="PCA dimensions before t-SNE")
    perplexity: float = spec_field(30.0, checks=(_positive,), doc="t-SNE perplexity")
    seed: int = spec_field(0, checks=(_non_negative,), doc="subset, folds and t-SNE seed")


#: The name of the in-distribution test set (the evaluation data's own test split) in the
#: results table's ``test_set`` column; an external test set may not take it.
IN_DISTRIBUTION = "test"


@dataclass(frozen=True)
class ExternalTestSet(Spec):
    """An external (out-of-distribution) test set (docs/protocol.md "External test sets"; Chaves
    et al.: Derm7pt, ISIC 2020 and PAD-UFES-20 after training on ISIC 2019). Every trained model
    is scored on all of its labelled images as well (every split of its sources; a source's
    ``split`` keeps one), with the same TTA; the extra test sets cost inference only.

    Its classes are matched to the training classes by name: ``label_map`` renames a class
    (``nevus: benign``) or leaves its images out (``null``: a diagnosis with no training class);
    a class it does not name must be a training class. It may hold only some of the training
    classes: its metrics are then over the classes present."""

    name: str = spec_field(checks=(_name,), doc="test set name (the results' test_set column)")
    sources: tuple[SourceSpec, ...] = spec_field(checks=(_non_empty,), doc="its images")
    label_map: Mapping[str, str | None] = spec_field(
        default_factory=dict, doc="its class -> a training class (null: leave those images out)")

    def problems(self) -> list[_FieldError]:
        problems = []
        if self.name == IN_DISTRIBUTION:
            problems.append(_FieldError(("name",), f"{IN_DISTRIBUTION!r} names the evaluation "
                                                   "data's own test split; choose another name"))
        problems.extend(_FieldError(("sources", f"[{index}]", "labelled"),
                                    "a test set's images need their labels")
                        for index, source in enumerate(self.sources) if not source.labelled)
        return problems


@dataclass(frozen=True)
class EvaluateStage(Spec):
    """The ``evaluate`` stage: every encoder condition x protocol x seed (docs/protocol.md: 35),
    each scored on the data's test split and on every external test set (``test_sets``)."""

    data: DatasetSpec = spec_field(doc="labelled train/test data")
    encoders: tuple[EncoderCondition, ...] = spec_field(checks=(_non_empty,), doc="conditions")
    protocols: tuple[Protocol, ...] = spec_field(("finetune", "probe"), checks=(_non_empty,),
                                                 doc="finetune, probe and/or logistic")
    seeds: int = spec_field(35, checks=(_between(1, MAX_SEEDS),),
                            doc="seed indices first_seed .. +seeds-1")
    first_seed: int = spec_field(0, checks=(_between(0, MAX_FIRST_SEED),), doc="first seed index")
    settings: EvaluationSpec = spec_field(default_factory=EvaluationSpec, doc="protocol")
    representations: RepresentationSpec | None = spec_field(
        None, doc="representation analysis per encoder ({} = defaults; null = none)")
    test_sets: tuple[ExternalTestSet, ...] = spec_field(
        (), doc="external test sets every trained model is also scored on")

    def problems(self) -> list[_FieldError]:
        return (_duplicate_names([c.name for c in self.encoders], ("encoders",))
                + _duplicate_names([t.name for t in self.test_sets], ("test_sets",)))

    def condition_seeds(self, condition: EncoderCondition) -> tuple[int, ...]:
        """The seed indices of ``condition``: its own number of seeds, else the stage's, from
        ``first_seed`` (so a condition with fewer seeds pairs with the others on its seeds)."""
        count = condition.seeds if condition.seeds is not None else self.seeds
        return tuple(range(self.first_seed, self.first_seed + count))


@dataclass(frozen=True)
class SearchParam(Spec):
    """One searched dimension: ``uniform`` / ``loguniform`` (low, high), ``int`` (integer low,
    high, both included), or ``choice`` (choices: numbers, strings, booleans or null)."""

    type: Literal["uniform", "loguniform", "int", "choice"] = spec_field(doc="distribution")
    low: float | None = spec_field(None, doc="lower bound")
    high: float | None = spec_field(None, doc="upper bound")
    choices: tuple[Any, ...] | None = spec_field(None, checks=(_non_empty,), doc="values")

    def problems(self) -> list[_FieldError]:
        if self.type == "choice":
            if not self.choices:
                return [_FieldError(("choices",), "required for type choice")]
            return [_FieldError(("choices", f"[{index}]"), f"must be a number, a string, a "
                                                         f"boolean or null, got {_describe(choice)}")
                    for index, choice in enumerate(self.choices)
                    if choice is not None and not isinstance(choice, (bool, int, float, str))]
        if self.low is None or self.high is None:
            return [_FieldError(("low" if self.low is None else "high",),
                                f"required for type {self.type}")]
        if self.high <= self.low:
            return [_FieldError(("high",), "must be greater than low")]
        if self.type == "loguniform" and self.low <= 0:
            return [_FieldError(("low",), "must be > 0 for loguniform")]
        if self.type == "int":
            return [_FieldError((bound,), f"must be an integer for type int, got "
                                          f"{getattr(self, bound)!r}")
                    for bound in ("low", "high") if not float(getattr(self, bound)).is_integer()]
        return []

    def values_to_check(self) -> tuple[Any, ...]:
        """The values a spec must accept for this dimension: both bounds, or every choice."""
        if self.type == "choice":
            return tuple(self.choices or ())
        if self.type == "int":
            return int(self.low), int(self.high)  # type: ignore[arg-type]
        return self.low, self.high


#: The knobs of the paper's search (any other scalar field of the search's pretrain spec or
#: evaluation settings can be searched too, by its dotted path: ``pretrain.weight_decay``,
#: ``evaluate.lr_max``, ``pretrain.data.image_size``, ...).
SEARCHABLE = ("pretrain.lambda_offdiag", "pretrain.alpha", "pretrain.lr_max", "pretrain.strength")

#: Dotted paths a search may never set (they name the run, not its training).
NOT_SEARCHABLE = ("pretrain.name", "pretrain.keys")


def _scalar_field_type(cls: type, parts: list[str], path: tuple[str, ...]) -> Any:
    """The type of the scalar field ``parts`` (a dotted path) of spec ``cls``; _FieldError
    naming ``path`` when it does not exist or is not a scalar."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    head, rest = parts[0], parts[1:]
    if head not in names:
        raise _FieldError(path, f"cannot be searched: {cls.__name__} has no field {head!r}"
                                f"{_closest(head, names)}")
    tp = hints[head]
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    nested = [a for a in args if isinstance(a, type) and dataclasses.is_dataclass(a)]
    if rest:
        if not nested:
            raise _FieldError(path, f"cannot be searched: {head!r} has no fields inside it")
        return _scalar_field_type(nested[0], rest, path)
    if nested or any(typing.get_origin(a) in (tuple, list, Mapping, dict) or a in (dict, Mapping)
                     for a in args):
        raise _FieldError(path, f"cannot be searched: {head!r} is not a single value")
    return tp


@dataclass(frozen=True)
class SearchEvaluation(Spec):
    """How a search trial is scored: batched linear probes over ``seeds`` paired seeds, trained
    on the labelled train split of ``data`` and scored on its validation split (a stratified
    holdout of the labelled train split when the data has no validation split). The test split
    is never read by a search, so it stays apart for the evaluate stage."""

    data: DatasetSpec = spec_field(doc="labelled data (its validation split scores the trials)")
    seeds: int = spec_field(5, checks=(_positive,), doc="paired seed indices per trial")
    first_seed: int = spec_field(0, checks=(_non_negative,), doc="first seed index")
    settings: EvaluationSpec = spec_field(default_factory=EvaluationSpec, doc="probe protocol")


@dataclass(frozen=True)
class SearchSpec(Spec):
    """An Optuna search inside Ray Tune over pre-training (and evaluation) knobs: Barlow Twins
    lambda, sparsity alpha, lr_max, augmentation strength, ... Each trial pre-trains the
    ``pretrain`` run with its sampled values and is scored by ``evaluate``; ASHA (Optuna's
    successive-halving pruner) stops poor trials early on the per-epoch downstream proxy
    (``raysweep.sweep.search``)."""

    name: str = spec_field(checks=(_name,), doc="search name (its directory and study)")
    pretrain: PretrainSpec = spec_field(doc="the base pre-training run (the default config)")
    evaluate: SearchEvaluation = spec_field(doc="how a trial is scored")
    space: Mapping[str, SearchParam] = spec_field(
        checks=(_non_empty,), doc="searched keys: pretrain.<field> or evaluate.<setting>")
    metric: str = spec_field("f1_weighted", doc="objective: this probe metric, mean over seeds")
    mode: Literal["max", "min"] = spec_field("max", doc="maximise or minimise")
    num_samples: int = spec_field(20, checks=(_between(1, 100_000),),
                                  doc="trials (the default is extra)")
    max_concurrent_trials: int | None = spec_field(None, checks=(_positive,),
                                                   doc="cap (null = as many as fit)")
    scheduler: Literal["asha", "none"] = spec_field("asha", doc="early stopping on the proxy")
    grace_period: int = spec_field(1, checks=(_positive,),
                                   doc="training epochs before ASHA may stop a trial")
    reduction_factor: int = spec_field(3, checks=(_between(2, 100),),
                                       doc="ASHA keeps 1/reduction_factor at each rung")
    seed: int = spec_field(0, checks=(_non_negative,), doc="sampler seed")
    compare_default: bool = spec_field(
        True, doc="also score the base run as written, for the report's paired test")

    def problems(self) -> list[_FieldError]:
        problems = []
        for key, param in self.space.items():
            try:
                self._check_searchable(key, param)
            except _FieldError as err:
                problems.append(err)
        return problems

    def _check_searchable(self, key: str, param: SearchParam) -> None:
        """_FieldError at ``space.<key>`` unless ``key`` names a scalar field of the base
        pre-training run or evaluation settings that accepts every value of ``param``."""
        path = ("space", key)
        stage, _, field_path = key.partition(".")
        if stage not in ("pretrain", "evaluate") or not field_path:
            raise _FieldError(path, "cannot be searched: use pretrain.<field> or "
                                    f"evaluate.<setting>{_closest(key, list(SEARCHABLE))}")
        if key in NOT_SEARCHABLE:
            raise _FieldError(path, "cannot be searched: it names the run")
        cls = PretrainSpec if stage == "pretrain" else EvaluationSpec
        tp = _scalar_field_type(cls, field_path.split("."), path)
        numeric = {a for a in (typing.get_args(tp) or (tp,)) if a in (int, float)}
        if param.type != "choice" and not numeric:
            raise _FieldError(path, f"type {param.type} needs a numeric field; use choice")
        if param.type in ("uniform", "loguniform") and numeric == {int}:
            raise _FieldError(path, "is an integer field: use type int or choice")
        base = self.pretrain if stage == "pretrain" else self.evaluate.settings
        for value in param.values_to_check():
            try:
                base.replace(**{field_path: value})
            except _FieldError as err:
                raise _FieldError(path, f"value {value!r}: {err.reason}") from None


@dataclass(frozen=True)
class Comparison(Spec):
    """A declared pairwise test: null "model_1 <= model_2" (``greater``) or "=" (two-sided).

    Within one protocol (``protocol``, or every protocol holding both conditions), or across
    protocols: ``protocol_1`` for ``model_1`` against ``protocol_2`` for ``model_2`` (e.g. a
    frozen SimCLR backbone's probe against a supervised baseline's fine-tuning), paired by seed
    where both have the seed."""

    model_1: str = spec_field(doc="condition name")
    model_2: str = spec_field(doc="condition name")
    alternative: Literal["greater", "two-sided"] = spec_field("greater", doc="H1")
    protocol: Protocol | None = spec_field(None, doc="null = every protocol")
    protocol_1: Protocol | None = spec_field(None, doc="model_1's protocol (with protocol_2)")
    protocol_2: Protocol | None = spec_field(None, doc="model_2's protocol (with protocol_1)")

    @property
    def across_protocols(self) -> bool:
        return self.protocol_1 is not None

    def problems(self) -> list[_FieldError]:
        if (self.protocol_1 is None) != (self.protocol_2 is None):
            missing = "protocol_2" if self.protocol_2 is None else "protocol_1"
            return [_FieldError((missing,), "give protocol_1 and protocol_2 together")]
        if self.protocol_1 is not None and self.protocol is not None:
            return [_FieldError(("protocol",), "give protocol, or protocol_1 and protocol_2, "
                                               "not both")]
        if self.model_1 == self.model_2 and self.protocol_1 == self.protocol_2:
            return [_FieldError(("model_2",), f"compares {self.model_1!r} with itself")]
        return []


@dataclass(frozen=True)
class ReportSpec(Spec):
    """What the ``report`` stage computes (``raysweep.report``)."""

    metrics: tuple[str, ...] = spec_field(("accuracy", "f1_weighted"), checks=(_non_empty,),
                                          doc="metrics tabulated and tested")
    comparisons: tuple[Comparison, ...] = spec_field((), doc="declared tests (default: all pairs)")
    family_by: tuple[str, ...] = spec_field(("protocol",), doc="columns that define a family")
    correction: Literal["holm", "fdr_bh", "bonferroni", "none"] = spec_field(
        "holm", doc="multiple-testing correction across a family")
    alpha: float = spec_field(0.05, checks=(_unit_interval_open,), doc="significance level")
    tests: tuple[Literal["welch", "paired_t", "wilcoxon", "mannwhitney"], ...] = spec_field(
        ("welch", "paired_t", "wilcoxon", "mannwhitney"), checks=(_non_empty,),
        doc="pairwise tests run")
    primary_test: Literal["welch", "paired_t", "wilcoxon", "mannwhitney"] = spec_field(
        "welch", doc="the test whose corrected p-value is flagged (the paper's: welch)")
    bootstrap_resamples: int = spec_field(10_000, checks=(_between(100, 10**7),),
                                          doc="bootstrap resamples of the mean difference")
    bootstrap_seed: int = spec_field(0, checks=(_non_negative,), doc="bootstrap seed")
    power: float = spec_field(0.8, checks=(_unit_interval_open,), doc="power for seeds needed")

    def problems(self) -> list[_FieldError]:
        problems = []
        if self.primary_test not in self.tests:
            problems.append(_FieldError(("primary_test",),
                                        f"must be one of tests {list(self.tests)}"))
        if tuple(self.family_by) != ("protocol",):
            problems.extend(
                _FieldError(("comparisons", f"[{index}]", "protocol_1"),
                            "comparisons across protocols need family_by: [protocol]")
                for index, comp in enumerate(self.comparisons) if comp.across_protocols)
        return problems


@dataclass(frozen=True)
class ResourcesSpec(Spec):
    """How trials are packed onto the cluster (``raysweep.sweep.resources``)."""

    cpus_per_trial: float | None = spec_field(
        None, checks=(_positive,),
        doc="CPUs per single-process Tune trial; unset (auto): a GPU node's CPUs per GPU times "
            "the trial's GPU share (at least 1), so that every GPU is filled; 1 without GPUs")
    gpus_per_trial: float | None = spec_field(
        None, checks=(_between(0.0, 1.0),), doc="fraction of a GPU per single-process trial")
    max_concurrent_trials: int | None = spec_field(None, checks=(_positive,), doc="cap")


@dataclass(frozen=True)
class ExperimentSpec(Spec):
    """A whole study: pretrain runs, the evaluate grid, searches and the report."""

    name: str = spec_field(checks=(_name,), doc="experiment name (its directory)")
    storage: str = spec_field("~/raysweep_runs",
                              doc="storage root: a folder (shared for multi-node) or a URI "
                                  "(file://, s3://, gs://)")
    pretrain: tuple[PretrainSpec, ...] = spec_field((), doc="pre-training runs")
    evaluate: EvaluateStage | None = spec_field(None, doc="evaluation grid")
    search: tuple[SearchSpec, ...] = spec_field((), doc="searches")
    report: ReportSpec = spec_field(default_factory=ReportSpec, doc="report settings")
    resources: ResourcesSpec = spec_field(default_factory=ResourcesSpec, doc="packing")
    description: str = spec_field("", doc="free text")

    def problems(self) -> list[_FieldError]:
        names = [p.name for p in self.pretrain]
        problems = _duplicate_names(names, ("pretrain",))
        referenced = [(("pretrain", f"[{index}]", "encoder", "weights"), run.encoder.weights)
                      for index, run in enumerate(self.pretrain)]
        if self.evaluate is not None:
            referenced.extend((("evaluate", "encoders", f"[{index}]", "encoder", "weights"),
                               cond.encoder.weights)
                              for index, cond in enumerate(self.evaluate.encoders))
        for path, weights in referenced:
            target = pretrain_reference(weights)
            if target is not None and target not in names:
                problems.append(_FieldError(path, f"no pretrain run named {target!r}"
                                                  f"{_closest(target, names)}"))
        if not problems:
            problems.extend(self._cycle_problems())
        problems.extend(self._cross_protocol_problems())
        return problems

    def _cross_protocol_problems(self) -> list[_FieldError]:
        """A comparison across protocols whose condition is not evaluated under its
        protocol (conditions the spec does not evaluate are left to the report)."""
        if self.evaluate is None:
            return []
        protocols = {c.name: c.protocols or self.evaluate.protocols
                     for c in self.evaluate.encoders}
        problems = []
        for index, comp in enumerate(self.report.comparisons):
            if not comp.across_protocols:
                continue
            for side, model, protocol in ((1, comp.model_1, comp.protocol_1),
                                          (2, comp.model_2, comp.protocol_2)):
                if model in protocols and protocol not in protocols[model]:
                    problems.append(_FieldError(
                        ("report", "comparisons", f"[{index}]", f"protocol_{side}"),
                        f"condition {model!r} is not evaluated with {protocol!r} (its "
                        f"protocols: {', '.join(protocols[model])})"))
        return problems

    def _cycle_problems(self) -> list[_FieldError]:
        """One problem per cycle of ``pretrain:NAME`` references (a run that waits for
        itself), named at the first run of the cycle in spec order."""
        parent = {run.name: pretrain_reference(run.encoder.weights) for run in self.pretrain}
        index = {run.name: position for position, run in enumerate(self.pretrain)}
        problems, reported = [], set()
        for run in self.pretrain:
            chain, name = [run.name], parent[run.name]
            while name is not None and name not in chain:
                chain.append(name)
                name = parent[name]
            if name is None:
                continue
            cycle = chain[chain.index(name):]
            if frozenset(cycle) in reported:
                continue
            reported.add(frozenset(cycle))
            first = min(cycle, key=index.__getitem__)
            start = cycle.index(first)
            ordered = cycle[start:] + cycle[:start] + [first]
            problems.append(_FieldError(
                ("pretrain", f"[{index[first]}]", "encoder", "weights"),
                f"pretrain runs depend on each other in a cycle: {' -> '.join(ordered)}"))
        return problems

    def pretrain_parent(self, weights: str) -> PretrainSpec | None:
        """The pretrain run whose output ``weights`` (``pretrain:NAME``) refers to, else None."""
        target = pretrain_reference(weights)
        return None if target is None else next(r for r in self.pretrain if r.name == target)

    @property
    def directory(self) -> Any:
        """``<storage>/<name>``: where every artefact of this experiment lives: a local
        :class:`~pathlib.Path`, or a :class:`raysweep.storage.StoragePath` when ``storage`` is an
        object-store URI (``s3://``, ``gs://``, ...)."""
        from raysweep.storage import storage_path

        return storage_path(self.storage) / self.name


# --------------------------------------------------------------------------------------------
# Grids: `pretrain: {base: {...}, product: {axis: {label: {dotted.key: value}}}, extra: [...]}`
# --------------------------------------------------------------------------------------------

_GRID_KEYS = ["base", "product", "name", "exclude", "extra"]


def _template_problem(template: Any, axes: list[str]) -> str | None:
    """Why ``template`` is not a run-name template of ``{axis}`` fields only (else None).

    ``str.format`` would evaluate attribute and index lookups (``{a.__class__}``), format
    specs and conversions; a template may only name the product's axes.
    """
    if not isinstance(template, str):
        return f"expected a string such as '{{{axes[0]}}}-...', got {_describe(template)}"
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        return f"not a valid name template ({err})"
    fields = ", ".join(f"{{{axis}}}" for axis in axes)
    for _, field_name, format_spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name not in axes:
            hint = _closest(field_name, axes)
            return (f"unknown field {{{field_name}}}{hint}; a name template may only use the "
                    f"product's axes: {fields}")
        if format_spec or conversion:
            return f"field {{{field_name}}}: only plain fields are allowed ({fields})"
    return None


def merge_run(base: Mapping[str, Any], run: Mapping[str, Any],
              path: tuple[str, ...] = ()) -> dict[str, Any]:
    """``run`` laid over ``base``: nested mappings are merged key by key (``encoder: {weights:
    x}`` keeps the base's ``encoder.name``), dotted keys reach inside, anything else (lists,
    numbers, strings) replaces the base's value."""
    merged = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for key, value in run.items():
        if isinstance(key, str) and "." in key:
            merged = _apply_overrides(merged, {key: value}, path)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_run(merged[key], value, path + (str(key),))
        else:
            merged[key] = value
    return merged




def _fill_axes(value: Any, labels: Mapping[str, str], path: tuple[str, ...]) -> Any:
    """``value`` with every ``{axis}`` in its strings (nested mappings and lists included)
    replaced by the combination's label of that axis (``pretrain:simclr-{dataset}``); ``{{``
    and ``}}`` stand for literal braces. A string without braces is returned as it is."""
    if isinstance(value, Mapping):
        return {k: _fill_axes(v, labels, path + (str(k),)) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_axes(v, labels, path + (f"[{i}]",)) for i, v in enumerate(value)]
    if isinstance(value, str) and ("{" in value or "}" in value):
        reason = _template_problem(value, list(labels))
        if reason:
            raise _FieldError(path, reason.replace("a name template", "a value in a grid"))
        return value.format(**labels)
    return value


def _exclusions(section: Mapping[str, Any], axes: list[tuple[str, list[tuple[Any, Any]]]],
                path: tuple[str, ...]) -> list[dict[str, str]]:
    """The ``exclude:`` entries of a grid, each ``{axis: label}``, checked against the axes."""
    exclude = section.get("exclude", [])
    if not isinstance(exclude, list):
        raise _FieldError(path + ("exclude",), "expected a list of {axis: label} mappings")
    labels = {axis: [str(label) for label, _ in options] for axis, options in axes}
    entries = []
    for index, entry in enumerate(exclude):
        where = path + ("exclude", f"[{index}]")
        if not isinstance(entry, Mapping) or not entry:
            raise _FieldError(where, f"expected a mapping {{axis: label}}, got {_describe(entry)}")
        for axis, label in entry.items():
            if axis not in labels:
                raise _FieldError(where + (str(axis),),
                                  f"unknown axis{_closest(str(axis), list(labels))}")
            if str(label) not in labels[axis]:
                raise _FieldError(where + (str(axis),),
                                  f"unknown label {label!r}{_closest(str(label), labels[axis])}")
        entries.append({str(axis): str(label) for axis, label in entry.items()})
    return entries


def expand_product(section: Any, path: tuple[str, ...], *,
                   named: bool = True) -> list[dict[str, Any]]:
    """Expand a ``{base, product, name, exclude, extra}`` grid into a list of plain mappings.

    ``product`` maps each axis (``initial``, ``further_data``, ...) to ``{label: overrides}``;
    every combination applies its overrides (dotted keys) to ``base``, is named by joining the
    labels with ``-`` (or by the ``name`` template, e.g. ``"{initial}-{further_data}"``: only
    ``{axis}`` fields), and records ``keys: {axis: label}`` so the results table can group by
    axis. A combination's strings may name the axes too (``encoder.weights:
    "pretrain:simclr-{dataset}"``: the weights of the combination's own dataset). ``exclude``
    lists partial combinations (``{model: frozen, labels: all}``) left out of the product.
    ``extra`` lists further runs, each laid over ``base`` too (:func:`merge_run`): a run states
    only how it differs. A list is returned as is. ``named=False`` (report comparisons) adds
    neither ``name`` nor ``keys``.
    """
    if isinstance(section, list):
        return section
    if not isinstance(section, Mapping):
        raise _FieldError(path, f"expected a list or a {{base, product}} grid, got {_describe(section)}")
    valid = [k for k in _GRID_KEYS if named or k != "name"]
    unknown = set(section) - set(valid)
    if unknown:
        key = sorted(map(str, unknown))[0]
        raise _FieldError(path + (key,), f"unknown key{_closest(key, valid)}")
    base = section.get("base", {})
    product = section.get("product", {})
    if not isinstance(base, Mapping):
        raise _FieldError(path + ("base",), "expected a mapping")
    if not isinstance(product, Mapping) or not product:
        raise _FieldError(path + ("product",), "expected a non-empty mapping of axes")
    axes = []
    for axis, options in product.items():
        if not isinstance(options, Mapping) or not options:
            raise _FieldError(path + ("product", str(axis)),
                              "expected a non-empty mapping {label: {key: value}}")
        axes.append((str(axis), list(options.items())))
    template = section.get("name")
    if template is not None:
        reason = _template_problem(template, [axis for axis, _ in axes])
        if reason:
            raise _FieldError(path + ("name",), reason)
    excluded = _exclusions(section, axes, path)
    runs = []
    for combo in itertools.product(*(options for _, options in axes)):
        labels = {axis: str(label) for (axis, _), (label, _) in zip(axes, combo, strict=True)}
        if any(all(labels[axis] == label for axis, label in entry.items())
               for entry in excluded):
            continue
        overrides: dict[str, Any] = {}
        for (axis, _), (label, changes) in zip(axes, combo, strict=True):
            if changes is None:
                continue
            if not isinstance(changes, Mapping):
                raise _FieldError(path + ("product", axis, str(label)), "expected a mapping")
            overrides.update(changes)
        run = _fill_axes(_apply_overrides(base, overrides, path + ("base",)), labels, path)
        if named:
            run["name"] = template.format(**labels) if template else "-".join(labels.values())
            run["keys"] = {**dict(run.get("keys", {})), **labels}
        runs.append(run)
    extra = section.get("extra", [])
    if not isinstance(extra, list):
        raise _FieldError(path + ("extra",), "expected a list of runs")
    for index, run in enumerate(extra):
        if not isinstance(run, Mapping):
            raise _FieldError(path + ("extra", f"[{index}]"),
                              f"expected a mapping (a run), got {_describe(run)}")
        runs.append(merge_run(base, run, path + ("extra", f"[{index}]")))
    return runs


def expand_comparisons(section: Any, path: tuple[str, ...]) -> list[Any]:
    """``report.comparisons``: a list whose items are comparisons or grids (a mapping with a
    ``product``, expanded in place by :func:`expand_product`, e.g. one comparison per dataset
    and label budget), or a single grid."""
    if isinstance(section, Mapping):
        return expand_product(section, path, named=False)
    if not isinstance(section, list):
        return section
    expanded: list[Any] = []
    for index, item in enumerate(section):
        if isinstance(item, Mapping) and "product" in item:
            expanded.extend(expand_product(item, path + (f"[{index}]",), named=False))
        else:
            expanded.append(item)
    return expanded


def _expand_grids(data: dict[str, Any]) -> list[_FieldError]:
    """Expand ``pretrain`` and ``evaluate.encoders`` grids in place; their problems."""
    problems = []
    if "pretrain" in data:
        try:
            data["pretrain"] = expand_product(data["pretrain"], ("pretrain",))
        except _FieldError as err:
            problems.append(err)
    evaluate = data.get("evaluate")
    if isinstance(evaluate, Mapping) and "encoders" in evaluate:
        evaluate = dict(evaluate)
        try:
            evaluate["encoders"] = expand_product(evaluate["encoders"], ("evaluate", "encoders"))
        except _FieldError as err:
            problems.append(err)
        data["evaluate"] = evaluate
    report = data.get("report")
    if isinstance(report, Mapping) and "comparisons" in report:
        report = dict(report)
        try:
            report["comparisons"] = expand_comparisons(report["comparisons"],
                                                       ("report", "comparisons"))
        except _FieldError as err:
            problems.append(err)
        data["report"] = report
    return problems


def experiment_problems(data: Any) -> tuple[ExperimentSpec | None, list[_FieldError]]:
    """Build an :class:`ExperimentSpec` from parsed YAML (grids expanded first) and gather
    every problem: ``(spec, [])`` or ``(None, problems)``."""
    if not isinstance(data, Mapping):
        return None, [_FieldError((), f"the top level must be a mapping, got {_describe(data)}")]
    data = dict(data)
    # `datasets:` is a free-form anchor section: YAML anchors (&isic) defined there are reused
    # by reference in the stages, so it is dropped after parsing.
    data.pop("datasets", None)
    problems = _expand_grids(data)
    if problems:
        return None, problems
    return _collect(ExperimentSpec, data)


def experiment_from_dict(data: Any) -> ExperimentSpec:
    """Build an :class:`ExperimentSpec` from parsed YAML (grids expanded first); raises the
    first problem (see :func:`spec_from_data` for all of them)."""
    spec, problems = experiment_problems(data)
    if problems:
        raise problems[0]
    return spec


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (plain types only) that refuses a key given twice in one mapping,
    where PyYAML would silently keep the last. Keys merged in with ``<<: *anchor`` may be
    overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given at line {first})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """Parse spec YAML: plain types only (no ``!!python`` tags), duplicate keys refused."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def _decode_spec_bytes(file: Path, raw: bytes) -> str:
    """The text of a spec file, or a one-line :class:`SpecError` for one that is not UTF-8."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SpecError(f"{file}: the spec file is UTF-16 encoded; save it as UTF-8")
    if b"\x00" in raw:
        raise SpecError(f"{file}: not a text file (it holds NUL bytes); a spec is UTF-8 YAML")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise SpecError(f"{file}: not UTF-8 text (byte 0x{raw[err.start]:02x} on line {line}); "
                        "save the spec as UTF-8") from None


def load_spec(path: Any) -> ExperimentSpec:
    """Read, expand and validate an experiment spec file (a local path, or an object-store
    path such as an experiment's stored ``experiment.yaml``).

    Raises :class:`SpecProblems` (a :class:`SpecError`) with one line ``FILE: key.path:
    reason`` per problem.
    """
    from raysweep.storage import StoragePath

    file = path if isinstance(path, StoragePath) else Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{file}: spec file not found") from None
    except IsADirectoryError:
        raise SpecError(f"{file}: is a directory, not a spec file") from None
    except OSError as err:
        raise SpecError(f"{file}: cannot read spec file ({err.strerror})") from None
    text = _decode_spec_bytes(file, raw)
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"{file}: invalid YAML{where}: {problem}") from None
    except (ValueError, RecursionError) as err:  # e.g. a date such as 2024-13-45
        raise SpecError(f"{file}: invalid YAML: {' '.join(str(err).split())}") from None
    return spec_from_data(data, source=str(file))


def spec_from_data(data: Any, source: str = "<spec>") -> ExperimentSpec:
    """Validate parsed YAML / a dict; every problem is one line ``SOURCE: key.path: reason``,
    all raised together as :class:`SpecProblems`."""
    spec, problems = experiment_problems(data)
    if problems:
        raise SpecProblems([f"{source}: {join_key_path(err.path)}: {err.reason}"
                            for err in problems])
    return spec


def non_default_fields(spec: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted.key, value)`` of every field of ``spec`` that differs from its default,
    descending into nested specs (a required field has no default and is always listed)."""
    out: list[tuple[str, Any]] = []
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.extend(non_default_fields(value, f"{key}."))
            continue
        if (isinstance(value, tuple) and value
                and all(dataclasses.is_dataclass(v) for v in value)):
            for index, item in enumerate(value):
                out.extend(non_default_fields(item, f"{key}[{index}]."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if value != default:
            out.append((key, to_dict(value)))
    return out


def dump_spec(spec: Any) -> str:
    """A spec as YAML (round-trips through :func:`spec_from_data` for experiments)."""
    return yaml.safe_dump(to_dict(spec), sort_keys=False)
