"""The ``raysweep`` command.

Sub-commands import their machinery lazily so that ``raysweep validate`` answers in well under a
second. Every user error (:class:`~raysweep.errors.RaysweepError`) is printed as one line,
``error: <message>``, and exits with status 2; nothing is half-written because every artefact is
written atomically.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from raysweep import __version__
from raysweep.errors import RaysweepError

EXIT_OK = 0
EXIT_USER_ERROR = 2


def _cmd_validate(args: argparse.Namespace) -> int:
    from raysweep.config import load_spec

    for path in args.files:
        spec = load_spec(path)
        n_eval = len(spec.evaluate.encoders) if spec.evaluate else 0
        print(f"ok: {path}: experiment {spec.name!r} ({len(spec.pretrain)} pretrain runs, "
              f"{n_eval} evaluated encoders, {len(spec.search)} searches)")
    return EXIT_OK


def _cmd_datasets_describe(args: argparse.Namespace) -> int:
    from raysweep.data.describe import describe

    print(describe(args.target))
    return EXIT_OK


def _cmd_augment_preview(args: argparse.Namespace) -> int:
    import numpy as np

    from raysweep.augment.preview import render_preview
    from raysweep.config import DatasetSpec
    from raysweep.data import load_dataset
    from raysweep.data.describe import source_for

    dataset = load_dataset(DatasetSpec(sources=(source_for(args.source),),
                                       image_size=args.image_size))
    chosen = np.sort(np.random.default_rng(args.seed).choice(
        len(dataset.images), size=min(args.n, len(dataset.images)), replace=False))
    out = render_preview(np.asarray(dataset.images[chosen]), args.pipeline, Path(args.out),
                         seed=args.seed, image_size=args.image_size, n=len(chosen),
                         strength=args.strength)
    print(f"wrote {out}")
    return EXIT_OK


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from raysweep import api

    results = api.pretrain(args.spec, only=args.only)
    for result in results:
        print(f"encoder: {result.encoder_path}")
    return EXIT_OK


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from raysweep import api

    table = api.evaluate(args.spec)
    print(f"results: {table}")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from raysweep import api

    if args.dry_run:
        print(api.plan(args.spec).describe())
        return EXIT_OK
    summary = api.run(args.spec)
    print(summary.one_line())
    return EXIT_OK


def _print_searches(outcomes: list, report: Path | None) -> None:
    """One line per search, the report, then the best parameters as YAML (last, to copy)."""
    for outcome in outcomes:
        print(outcome.one_line())
    if report is not None:
        print(f"report: {report}")
    for outcome in outcomes:
        print(f"\n# {outcome.directory / 'best.yaml'}")
        print(outcome.best_yaml(), end="")


def _cmd_demo(args: argparse.Namespace) -> int:
    from raysweep import api

    if args.search:
        _print_searches(*api.demo(smoke=args.smoke, storage=args.storage, search=True))
        return EXIT_OK
    summary = api.demo(smoke=args.smoke, storage=args.storage)
    print(summary.one_line())
    return EXIT_OK


def _cmd_search(args: argparse.Namespace) -> int:
    from raysweep import api

    _print_searches(*api.search(args.spec, only=args.only))
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from raysweep import api

    if args.from_stats:
        print(api.report_from_stats(args.from_stats, comparisons=args.comparisons,
                                    correction=args.correction, alpha=args.alpha, out=args.out))
        return EXIT_OK
    if not args.experiment_dir:
        raise RaysweepError("report: give an EXPERIMENT_DIR or --from-stats TABLE.csv")
    paths = api.report(args.experiment_dir, out_dir=args.out)
    print(f"report: {paths.html} (markdown: {paths.markdown})")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raysweep",
        description="Self-supervised pre-training, 35-seed evaluation and significance reports "
                    "for medical imaging with limited labels, on Ray.")
    parser.add_argument("--version", action="version", version=f"raysweep {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str,
            parent: argparse._SubParsersAction = sub) -> argparse.ArgumentParser:
        command = parent.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    demo = add("demo", _cmd_demo, "run the embedded demo study on the bundled digits (offline)")
    demo.add_argument("--smoke", action="store_true", help="a ~1 minute version (for tests)")
    demo.add_argument("--search", action="store_true",
                      help="the demo search instead: Optuna + ASHA over Barlow Twins lambda, "
                           "alpha, lr_max and strength (~7 minutes on 2 cores)")
    demo.add_argument("--storage", default=None, help="storage root (default ~/raysweep_runs)")

    validate = add("validate", _cmd_validate, "check spec files; exit 2 on the first error")
    validate.add_argument("files", nargs="+", metavar="FILE")

    run = add("run", _cmd_run, "run an experiment: pretrain, evaluate, search, report")
    run.add_argument("spec", metavar="SPEC")
    run.add_argument("--dry-run", action="store_true",
                     help="print the plan (stages, trials, resources) and run nothing")

    pretrain = add("pretrain", _cmd_pretrain, "run the pretrain stage of a spec (Ray Train)")
    pretrain.add_argument("spec", metavar="SPEC")
    pretrain.add_argument("--only", action="append", metavar="NAME",
                          help="run only this pretrain run (repeatable)")

    evaluate = add("evaluate", _cmd_evaluate, "run the evaluate stage of a spec")
    evaluate.add_argument("spec", metavar="SPEC")

    search = add("search", _cmd_search, "run the Optuna searches of a spec (rerun resumes); "
                                         "prints the best parameters as YAML")
    search.add_argument("spec", metavar="SPEC")
    search.add_argument("--only", action="append", metavar="NAME",
                        help="run only this search (repeatable)")

    report = add("report", _cmd_report, "significance report of an experiment's results")
    report.add_argument("experiment_dir", nargs="?", metavar="EXPERIMENT_DIR")
    report.add_argument("--from-stats", metavar="TABLE.csv",
                        help="tests from published means/stds (columns model,mean,std,n)")
    report.add_argument("--comparisons", metavar="COMPARISONS.csv", default=None,
                        help="with --from-stats: columns model_1,model_2[,alternative] "
                             "(alternative 'greater' = the paper's null 'Model 1 <= Model 2')")
    report.add_argument("--correction", default="holm",
                        choices=["holm", "fdr_bh", "bonferroni", "none"],
                        help="with --from-stats: multiple-testing correction")
    report.add_argument("--alpha", type=float, default=0.05, help="with --from-stats")
    report.add_argument("--out", default=None, help="output directory / file")

    datasets = sub.add_parser("datasets", help="inspect data sources")
    datasets_sub = datasets.add_subparsers(dest="datasets_command", required=True,
                                           metavar="COMMAND")
    describe = add("describe", _cmd_datasets_describe,
                   "per-split, per-class image counts (the paper's Table 1)", datasets_sub)
    describe.add_argument("target", metavar="SPEC_OR_SOURCE",
                          help="a spec YAML, an .npz, a manifest .csv, an image folder or 'digits'")

    augment = sub.add_parser("augment", help="inspect augmentation pipelines")
    augment_sub = augment.add_subparsers(dest="augment_command", required=True, metavar="COMMAND")
    preview = add("preview", _cmd_augment_preview,
                  "a grid of originals and their augmented views (the paper's Figure 2)",
                  augment_sub)
    preview.add_argument("--pipeline", required=True)
    preview.add_argument("--source", required=True,
                         help="an .npz, a manifest .csv, an image folder or 'digits'")
    preview.add_argument("--out", required=True)
    preview.add_argument("--seed", type=int, default=0)
    preview.add_argument("--image-size", type=int, default=64)
    preview.add_argument("--strength", type=float, default=1.0)
    preview.add_argument("-n", type=int, default=8, help="number of originals")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``raysweep`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except RaysweepError as err:
        message = " ".join(str(err).split())  # always exactly one line
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
