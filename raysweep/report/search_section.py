"""The report's search sections: one per ``<experiment>/search/<name>/`` that holds a study.

Each section has: what was searched and how it ended (trials complete / stopped early by ASHA
/ failed); the best configuration beside the default (the search's base run as written); a
paired test of the best against the default over the same probe seeds; the best trials; and
Optuna's own matplotlib figures of the study (optimisation history, parameter importances from
``optuna.importance.get_param_importances``, slice plot). Inputs: ``best.json`` and
``trials.parquet`` (:mod:`raysweep.search.outputs`) and the study journal, all read back
as JSON or parquet.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.visualization import matplotlib as ovm
from scipy import stats as sps

from raysweep.report import plots, stats
from raysweep.report.document import Figure, Section, Table, Text, slugify
from raysweep.search.outputs import BEST_JSON, TRIALS_PARQUET
from raysweep.search.study import load_stored_study
from raysweep.storage.reading import StoredFileError, read_json, read_parquet
from raysweep.store.searches import STUDY_FILE

__all__ = ["StoredSearch", "is_search_folder", "paired_comparison",
           "read_searches", "search_sections"]

#: Rows of the best-trials table.
TOP_TRIALS = 10


def is_search_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a search's study and ``best.json`` (whatever they are: a
    folder or a link in their place is refused when they are read, not skipped)."""

    return os.path.lexists(folder / STUDY_FILE) and os.path.lexists(folder / BEST_JSON)


def _search_folders(experiment_dir: Path) -> list[Path]:
    return [f for f in sorted(Path(experiment_dir).glob("search/*")) if is_search_folder(f)]


def paired_comparison(best: np.ndarray, default: np.ndarray) -> dict[str, float]:
    """Best minus default over paired seeds: mean difference with its 95% t interval, the
    paired t-test and the Wilcoxon signed-rank test (two-sided)."""
    best, default = np.asarray(best, float), np.asarray(default, float)
    diff = best - default
    n = len(diff)
    out = {"n": float(n), "mean_best": float(best.mean()), "mean_default": float(default.mean()),
           "mean_diff": float(diff.mean()), "ci_low": math.nan, "ci_high": math.nan,
           "t": math.nan, "p_paired_t": math.nan, "p_wilcoxon": math.nan}
    if n >= 2 and np.std(diff) > 0:

        half = sps.t.ppf(0.975, n - 1) * diff.std(ddof=1) / math.sqrt(n)
        test = stats.paired_t(best, default)
        out.update(ci_low=out["mean_diff"] - half, ci_high=out["mean_diff"] + half,
                   t=test.statistic, p_paired_t=test.pvalue,
                   p_wilcoxon=stats.wilcoxon(best, default).pvalue)
    return out


#: What ``best.json`` must hold for a section, and the type of each.
BEST_FIELDS = {"study_name": str, "storage": str, "metric": str, "direction": str,
               "num_samples": int, "states": dict}


