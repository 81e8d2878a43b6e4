"""Label budgets and test sets of an evaluate stage, as the plan prints them and the results
table labels them.

A condition's *label budget* is the rule its data keeps training labels by (``label_count``,
``label_fraction`` with its rounding, ``label_per_class``, or all labels) and, when the data
can be listed, the number of labelled training images it keeps (before oversampling) out of
how many there are: Chaves et al.'s 1 / 10 / 100 % of 14,805 ISIC 2019 images are 148 / 1,480 /
14,805 (docs/protocol.md "Label budgets"). Listing a source decodes nothing
(:func:`raysweep.data.index_dataset`), so ``raysweep run --dry-run`` can print the counts.

When the conditions of a stage differ in their label budget, the consolidated results table
gets two label columns per condition (:func:`budget_columns`): ``n_labels`` (the count) and
``arm`` (the condition with its label budget taken out, e.g. ``simclr`` for ``simclr-1%``), which
the report plots performance against (:mod:`raysweep.report.plots`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from raysweep.config import DatasetSpec, EncoderCondition, ExperimentSpec
from raysweep.data import index_dataset
from raysweep.errors import RaysweepError

__all__ = ["LabelBudget", "budget_columns", "budget_rule", "describe_test_sets", "label_arms",
           "label_budgets"]


@dataclass(frozen=True)
class LabelBudget:
    """The label budget of one evaluated condition: its ``rule`` (``"1% of the training
    labels, rounded down"``), and the labelled training images it keeps (``used``) of those
    available (``available``), both None when its data cannot be listed (``problem`` says why)."""

    condition: str
    rule: str
    used: int | None = None
    available: int | None = None
    problem: str | None = None

    def describe(self) -> str:
        """``1% of the training labels, rounded down: 148 of 14,805``."""
        if self.used is None:
            return f"{self.rule} (counts unknown: {self.problem})" if self.problem else self.rule
        return f"{self.rule}: {self.used:,} of {self.available:,}"


def budget_rule(data: DatasetSpec) -> str:
    """The rule ``data`` keeps its training labels by, in words."""
    if data.label_per_class is not None:
        return f"{data.label_per_class} training labels per class"
    if data.label_count is not None:
        return f"{data.label_count:,} training labels"
    if data.label_fraction < 1.0:
        rounded = ", rounded down" if data.label_rounding == "down" else ""
        return f"{data.label_fraction * 100:g}% of the training labels{rounded}"
    return "all training labels"


def _condition_data(spec: ExperimentSpec, cond: EncoderCondition) -> DatasetSpec:
    assert spec.evaluate is not None
    return cond.data or spec.evaluate.data


def label_budgets(spec: ExperimentSpec, *, count: bool = True) -> list[LabelBudget]:
    """One :class:`LabelBudget` per evaluated condition, in spec order; ``count=False`` gives
    the rules only (no data is listed)."""
    if spec.evaluate is None:
        return []

    counts: dict[DatasetSpec, tuple[int, int] | str] = {}
    budgets = []
    for cond in spec.evaluate.encoders:
        data = _condition_data(spec, cond)
        if not count:
            budgets.append(LabelBudget(cond.name, budget_rule(data)))
            continue
        if data not in counts:
            try:
                index = index_dataset(data)
                available = int((index.labels[index.indices("train")] >= 0).sum())
                counts[data] = (len(index.train_labelled), available)
            except RaysweepError as err:
                counts[data] = str(err)
        found = counts[data]
        if isinstance(found, str):
            budgets.append(LabelBudget(cond.name, budget_rule(data), problem=found))
        else:
            budgets.append(LabelBudget(cond.name, budget_rule(data), *found))
    return budgets


def _budget_key(data: DatasetSpec) -> tuple:
    return (data.label_count, data.label_fraction, data.label_rounding, data.label_per_class)


def label_arms(spec: ExperimentSpec) -> dict[str, str] | None:
    """Per condition, its *arm*: the condition without its label budget, or None when every
    condition has the same budget (no label-budget axis).

    A condition key (an axis of the ``evaluate.encoders`` grid) is a label axis when each of
    its values goes with one label budget and the budgets differ: ``fraction`` in
    ``{model: simclr, fraction: 1%}``. A condition's arm joins its other keys' values with
    ``-`` (``simclr``); a condition without such keys is an arm of its own name.
    """
    assert spec.evaluate is not None
    conditions = spec.evaluate.encoders
    budgets = {c.name: _budget_key(_condition_data(spec, c)) for c in conditions}
    if len(set(budgets.values())) < 2:
        return None
    names = [k for k in conditions[0].keys if all(k in c.keys for c in conditions)]
    axes = []
    for key in names:
        by_value: dict[str, set] = {}
        for cond in conditions:
            by_value.setdefault(cond.keys[key], set()).add(budgets[cond.name])
        if all(len(found) == 1 for found in by_value.values()) and len(by_value) > 1:
            axes.append(key)
    arms = {}
    for cond in conditions:
        rest = [value for key, value in cond.keys.items() if key not in axes]
        arms[cond.name] = "-".join(rest) if axes and rest else cond.name
    return arms


def budget_columns(spec: ExperimentSpec) -> dict[str, dict[str, object]]:
    """Per condition, ``{"n_labels": count, "arm": arm}`` when the conditions' label budgets
    differ (a label-budget study), else empty mappings: label columns of the results table
    (spec-derived, so they are set at consolidation and are no part of a row's identity)."""
    if spec.evaluate is None:
        return {}
    arms = label_arms(spec)
    if arms is None:
        return {c.name: {} for c in spec.evaluate.encoders}
    return {b.condition: {"n_labels": b.used, "arm": arms[b.condition]}
            for b in label_budgets(spec)}


def describe_test_sets(spec: ExperimentSpec) -> list[str]:
    """One line per test set of the evaluate stage: the data's own test split, then every
    external test set with its sources and label map."""
    if spec.evaluate is None:
        return []
    lines = ["test (the evaluation data's test split)"]
    for test_set in spec.evaluate.test_sets:
        sources = ", ".join(s.path or s.name or s.kind for s in test_set.sources)
        line = f"{test_set.name}: {sources}"
        if test_set.label_map:
            line += "; labels " + _label_map_text(test_set.label_map)
        lines.append(line)
    return lines


def _label_map_text(label_map: Mapping[str, str | None]) -> str:
    return ", ".join(f"{k} -> {'(left out)' if v is None else v}" for k, v in label_map.items())
