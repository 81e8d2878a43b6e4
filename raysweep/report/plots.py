"""Report figures (matplotlib, Agg canvas, PNG). Each builder takes tables and returns a
``matplotlib.figure.Figure``; :func:`save_png` writes it atomically. Figures are created with
the object-oriented API (no pyplot global state), so nothing depends on the display backend.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from raysweep.report.tables import metric_label
from raysweep.storage.atomic import atomic_write_bytes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Render ``fig`` to PNG bytes and write them atomically to ``path``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return atomic_write_bytes(path, buffer.getvalue())


def box_strip(
    results: pd.DataFrame, metric: str, families: Sequence[tuple[str, pd.DataFrame]]
) -> Figure:
    """Box plot plus the individual runs (jittered strip) per condition, one panel per family.

    The jitter is drawn from a fixed-seed generator so the figure is reproducible.
    """
    fig = new_figure(max(4.0, 1.2 + 0.9 * _max_conditions(families)), 2.8 * len(families))
    axes = fig.subplots(len(families), 1, squeeze=False)[:, 0]
    rng = np.random.default_rng(0)
    for ax, (label, frame) in zip(axes, families, strict=True):
        conditions = [str(c) for c in pd.unique(frame["condition"].astype(str))]
        data = [frame.loc[frame["condition"].astype(str) == c, metric].dropna().to_numpy()
                for c in conditions]
        ax.boxplot(data, showfliers=False, widths=0.5)
        for i, values in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(values)), values, s=8, alpha=0.6)
        ax.set_xticks(range(1, len(conditions) + 1), conditions, rotation=30, ha="right")
        ax.set_ylabel(metric_label(metric))
        ax.set_title(f"{metric_label(metric)} per run — {label}")
        ax.grid(axis="y", alpha=0.3)
    return fig


def per_class_bars(per_class: pd.DataFrame, title: str) -> Figure:
    """Grouped bars: mean per-class F1 for each condition, error bars one std."""
    classes = list(pd.unique(per_class["class"]))
    conditions = list(pd.unique(per_class["condition"]))
    fig = new_figure(max(5.0, 0.5 * len(classes) * max(1, len(conditions)) ** 0.5 + 3), 3.2)
    ax = fig.subplots()
    width = 0.8 / max(1, len(conditions))
    x = np.arange(len(classes))
    for i, condition in enumerate(conditions):
        rows = per_class[per_class["condition"] == condition].set_index("class").reindex(classes)
        ax.bar(x + (i - (len(conditions) - 1) / 2) * width, rows["f1_mean"], width,
               yerr=rows["f1_std"].fillna(0.0), label=str(condition), capsize=1.5)
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylabel("F1")
    ax.set_ylim(0, 1.25)  # headroom for the legend above the bars
    ax.set_title(title)
    ax.legend(fontsize="small", ncols=min(4, len(conditions)), loc="upper center")
    return fig


def parse_lr_finder(value: object) -> dict[str, Any] | None:
    """The ``lr_finder`` JSON string (or mapping) of a results row -> ``{"lrs", "losses",
    "suggestion"}``, or None when missing or unreadable."""
    if isinstance(value, (str, bytes)):
        try:
            record = json.loads(value)
        except ValueError:
            return None
    elif isinstance(value, Mapping):
        record = dict(value)
    else:
        return None
    if not isinstance(record, dict) or not record.get("lrs") or not record.get("losses"):
        return None
    return record


def lr_finder_curves(frame: pd.DataFrame, title: str) -> Figure | None:
    """LR-finder loss against learning rate (log x), one colour per condition, every seed a
    thin line, the suggested ``lr_max`` marked. None when no row has a readable record."""
    if "lr_finder" not in frame.columns:
        return None
    parsed = [(str(c), parse_lr_finder(v)) for c, v in zip(frame["condition"],
                                                             frame["lr_finder"], strict=True)]
    records = [(c, r) for c, r in parsed if r is not None]
    if not records:
        return None
    fig = new_figure(6.0, 3.6)
    ax = fig.subplots()
    colours = {c: f"C{i % 10}" for i, c in enumerate(dict.fromkeys(c for c, _ in records))}
    seen: set[str] = set()
    for condition, record in records:
        ax.plot(record["lrs"], record["losses"], color=colours[condition], lw=0.8, alpha=0.5,
                label=None if condition in seen else condition)
        seen.add(condition)
        if record.get("suggestion"):
            ax.axvline(float(record["suggestion"]), color=colours[condition], lw=0.5, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return fig


def exponential_smoothing(values: Sequence[float] | np.ndarray, alpha: float) -> np.ndarray:
    """The exponential moving average of a curve (Jiang's thesis, Appendix D, eq. D.1, with
    the average's previous value): ``s_0 = x_0``, ``s_i = (1 - alpha) x_i + alpha s_{i-1}``;
    ``alpha = 0`` returns the values. A NaN is kept as NaN and leaves the average unchanged."""
    x = np.asarray(values, dtype=float)
    if not 0 <= alpha < 1:
        raise ValueError(f"smoothing alpha must be in [0, 1), got {alpha!r}")
    if alpha == 0 or x.size == 0:
        return x.copy()
    out = np.full_like(x, np.nan)
    previous = np.nan
    for i, value in enumerate(x):
        if np.isnan(value):
            continue
        previous = value if np.isnan(previous) else (1 - alpha) * value + alpha * previous
        out[i] = previous
    return out


def _smoothed_line(ax: Any, x: Any, y: np.ndarray, smoothing: float, **style: Any) -> None:
    """``y`` against ``x``; smoothed, its true line drawn semi-transparent beneath (the thesis'
    Figures 3.1 and 7.1), when ``smoothing`` > 0."""
    if smoothing > 0:
        ax.plot(x, y, **{**style, "label": None, "alpha": 0.3, "marker": None})
        y = exponential_smoothing(y, smoothing)
    ax.plot(x, y, **style)


def _pretrain_panel(ax: Any, curves: pd.DataFrame, train: str, val: str,
                    smoothing: float) -> None:
    """One run per colour: ``train`` solid, ``val`` (the held-out share) dashed, per epoch."""
    for i, (run, frame) in enumerate(curves.groupby("run", sort=False)):
        per_epoch = frame.groupby("epoch")[[train, val]].mean()
        colour = f"C{i % 10}"
        _smoothed_line(ax, per_epoch.index, per_epoch[train].to_numpy(float), smoothing,
                       color=colour, marker=".", label=str(run))
        if per_epoch[val].notna().any():
            _smoothed_line(ax, per_epoch.index, per_epoch[val].to_numpy(float), smoothing,
                           color=colour, ls="--", label=f"{run} (validation)")
    ax.set_xlabel("epoch")
    ax.legend(fontsize="small")


def pretrain_loss_curves(curves: pd.DataFrame, smoothing: float = 0.0) -> Figure:
    """Pre-training loss per epoch (mean over the epoch's records), one line per run, and
    dashed the validation loss of a run that held out a share of its images. ``curves`` has
    columns ``run``, ``epoch``, ``loss`` (and ``val_loss``); ``smoothing`` is the exponential
    smoothing's alpha (:func:`exponential_smoothing`; 0 = none)."""
    fig = new_figure(6.0, 3.6)
    ax = fig.subplots()
    frame = curves if "val_loss" in curves.columns else curves.assign(val_loss=np.nan)
    _pretrain_panel(ax, frame, "loss", "val_loss", smoothing)
    ax.set_ylabel("pre-training loss")
    ax.set_title("Pre-training loss")
    return fig


def pretrain_top1_curves(curves: pd.DataFrame, smoothing: float = 0.0) -> Figure | None:
    """The contrastive top-1 accuracy per epoch (is an image's other view the most similar of
    its batch? the thesis' Figure 7.1), training solid and validation dashed, one colour per
    run; None when no run logged it."""
    if "contrastive_top1" not in curves.columns or curves["contrastive_top1"].isna().all():
        return None
    fig = new_figure(6.0, 3.6)
    ax = fig.subplots()
    frame = curves[curves["contrastive_top1"].notna()]
    if "val_contrastive_top1" not in frame.columns:
        frame = frame.assign(val_contrastive_top1=np.nan)
    _pretrain_panel(ax, frame, "contrastive_top1", "val_contrastive_top1", smoothing)
    ax.set_ylabel("contrastive top-1 accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("Contrastive top-1 accuracy")
    return fig


def search_history(history: pd.DataFrame, title: str, maximize: bool = True) -> Figure:
    """Objective value per trial and the best so far (``history`` has ``trial``, ``value``)."""
    frame = history.sort_values("trial")
    values = frame["value"].to_numpy(float)
    best = np.fmax.accumulate(values) if maximize else np.fmin.accumulate(values)
    fig = new_figure(6.0, 3.4)
    ax = fig.subplots()
    ax.scatter(frame["trial"], values, s=12, label="trial")
    ax.step(frame["trial"], best, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return fig


def parse_val_curve(value: object) -> list[dict[str, Any]] | None:
    """The ``val_curve`` JSON string (or list) of a fine-tuning row -> its per-epoch records,
    or None when missing, unreadable or empty."""
    try:
        if isinstance(value, (str, bytes)):
            records = json.loads(value)
        elif isinstance(value, Iterable):
            records = list(value)
        else:
            return None
    except (TypeError, ValueError):
        return None
    if not isinstance(records, list):
        return None
    ok = [r for r in records if isinstance(r, dict) and "epoch" in r]
    return ok or None


def validation_curve_table(frame: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Per condition, epoch and metric of the rows' ``val_curve`` records: ``mean``, ``std``
    (ddof 1) and ``n`` over seeds. Columns ``condition``, ``epoch``, ``metric``, ``mean``,
    ``std``, ``n``; empty when no row has a curve."""
    columns = ["condition", "epoch", "metric", "mean", "std", "n"]
    if "val_curve" not in frame.columns:
        return pd.DataFrame(columns=columns)
    long = []
    for condition, seed, value in zip(frame["condition"], frame["seed"], frame["val_curve"],
                                      strict=True):
        for record in parse_val_curve(value) or []:
            long += [{"condition": str(condition), "seed": seed, "epoch": int(record["epoch"]),
                      "metric": m, "value": float(record[m])} for m in metrics if m in record]
    if not long:
        return pd.DataFrame(columns=columns)
    stats = (pd.DataFrame(long).groupby(["condition", "epoch", "metric"], sort=False)["value"]
             .agg(["mean", "std", "count"]).reset_index())
    return stats.rename(columns={"count": "n"})[columns]


def validation_curves(curves: pd.DataFrame, metrics: Sequence[str], title: str,
                      smoothing: float = 0.0) -> Figure | None:
    """One panel per metric: mean over seeds per epoch, one line per condition, with a band of
    one standard deviation around it (the thesis' Figure 7.2); with ``smoothing`` > 0 the mean
    is exponentially smoothed (:func:`exponential_smoothing`), the true mean drawn
    semi-transparent. ``curves`` is a :func:`validation_curve_table`; None when it is empty."""
    metrics = [m for m in metrics if m in set(curves["metric"])]
    if curves.empty or not metrics:
        return None
    fig = new_figure(4.2 * len(metrics), 3.4)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    conditions = list(dict.fromkeys(curves["condition"]))
    for ax, metric in zip(axes, metrics, strict=True):
        for i, condition in enumerate(conditions):
            part = curves[(curves["condition"] == condition) & (curves["metric"] == metric)]
            part = part.sort_values("epoch")
            mean, std = part["mean"].to_numpy(float), part["std"].fillna(0.0).to_numpy(float)
            _smoothed_line(ax, part["epoch"], mean, smoothing, color=f"C{i % 10}",
                           label=condition, lw=1.2)
            mean = exponential_smoothing(mean, smoothing)
            ax.fill_between(part["epoch"], mean - std, mean + std, color=f"C{i % 10}",
                            alpha=0.2, lw=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation loss" if metric == "loss" else metric_label(metric))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(title)
    return fig


def embedding_scatter(entry: dict, title: str) -> Figure:
    """PCA and t-SNE of one encoder's test features (a representation analysis entry), one
    colour per class."""
    embedding = entry["embedding"]
    labels = np.asarray(embedding["labels"], dtype=int)
    names = list(entry["class_names"])
    fig = new_figure(9.0, 4.2)
    axes = fig.subplots(1, 2)
    panels = (("pca", "PCA (fit on the training features)"), ("tsne", "t-SNE"))
    for ax, (key, label) in zip(axes, panels, strict=True):
        points = np.asarray(embedding[key], dtype=float).reshape(-1, 2)
        for c in np.unique(labels):
            mask = labels == c
            ax.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.7, color=f"C{c % 10}",
                       label=names[c] if c < len(names) else str(c))
        ax.set_title(label, fontsize="medium")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1].legend(fontsize="x-small", markerscale=2, loc="best")
    fig.suptitle(title)
    return fig


def _max_conditions(families: Sequence[tuple[str, pd.DataFrame]]) -> int:
    return max((frame["condition"].nunique() for _, frame in families), default=1)


def distribution_profile(table: pd.DataFrame, metric: str, title: str) -> Figure | None:
    """In- vs out-of-distribution performance: one panel per protocol, the test sets along x
    (the in-distribution ``test`` first), one line per condition through its means, error bars
    one standard deviation over runs. ``table`` is a :func:`raysweep.report.summary.
    across_test_sets` table; None when it holds a single test set."""
    test_sets = [c[:-len("_mean")] for c in table.columns if c.endswith("_mean")]
    if len(test_sets) < 2 or table.empty:
        return None
    protocols = list(pd.unique(table["protocol"]))
    fig = new_figure(max(4.5, 1.3 * len(test_sets) + 2.0) * len(protocols), 3.6)
    axes = fig.subplots(1, len(protocols), squeeze=False)[0]
    x = np.arange(len(test_sets))
    for ax, protocol in zip(axes, protocols, strict=True):
        part = table[table["protocol"] == protocol]
        for i, row in enumerate(part.itertuples(index=False)):
            values = row._asdict()
            means = np.array([values[f"{t}_mean"] for t in test_sets], dtype=float)
            stds = np.nan_to_num(np.array([values[f"{t}_std"] for t in test_sets], dtype=float))
            ax.errorbar(x + (i - (len(part) - 1) / 2) * 0.04, means, yerr=stds, marker="o",
                        ms=4, lw=1, capsize=2, color=f"C{i % 10}", label=str(values["condition"]))
        ax.set_xticks(x, test_sets, rotation=30, ha="right")
        ax.set_ylabel(metric_label(metric))
        ax.set_title(f"{protocol}")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(title)
    return fig


def budget_curves(table: pd.DataFrame, metric: str, title: str) -> Figure | None:
    """Performance against the label budget: one panel per (test set, protocol), the number
    of labelled training images along a log x axis, one line per arm through its means with a
    band of the 95% confidence interval of the mean. ``table`` is a
    :func:`raysweep.report.summary.budget_table`; None when it is empty."""
    if table.empty:
        return None
    panels = list(table[["test_set", "protocol"]].drop_duplicates().itertuples(index=False))
    arms = list(pd.unique(table["arm"]))
    fig = new_figure(4.4 * min(3, len(panels)), 3.4 * math.ceil(len(panels) / 3))
    axes = fig.subplots(math.ceil(len(panels) / 3), min(3, len(panels)), squeeze=False).ravel()
    for ax, (test_set, protocol) in zip(axes, panels, strict=False):
        part = table[(table["test_set"] == test_set) & (table["protocol"] == protocol)]
        for arm in arms:
            line = part[part["arm"] == arm].sort_values("n_labels")
            if line.empty:
                continue
            colour = f"C{arms.index(arm) % 10}"
            ax.plot(line["n_labels"], line["mean"], marker="o", ms=4, lw=1.2, color=colour,
                    label=str(arm))
            ax.fill_between(line["n_labels"], line["ci_low"].fillna(line["mean"]),
                            line["ci_high"].fillna(line["mean"]), color=colour, alpha=0.2, lw=0)
        ax.set_xscale("log")
        ax.set_xlabel("labelled training images")
        ax.set_ylabel(metric_label(metric))
        ax.set_title(f"{protocol} — {test_set}" if len(panels) > 1 else str(protocol))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig
