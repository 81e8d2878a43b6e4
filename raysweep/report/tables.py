"""Table formatting: display frames (strings) from the numeric tables, and their Markdown and
LaTeX layouts. CSV files are written from the numeric tables (full precision).

Means and standard deviations are shown like the paper: 5 decimals, ``0.59281 ± 0.01097``.
Markdown and LaTeX are hand-written (pandas' ``to_markdown`` needs ``tabulate``, which raysweep
does not depend on; the LaTeX is a plain booktabs ``tabular``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

METRIC_LABELS = {
    "accuracy": "Accuracy",
    "f1_weighted": "F1 (weighted)",
    "f1_macro": "F1 (macro)",
    "balanced_accuracy": "Balanced accuracy",
    "auc_ovr": "AUC (one-vs-rest)",
}

COLUMN_LABELS = {
    "protocol": "Protocol",
    "condition": "Condition",
    "initial": "Initial",
    "further_data": "Further data",
    "further_method": "Further method",
}

MISSING = "–"
#: A condition key a condition does not have (the paper's tables write "-" there).
NO_KEY = "-"


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def column_label(column: str) -> str:
    return COLUMN_LABELS.get(column, column.replace("_", " ").capitalize())


def _missing(x: object) -> bool:
    try:
        return x is None or math.isnan(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def fmt_number(x: object, digits: int = 5) -> str:
    return MISSING if _missing(x) else f"{float(x):.{digits}f}"  # type: ignore[arg-type]


def fmt_mean_std(mean: object, std: object, digits: int = 5) -> str:
    """``0.59281 ± 0.01097`` (the paper's 5 decimals); std missing (n = 1) shows the mean only."""
    if _missing(mean):
        return MISSING
    if _missing(std):
        return fmt_number(mean, digits)
    return f"{float(mean):.{digits}f} ± {float(std):.{digits}f}"  # type: ignore[arg-type]


def fmt_p(p: object) -> str:
    """p-values like the paper's tables: 5 decimals, or 4 significant digits below 1e-4."""
    if _missing(p):
        return MISSING
    p = float(p)  # type: ignore[arg-type]
    return f"{p:.5f}" if p >= 1e-4 else f"{p:.4e}"


def fmt_count(x: object) -> str:
    if _missing(x):
        return MISSING
    if math.isinf(float(x)):  # type: ignore[arg-type]
        return "∞"
    return str(int(x))  # type: ignore[call-overload]


def fmt_null(null: str) -> str:
    return null.replace("<=", "≤")


# --------------------------------------------------------------------------- display frames


def summary_display(
    summary: pd.DataFrame, metrics: Sequence[str], keys: Sequence[str]
) -> pd.DataFrame:
    """Condition (and its keys; a key the condition does not have, such as the ``initial``
    of a random encoder, reads :data:`NO_KEY`), n, then ``mean ± std`` per metric."""
    out = pd.DataFrame({column_label(k): [NO_KEY if _missing(v) else str(v) for v in summary[k]]
                        for k in ["condition", *keys]})
    out["n"] = summary[f"{metrics[0]}_n"].map(fmt_count)
    for metric in metrics:
        out[metric_label(metric)] = [
            fmt_mean_std(m, s) for m, s in zip(summary[f"{metric}_mean"],
                                               summary[f"{metric}_std"], strict=True)
        ]
    return out


def protocol_display(table: pd.DataFrame, protocols: Sequence[str]) -> pd.DataFrame:
    """Condition, then ``mean ± std (n)`` per protocol."""
    out = pd.DataFrame({"Condition": table["condition"].astype(str)})
    for p in protocols:
        out[str(p)] = _mean_std_n_cells(table, str(p))
    return out


def _mean_std_n_cells(table: pd.DataFrame, prefix: str) -> list[str]:
    """``mean ± std (n=...)`` of the ``<prefix>_mean``, ``_std`` and ``_n`` columns, row by
    row."""
    return [fmt_mean_std(m, s) + ("" if _missing(n) else f" (n={int(n)})")
            for m, s, n in zip(table[f"{prefix}_mean"], table[f"{prefix}_std"],
                               table[f"{prefix}_n"], strict=True)]


def per_class_display(per_class: pd.DataFrame) -> pd.DataFrame:
    """One row per class, one column of mean F1 per condition (3 decimals, like the slides),
    then the mean support."""
    wide = per_class.pivot_table(
        index="class", columns="condition", values="f1_mean", sort=False, dropna=False
    )
    classes = list(pd.unique(per_class["class"]))
    conditions = list(pd.unique(per_class["condition"]))
    wide = wide.reindex(index=classes, columns=conditions)
    out = pd.DataFrame({"Class": classes})
    for c in conditions:
        out[str(c)] = [fmt_number(v, 3) for v in wide[c]]
    support = per_class.groupby("class", sort=False)["support"].mean().reindex(classes)
    if support.notna().any():
        out["Support"] = [fmt_count(round(v)) if not _missing(v) else MISSING for v in support]
    return out


def _side(model: object, family: object, across: bool) -> str:
    return f"{model} ({family})" if across else str(model)


def representation_display(data: pd.DataFrame) -> pd.DataFrame:
    """Condition, encoder, sizes, then the three scores (3 decimals)."""
    out = pd.DataFrame({"Condition": data["condition"].astype(str)})
    if "encoder" in data.columns:
        out["Encoder"] = data["encoder"].astype(str)
    out["Train / test"] = [f"{fmt_count(a)} / {fmt_count(b)}"
                           for a, b in zip(data["n_train"], data["n_test"], strict=True)]
    for column, label in (("knn_accuracy", "kNN accuracy"),
                          ("linear_separability", "Linear separability"),
                          ("silhouette", "Silhouette")):
        out[label] = data[column].map(lambda v: fmt_number(v, 3))
    return out


def tests_display(tests: pd.DataFrame, test_labels: dict[str, str],
                  power: float = 0.8) -> pd.DataFrame:
    """One row per (metric, comparison): the difference, its CI, the design (paired by seed or
    independent), effect sizes, seeds needed, then ``p (p_adj)`` per test, ``*`` marking
    rejection after correction, and ``Flagged``. A comparison across families names each
    side's family (``simclr-100 (probe)``)."""
    key = ["metric", "model_1", "model_2"]
    key += [c for c in ("family_1", "family_2") if c in tests.columns]
    rows = []
    for _, group in tests.groupby(key, sort=False, dropna=False):
        first = group.iloc[0]
        across = "family_1" in first and first["family_1"] != first["family_2"]
        design = first.get("design", "independent")
        row = {
            "Metric": metric_label(first["metric"]),
            "Model 1": _side(first["model_1"], first.get("family_1"), across),
            "Model 2": _side(first["model_2"], first.get("family_2"), across),
            "Null": fmt_null(first["null"]),
            "Δ mean": fmt_number(first["diff"]),
            "95% CI": f"[{fmt_number(first['ci_low'])}, {fmt_number(first['ci_high'])}]",
            "Design": f"paired (n={int(first['n_1'])})" if design == "paired" else design,
            "Cohen's d": fmt_number(first["cohens_d"], 2),
            "Cohen's d_z": fmt_number(first.get("cohens_dz"), 2),
            "Cliff's δ": fmt_number(first["cliffs_delta"], 2),
            f"Seeds for {power:.0%} power": fmt_count(first["seeds_needed"]),
        }
        for _, t in group.iterrows():
            mark = " *" if t["reject"] else ""
            row[test_labels[t["test"]]] = f"{fmt_p(t['p_value'])} ({fmt_p(t['p_adjusted'])}){mark}"
        row["Flagged"] = "yes" if first["flagged"] else "no"
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- layouts


def markdown_table(display: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""

    def cell(x: object) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in display.columns) + " |"
    rule = "|" + "|".join("---" for _ in display.columns) + "|"
    body = ["| " + " | ".join(cell(x) for x in row) + " |" for row in display.itertuples(False)]
    return "\n".join([header, rule, *body]) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "≤": r"$\leq$", "δ": r"$\delta$", "Δ": r"$\Delta$", "∞": r"$\infty$",
    "–": "--",
}


