"""Report settings: one frozen dataclass, the single source of the report's defaults.

The experiment spec's ``report:`` section is mapped onto :class:`ReportSettings` by
``raysweep.config``; the report functions take it as an argument and read nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from raysweep.errors import SpecError

#: The alternatives a declared comparison may state. ``"greater"`` tests the paper's null
#: "Model 1 <= Model 2" (H1: Model 1 > Model 2); ``"two-sided"`` tests "Model 1 = Model 2".
ALTERNATIVES = ("greater", "two-sided")

#: Multiple-testing corrections (names as in ``statsmodels.stats.multitest.multipletests``).
CORRECTIONS = ("holm", "fdr_bh", "bonferroni", "none")

#: Pairwise tests the report can run (keys of :data:`raysweep.report.stats.TESTS`).
TEST_NAMES = ("welch", "paired_t", "wilcoxon", "mannwhitney")


def cross_family(family_by: Sequence[str]) -> str:
    """The family label of every comparison across families (``family_1`` != ``family_2``):
    ``across protocols`` with the default ``family_by``, else ``across families``."""
    return "across protocols" if tuple(family_by) == ("protocol",) else "across families"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One declared comparison: ``model_1`` vs ``model_2`` (condition ids) under ``alternative``,
    tested in the family labelled ``family`` only (e.g. ``"probe"`` with the default
    ``family_by=("protocol",)``), or in every family holding both conditions when None.

    Across families: ``model_1``'s runs of family ``family_1`` against ``model_2``'s runs of
    family ``family_2`` (with the default ``family_by``, e.g. a frozen SimCLR encoder's probe
    against a supervised baseline's fine-tuning); such comparisons form a family of their own
    (:func:`cross_family`) for the correction."""

    model_1: str
    model_2: str
    alternative: str = "greater"
    family: str | None = None
    family_1: str | None = None
    family_2: str | None = None

    def __post_init__(self) -> None:
        name = f"report comparison {self.model_1!r} vs {self.model_2!r}"
        if self.alternative not in ALTERNATIVES:
            raise SpecError(
                f"{name}: alternative {self.alternative!r} is not one of {ALTERNATIVES}"
            )
        if (self.family_1 is None) != (self.family_2 is None):
            raise SpecError(f"{name}: give family_1 and family_2 together")
        if self.family_1 is not None and self.family is not None:
            raise SpecError(f"{name}: give family, or family_1 and family_2, not both")
        if self.model_1 == self.model_2 and self.family_1 == self.family_2:
            raise SpecError(f"report comparison compares {self.model_1!r} with itself")

    @property
    def across(self) -> bool:
        """Whether the two sides come from different families."""
        return self.family_1 is not None and self.family_1 != self.family_2

    def label(self, side: int) -> str:
        """``model_1`` / ``model_2``, with its family when the comparison is across families
        (``simclr-100 (probe)``)."""
        model, family = ((self.model_1, self.family_1) if side == 1
                         else (self.model_2, self.family_2))
        return f"{model} ({family})" if self.across else model

    @property
    def null(self) -> str:
        """The null hypothesis in the paper's words (Tables 13, 14)."""
        return "Model 1 <= Model 2" if self.alternative == "greater" else "Model 1 = Model 2"


@dataclasses.dataclass(frozen=True)
class ReportSettings:
    """What the report computes.

    Attributes:
        metrics: per-run metric columns summarised and tested (the paper: accuracy and
            weighted F1, Tables 4 and 6).
        comparisons: declared comparisons, each ``(model_1, model_2, alternative)`` or a
            :class:`Comparison`; they are tested inside every family holding both conditions.
            Empty: all pairs of conditions within each family, two-sided.
        family_by: results columns whose values define a family of comparisons; the
            multiple-testing correction runs across one family (per metric and test).
        correction: ``"holm"`` (default), ``"fdr_bh"`` (Benjamini-Hochberg), ``"bonferroni"``
            or ``"none"``.
        alpha: family-wise error rate (or FDR) of the correction and the power analysis.
        tests: the pairwise tests run; ``primary_test`` decides what the report flags.
        bootstrap_resamples, bootstrap_seed: the percentile bootstrap CI of the mean difference.
        power: target power of the "seeds needed" column.
    """

    metrics: tuple[str, ...] = ("accuracy", "f1_weighted")
    comparisons: tuple[Comparison, ...] = ()
    family_by: tuple[str, ...] = ("protocol",)
    correction: str = "holm"
    alpha: float = 0.05
    tests: tuple[str, ...] = TEST_NAMES
    primary_test: str = "welch"
    bootstrap_resamples: int = 10_000
    bootstrap_seed: int = 0
    power: float = 0.8

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "family_by", tuple(self.family_by))
        object.__setattr__(self, "tests", tuple(self.tests))
        object.__setattr__(
            self, "comparisons", tuple(_as_comparison(c) for c in self.comparisons)
        )
        if not self.metrics:
            raise SpecError("report.metrics is empty")
        if self.correction not in CORRECTIONS:
            raise SpecError(f"report.correction {self.correction!r} is not one of {CORRECTIONS}")
        if not 0.0 < self.alpha < 1.0:
            raise SpecError(f"report.alpha {self.alpha!r} is not in (0, 1)")
        if not 0.0 < self.power < 1.0:
            raise SpecError(f"report.power {self.power!r} is not in (0, 1)")
        unknown = [t for t in self.tests if t not in TEST_NAMES]
        if unknown or not self.tests:
            raise SpecError(f"report.tests {list(self.tests)!r}: choose from {TEST_NAMES}")
        if self.primary_test not in self.tests:
            raise SpecError(f"report.primary_test {self.primary_test!r} is not in report.tests")
        if self.bootstrap_resamples < 100:
            raise SpecError(
                f"report.bootstrap_resamples {self.bootstrap_resamples!r} is below 100"
            )


def _as_comparison(item: Comparison | Sequence[str]) -> Comparison:
    if isinstance(item, Comparison):
        return item
    if isinstance(item, str) or len(item) not in (2, 3, 4, 6):
        raise SpecError(
            f"report comparison {item!r} is not (model_1, model_2[, alternative[, family[, "
            "family_1, family_2]]])"
        )
    return Comparison(*(None if x is None else str(x) for x in item))
