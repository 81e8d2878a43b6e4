"""Whether a report's results can mislead, said where the reader sees it (docs/protocol.md
"Baselines and degenerate classifiers", "Test images stay out of pre-training").

- the metrics: with ``report.metrics`` unset (empty), accuracy and weighted F1, plus balanced accuracy,
  macro F1 and AUC when a test set's largest class holds more than half of it
  (:func:`resolved_settings`);
- per test set (:class:`PartValidity`): the majority-class and stratified-chance baselines
  (:mod:`raysweep.report.baselines`), each condition's test against the majority class,
  degenerate rows and the logistic protocol's C at an edge of its grid
  (:mod:`raysweep.report.predictions`);
- what the report opens with (:func:`intro_lines`): the transductive overlaps the spec allowed
  (``test_overlap.json``), then a warning for each of the above that is not clean;
- the summary tables' baseline rows and marks (:func:`with_baselines`) and a section of
  baselines, degenerate rows and mean confusion matrices (:func:`validity_section`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from raysweep.config import DEFAULT_REPORT_METRICS, IMBALANCE_REPORT_METRICS, ReportSpec
from raysweep.errors import DataError
from raysweep.report import plots
from raysweep.report.baselines import (
    BASELINE_METRICS,
    Baselines,
    baselines_of,
    class_support,
    imbalanced_share,
    majority_tests,
)
from raysweep.report.document import Figure, Section, Table, Text
from raysweep.report.predictions import (
    DEGENERATE_SHARE,
    c_edge_counts,
    confusion_figure,
    degenerate_counts,
    mean_confusion,
)
from raysweep.report.significance import family_label, iter_families
from raysweep.report.summary import class_names
from raysweep.report.tables import MISSING, column_label, fmt_number, fmt_p, metric_label

__all__ = ["IMBALANCE_SHARE", "MARK", "PartValidity", "intro_lines",
           "part_validity", "resolved_settings", "validity_section", "with_baselines"]

#: An unset ``report.metrics`` gains the imbalance-aware metrics when a test set's largest
#: class holds more than this share of it.
IMBALANCE_SHARE = 0.5
#: Marks a condition not significantly above the majority class in the summary tables.
MARK = "†"
#: The experiment directory's record of allowed test overlaps (raysweep.plan.leakage).
OVERLAP_FILE = "test_overlap.json"
IN_DISTRIBUTION = "test"


def _supports(results: pd.DataFrame) -> list[tuple[str, dict[str, int]]]:
    if "test_set" not in results.columns:
        return [(IN_DISTRIBUTION, class_support(results))]
    return [(str(name), class_support(frame))
            for name, frame in results.groupby("test_set", sort=False)]


def resolved_settings(settings: ReportSpec, results: pd.DataFrame) -> ReportSpec:
    """``settings`` with its metrics resolved: as given, else :data:`DEFAULT_REPORT_METRICS` plus,
    when some test set's largest class holds more than half of it, :data:`IMBALANCE_REPORT_METRICS`
    (those the table holds)."""
    if settings.metrics:
        return settings
    metrics = list(DEFAULT_REPORT_METRICS)
    if any(imbalanced_share(s) > IMBALANCE_SHARE for _, s in _supports(results) if s):
        metrics += [m for m in IMBALANCE_REPORT_METRICS if m in results.columns]
    return dataclasses.replace(settings, metrics=tuple(metrics))


@dataclasses.dataclass(frozen=True)
class PartValidity:
    """One test set's baselines (None without ``support/<class>`` columns), the conditions'
    tests against the majority class, the degenerate-row counts and the logistic C edges."""

    name: str | None
    n_images: int
    baselines: Baselines | None
    tests: pd.DataFrame
    degenerate: pd.DataFrame
    c_edges: pd.DataFrame

    @property
    def where(self) -> str:
        return "" if self.name is None else f" (test set {self.name})"

    def not_above(self, metric: str) -> pd.DataFrame:
        tests = self.tests
        return tests[(tests["metric"] == metric) & ~tests["above"]]


def part_validity(frame: pd.DataFrame, name: str | None, settings: ReportSpec) -> PartValidity:
    """The :class:`PartValidity` of one test set's rows."""
    support = class_support(frame)
    external = name not in (None, IN_DISTRIBUTION)
    baselines = baselines_of(support, external=external) if support else None
    tests = majority_tests(frame, baselines, settings.chosen_metrics, settings.family_by,
                           correction=settings.correction, alpha=settings.alpha)
    # one logistic fit is scored on every test set: its C is counted with the data's own
    return PartValidity(name=name, n_images=sum(support.values()), baselines=baselines,
                        tests=tests, degenerate=degenerate_counts(frame, settings.family_by),
                        c_edges=c_edge_counts(frame.head(0) if external else frame))


