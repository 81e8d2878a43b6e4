"""Significance reports: the paper's tables, proper tests, plots, Markdown and HTML.

Public surface:
- :func:`write_report` (experiment directory -> ``report.md``, ``report.html``, tables, PNGs)
- :func:`report_from_stats` (published means/stds -> Welch tests, as the authors computed)
- :class:`ReportPaths`

The report's settings are the experiment spec's own :class:`raysweep.config.ReportSpec`
(comparisons: :class:`raysweep.config.Comparison`); ``raysweep report`` is a sub-command of
:mod:`raysweep.cli`.
"""

from raysweep.report.build import ReportPaths, write_report
from raysweep.report.from_stats import report_from_stats

__all__ = ["ReportPaths", "report_from_stats", "write_report"]
