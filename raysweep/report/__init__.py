"""Significance reports: the paper's tables, proper tests, plots, Markdown and HTML.

Public surface:
- :func:`write_report` (experiment directory -> ``report.md``, ``report.html``, tables, PNGs)
- :func:`report_from_stats` (published means/stds -> Welch tests, as the authors computed)
- :class:`ReportSettings`, :class:`Comparison`, :class:`ReportPaths`
- :func:`cli_main` / :func:`build_parser` + :func:`run` for ``raysweep report``
"""

from raysweep.report.build import ReportPaths, write_report
from raysweep.report.cli import build_parser, cli_main, run
from raysweep.report.from_stats import report_from_stats
from raysweep.report.settings import Comparison, ReportSettings

__all__ = [
    "Comparison", "ReportPaths", "ReportSettings", "build_parser", "cli_main",
    "report_from_stats", "run", "write_report",
]
