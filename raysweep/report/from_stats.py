"""Significance tests from published means and standard deviations (``raysweep report
--from-stats TABLE.csv``), reproducing the authors' computation:
``scipy.stats.ttest_ind_from_stats(..., equal_var=False)`` (docs/protocol.md, paper appendix A.3).

Input CSV, one row per model (and metric)::

    model,mean,std,n[,metric]
    SSL+I+SSL_p,0.69112,0.011,35,accuracy
    SSL,0.65701,0.021,35,accuracy

``std`` is the sample standard deviation the paper reports. Without a ``metric`` column all
rows belong to one metric, named ``value``.

Comparisons: an optional second CSV with columns ``model_1,model_2[,alternative]``
(``alternative`` is ``greater``, the paper's null "Model 1 <= Model 2", the default when the
column is absent or the cell empty; or ``two-sided``, null "Model 1 = Model 2"). Each
comparison is tested for every metric holding both models. Without it, every pair of models is
tested two-sided, in file order. The correction (Holm by default) runs across the comparisons
of one metric. Cohen's d (pooled sd) and the seeds needed for 80% power are computed from the
same summary statistics; Cliff's delta and bootstrap CIs need the raw runs and are absent.
"""

from __future__ import annotations

import itertools
import math
import typing
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from raysweep.config import Comparison, Correction, from_dict
from raysweep.errors import DataError, OutputError, SpecError
from raysweep.plan.preflight import output_file_problem
from raysweep.report import stats
from raysweep.report.significance import apply_correction, null_hypothesis
from raysweep.report.tables import fmt_count, fmt_null, fmt_number, fmt_p, metric_label
from raysweep.storage.atomic import atomic_write_text

#: Multiple-testing corrections (names as in ``statsmodels.stats.multitest.multipletests``).
CORRECTIONS = typing.get_args(Correction)

DEFAULT_METRIC = "value"


def _read_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found")
    try:
        return pd.read_csv(path, dtype={"model": str, "model_1": str, "model_2": str})
    except Exception as exc:
        raise DataError(f"{path} is not a readable CSV file ({type(exc).__name__})") from exc


def load_stats_table(path: str | Path) -> pd.DataFrame:
    """Read and validate a ``model,mean,std,n[,metric]`` CSV."""
    table = _read_csv(path)
    missing = [c for c in ("model", "mean", "std", "n") if c not in table.columns]
    if missing:
        raise DataError(f"{path} has no column(s) {missing} (need model,mean,std,n)")
    if "metric" not in table.columns:
        table["metric"] = DEFAULT_METRIC
    for line, (_, row) in enumerate(table.iterrows(), start=2):  # 1-based, after the header
        for column in ("model", "mean", "std", "n", "metric"):
            if pd.isna(row[column]):
                raise DataError(f"{path} line {line}: {column} is empty")
        try:
            mean, std, n = float(row["mean"]), float(row["std"]), float(row["n"])
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path} line {line}: mean, std and n must be numbers") from exc
        if not math.isfinite(mean):
            raise DataError(f"{path} line {line}: mean {row['mean']} must be a finite number")
        if std < 0 or not math.isfinite(std):
            raise DataError(f"{path} line {line}: std {row['std']} must be finite and >= 0")
        if n < 2 or n != int(n):
            raise DataError(f"{path} line {line}: n {row['n']} must be an integer >= 2")
    if len(table) < 2:
        raise DataError(f"{path} has {len(table)} row(s); a test compares at least two models")
    table = table.astype({"model": str, "metric": str, "mean": float, "std": float})
    table["n"] = table["n"].astype(int)
    dup = table.duplicated(["metric", "model"])
    if dup.any():
        row = table[dup].iloc[0]
        raise DataError(f"{path}: model {row['model']!r} appears twice for metric {row['metric']!r}")
    return table


def load_comparisons(path: str | Path) -> list[Comparison]:
    """Read a ``model_1,model_2[,alternative]`` CSV."""
    table = _read_csv(path)
    missing = [c for c in ("model_1", "model_2") if c not in table.columns]
    if missing:
        raise DataError(f"{path} has no column(s) {missing} (need model_1,model_2)")
    comparisons = []
    for line, (_, row) in enumerate(table.iterrows(), start=2):  # 1-based, after the header
        alternative = row.get("alternative", "greater")
        alternative = "greater" if pd.isna(alternative) else str(alternative).strip()
        try:
            comparisons.append(from_dict(Comparison, {
                "model_1": str(row["model_1"]), "model_2": str(row["model_2"]),
                "alternative": alternative}))
        except SpecError as exc:
            raise DataError(f"{path} line {line}: {exc}") from exc
    return comparisons


