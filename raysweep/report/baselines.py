"""What a classifier that never looks at the image scores, and whether each condition beats it
(docs/protocol.md "Baselines and degenerate classifiers").

Two baselines per test set, from its class counts (the rows' ``support/<class>`` columns):

- the *majority class*: always answering the test set's most frequent class (share p*):
  accuracy p*, that class's F1 2p*/(1 + p*) and every other class's 0, so weighted F1
  p* x 2p*/(1 + p*) and macro F1 2p*/(1 + p*) / K; balanced accuracy 1/K (its recall 1, the
  others' 0); AUC 0.5 (a constant score ranks nothing);
- *stratified chance*: answering class k with probability p_k whatever the image
  (scikit-learn's ``DummyClassifier(strategy="stratified")``), scored on its expected
  confusion matrix (n p_j p_k images of class j answered k): every class's precision and
  recall p_k, so accuracy and weighted F1 sum p_k^2, macro F1 and balanced accuracy 1/K,
  AUC 0.5.

K counts the classes macro F1 and balanced accuracy average over: for the data's own test split
every class (macro F1) and the classes present (balanced accuracy, as scikit-learn's), for an
external test set the classes it holds (:mod:`raysweep.evaluate.metrics`).

Each condition is tested against the majority class, per metric: a one-sided one-sample
t-test over its runs (seeds) of H1 "mean > the majority class's score", corrected across the
family's conditions with the report's correction. A condition that is not significantly above
is indistinguishable from always answering the majority class: the tables mark it, and the
report opens with a warning counting such conditions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from raysweep.report.stats import correct
from raysweep.report.summary import SUPPORT_PREFIX

__all__ = ["BASELINE_METRICS", "Baselines", "baselines_of", "imbalanced_share",
           "majority_tests"]

#: The metrics baselines are defined for (the rows' headline metrics).
BASELINE_METRICS = ("accuracy", "f1_weighted", "f1_macro", "balanced_accuracy", "auc_ovr")


@dataclass(frozen=True)
class Baselines:
    """A test set's class counts and its two baselines' scores (metric -> value)."""

    support: dict[str, int]
    majority_class: str
    majority: dict[str, float]
    stratified: dict[str, float]

    @property
    def majority_share(self) -> float:
        return self.majority["accuracy"]


def class_support(frame: pd.DataFrame) -> dict[str, int]:
    """The test set's images per class, from the ``support/<class>`` columns of its rows (the
    most common count vector when rows disagree); empty without such columns."""
    columns = [c for c in frame.columns if c.startswith(SUPPORT_PREFIX)]
    if not columns or frame.empty:
        return {}
    counts = frame[columns].dropna()
    if counts.empty:
        return {}
    vector = counts.astype(int).value_counts().index[0]
    return {c[len(SUPPORT_PREFIX):]: int(n) for c, n in zip(columns, vector, strict=True)}


def baselines_of(support: dict[str, int], *, external: bool = False) -> Baselines | None:
    """Both baselines of a test set with ``support`` (class -> images), None without images.
    ``external``: macro F1 over the classes the set holds (an external test set)."""
    counts = np.array(list(support.values()), dtype=float)
    if counts.sum() <= 0:
        return None
    share = counts / counts.sum()
    present = int((counts > 0).sum())
    macro_k = present if external else len(counts)
    top = int(np.argmax(counts))
    p_max = float(share[top])
    f1_top = 2 * p_max / (1 + p_max)
    majority = {"accuracy": p_max, "f1_weighted": p_max * f1_top, "f1_macro": f1_top / macro_k,
                "balanced_accuracy": 1 / present, "auc_ovr": 0.5}
    squares = float((share ** 2).sum())
    stratified = {"accuracy": squares, "f1_weighted": squares,
                  "f1_macro": float(share.sum()) / macro_k, "balanced_accuracy": 1 / present,
                  "auc_ovr": 0.5}
    return Baselines(support=dict(support), majority_class=list(support)[top],
                     majority=majority, stratified=stratified)


def imbalanced_share(support: dict[str, int]) -> float:
    """The share of a test set's images in its largest class (0 without images)."""
    total = sum(support.values())
    return max(support.values()) / total if total else 0.0


#: Values closer than this are one value (a constant classifier's rows differ by rounding).
_NO_SPREAD = 1e-12


def _one_sided_p(values: np.ndarray, score: float) -> float:
    """p of H1 "mean of ``values`` > ``score``" (one-sample t-test); with no spread (every
    value the same up to rounding), 0 when the value is above ``score`` and 1 otherwise; NaN
    for fewer than two values."""
    if len(values) < 2:
        return float("nan")
    if np.ptp(values) <= _NO_SPREAD:
        return 0.0 if values.mean() > score + _NO_SPREAD else 1.0
    return float(sps.ttest_1samp(values, score, alternative="greater").pvalue)


def majority_tests(frame: pd.DataFrame, baselines: Baselines | None, metrics: Sequence[str],
                   family_by: Sequence[str], *, correction: str,
                   alpha: float) -> pd.DataFrame:
    """One row per (family, condition, metric) of ``frame`` (one test set): ``family``
    columns, ``condition``, ``metric``, ``n``, ``mean``, ``majority`` (the baseline's score),
    ``p``, ``p_adjusted`` (across the family's conditions, per metric) and ``above`` (the
    correction rejects "mean <= majority"). Metrics without a baseline are left out (all of
    them without ``baselines``)."""
    columns = [*family_by, "condition", "metric", "n", "mean", "majority", "p", "p_adjusted",
               "above"]
    rows: list[dict] = []
    if baselines is None:
        return pd.DataFrame(rows, columns=columns)
    for metric in (m for m in metrics if m in baselines.majority and m in frame.columns):
        score = baselines.majority[metric]
        groups = frame.groupby([*family_by], sort=False) if family_by else [((), frame)]
        for key, family in groups:
            key = key if isinstance(key, tuple) else (key,)
            part = []
            for condition, runs in family.groupby("condition", sort=False):
                values = runs[metric].dropna().to_numpy(float)
                part.append({**dict(zip(family_by, key, strict=True)),
                             "condition": str(condition), "metric": metric, "n": len(values),
                             "mean": float(values.mean()) if len(values) else float("nan"),
                             "majority": score, "p": _one_sided_p(values, score)})
            reject, adjusted = correct(np.array([r["p"] for r in part], dtype=float),
                                       correction, alpha)
            for row, rejected, p_adj in zip(part, reject, adjusted, strict=True):
                rows.append({**row, "p_adjusted": float(p_adj), "above": bool(rejected)})
    return pd.DataFrame(rows, columns=columns)
