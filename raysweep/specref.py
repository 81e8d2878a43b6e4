"""The spec reference (``docs/spec-reference.md``), generated from the spec classes.

Everything comes from :mod:`raysweep.config` itself: the dataclass fields, their type hints and
defaults, and the ``spec_field(checks=..., doc=...)`` metadata. A check is described by its
docstring's first line when it has one; otherwise by the reason it gives for a value it refuses
(every check answers ``"must be > 0, got -1"``-style reasons), so a check added to the config
appears here without a change to this module. Regenerate after changing a spec class::

    python -m raysweep.specref > docs/spec-reference.md

``tests/test_specref.py`` fails while the committed file differs from the output.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

from raysweep import config

__all__ = ["REGENERATE", "describe_check", "render", "spec_classes"]

#: The command that rewrites the committed reference.
REGENERATE = "python -m raysweep.specref > docs/spec-reference.md"

_UNIONS = (typing.Union, types.UnionType)

#: Values a check is tried with to make it state its rule (the first it refuses is used).
_PROBES: tuple[Any, ...] = (math.nan, "", (), -1, 0)


def _is_spec(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp) and issubclass(tp, config.Spec)


def _nested_specs(tp: Any) -> Iterator[tuple[type, str]]:
    """Spec classes inside a field type, with the path suffix they add (``[]`` for lists,
    ``.KEY`` for mappings)."""
    if _is_spec(tp):
        yield tp, ""
        return
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (tuple, list) and args:
        for inner, suffix in _nested_specs(args[0]):
            yield inner, "[]" + suffix
    elif origin in _UNIONS:
        for arg in args:
            yield from _nested_specs(arg)
    elif args and origin is not typing.Literal and len(args) == 2:
        for inner, suffix in _nested_specs(args[1]):
            yield inner, ".KEY" + suffix


def spec_classes(root: type = config.ExperimentSpec) -> dict[type, list[str]]:
    """Every spec class reachable from ``root`` with the dotted paths where it appears, in
    breadth-first order (so the first path is a shortest one); then any other spec class of
    :mod:`raysweep.config`, with no path."""
    found: dict[type, list[str]] = {root: [""]}
    queue = [(root, "")]
    while queue:
        cls, path = queue.pop(0)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            for inner, suffix in _nested_specs(hints[f.name]):
                where = f"{path}.{f.name}{suffix}".lstrip(".")
                if inner not in found:
                    found[inner] = [where]
                    queue.append((inner, where))
                elif where not in found[inner]:
                    found[inner].append(where)
    for name in dir(config):
        candidate = getattr(config, name)
        if _is_spec(candidate) and candidate is not config.Spec and candidate not in found:
            found[candidate] = []
    return found


def _check_parts(check: Callable[..., Any]) -> tuple[str, str]:
    # ``_between.<locals>.check`` (a check factory) is named after the factory.
    parts = check.__qualname__.split(".<locals>.")
    name = parts[-2] if len(parts) > 1 and parts[-1] == "check" else parts[-1]
    name = name.lstrip("_").replace("_", " ")
    doc = (check.__doc__ or "").strip().splitlines()
    return name, doc[0] if doc else ""


def describe_check(check: Callable[[Any], str | None]) -> str:
    """A check's rule in words (``> 0``, ``in [0.0, 2.0]``, ``not empty``, ...)."""
    name, doc = _check_parts(check)
    if doc:
        return doc
    for probe in _PROBES:
        try:
            reason = check(probe)
        except Exception:
            continue
        if reason:
            return _tidy(reason, probe)
    return name


def _tidy(reason: str, probe: Any) -> str:
    text = re.sub(r",? got .*$", "", reason)  # the refused value
    text = re.sub(r" \(did you mean .*?\)", "", text)
    if "; " in text:  # "unknown pipeline ''; choose one of ..." -> the rule part
        text = text.rsplit("; ", 1)[1]
    text = text.replace(repr(probe), "").strip()
    text = re.sub(r"^(must (be )?|choose )", "", text)
    return text.replace("not be ", "not ")


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f"`{_yaml(f.default)}`"
    if f.default_factory is not dataclasses.MISSING:
        made = f.default_factory()
        if _is_spec(type(made)):
            return f"[{type(made).__name__}](#{type(made).__name__.lower()}) defaults"
        return f"`{_yaml(made)}`"
    return "**required**"


def _type(tp: Any) -> str:
    """Like the validation messages' type names, with a choice written as its base type (the
    choices go to the range column)."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return type(typing.get_args(tp)[0]).__name__
    if origin in _UNIONS:
        return " | ".join(dict.fromkeys(_type(arg) for arg in typing.get_args(tp)))
    if origin in (tuple, list):
        return f"list of {_type(typing.get_args(tp)[0])}"
    return config._type_name(tp)


def _choices(tp: Any) -> tuple[Any, ...]:
    """The allowed values of a choice field (or of the items of a list of choices)."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return typing.get_args(tp)
    if origin in _UNIONS:
        return tuple(c for arg in typing.get_args(tp) for c in _choices(arg))
    if origin in (tuple, list):
        return _choices(typing.get_args(tp)[0])
    return ()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _class_doc(cls: type) -> str:
    """The docstring's first paragraph, reST literals as Markdown code."""
    paragraph = (cls.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split()).replace("``", "`")


def render() -> str:
    """The whole reference as Markdown."""
    classes = spec_classes()
    out = [
        "# Spec reference",
        "",
        f"<!-- Generated from raysweep/config/specs.py by `{REGENERATE}`; do not edit by hand. -->",
        "",
        "Every key a spec file may hold, class by class, as `raysweep/config/specs.py` defines it: the",
        "dotted key path (`[]` is any element of a list, `KEY` any key of a mapping), the type,",
        "the default (**required** when there is none), the allowed range or choices, and what",
        "the key means. An unknown key, a wrong type or a value out of range is an error that",
        "names the file and the key path (`raysweep validate FILE`). Numbers may be written as",
        "fractions (`1/8192`). Grids (`base:` / `product:` / `extra:` under `pretrain:` or",
        "`evaluate.encoders:`) and the free-form `datasets:` section of anchors are described in",
        "[design.md](design.md#specs).",
        "",
        "Classes: " + ", ".join(f"[{c.__name__}](#{c.__name__.lower()})" for c in classes) + ".",
        "",
    ]
    for cls, paths in classes.items():
        hints = typing.get_type_hints(cls)
        prefix = paths[0] if paths else ""
        out += [f"## {cls.__name__}", ""]
        if paths:
            where = ", ".join(f"`{p}`" if p else "the top level" for p in paths)
            out += [f"At: {where}.", ""]
        out += [_class_doc(cls), "",
                "| key | type | default | range / choices | meaning |",
                "|---|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            key = f"{prefix}.{f.name}" if prefix else f.name
            rules = [describe_check(c) for c in f.metadata.get("checks", ())]
            choices = _choices(tp)
            if choices:
                rules.insert(0, "one of " + ", ".join(map(str, choices)))
            out.append("| " + " | ".join([
                f"`{_cell(key)}`", f"`{_cell(_type(tp))}`", _cell(_default(f)),
                _cell("; ".join(rules)), _cell(f.metadata.get("doc", ""))]) + " |")
        out.append("")
    return "\n".join(out)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