def tests_from_stats(
    table: pd.DataFrame,
    comparisons: Sequence[Comparison] = (),
    *,
    correction: str = "holm",
    alpha: float = 0.05,
    power: float = 0.8,
) -> pd.DataFrame:
    """Welch's t-test for each comparison and metric from the summary statistics in ``table``
    (columns ``metric, model, mean, std, n``); see the module docstring for the output."""
    if correction not in CORRECTIONS:
        raise SpecError(f"correction {correction!r} is not one of {CORRECTIONS}")
    known = set(table["model"])
    for comp in comparisons:
        for model in (comp.model_1, comp.model_2):
            if model not in known:
                raise DataError(f"comparison {comp.model_1!r} vs {comp.model_2!r}: model "
                                f"{model!r} is not in the statistics table")
    rows = []
    for metric, part in table.groupby("metric", sort=False):
        by_model = part.set_index("model")
        if comparisons:
            plan = [c for c in comparisons if c.model_1 in by_model.index
                    and c.model_2 in by_model.index]
        else:
            plan = [Comparison(a, b, "two-sided")
                    for a, b in itertools.combinations(by_model.index, 2)]
        for comp in plan:
            one, two = by_model.loc[comp.model_1], by_model.loc[comp.model_2]
            if one["std"] == 0 and two["std"] == 0:
                raise DataError(
                    f"{comp.model_1!r} vs {comp.model_2!r} (metric {metric}): both standard "
                    "deviations "
                    "are 0, so Welch's t is undefined (a rounded table?); give the unrounded "
                    "standard deviations or leave the pair out")
            result = stats.welch_from_stats(one["mean"], one["std"], int(one["n"]),
                                            two["mean"], two["std"], int(two["n"]),
                                            comp.alternative)
            d = stats.cohens_d_from_stats(one["mean"], one["std"], int(one["n"]),
                                          two["mean"], two["std"], int(two["n"]))
            rows.append({
                "family": "from-stats", "metric": metric, "model_1": comp.model_1,
                "model_2": comp.model_2, "alternative": comp.alternative,
                "null": null_hypothesis(comp.alternative),
                "mean_1": one["mean"], "std_1": one["std"], "n_1": int(one["n"]),
                "mean_2": two["mean"], "std_2": two["std"], "n_2": int(two["n"]),
                "diff": one["mean"] - two["mean"], "cohens_d": d,
                "seeds_needed": stats.seeds_needed(d, alpha=alpha, power=power,
                                                   alternative=comp.alternative),
                "test": "welch", "statistic": result.statistic, "df": result.df,
                "p_value": result.pvalue,
            })
    if not rows:
        raise DataError("nothing to test: no metric holds both models of a comparison (a test "
                        "needs two models of the same metric)")
    columns = ["family", "metric", "model_1", "model_2", "alternative", "null", "mean_1",
               "std_1", "n_1", "mean_2", "std_2", "n_2", "diff", "cohens_d", "seeds_needed",
               "test", "statistic", "df", "p_value"]
    out = apply_correction(pd.DataFrame(rows, columns=columns), correction, alpha, None)
    return out.drop(columns=["family", "flagged"])


def from_stats_display(tests: pd.DataFrame) -> pd.DataFrame:
    """The tests as strings, laid out like the paper's Tables 13 and 14."""

    return pd.DataFrame({
        "Metric": tests["metric"].map(metric_label),
        "Model 1": tests["model_1"], "Model 2": tests["model_2"],
        "Null": tests["null"].map(fmt_null),
        "t": tests["statistic"].map(lambda x: fmt_number(x, 3)),
        "df": tests["df"].map(lambda x: fmt_number(x, 1)),
        "p": tests["p_value"].map(fmt_p),
        "p (adjusted)": tests["p_adjusted"].map(fmt_p),
        "Reject": tests["reject"].map(lambda r: "yes" if r else "no"),
        "Cohen's d": tests["cohens_d"].map(lambda x: fmt_number(x, 2)),
        "Seeds for 80% power": tests["seeds_needed"].map(fmt_count),
    })


def report_from_stats(
    csv_path: str | Path,
    *,
    comparisons: str | Path | Sequence[Comparison] | None = None,
    out: str | Path | None = None,
    correction: str = "holm",
    alpha: float = 0.05,
    power: float = 0.8,
) -> pd.DataFrame:
    """Run :func:`tests_from_stats` on a statistics CSV; with ``out``, write the result there
    as CSV (atomically). ``comparisons`` is a comparisons CSV path or a sequence of
    :class:`raysweep.config.Comparison` (or ``(model_1, model_2, alternative)`` tuples). Raises
    :class:`~raysweep.errors.OutputError` before reading anything when ``out`` cannot be
    written (a directory, or an unwritable folder)."""
    if out is not None:

        problem = output_file_problem(out, "output file")
        if problem:
            raise OutputError(problem)
    table = load_stats_table(csv_path)
    if comparisons is None:
        planned: list[Comparison] = []
    elif isinstance(comparisons, (str, Path)):
        planned = load_comparisons(comparisons)
    else:
        planned = [c if isinstance(c, Comparison) else Comparison(*c) for c in comparisons]
    tests = tests_from_stats(table, planned, correction=correction, alpha=alpha, power=power)
    if out is not None:
        atomic_write_text(out, tests.to_csv(index=False))
    return tests