# ------------------------------------------------------------------------------------ intro


def overlap_lines(directory: Path) -> list[str]:
    """What ``test_overlap.json`` says: each allowed (transductive) overlap, or that none of
    the runs checked trained on a test image; nothing when the file is absent."""
    path = directory / OVERLAP_FILE
    if not path.is_file():
        return []
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is not valid JSON ({err})") from None
    overlaps = record.get("overlaps", []) if isinstance(record, dict) else []
    lines = [f"Transductive design: pretrain run {o.get('run')!r} (allow_test_overlap) trained "
             f"on {o.get('shared')} of the {o.get('test_images')} images of test set "
             f"{o.get('test_set')!r} ({o.get('data_key')}); condition(s) "
             f"{', '.join(map(str, o.get('conditions', [])))} are scored on images their "
             "encoder was pre-trained on, so their scores are not those of unseen images."
             for o in overlaps if isinstance(o, dict)]
    checked = record.get("checked_runs", []) if isinstance(record, dict) else []
    if not lines and checked:
        lines.append(f"Test images: none of the {len(checked)} pre-training run(s) evaluated "
                     f"here ({', '.join(map(str, checked))}) trained on an image of a test set "
                     "(compared by content: file bytes and array pixels).")
    return lines


def _named(rows: pd.DataFrame, family_by: Sequence[str]) -> list[str]:
    """``condition (family)`` of each row."""
    if not family_by:
        return [str(c) for c in rows["condition"]]
    return [f"{r['condition']} ({family_label([r[c] for c in family_by])})"
            for _, r in rows.iterrows()]


def _majority_warning(part: PartValidity, settings: ReportSpec) -> str | None:
    if part.baselines is None or part.tests.empty:
        return None
    base = part.baselines
    total = part.tests.groupby([*settings.family_by, "condition"], sort=False).ngroups
    counts = [(m, part.not_above(m)) for m in pd.unique(part.tests["metric"])]
    counts = [(m, rows) for m, rows in counts if len(rows)]
    if not counts:
        return None
    metric, rows = counts[0]
    unit = " (condition × " + ", ".join(settings.family_by) + ")" if settings.family_by else ""
    others = "; ".join(f"on {metric_label(m)} ({fmt_number(base.majority[m])}): {len(r)}"
                       for m, r in counts[1:])
    return (f"Warning{part.where}: {len(rows)} of {total} conditions{unit} are not "
            f"significantly above always answering the majority class "
            f"{base.majority_class!r} ({base.majority_share:.1%} of the test images) on "
            f"{metric_label(metric)} ({fmt_number(base.majority[metric])}): "
            f"{', '.join(_named(rows, settings.family_by))}"
            + (f"; {others}" if others else "")
            + f". They are marked {MARK} in the summary tables (one-sided one-sample t-test "
              f"over seeds, {settings.correction} correction across each family, alpha "
              f"{settings.alpha}).")


def _degenerate_warning(part: PartValidity, settings: ReportSpec) -> str | None:
    table = part.degenerate
    flagged = table[table["degenerate"] > 0]
    if flagged.empty:
        return None
    names = _named(flagged, settings.family_by)
    detail = ", ".join(f"{n}: {int(r.degenerate)} of {int(r.runs)}"
                       for n, r in zip(names, flagged.itertuples(), strict=True))
    return (f"Warning{part.where}: {int(table['degenerate'].sum())} of {int(table['runs'].sum())}"
            f" runs give one class to more than {DEGENERATE_SHARE:.0%} of the test images "
            f"({detail}): degenerate classifiers (section 'Baselines and degenerate "
            "classifiers').")


