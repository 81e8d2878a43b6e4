"""``write_report``: an experiment directory -> tables (CSV, Markdown, LaTeX), PNG figures,
``report.md`` and a self-contained ``report.html``, every file written atomically.

Computation lives in :mod:`~raysweep.report.summary`, :mod:`~raysweep.report.significance`
and :mod:`~raysweep.report.stats` (pure functions over the results table); this module only
assembles their outputs into a :class:`~raysweep.report.document.Document`.

External test sets (a ``test_set`` column): every table and test of the report is made per test
set, on that test set's rows only (so seeds still pair within a test set, and each test set's
families are corrected on their own), titled and named after it; a section sets the test sets
side by side (in- vs out-of-distribution). Validation curves and LR-finder plots describe the
training runs, which every test set shares: they come from the in-distribution rows. A
label-budget study (``n_labels`` and ``arm`` columns) gets a section of performance against the
label budget, with 95% confidence bands.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from matplotlib.figure import Figure as PlotFigure

from raysweep.config import ReportSpec
from raysweep.report import plots, stats
from raysweep.report.document import Document, Figure, Section, Table, Text, slugify
from raysweep.report.inputs import (
    SearchHistory,
    load_pretrain_curves,
    load_representations,
    load_results,
    load_search_histories,
)
from raysweep.report.render import render_html, render_markdown
from raysweep.report.search_section import (
    StoredSearch,
    is_search_folder,
    read_searches,
    search_sections,
)
from raysweep.report.significance import iter_families, pairwise_tests
from raysweep.report.summary import (
    TEST_SET,
    across_test_sets,
    budget_table,
    condition_key_columns,
    per_class_f1,
    protocol_table,
    summary_table,
)
from raysweep.report.tables import (
    budget_display,
    distribution_display,
    fmt_mean_std,
    fmt_number,
    latex_table,
    markdown_table,
    metric_label,
    per_class_display,
    protocol_display,
    representation_display,
    summary_display,
    tests_display,
)
from raysweep.report.validity import (
    PartValidity,
    intro_lines,
    part_validity,
    resolved_settings,
    validity_section,
    with_baselines,
)
from raysweep.storage.atomic import atomic_write_json, atomic_write_text
from raysweep.storage.provenance import provenance

#: The in-distribution test set's name in the ``test_set`` column (the data's test split).
IN_DISTRIBUTION = "test"


@dataclasses.dataclass(frozen=True)
class Part:
    """The rows of one test set (``name`` None when the table has no ``test_set`` column):
    what names its tables (``slug`` suffix) and titles (``title`` suffix)."""

    name: str | None
    frame: pd.DataFrame

    @property
    def slug(self) -> str:
        return "" if self.name is None else f"-{slugify(self.name)}"

    @property
    def title(self) -> str:
        return "" if self.name is None else f" — test set {self.name}"


def split_test_sets(results: pd.DataFrame) -> list[Part]:
    """The rows of each test set, in order of appearance (the whole table when it has no
    ``test_set`` column)."""
    if TEST_SET not in results.columns:
        return [Part(None, results)]
    return [Part(str(name), frame.reset_index(drop=True))
            for name, frame in results.groupby(TEST_SET, sort=False)]


def in_distribution(parts: list[Part]) -> Part:
    """The in-distribution part (the data's own test split)."""
    return next((p for p in parts if p.name in (None, IN_DISTRIBUTION)), parts[0])


def _merged(sections: list[Section]) -> list[Section]:
    """Sections of the same title (one per test set) joined into one, in order."""
    merged: dict[str, list] = {}
    for section in sections:
        merged.setdefault(section.title, []).extend(section.blocks)
    return [Section(title, tuple(blocks)) for title, blocks in merged.items()]


@dataclasses.dataclass(frozen=True)
class ReportPaths:
    """Where :func:`write_report` wrote everything."""

    out_dir: Path
    markdown: Path
    html: Path
    significance_csv: Path
    provenance: Path
    tables: dict[str, dict[str, Path]]  # slug -> {"csv": ..., "md": ..., "tex": ...}
    figures: tuple[Path, ...]


def write_report(
    experiment_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    settings: ReportSpec | None = None,
    spec: Any = None,
    dpi: int = 100,
) -> ReportPaths:
    """Write the report of ``experiment_dir`` into ``out_dir`` (default
    ``<experiment_dir>/report``).

    Args:
        experiment_dir: holds ``results.parquet`` and optionally ``pretrain/`` and ``search/``
            (see :mod:`raysweep.report.inputs`).
        settings: metrics, comparisons, families, correction: the experiment spec's
            ``report:`` section (default :class:`~raysweep.config.ReportSpec`).
        spec: the experiment spec, recorded in the provenance (optional).
        dpi: resolution of the PNG figures.
    """
    settings = settings or ReportSpec()
    experiment_dir = Path(experiment_dir)
    out = Path(out_dir) if out_dir is not None else experiment_dir / "report"
    # read every input before writing anything: a bad file leaves no partial report
    inputs = _read_inputs(experiment_dir)
    if inputs.results is not None:  # unset report.metrics: chosen by the test sets' balance
        settings = resolved_settings(settings, inputs.results)
    record = provenance(spec)
    record["generated_from"] = str(experiment_dir / ("search" if inputs.results is None
                                                      else "results.parquet"))
    record["report_settings"] = dataclasses.asdict(settings)

    fig_dir = out / "figures"
    if inputs.results is None:  # an experiment of searches only
        tests = pd.DataFrame()
        sections = search_sections(inputs.searches, fig_dir, dpi)
        intro: tuple[str, ...] = (f"{len(sections)} search(es); no evaluation results yet.",)
    else:
        tests, sections, intro = _results_report(inputs, inputs.results, settings, fig_dir, dpi)
    doc = Document(
        title=f"raysweep report: {experiment_dir.resolve().name}",
        intro=intro,
        sections=tuple(s for s in sections if s.blocks),
        provenance=record,
    )
    return _write_files(doc, tests, out)


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """Everything the report reads from an experiment directory (``results`` None for an
    experiment of searches only)."""

    directory: Path
    results: pd.DataFrame | None
    curves: pd.DataFrame
    histories: list[SearchHistory]
    representations: list[dict]
    searches: list[StoredSearch]


def _read_inputs(experiment_dir: Path) -> _Inputs:
    searches = read_searches(experiment_dir)  # first: a damaged search stops the report early
    search_only = bool(searches) and not _has_rows(experiment_dir)
    return _Inputs(
        directory=experiment_dir,
        results=None if search_only else load_results(experiment_dir),
        curves=load_pretrain_curves(experiment_dir),
        histories=load_search_histories(experiment_dir),
        representations=load_representations(experiment_dir),
        searches=searches,
    )


def _results_report(
    inputs: _Inputs, results: pd.DataFrame, settings: ReportSpec, fig_dir: Path, dpi: int,
) -> tuple[pd.DataFrame, list[Section], tuple[str, ...]]:
    """The significance tests, sections and introduction of an experiment with results."""
    parts = split_test_sets(results)
    trained = in_distribution(parts).frame
    validity = {p.name: part_validity(p.frame, p.name, settings) for p in parts}
    tests, per_part = _per_test_set(parts, settings, validity)
    sections = [
        *_merged(per_part),
        *validity_section([(validity[p.name], p.frame, p.title, p.slug) for p in parts],
                          settings, fig_dir, dpi),
        *_distribution_section(results, settings, fig_dir, dpi),
        *_budget_section(results, settings, fig_dir, dpi),
        *_validation_section(trained, settings, fig_dir, dpi),
        *_representation_section(inputs.representations, fig_dir, dpi),
        _figures_section(parts, settings, inputs.curves, inputs.histories, fig_dir, dpi),
        *search_sections(inputs.searches, fig_dir, dpi),
    ]
    conditions = list(pd.unique(results["condition"]))
    on_sets = (f" (each scored on {len(parts)} test sets: "
               f"{', '.join(str(p.name) for p in parts)})" if len(parts) > 1 else "")
    intro = (
        *intro_lines(inputs.directory, list(validity.values()), settings),
        f"{len(trained)} runs of {len(conditions)} conditions "
        f"({', '.join(map(str, conditions))}){on_sets}, metrics "
        f"{', '.join(settings.metrics)}.",
        "Means and standard deviations are over the runs (seeds) of each condition; "
        "standard deviations are sample standard deviations (ddof = 1), as in the paper.",
    )
    return tests, sections, intro


def _per_test_set(parts: list[Part], settings: ReportSpec,
                  validity: dict[str | None, PartValidity]) -> tuple[pd.DataFrame, list[Section]]:
    """The tests of every test set (one table, a ``test_set`` column when there are several)
    and each test set's summary, protocol, per-class and significance sections."""
    sections, all_tests = [], []
    for index, part in enumerate(parts):
        tests = pairwise_tests(part.frame, settings)
        if part.name is not None:
            tests.insert(0, TEST_SET, part.name)
        all_tests.append(tests)
        sections += [
            _summary_section(part.frame, settings, part, validity[part.name]),
            *_protocol_section(part.frame, settings, part),
            *_per_class_section(part.frame, settings, part),
            _significance_section(tests, settings, part, explain=index == 0),
        ]
    tests = pd.concat(all_tests, ignore_index=True) if len(all_tests) > 1 else all_tests[0]
    return tests, sections


def _write_files(doc: Document, tests: pd.DataFrame, out: Path) -> ReportPaths:
    """Every table (CSV, Markdown, LaTeX), ``significance.csv``, ``provenance.json``,
    ``report.md`` and ``report.html`` of ``doc``, each written atomically."""
    table_paths: dict[str, dict[str, Path]] = {}
    for table in doc.tables():
        base = out / "tables" / table.slug
        table_paths[table.slug] = {
            "csv": atomic_write_text(base.with_suffix(".csv"), table.data.to_csv(index=False)),
            "md": atomic_write_text(base.with_suffix(".md"), markdown_table(table.display)),
            "tex": atomic_write_text(base.with_suffix(".tex"),
                                     latex_table(table.display, table.title, table.slug)),
        }
    significance_csv = atomic_write_text(out / "significance.csv", tests.to_csv(index=False))
    prov_path = atomic_write_json(out / "provenance.json", doc.provenance)
    markdown = atomic_write_text(out / "report.md", render_markdown(doc, out))
    html_path = atomic_write_text(out / "report.html", render_html(doc))
    return ReportPaths(
        out_dir=out, markdown=markdown, html=html_path, significance_csv=significance_csv,
        provenance=prov_path, tables=table_paths,
        figures=tuple(f.path for f in doc.figures()),
    )


def _has_rows(experiment_dir: Path) -> bool:
    """Whether ``results.parquet`` exists with at least one row (read from its footer)."""

    path = experiment_dir / "results.parquet"
    try:
        return path.is_file() and pq.read_metadata(path).num_rows > 0
    except Exception:  # unreadable: load_results names the problem
        return True


# --------------------------------------------------------------------------- sections


def _rows_of_family(frame: pd.DataFrame, key: dict) -> pd.DataFrame:
    """The rows of ``frame`` whose family columns equal ``key`` (``{column: value}``)."""
    mask = pd.Series(True, index=frame.index)
    for column, value in key.items():
        mask &= frame[column] == value
    return frame[mask].reset_index(drop=True)


def _summary_section(results: pd.DataFrame, settings: ReportSpec, tag: Part,
                     validity: PartValidity) -> Section:
    summary = summary_table(results, settings.metrics, settings.family_by)
    keys = condition_key_columns(results)
    blocks = []
    for label, key, _ in iter_families(results, settings.family_by):
        part = _rows_of_family(summary, key)
        metrics = " and ".join(metric_label(m) for m in settings.metrics)
        data, display = with_baselines(part, summary_display(part, settings.metrics, keys),
                                       validity, key, settings.metrics)
        blocks.append(Table(
            slug=f"summary-{slugify(label)}{tag.slug}",
            title=f"{metrics} per condition — {label}{tag.title}",
            caption=f"Mean ± std over runs (n per condition), family {label} "
                    "(the paper's Tables 4 and 6), then the scores of always answering the "
                    "majority class and of stratified chance; † marks a condition not "
                    "significantly above the majority class (section 'Baselines and "
                    "degenerate classifiers').",
            data=data, display=display,
        ))
    return Section("Summary per condition", tuple(blocks))


def _protocol_section(results: pd.DataFrame, settings: ReportSpec,
                      tag: Part) -> list[Section]:
    if "protocol" not in results.columns or results["protocol"].nunique() < 2:
        return []
    protocols = [str(p) for p in pd.unique(results["protocol"])]
    blocks = []
    for metric in settings.metrics:
        table = protocol_table(results, metric)
        blocks.append(Table(
            slug=f"protocols-{slugify(metric)}{tag.slug}",
            title=f"{metric_label(metric)}: {' vs '.join(protocols)}{tag.title}",
            caption=f"{metric_label(metric)} mean ± std (n) of each condition under each "
                    "protocol side by side (the paper's Tables 7 and 8).",
            data=table, display=protocol_display(table, protocols),
        ))
    return [Section("Protocols side by side", tuple(blocks))]


def _per_class_section(results: pd.DataFrame, settings: ReportSpec,
                       tag: Part) -> list[Section]:
    per_class = per_class_f1(results, settings.family_by)
    if per_class.empty:
        return []
    blocks = []
    for label, key, _ in iter_families(results, settings.family_by):
        part = _rows_of_family(per_class, key)
        blocks.append(Table(
            slug=f"per-class-f1-{slugify(label)}{tag.slug}",
            title=f"Per-class F1 — {label}{tag.title}",
            caption="Mean F1 per class over runs, one column per condition, and the mean "
                    "test support (the slides' classification report).",
            data=part, display=per_class_display(part),
        ))
    return [Section("Per-class F1", tuple(blocks))]


def _significance_section(tests: pd.DataFrame, settings: ReportSpec, tag: Part,
                          explain: bool = True) -> Section:
    labels = {name: t.label for name, t in stats.TESTS.items()}
    primary = labels[settings.primary_test]
    correction = {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg", "bonferroni": "Bonferroni",
                  "none": "no"}[settings.correction]
    how = "the declared comparisons" if settings.comparisons else \
        "every pair of conditions (two-sided)"
    blocks: list[Text | Table] = [] if not explain else [Text(
        f"Tests: {', '.join(labels[t] for t in settings.tests)}. Within each family "
        f"({', '.join(settings.family_by) or 'all runs'}) {how} are tested for each metric. "
        "Null 'Model 1 ≤ Model 2' is the one-sided test of H1: Model 1 > Model 2; "
        "'Model 1 = Model 2' is two-sided. Paired tests pair runs by seed. Comparisons across "
        "families (a condition under one protocol against another under a second) pair runs "
        "by seed too and are corrected as one family of their own. "
        f"Cells show p (p adjusted by the {correction} correction across the family, per "
        f"metric and test); * marks rejection at alpha = {settings.alpha}. 'Flagged' means "
        f"the primary test ({primary}) rejects after correction. Δ mean = mean 1 − mean 2 "
        f"with its 95% percentile bootstrap CI ({settings.bootstrap_resamples} resamples). "
        "Design 'paired': every run of both conditions has a partner of the same seed; then "
        "the bootstrap resamples seed indices (both runs of a seed together) and the power "
        "analysis uses Cohen's d_z = mean / sd of the per-seed differences; otherwise the "
        "runs are independent samples, resampled separately, and the power analysis uses "
        "Cohen's d (pooled standard deviation). Cliff's δ = P(X1 > X2) − P(X1 < X2). "
        f"Seeds for {settings.power:.0%} power = the smallest number of seeds for which a "
        f"paired t-test (paired design; statsmodels TTestPower) or a two-sample t-test "
        f"(independent; TTestIndPower) at alpha = {settings.alpha} detects the observed "
        "effect size."
        + (" With external test sets every test set has its own tables and families: the "
           "runs of one test set are tested and corrected together." if tag.name else "")
    )]
    flagged = tests[tests["flagged"]].drop_duplicates(
        ["family", "metric", "model_1", "model_2", "family_1", "family_2"])
    where = f" ({tag.title.removeprefix(' — ')})" if tag.name else ""
    if flagged.empty:
        blocks.append(Text(f"No comparison is flagged after correction{where}."))
    else:
        def sides(r) -> str:
            if r.family_1 == r.family_2:
                return f"{r.model_1} vs {r.model_2}"
            return f"{r.model_1} ({r.family_1}) vs {r.model_2} ({r.family_2})"

        items = "; ".join(f"{sides(r)} ({r.family}, {metric_label(r.metric)})"
                          for r in flagged.itertuples())
        blocks.append(Text(f"Flagged after correction{where}: {items}."))
    if tests.empty:
        blocks.append(Text("No comparison could be made (fewer than two conditions)."))
    for family, part in tests.groupby("family", sort=False):
        blocks.append(Table(
            slug=f"tests-{slugify(str(family))}{tag.slug}",
            title=f"Pairwise tests — {family}{tag.title}",
            caption=f"Family {family}: {part[['model_1', 'model_2']].drop_duplicates().shape[0]}"
                    f" comparisons (the paper's Tables 13 and 14).",
            data=part.reset_index(drop=True),
            display=tests_display(part, labels, settings.power),
        ))
    return Section("Significance tests", tuple(blocks))


def _validation_section(
    results: pd.DataFrame, settings: ReportSpec, fig_dir: Path, dpi: int,
) -> list[Section]:
    """Per-epoch validation curves of fine-tuning (rows with a ``val_curve``), per family."""
    blocks: list[Table | Figure] = []
    metrics = ["loss", *settings.metrics]
    for label, _, frame in iter_families(results, settings.family_by):
        curves = plots.validation_curve_table(frame, metrics)
        if curves.empty:
            continue
        slug = f"validation-curves-{slugify(label)}"
        fig = plots.validation_curves(curves, metrics, f"Validation curves — {label}",
                                      settings.curve_smoothing)
        if fig is not None:
            path = plots.save_png(fig, fig_dir / f"{slug}.png", dpi=dpi)
            blocks.append(Figure(slug, f"Validation curves — {label}",
                                 "Loss and metrics on the validation split after every "
                                 "epoch: mean over seeds, band ± one standard deviation."
                                 + (f" The mean exponentially smoothed (alpha "
                                    f"{settings.curve_smoothing:g}), the true mean "
                                    "semi-transparent." if settings.curve_smoothing else ""),
                                 path))
        blocks.append(Table(
            slug=slug, title=f"Last epoch on the validation split — {label}",
            caption="Mean ± std over seeds at the last epoch, and the epoch of the best mean "
                    "(the CSV holds every epoch).",
            data=curves, display=_last_epoch_display(curves, metrics)))
    return [Section("Validation curves", tuple(blocks))] if blocks else []


def _last_epoch_display(curves: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    rows = []
    for condition, part in curves.groupby("condition", sort=False):
        last = int(part["epoch"].max())
        row: dict[str, object] = {"Condition": condition, "Epochs": last}
        for metric in metrics:
            values = part[part["metric"] == metric].set_index("epoch")
            if values.empty:
                continue
            name = "Loss" if metric == "loss" else metric_label(metric)
            row[name] = fmt_mean_std(values.loc[last, "mean"], values.loc[last, "std"])
            best = values["mean"].idxmin() if metric == "loss" else values["mean"].idxmax()
            row[f"Best epoch ({name})"] = int(best)
        rows.append(row)
    return pd.DataFrame(rows)


def _representation_section(entries: list[dict], fig_dir: Path, dpi: int) -> list[Section]:
    """The representation analysis of every encoder: a table and one PCA / t-SNE figure each."""
    if not entries:
        return []
    data = pd.DataFrame([{k: v for k, v in e.items()
                          if not isinstance(v, (dict, list))} for e in entries])
    k = entries[0].get("settings", {}).get("knn_k", "k")
    blocks: list[Text | Table | Figure] = [
        Text("Frozen features of each encoder (eval mode, no augmentation), standardised with "
             "the training split's mean and standard deviation, computed once per encoder "
             f"(not per seed). kNN accuracy: a {k}-nearest-neighbour classifier (cosine "
             "distance) fit on the labelled training features, scored on the test set. "
             "Linear separability: the cross-validated accuracy of a logistic regression "
             "(C = 1) on the test features alone (stratified folds). Silhouette: the "
             "silhouette coefficient of the test features with the true classes as clusters "
             "(−1 to 1; higher = better separated classes). All three are scikit-learn's."),
        Table(slug="representations", title="Representation analysis per encoder",
              caption="Test-set scores of the frozen features (Jiang, thesis section 7.1).",
              data=data, display=representation_display(data)),
    ]
    for entry in entries:
        condition = str(entry["condition"])
        slug = f"embedding-{slugify(condition)}"
        explained = entry["embedding"].get("pca_explained_variance") or []
        share = (f" The two principal components explain "
                 f"{fmt_number(sum(explained) * 100, 1)}% of the variance." if explained else "")
        fig = plots.embedding_scatter(entry, f"{condition}: test features")
        path = plots.save_png(fig, fig_dir / f"{slug}.png", dpi=dpi)
        blocks.append(Figure(
            slug, f"PCA and t-SNE — {condition}",
            f"{len(entry['embedding']['labels'])} test images, coloured by class; PCA "
            "components from the training features, t-SNE of the first principal "
            f"components.{share}", path))
    return [Section("Representations", tuple(blocks))]


def _figures_section(
    parts: list[Part], settings: ReportSpec, curves: pd.DataFrame,
    histories: list[SearchHistory], fig_dir: Path, dpi: int,
) -> Section:
    blocks: list[Figure] = []

    def add(fig: PlotFigure | None, slug: str, title: str, caption: str) -> None:
        if fig is None:
            return
        path = plots.save_png(fig, fig_dir / f"{slug}.png", dpi=dpi)
        blocks.append(Figure(slug, title, caption, path))

    for part in parts:
        results = part.frame
        families = [(label, frame)
                    for label, _, frame in iter_families(results, settings.family_by)]
        for metric in settings.metrics:
            add(plots.box_strip(results, metric, families), f"box-{slugify(metric)}{part.slug}",
                f"{metric_label(metric)} per condition{part.title}",
                "Box plot (quartiles, whiskers to 1.5 IQR) with every run as a point.")
        per_class = per_class_f1(results, settings.family_by)
        if not per_class.empty:
            for label, key, _ in iter_families(results, settings.family_by):
                mask = pd.Series(True, index=per_class.index)
                for column, value in key.items():
                    mask &= per_class[column] == value
                add(plots.per_class_bars(per_class[mask], f"Per-class F1 — {label}{part.title}"),
                    f"per-class-f1-{slugify(label)}{part.slug}",
                    f"Per-class F1 — {label}{part.title}",
                    "Mean F1 per class; error bars one standard deviation over runs.")
    trained = in_distribution(parts).frame  # the training runs, shared by every test set
    for label, _, frame in iter_families(trained, settings.family_by):
        add(plots.lr_finder_curves(frame, f"LR finder — {label}"),
            f"lr-finder-{slugify(label)}", f"LR-finder curves — {label}",
            "Loss against learning rate for every run; dotted lines mark the suggested lr_max.")
    if not curves.empty:
        smoothed = (f" Exponentially smoothed (alpha {settings.curve_smoothing:g}), the true "
                    "lines semi-transparent." if settings.curve_smoothing else "")
        add(plots.pretrain_loss_curves(curves, settings.curve_smoothing), "pretrain-loss",
            "Pre-training loss", "Mean loss per epoch of each pre-training run; dashed: the "
            f"loss on its held-out validation images, where it has some.{smoothed}")
        add(plots.pretrain_top1_curves(curves, settings.curve_smoothing), "pretrain-top1",
            "Contrastive top-1 accuracy", "Share of the images of a batch whose most similar "
            "embedding is their other view, per epoch; dashed: on the held-out validation "
            f"images.{smoothed}")
    for history in histories:
        if history.trials.empty or is_search_folder(history.path.parent):
            continue  # a search with a study has its own section
        direction = "maximised" if history.maximize else "minimised"
        add(plots.search_history(history.trials, f"Search {history.name}", history.maximize),
            f"search-{slugify(history.name)}", f"Search history — {history.name}",
            f"Objective per trial ({direction}) and the best so far.")
    return Section("Figures", tuple(blocks))


def _distribution_section(results: pd.DataFrame, settings: ReportSpec, fig_dir: Path,
                          dpi: int) -> list[Section]:
    """In- vs out-of-distribution: every condition's metrics on every test set side by side,
    as a table and a figure per metric (Chaves et al.'s out-of-distribution evaluation)."""
    if TEST_SET not in results.columns or results[TEST_SET].nunique() < 2:
        return []
    test_sets = [str(t) for t in pd.unique(results[TEST_SET])]
    blocks: list[Text | Table | Figure] = [Text(
        f"Every trained head is scored on {len(test_sets)} test sets: the data's own test "
        f"split ({IN_DISTRIBUTION}, in distribution) and {', '.join(test_sets[1:])} (out of "
        "distribution); the training runs are the same, so a condition's runs on different "
        "test sets are paired by seed. An external test set may hold only some of the "
        "training classes: its macro F1, balanced accuracy and AUC are over the classes it "
        "holds.")]
    for metric in settings.metrics:
        table = across_test_sets(results, metric)
        title = f"{metric_label(metric)}: in vs out of distribution"
        blocks += _table_and_figure(
            Table(slug=f"test-sets-{slugify(metric)}",
                  title=f"{metric_label(metric)} on every test set",
                  caption=f"{metric_label(metric)} mean ± std (n) of each condition and "
                          "protocol on each test set.",
                  data=table, display=distribution_display(table, test_sets)),
            plots.distribution_profile(table, metric, title), title,
            "Mean per test set (the in-distribution test split first); error bars one "
            "standard deviation over runs.", fig_dir, dpi)
    return [Section("In and out of distribution", tuple(blocks))]


def _budget_section(results: pd.DataFrame, settings: ReportSpec, fig_dir: Path,
                    dpi: int) -> list[Section]:
    """Performance against the label budget per arm, with 95% confidence bands (a study whose
    conditions differ in their label budget: ``n_labels`` and ``arm`` columns)."""
    blocks: list[Text | Table | Figure] = []
    for metric in settings.metrics:
        table = budget_table(results, metric)
        if table.empty:
            continue
        title = f"{metric_label(metric)} against the label budget"
        blocks += _table_and_figure(
            Table(slug=f"label-budgets-{slugify(metric)}", title=title,
                  caption="Mean ± std over runs of each arm at each label budget (labelled "
                          "training images, before oversampling), and the 95% confidence "
                          "interval of the mean (Student's t).",
                  data=table, display=budget_display(table)),
            plots.budget_curves(table, metric, title), title,
            "Mean over runs per arm; the band is the 95% confidence interval of the mean.",
            fig_dir, dpi)
    return [Section("Label budgets", tuple(blocks))] if blocks else []


def _table_and_figure(table: Table, fig: Any, title: str, caption: str, fig_dir: Path,
                      dpi: int) -> list[Table | Figure]:
    """``table`` and, when ``fig`` (a matplotlib figure or None) exists, the figure saved as
    ``<fig_dir>/<table.slug>.png`` under ``title`` and ``caption``."""
    if fig is None:
        return [table]
    path = plots.save_png(fig, fig_dir / f"{table.slug}.png", dpi=dpi)
    return [table, Figure(table.slug, title, caption, path)]
