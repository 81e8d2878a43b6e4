"""``raysweep report`` arguments as a parser of their own (:func:`cli_main` runs it standalone).

    raysweep report EXPERIMENT_DIR [--out DIR]
    raysweep report --from-stats TABLE.csv [--comparisons COMPARISONS.csv] [--out OUT.csv]
                    [--correction holm|fdr_bh|bonferroni|none] [--alpha 0.05]

The experiment form takes its settings from the caller (the experiment spec's ``report:``
section mapped onto :class:`ReportSettings`); here the defaults apply.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from raysweep.errors import RaysweepError
from raysweep.report.settings import CORRECTIONS, ReportSettings


def _alpha(text: str) -> float:
    """``--alpha``: a finite number in (0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:  # also false for nan
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text!r}")
    return value


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the ``report`` arguments to ``parser`` (a subcommand parser) or a new one."""
    parser = parser or argparse.ArgumentParser(
        prog="raysweep report",
        description="Tables, significance tests and plots from results.parquet, or Welch "
                    "tests from published means and standard deviations (--from-stats).",
    )
    parser.add_argument("experiment_dir", nargs="?", help="directory holding results.parquet")
    parser.add_argument("--from-stats", metavar="TABLE.csv",
                        help="CSV with columns model,mean,std,n[,metric]")
    parser.add_argument("--comparisons", metavar="COMPARISONS.csv",
                        help="with --from-stats: CSV with model_1,model_2[,alternative]")
    parser.add_argument("--out", help="report directory (default EXPERIMENT_DIR/report), or "
                                      "with --from-stats the CSV file to write")
    parser.add_argument("--correction", choices=CORRECTIONS, default="holm")
    parser.add_argument("--alpha", type=_alpha, default=0.05, help="in (0, 1)")
    return parser


def run(args: argparse.Namespace, settings: ReportSettings | None = None) -> int:
    """Execute parsed ``report`` arguments; prints what was written. Raises RaysweepError."""
    from raysweep.report.build import write_report
    from raysweep.report.from_stats import from_stats_display, report_from_stats
    from raysweep.report.tables import markdown_table

    if (args.from_stats is None) == (args.experiment_dir is None):
        raise RaysweepError("give either EXPERIMENT_DIR or --from-stats TABLE.csv")
    if args.from_stats is not None:
        tests = report_from_stats(args.from_stats, comparisons=args.comparisons, out=args.out,
                                  correction=args.correction, alpha=args.alpha)
        print(markdown_table(from_stats_display(tests)), end="")
        if args.out:
            print(f"wrote {args.out}")
        return 0
    if args.comparisons is not None:
        raise RaysweepError("--comparisons goes with --from-stats; declare an experiment's "
                            "comparisons in its spec's report section")
    from raysweep.errors import OutputError
    from raysweep.preflight import directory_problem

    out = args.out or f"{args.experiment_dir}/report"
    problem = directory_problem(out, "report directory")
    if problem:
        raise OutputError(problem)
    base = settings or ReportSettings()
    settings = dataclasses.replace(base, correction=args.correction, alpha=args.alpha)
    paths = write_report(args.experiment_dir, out_dir=args.out, settings=settings)
    print(f"wrote {paths.markdown}\nwrote {paths.html}")
    return 0


def cli_main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry: parse ``argv`` (without the leading ``report``), run, and turn a
    :class:`RaysweepError` into ``error: <message>`` on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except RaysweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