def latex_escape(text: object) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def latex_table(display: pd.DataFrame, caption: str, label: str) -> str:
    """A ``table`` float holding a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``)."""
    spec = "l" * len(display.columns)
    lines = [
        "% requires \\usepackage{booktabs}",
        "\\begin{table}[ht]",
        "\\centering",
        f"\\caption{{{latex_escape(caption)}}}",
        f"\\label{{tab:{label}}}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(c) for c in display.columns) + " \\\\",
        "\\midrule",
        *(" & ".join(latex_escape(x) for x in row) + " \\\\" for row in display.itertuples(False)),
        "\\bottomrule",
        "\\end{tabular}",
        "\\end{table}",
    ]
    return "\n".join(lines) + "\n"


def distribution_display(table: pd.DataFrame, test_sets: Sequence[str]) -> pd.DataFrame:
    """Protocol, condition, then ``mean ± std (n)`` on each test set."""
    out = pd.DataFrame({"Protocol": table["protocol"].astype(str),
                        "Condition": table["condition"].astype(str)})
    for t in test_sets:
        out[str(t)] = _mean_std_n_cells(table, str(t))
    return out


def budget_display(table: pd.DataFrame) -> pd.DataFrame:
    """Test set, protocol, arm, labels, ``mean ± std`` (n) and the 95% CI of the mean."""
    return pd.DataFrame({
        "Test set": table["test_set"].astype(str),
        "Protocol": table["protocol"].astype(str),
        "Arm": table["arm"].astype(str),
        "Labels": [f"{int(n):,}" for n in table["n_labels"]],
        "Mean ± std (n)": [fmt_mean_std(m, s) + f" (n={int(n)})" for m, s, n in
                           zip(table["mean"], table["std"], table["n"], strict=True)],
        "95% CI of the mean": [f"[{fmt_number(a)}, {fmt_number(b)}]"
                               for a, b in zip(table["ci_low"], table["ci_high"], strict=True)],
    })