def _edge_warning(part: PartValidity) -> str | None:
    table = part.c_edges
    flagged = table[table["at_edge"] > 0] if not table.empty else table
    if flagged.empty:
        return None
    detail = ", ".join(f"{condition}: {int(at_edge)} of {int(runs)}" for condition, at_edge, runs
                       in zip(flagged["condition"], flagged["at_edge"], flagged["runs"],
                              strict=True))
    return (f"Warning: the logistic protocol chose its regularisation C at an edge of its grid "
            f"in {int(table['at_edge'].sum())} of {int(table['runs'].sum())} runs ({detail}); "
            "the best C may lie beyond logistic.c_min / c_max.")


def _imbalance_note(part: PartValidity, settings: ReportSpec) -> str | None:
    base = part.baselines
    if base is None or base.majority_share <= IMBALANCE_SHARE:
        return None
    added = [m for m in IMBALANCE_REPORT_METRICS if m in settings.chosen_metrics]
    then = (f"{', '.join(metric_label(m) for m in added)} are tabled and tested"
            if added else "report.metrics leaves out balanced accuracy, F1 (macro) and AUC")
    return (f"Imbalanced{part.where}: its largest class {base.majority_class!r} holds "
            f"{base.majority_share:.1%} of its {part.n_images:,} images; {then}.")


def intro_lines(directory: Path, parts: Sequence[PartValidity],
                settings: ReportSpec) -> tuple[str, ...]:
    """What the report opens with: allowed overlaps, then warnings and notes per test set."""
    lines = overlap_lines(directory)
    for part in parts:
        lines += [line for line in (_majority_warning(part, settings),
                                    _degenerate_warning(part, settings), _edge_warning(part),
                                    _imbalance_note(part, settings)) if line]
    return tuple(lines)


# --------------------------------------------------------------------------- summary tables


