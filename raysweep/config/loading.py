"""Reading spec files: grid expansion (``base`` / ``product`` / ``exclude`` / ``extra``), strict
YAML (``yaml.safe_load`` rules, duplicate keys refused), every problem of a file at once, and
dumping a spec back to YAML.
"""


from __future__ import annotations

import dataclasses
import itertools
import string
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from raysweep.config.specs import ExperimentSpec
from raysweep.config.validation import (
    _apply_overrides,
    _closest,
    _collect,
    _describe,
    _FieldError,
    join_key_path,
    to_dict,
)
from raysweep.errors import SpecError, SpecProblems
from raysweep.storage.paths import StoragePath

if TYPE_CHECKING:
    from raysweep.storage.paths import StoragePath

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


#: A grid's axes: ``[(axis, [(label, overrides), ...]), ...]``.
Axes = list[tuple[str, list[tuple[Any, Any]]]]


def _exclusions(section: Mapping[str, Any], axes: Axes,
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
    base, axes, template = _grid_parts(section, path, named=named)
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
    return runs + _extra_runs(section, base, path)



def _grid_parts(section: Any, path: tuple[str, ...], *,
                named: bool) -> tuple[Mapping[str, Any], Axes, str | None]:
    """A grid's checked ``base``, its axes ``[(axis, [(label, overrides), ...]), ...]`` and its
    ``name`` template (None when unset)."""
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
    axes: Axes = []
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
    return base, axes, template


def _extra_runs(section: Mapping[str, Any], base: Mapping[str, Any],
                path: tuple[str, ...]) -> list[dict[str, Any]]:
    """A grid's ``extra`` runs, each laid over ``base`` (:func:`merge_run`)."""
    extra = section.get("extra", [])
    if not isinstance(extra, list):
        raise _FieldError(path + ("extra",), "expected a list of runs")
    runs = []
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
    if problems or spec is None:
        raise problems[0]
    return spec


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (plain types only) that refuses a key given twice in one mapping,
    where PyYAML would silently keep the last. Keys merged in with ``<<: *anchor`` may be
    overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
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


def _decode_spec_bytes(file: Path | StoragePath, raw: bytes) -> str:
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
    assert spec is not None  # no problems: experiment_problems built it
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