def _read(folder: Path, root: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """``best.json`` (an object with :data:`BEST_FIELDS`) and ``trials.parquet`` of a search
    folder, read within the experiment directory ``root``."""

    path = folder / BEST_JSON
    record = read_json(path, root=root)
    for key, kind in BEST_FIELDS.items():
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise StoredFileError(path, f"{key!r} is not a {kind.__name__}", root=root)
    for key in ("best", "default"):
        if not isinstance(record.get(key), (dict, type(None))):
            raise StoredFileError(path, f"{key!r} is not an object", root=root)
    return record, read_parquet(folder / TRIALS_PARQUET, root=root)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return "–" if value is None else str(value)


def _comparison_table(slug: str, name: str, record: dict[str, Any]) -> Table | Text:
    best, default = record.get("best"), record.get("default")
    if best is None or default is None:
        return Text("No paired test: " + ("no trial has completed." if best is None else
                                          "the default configuration was not scored "
                                          "(compare_default: false)."))
    if list(best.get("seeds") or []) != list(default.get("seeds") or []):
        return Text("No paired test: the best trial and the default were scored on different "
                    "seeds.")
    result = paired_comparison(np.asarray(best["values_per_seed"]),
                               np.asarray(default["values_per_seed"]))
    data = pd.DataFrame([result])
    display = pd.DataFrame([{
        "seeds": int(result["n"]), f"best (trial {best['trial']})": _fmt(result["mean_best"]),
        "default": _fmt(result["mean_default"]), "Δ mean": _fmt(result["mean_diff"]),
        "95% CI": f"[{_fmt(result['ci_low'])}, {_fmt(result['ci_high'])}]",
        "paired t p": _fmt(result["p_paired_t"]), "Wilcoxon p": _fmt(result["p_wilcoxon"]),
    }])
    return Table(slug=f"search-{slug}-paired-test", title=f"Best vs default — {name}",
                 caption=f"Mean {record['metric']} over the same probe seeds; Δ = best − default "
                         "with its 95% t interval; two-sided paired t and Wilcoxon signed-rank "
                         "tests. The best was selected on these very values, so its advantage is "
                         "optimistic: confirm it on the test split with the evaluate stage.",
                 data=data, display=display)


def _params_table(slug: str, name: str, record: dict[str, Any]) -> Table | None:
    best, default = record.get("best"), record.get("default")
    if best is None:
        return None
    keys = list(best["params"])
    defaults = (default or {}).get("params") or {}
    data = pd.DataFrame({"parameter": keys + ["objective"],
                         "default": [defaults.get(k) for k in keys]
                         + [(default or {}).get("value")],
                         "best": [best["params"][k] for k in keys] + [best["value"]]})
    display = data.map(_fmt)
    return Table(slug=f"search-{slug}-best", title=f"Best configuration — {name}",
                 caption="The best trial's sampled values beside the base run's (the default); "
                         "objective = mean over the probe seeds on the validation split.",
                 data=data, display=display)


def _top_table(slug: str, name: str, trials: pd.DataFrame, record: dict[str, Any],
               params: list[str]) -> Table | None:
    done = trials[trials["state"] == "complete"]
    if done.empty:
        return None
    ascending = record.get("direction") == "minimize"
    top = done.sort_values("value", ascending=ascending).head(TOP_TRIALS)
    columns = ["trial", "value", *params, "duration_s"]
    data = top[[c for c in columns if c in top.columns]].reset_index(drop=True)
    return Table(slug=f"search-{slug}-top", title=f"Best trials — {name}",
                 caption=f"The {len(data)} best complete trials (objective: mean "
                         f"{record['metric']}).", data=data, display=data.map(_fmt))


def _study_figures(slug: str, name: str, record: dict[str, Any], study: optuna.Study,
                   fig_dir: Path, dpi: int) -> list[Figure | Text | Table]:
    """Optuna's matplotlib figures of the study (pyplot figures, closed once saved): the
    history from one complete trial on; importances and the slice plot from two."""
    import matplotlib
    import matplotlib.pyplot as plt


    optuna.logging.set_verbosity(optuna.logging.WARNING)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    blocks: list[Figure | Text | Table] = []

    def add(draw: Any, kind: str, title: str, caption: str) -> None:
        # Optuna's plots switch pyplot to its ggplot style: keep that to these figures.
        with warnings.catch_warnings(), matplotlib.rc_context():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            axes = draw()
        fig = np.asarray(axes).flat[0].figure
        try:
            path = plots.save_png(fig, fig_dir / f"search-{slug}-{kind}.png", dpi=dpi)
        finally:
            plt.close(fig)
        blocks.append(Figure(f"search-{slug}-{kind}", f"{title} — {name}", caption, path))

    target = record["metric"]
    if complete:
        add(lambda: ovm.plot_optimization_history(study, target_name=target), "history",
            "Optimisation history", "Objective of each complete trial and the best so far "
            "(optuna.visualization.matplotlib; pruned trials have no objective).")
    if len(complete) < 2:
        blocks.append(Text("Parameter importances and the slice plot need at least two "
                           "complete trials."))
        return blocks
    importances = optuna.importance.get_param_importances(study)
    frame = pd.DataFrame({"parameter": list(importances),
                          "importance": [float(v) for v in importances.values()]})
    blocks.append(Table(
        slug=f"search-{slug}-importances", title=f"Parameter importances — {name}",
        caption="optuna.importance.get_param_importances (PED-ANOVA) over the complete trials.",
        data=frame, display=frame.assign(importance=frame["importance"].map("{:.3f}".format))))
    add(lambda: ovm.plot_param_importances(study, target_name=target), "importance",
        "Parameter importances", "Share of the objective's variation each parameter explains.")
    add(lambda: ovm.plot_slice(study, target_name=target), "slice", "Slice plot",
        "Objective against each searched parameter; colour = trial number.")
    return blocks


@dataclass(frozen=True)
class StoredSearch:
    """What a search section shows, read from ``<experiment>/search/<name>/``: ``best.json``
    (``record``), ``trials.parquet`` (``trials``) and the Optuna study of its journal."""

    folder: Path
    record: dict[str, Any]
    trials: pd.DataFrame
    study: optuna.Study


def read_searches(experiment_dir: str | Path) -> list[StoredSearch]:
    """Every search of ``experiment_dir``, read once and before the report writes anything: a
    damaged file is a :class:`~raysweep.storage.reading.StoredFileError` naming it, and no
    partial report is left."""
    root = Path(experiment_dir)
    searches = []
    for folder in _search_folders(root):
        record, trials = _read(folder, root)
        study = load_stored_study(folder / STUDY_FILE, record["study_name"], root=root)
        searches.append(StoredSearch(folder, record, trials, study))
    return searches


def search_sections(searches: list[StoredSearch], fig_dir: Path,
                    dpi: int = 100) -> list[Section]:
    """One report section per search read by :func:`read_searches` (figures written to
    ``fig_dir``)."""
    sections = []
    for search in searches:
        folder, record, trials = search.folder, search.record, search.trials
        name = str(record.get("search", folder.name))
        slug = slugify(name)
        params = list((record.get("best") or {}).get("params", {}))
        states = record.get("states", {})
        blocks: list[Any] = [Text(
            f"Optuna study {record['study_name']} in {folder / record['storage']} "
            f"(optuna.load_study, or optuna-dashboard on that file): "
            f"{states.get('complete', 0)} complete, {states.get('pruned', 0)} stopped early by "
            f"ASHA, {states.get('fail', 0)} failed of {record['num_samples']} trials. "
            f"Objective: mean {record['metric']} ({record['direction']}) of batched linear "
            "probes over paired seeds on the validation split (the test split is not used).")]
        blocks += [b for b in (_params_table(slug, name, record),
                               _comparison_table(slug, name, record),
                               _top_table(slug, name, trials, record, params)) if b is not None]
        blocks += _study_figures(slug, name, record, search.study, fig_dir, dpi)
        sections.append(Section(f"Search {name}", tuple(blocks)))
    return sections
