"""The ``raysweep`` command.

Sub-commands import their machinery lazily so that ``raysweep validate`` answers in well under a
second. Every user error (:class:`~raysweep.errors.RaysweepError`, a bad command-line argument
included) is printed as one line, ``error: <message>`` (one line per problem when a spec has
several), and exits with status 2; ``raysweep --debug ...`` adds the full traceback. The
``RAYSWEEP_*`` environment variables are checked before any command runs
(:mod:`raysweep.environment`), a spec and the files it names before anything is written or
trained (:mod:`raysweep.plan.preflight`), and every artefact is written atomically. Everything the
command prints (results, plans, progress, warnings, errors, Ray's worker logs) passes through
:func:`raysweep.storage.redact.redact`, so no credential of a storage URI is ever shown.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import signal
import sys
import traceback
import typing
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from raysweep import __version__
from raysweep.errors import Problems, RaysweepError, TrialError
from raysweep.storage.redact import redact

if typing.TYPE_CHECKING:  # the spec classes load lazily, as every command's imports do
    from raysweep.config import ExperimentSpec

#: ``augment preview -n`` at most (rows of the figure).
MAX_PREVIEW_IMAGES = 64

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C

#: Commands that run experiment stages: they take --quiet / --verbose, and Ctrl-C stops Ray.
RUN_COMMANDS = ("run", "demo", "pretrain", "evaluate", "search")


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one ``error:`` line (exit 2), like every other
    user error; ``--help`` still shows the usage."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USER_ERROR, f"error: {self.prog}: {' '.join(message.split())}\n")


def _number_in(kind: type, low: float, high: float, *, open_low: bool = False,
               open_high: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite ``kind`` (int or float) in the given range."""
    brackets = ("(" if open_low else "[") + f"{low}, {high}" + (")" if open_high else "]")

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        inside = ((low < value if open_low else low <= value)
                  and (value < high if open_high else value <= high))
        if not math.isfinite(value) or not inside:
            raise argparse.ArgumentTypeError(f"must be in {brackets}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _cmd_validate(args: argparse.Namespace) -> int:
    # The spec itself is checked with raysweep.config alone (under a second); the files it
    # names need the data readers, torch included (~10 s), imported only for a spec that parsed.
    from raysweep.config import load_spec

    failures: list[RaysweepError] = []
    for path in args.files:
        try:
            spec = load_spec(path)
            if not args.spec_only:
                from raysweep.plan.preflight import check as check_files

                check_files(spec, str(path))
        except RaysweepError as err:
            failures.append(err)
            continue
        n_eval = len(spec.evaluate.encoders) if spec.evaluate else 0
        print(f"ok: {path}: experiment {spec.name!r} ({len(spec.pretrain)} pretrain runs, "
              f"{n_eval} evaluated encoders, {len(spec.search)} searches)")
        for line in _weight_format_lines(spec):
            print(line)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise Problems([line for err in failures
                        for line in (err.problems if isinstance(err, Problems) else (str(err),))])
    return EXIT_OK


def _weight_format_lines(spec: ExperimentSpec) -> list[str]:
    """One line per public checkpoint (``FORMAT:PATH`` weights) the spec reads: its format,
    the layout read, and the runs or encoders that start from it."""
    from raysweep.config.weight_formats import WEIGHT_FORMATS, weight_format

    users: dict[str, list[str]] = {}
    named = [(f"pretrain {run.name}", run.encoder.weights) for run in spec.pretrain]
    if spec.evaluate is not None:
        named += [(cond.name, cond.encoder.weights) for cond in spec.evaluate.encoders]
    for label, weights in named:
        if weight_format(weights):
            users.setdefault(weights, []).append(label)
    lines = []
    for weights, labels in users.items():
        fmt = weights.partition(":")[0]
        lines.append(f"  weights {weights}: format {fmt}, {WEIGHT_FORMATS[fmt]}; "
                     f"used by {', '.join(labels)}")
    return lines


def _cmd_datasets_describe(args: argparse.Namespace) -> int:
    from raysweep.data.describe import describe

    print(describe(args.target))
    return EXIT_OK


def _cmd_datasets_convert_isic(args: argparse.Namespace) -> int:
    from raysweep.data.isic import convert_isic, parse_train_counts

    counts = parse_train_counts(args.train_per_class) if args.train_per_class else None
    if not args.seed.isdigit():
        raise RaysweepError(f"--seed: {args.seed!r} is not a non-negative integer")
    written = convert_isic(Path(args.ground_truth), Path(args.images), Path(args.out),
                           split=args.split, train_per_class=counts, seed=int(args.seed),
                           labels=args.labels, overwrite=args.force)
    print(written.summary())
    return EXIT_OK


def _cmd_augment_preview(args: argparse.Namespace) -> int:
    import numpy as np

    from raysweep.augment.preview import render_preview
    from raysweep.config import DatasetSpec
    from raysweep.data import load_dataset
    from raysweep.data.describe import source_for
    from raysweep.errors import OutputError
    from raysweep.plan.preflight import output_file_problem

    problem = output_file_problem(args.out, "--out")
    if problem:
        raise OutputError(problem)
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

    if args.dry_run or args.estimate:
        from raysweep.experiment.runner import stored_state
        from raysweep.plan.leakage import overlap_lines
        from raysweep.plan.preflight import refuse_escaping_links

        spec = api.load(args.spec)
        refuse_escaping_links(spec.directory)  # before the plan reads the stored state
        plan = api.plan(spec)
        print(plan.describe(verbose=args.verbosity == 2))
        api.check(args.spec)  # the files' problems, after the plan they concern
        for line in overlap_lines(spec):  # overlaps of runs that allow them
            print(line)
        print(stored_state(spec))
        if args.estimate:
            from raysweep.plan.estimate import describe_estimates

            print(describe_estimates(plan))
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


def _cmd_status(args: argparse.Namespace) -> int:
    from raysweep.experiment.status import experiment_status

    print(experiment_status(args.experiment_dir).describe())
    return EXIT_OK


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

    if args.from_stats and args.experiment_dir:
        raise RaysweepError("report: give an EXPERIMENT_DIR or --from-stats TABLE.csv, not both")
    if args.from_stats:
        print(api.report_from_stats(args.from_stats, comparisons=args.comparisons,
                                    correction=args.correction or "holm",
                                    alpha=0.05 if args.alpha is None else args.alpha,
                                    out=args.out))
        return EXIT_OK
    if not args.experiment_dir:
        raise RaysweepError("report: give an EXPERIMENT_DIR or --from-stats TABLE.csv")
    if args.comparisons:
        raise RaysweepError("report: --comparisons goes with --from-stats; declare an "
                            "experiment's comparisons in its spec's report: section")
    paths = api.report(args.experiment_dir, out_dir=args.out, correction=args.correction,
                       alpha=args.alpha)
    print(f"report: {paths.html} (markdown: {paths.markdown})")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The ``raysweep`` parser: one ``_add_<command>`` function per sub-command."""
    parser = _Parser(
        prog="raysweep",
        description="Self-supervised pre-training, 35-seed evaluation and significance reports "
                    "for medical imaging with limited labels, on Ray.")
    parser.add_argument("--version", action="version", version=f"raysweep {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also from Ray workers)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (_add_demo, _add_validate, _add_run, _add_status, _add_pretrain,
                        _add_evaluate, _add_search, _add_report, _add_datasets, _add_augment):
        add_command(sub)
    return parser


def _add_command(parent: argparse._SubParsersAction, name: str,
                 handler: Callable[[argparse.Namespace], int],
                 help_text: str) -> argparse.ArgumentParser:
    """A sub-command ``name`` of ``parent`` run by ``handler`` (with --quiet / --verbose when
    it runs experiment stages)."""
    command = parent.add_parser(name, help=help_text, description=help_text)
    command.set_defaults(handler=handler)
    if name in RUN_COMMANDS:
        _add_verbosity_flags(command)
    return command


def _add_demo(sub: argparse._SubParsersAction) -> None:
    demo = _add_command(sub, "demo", _cmd_demo,
                        "run the embedded demo study on the bundled digits (offline)")
    demo.add_argument("--smoke", action="store_true", help="a ~1 minute version (for tests)")
    demo.add_argument("--search", action="store_true",
                      help="the demo search instead: Optuna + ASHA over Barlow Twins lambda, "
                           "alpha, lr_max and strength (~7 minutes on 2 cores)")
    demo.add_argument("--storage", default=None, help="storage root (default ~/raysweep_runs)")


def _add_validate(sub: argparse._SubParsersAction) -> None:
    validate = _add_command(sub, "validate", _cmd_validate,
                            "check spec files and the files they name; every problem, one "
                            "line each, exit 2")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument("--spec-only", action="store_true",
                          help="check the specs alone, not their data, weights and storage")


def _add_run(sub: argparse._SubParsersAction) -> None:
    run = _add_command(sub, "run", _cmd_run, "run an experiment: pretrain, evaluate, search, "
                                             "report")
    run.add_argument("spec", metavar="SPEC")
    run.add_argument("--dry-run", action="store_true",
                     help="print the plan (stages, trials, resources), check the spec's files, "
                          "run nothing (with --verbose: every run's resolved fields that differ "
                          "from the defaults)")
    run.add_argument("--estimate", action="store_true",
                     help="with the plan (implies --dry-run): GPU- or CPU-hours and wall time "
                          "of each stage, from a few timed steps per encoder on this machine")


def _add_status(sub: argparse._SubParsersAction) -> None:
    status = _add_command(sub, "status", _cmd_status,
                          "what of an experiment is finished, running and missing, from its "
                          "storage alone (read-only: safe while a job runs)")
    status.add_argument("experiment_dir", metavar="EXPERIMENT_DIR")


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    pretrain = _add_command(sub, "pretrain", _cmd_pretrain,
                            "run the pretrain stage of a spec (Ray Train)")
    pretrain.add_argument("spec", metavar="SPEC")
    pretrain.add_argument("--only", action="append", metavar="NAME",
                          help="run only this pretrain run (repeatable)")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    evaluate = _add_command(sub, "evaluate", _cmd_evaluate, "run the evaluate stage of a spec")
    evaluate.add_argument("spec", metavar="SPEC")


def _add_search(sub: argparse._SubParsersAction) -> None:
    search = _add_command(sub, "search", _cmd_search,
                          "run the Optuna searches of a spec (rerun resumes); prints the best "
                          "parameters as YAML")
    search.add_argument("spec", metavar="SPEC")
    search.add_argument("--only", action="append", metavar="NAME",
                        help="run only this search (repeatable)")


def _add_report(sub: argparse._SubParsersAction) -> None:
    from raysweep.config import Correction

    report = _add_command(sub, "report", _cmd_report,
                          "significance report of an experiment's results")
    report.add_argument("experiment_dir", nargs="?", metavar="EXPERIMENT_DIR")
    report.add_argument("--from-stats", metavar="TABLE.csv",
                        help="tests from published means/stds (columns model,mean,std,n)")
    report.add_argument("--comparisons", metavar="COMPARISONS.csv", default=None,
                        help="with --from-stats: columns model_1,model_2[,alternative] "
                             "(alternative 'greater' = the paper's null 'Model 1 <= Model 2')")
    report.add_argument("--correction", default=None, choices=typing.get_args(Correction),
                        help="multiple-testing correction (default: the spec's, else holm)")
    report.add_argument("--alpha", type=_number_in(float, 0, 1, open_low=True, open_high=True),
                        default=None, help="significance level in (0, 1) (default: the "
                                           "spec's, else 0.05)")
    report.add_argument("--out", default=None,
                        help="report directory, or with --from-stats the CSV file to write")


def _add_datasets(sub: argparse._SubParsersAction) -> None:
    datasets = sub.add_parser("datasets", help="inspect data sources")
    datasets_sub = datasets.add_subparsers(dest="datasets_command", required=True,
                                           metavar="COMMAND")
    describe = _add_command(datasets_sub, "describe", _cmd_datasets_describe,
                            "per-split, per-class image counts (the paper's Table 1)")
    describe.add_argument("target", metavar="SPEC_OR_SOURCE",
                          help="a spec YAML, an .npz, a manifest .csv, an image folder or 'digits'")

    convert = _add_command(datasets_sub, "convert-isic", _cmd_datasets_convert_isic,
                           "ISIC 2019 one-hot ground truth CSV to a manifest path,label[,split]")
    convert.add_argument("ground_truth", metavar="GROUND_TRUTH.csv",
                         help="e.g. ISIC_2019_Training_GroundTruth.csv")
    convert.add_argument("--images", required=True, metavar="DIR",
                         help="folder of the images (<image>.jpg), e.g. ISIC_2019_Training_Input")
    convert.add_argument("--out", required=True, metavar="MANIFEST.csv",
                         help="manifest to write (paths relative to its folder)")
    convert.add_argument("--split", default=None, metavar="SPLIT",
                         help="one split for every row: train, val or test")
    convert.add_argument("--train-per-class", default=None, metavar="CODE=N,...",
                         help="draw N training images per class (rest: test); 'paper' = the "
                              "counts of the paper's Table 1")
    convert.add_argument("--seed", default="0", help="seed of --train-per-class (default 0)")
    convert.add_argument("--labels", default="names", metavar="names|codes",
                         help="labels as Table 1 names (default) or the column codes")
    convert.add_argument("--force", action="store_true", help="replace an existing manifest")


def _add_augment(sub: argparse._SubParsersAction) -> None:
    from raysweep.config import AUGMENTATION_PIPELINES, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE

    augment = sub.add_parser("augment", help="inspect augmentation pipelines")
    augment_sub = augment.add_subparsers(dest="augment_command", required=True, metavar="COMMAND")
    preview = _add_command(augment_sub, "preview", _cmd_augment_preview,
                           "a grid of originals and their augmented views (the paper's Figure 2)")
    preview.add_argument("--pipeline", required=True, choices=AUGMENTATION_PIPELINES)
    preview.add_argument("--source", required=True,
                         help="an .npz, a manifest .csv, an image folder or 'digits'")
    preview.add_argument("--out", required=True, help="the PNG file to write")
    preview.add_argument("--seed", type=_number_in(int, 0, 2**31 - 1), default=0)
    preview.add_argument("--image-size", type=_number_in(int, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
                         default=64)
    preview.add_argument("--strength", type=_number_in(float, 0, 2), default=1.0,
                         help="augmentation strength in [0, 2]")
    preview.add_argument("-n", type=_number_in(int, 1, MAX_PREVIEW_IMAGES), default=8,
                         help=f"number of originals (1 to {MAX_PREVIEW_IMAGES})")


def _add_verbosity_flags(command: argparse.ArgumentParser) -> None:
    group = command.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=0,
                       help="print only the final result lines, warnings and errors")
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=2,
                       help="also print loss terms, learning rates, Ray Tune's status table "
                            "and Ray Train's INFO logs")
    command.set_defaults(verbosity=1)


def _spec_of(args: argparse.Namespace):
    """The experiment a run-like command works on (None when it cannot be told)."""
    try:
        if args.command == "demo":
            from raysweep.experiment.demo import demo_spec

            return demo_spec(smoke=args.smoke, storage=args.storage)
        from raysweep.api import load

        return load(args.spec)
    except Exception:
        return None


def _interrupted(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Ctrl-C during a run: stop Ray now, then say what is kept and how to resume."""
    if getattr(args, "command", None) not in RUN_COMMANDS:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    # A second Ctrl-C while Ray shuts down ends the process at once.
    previous = signal.signal(signal.SIGINT, lambda *_: os._exit(EXIT_INTERRUPTED))
    try:
        print("interrupted: stopping Ray ...", file=sys.stderr, flush=True)
        from raysweep.experiment.interrupt import kept_lines
        from raysweep.runtime.ray_session import stop_ray

        stop_ray()
        spec = _spec_of(args)
        if spec is not None:
            print(f"kept in {spec.directory}:", file=sys.stderr)
            for line in kept_lines(spec):
                print(f"  {line}", file=sys.stderr)
        print(f"resume with: {shlex.join(['raysweep', *argv])}", file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    return EXIT_INTERRUPTED


@contextlib.contextmanager
def _run_environment(args: argparse.Namespace) -> Iterator[None]:
    """Console verbosity, and Ray Tune's output and Ctrl-C settings (environment variables
    Tune reads when a Tuner starts), for the duration of a run-like command."""
    if getattr(args, "command", None) not in RUN_COMMANDS:
        yield
        return
    from raysweep.console import set_verbosity, verbosity

    previous = verbosity()
    set_verbosity(args.verbosity)
    settings = {
        # Ctrl-C raises KeyboardInterrupt in Tuner.fit() at once (Tune's own handler would end
        # the stage "gracefully" and let the run carry on to a report of partial results).
        "TUNE_DISABLE_SIGINT_HANDLER": "1",
    }
    if args.verbosity < 2:
        # Ray Tune's new output engine prints its header box even at verbose=0; the classic
        # one is silent there (raysweep prints one line per finished trial instead).
        settings["RAY_AIR_NEW_OUTPUT"] = "0"
    saved = {key: os.environ.get(key) for key in settings}
    for key, value in settings.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        set_verbosity(previous)
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` for the console: ``warning: <message>`` on one line, without
    the source line Python's default display adds (``--debug`` keeps the default)."""
    stream = file if file is not None else sys.stderr
    with contextlib.suppress(OSError, ValueError):
        print(f"warning: {' '.join(str(message).split())}", file=stream)


class _Redacting:
    """A text stream that writes through :func:`raysweep.storage.redact.redact` (what the console is
    while a command runs)."""

    def __init__(self, stream: typing.TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def __getattr__(self, name: str):  # flush, fileno, isatty, encoding, ...
        return getattr(self._stream, name)


@contextlib.contextmanager
def _redacted_console() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` redacted for the duration of a command."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Redacting(sys.stdout), _Redacting(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def _check_environment() -> None:
    """Refuse unusable ``RAYSWEEP_*`` variables (one line each) before the command runs."""
    from raysweep.environment import problems

    found = problems()
    if found:
        raise Problems(found)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``raysweep`` console script; returns the exit status."""
    with _redacted_console():
        return _main(list(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    shown = warnings.showwarning
    if not args.debug:
        warnings.showwarning = _one_line_warning
    try:
        _check_environment()
        with _run_environment(args):
            return args.handler(args)
    except RaysweepError as err:
        if args.debug:
            traceback.print_exception(err, file=sys.stderr)
        lines = err.problems if isinstance(err, Problems) else (str(err),)
        for line in lines:
            print(f"error: {' '.join(line.split())}", file=sys.stderr)  # one line each
        if isinstance(err, TrialError) and not err.user_error:
            return EXIT_FAILED
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return _interrupted(args, argv)
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