def with_baselines(data: pd.DataFrame, display: pd.DataFrame, part: PartValidity,
                   family: dict, metrics: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A family's summary table (``data``, ``display``) with :data:`MARK` on the cells of
    conditions not significantly above the majority class, an ``above_majority/<metric>``
    column, and the two baselines as rows of their own (``row`` ``baseline``)."""
    base = part.baselines
    if base is None:
        return data, display
    tests = part.tests
    for key, value in family.items():
        tests = tests[tests[key] == value]
    data, display = data.copy(), display.copy()
    data.insert(0, "row", "condition")
    for metric in metrics:
        above = dict(zip(tests.loc[tests["metric"] == metric, "condition"],
                         tests.loc[tests["metric"] == metric, "above"], strict=True))
        if not above:
            continue
        data[f"above_majority/{metric}"] = [above.get(str(c)) for c in data["condition"]]
        label = metric_label(metric)
        display[label] = [f"{cell} {MARK}" if above.get(str(c)) is False else cell
                          for cell, c in zip(display[label], data["condition"], strict=True)]
    rows = [(f"majority class {base.majority_class!r}", base.majority),
            ("stratified chance", base.stratified)]
    extra_data = pd.DataFrame([{"row": "baseline", "condition": name,
                                **{f"{m}_mean": scores.get(m) for m in metrics}}
                               for name, scores in rows])
    extra_display = pd.DataFrame([{**{c: "" for c in display.columns},
                                   display.columns[0]: name,
                                   **{metric_label(m): fmt_number(scores.get(m))
                                      if m in scores else MISSING for m in metrics}}
                                  for name, scores in rows])
    return (pd.concat([data, extra_data], ignore_index=True),
            pd.concat([display, extra_display], ignore_index=True))


# ----------------------------------------------------------------------------------- section


def _baseline_table(part: PartValidity, title: str, slug: str) -> Table | None:
    base = part.baselines
    if base is None:
        return None
    data = pd.DataFrame([{"metric": m, "majority": base.majority[m],
                          "stratified": base.stratified[m]} for m in BASELINE_METRICS])
    display = pd.DataFrame({"Metric": [metric_label(m) for m in BASELINE_METRICS],
                            f"Majority class {base.majority_class!r}":
                                [fmt_number(v) for v in data["majority"]],
                            "Stratified chance": [fmt_number(v) for v in data["stratified"]]})
    counts = ", ".join(f"{name}: {n:,}" for name, n in base.support.items())
    return Table(slug=f"baselines{slug}", title=f"Baselines{title}",
                 caption=f"Scores of classifiers that never look at the image, from the test "
                         f"set's {part.n_images:,} images ({counts}): always answering the "
                         "majority class, and answering each class with its frequency "
                         "(expected confusion matrix).", data=data, display=display)


def _tests_table(part: PartValidity, settings: ReportSpec, title: str, slug: str) -> Table | None:
    tests = part.tests
    if tests.empty:
        return None
    keys = [*settings.family_by, "condition"]
    rows = []
    for key, group in tests.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = {column_label(k): str(v) for k, v in zip(keys, key, strict=True)}
        row["n"] = str(int(group["n"].iloc[0]))
        for metric, mean, p_adjusted, above in zip(group["metric"], group["mean"],
                                                   group["p_adjusted"], group["above"],
                                                   strict=True):
            mark = "" if above else f" {MARK}"
            row[metric_label(str(metric))] = f"{fmt_number(mean)} (p {fmt_p(p_adjusted)}){mark}"
        rows.append(row)
    return Table(slug=f"against-majority{slug}", title=f"Against the majority class{title}",
                 caption=f"Mean over runs and the adjusted p of H1 'mean > the majority "
                         f"class's score' (one-sided one-sample t-test, {settings.correction} "
                         f"across each family's conditions); {MARK}: not significantly above "
                         f"at alpha = {settings.alpha}.", data=tests, display=pd.DataFrame(rows))


def _degenerate_table(part: PartValidity, settings: ReportSpec, title: str,
                      slug: str) -> Table:
    table = part.degenerate
    display = pd.DataFrame({column_label(k): table[k].astype(str)
                            for k in [*settings.family_by, "condition"]})
    display["Runs"] = table["runs"].astype(int).astype(str)
    display[f"Degenerate (> {DEGENERATE_SHARE:.0%} one class)"] = table["degenerate"].astype(
        int).astype(str)
    display["Mean share of the top answer"] = [fmt_number(v, 3) for v in table["top_share_mean"]]
    edges = dict(zip(part.c_edges["condition"], part.c_edges["at_edge"], strict=True))
    if edges and "protocol" in table:
        display["Logistic C at a grid edge"] = [
            str(int(edges[c])) if p == "logistic" and c in edges else ""
            for c, p in zip(table["condition"], table["protocol"], strict=True)]
    return Table(slug=f"degenerate{slug}", title=f"Degenerate predictions{title}",
                 caption="Per condition, the runs whose most frequent answer takes more than "
                         f"{DEGENERATE_SHARE:.0%} of the test images, and the mean share of "
                         "each run's most frequent answer (1/K for a classifier that answers "
                         "every class equally often).", data=table, display=display)


def _confusion_figures(frame: pd.DataFrame, settings: ReportSpec, title: str, slug: str,
                       fig_dir: Path, dpi: int) -> list[Figure]:
    classes = class_names(frame)
    figures = []
    for label, _, family in iter_families(frame, settings.family_by):
        panels = [(str(cond), matrix) for cond, runs in family.groupby("condition", sort=False)
                  if (matrix := mean_confusion(runs)) is not None
                  and matrix.shape[0] == len(classes)]
        fig = confusion_figure(panels, classes, f"Mean confusion matrices — {label}{title}")
        if fig is None:
            continue
        name = f"confusion-{_slug(label)}{slug}"
        path = plots.save_png(fig, fig_dir / f"{name}.png", dpi=dpi)
        figures.append(Figure(name, f"Mean confusion matrices — {label}{title}",
                              "Each condition's confusion matrix normalised per true class "
                              "(row: the true class's test images, by the share given each "
                              "answer), averaged over its runs: a collapse onto one class is a "
                              "single dark column.", path))
    return figures


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "all"


def validity_section(parts: Sequence[tuple[PartValidity, pd.DataFrame, str, str]],
                     settings: ReportSpec, fig_dir: Path, dpi: int) -> list[Section]:
    """The section 'Baselines and degenerate classifiers': per test set (``(validity, rows,
    title suffix, slug suffix)``) its baselines, the tests against the majority class, the
    degenerate rows and the mean confusion matrices."""
    blocks: list[Text | Table | Figure] = []
    for part, frame, title, slug in parts:
        blocks += [b for b in (_baseline_table(part, title, slug),
                               _tests_table(part, settings, title, slug),
                               _degenerate_table(part, settings, title, slug)) if b is not None]
        blocks += _confusion_figures(frame, settings, title, slug, fig_dir, dpi)
    return [Section("Baselines and degenerate classifiers", tuple(blocks))] if blocks else []
