"""The validation engine behind every spec: field checks, ``spec_field``, the :class:`Spec`
base class, type coercion (numeric strings, fractions such as ``1/8192``), unknown-key errors
with the closest valid key, and ``from_dict`` / ``to_dict`` / overrides.

It knows nothing about experiments: :mod:`raysweep.config.specs` declares them with it.
"""


from __future__ import annotations

import contextvars
import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import Any, Literal, TypeVar, Union

from raysweep.errors import SpecError

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


#: A spec class: ``replace`` and ``from_dict`` return the class they are given.
SpecT = TypeVar("SpecT", bound="Spec")


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

    def replace(self: SpecT, **changes: Any) -> SpecT:
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
        return _coerce_union(value, tp, path)
    if origin is Literal:
        return _coerce_literal(value, tp, path)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _FieldError(path, f"expected {_type_name(tp)}, got {_describe(value)}")
        item_tp = typing.get_args(tp)[0]
        return tuple(_coerce(v, item_tp, path + (f"[{i}]",)) for i, v in enumerate(value))
    if origin in (Mapping, dict, typing.Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _FieldError(path, f"expected {_type_name(tp)}, got {_describe(value)}")
        key_tp, value_tp = typing.get_args(tp) or (str, Any)
        return FrozenMapping({
            _coerce(k, key_tp, path): _coerce(v, value_tp, path + (str(k),))
            for k, v in value.items()})
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _coerce_spec(value, tp, path)
    return _coerce_scalar(value, tp, path)


def _coerce_union(value: Any, tp: Any, path: tuple[str, ...]) -> Any:
    """The first arm of union ``tp`` that accepts ``value`` (``None`` for an optional)."""
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


def _coerce_literal(value: Any, tp: Any, path: tuple[str, ...]) -> Any:
    """``value`` when it is one of the literal's values (of the same type), else the closest."""
    allowed = typing.get_args(tp)
    if value in allowed and type(value) in {type(a) for a in allowed}:
        return value
    hint = _closest(str(value), [str(a) for a in allowed])
    raise _FieldError(path, f"must be one of {', '.join(map(repr, allowed))}, got "
                            f"{value!r}{hint}")


def _coerce_spec(value: Any, tp: type, path: tuple[str, ...]) -> Any:
    """A nested spec: an instance of ``tp`` as is, a mapping built into one."""
    if isinstance(value, tp):
        return value
    if not isinstance(value, Mapping):
        raise _FieldError(path, f"expected a mapping ({tp.__name__}), got {_describe(value)}")
    try:
        return from_dict(typing.cast("type[Spec]", tp), value)
    except _FieldError as err:
        raise err.under(*path) from None


def _coerce_scalar(value: Any, tp: Any, path: tuple[str, ...]) -> Any:
    """bool, int (a whole float converts), float (numeric strings and fractions), str, or any
    other plain type by ``isinstance``."""
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


def from_dict(cls: type[SpecT], data: Mapping[str, Any]) -> SpecT:
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


