"""Hostile inputs, rerunnable: every probe of ``hostile_probes.py`` in a sandbox of its own.

Three sets of probes (:mod:`hostile_probes`):

- ``old``: the bad inputs of the first round (the cases of ``tests/test_bad_inputs.py`` and the
  other kinds listed with them: latin-1 manifests, ``.npz`` files of objects or floats, manifest
  rows leaving their folder, a damaged cache entry, ...);
- ``new``: object-store URIs with credentials, tampered files of an experiment directory
  (lock, rows, ``meta.json``, ``study.journal``, ``gpu_memory/*.json``, ``results.parquet``,
  autoscaler YAML), symlinks out of their root, full and read-only disks, ``RAYSWEEP_*``
  variables, ``search:`` sections, unreachable stores, misleading lines;
- ``held-out``: more of the same kinds, written after the mechanisms were fixed and never
  used to tune them.

Each probe runs ``python -m raysweep.cli ...`` (the old round's few API cases: the call itself,
in this process) with ``HOME``, the decode cache, the storage root and the working directory
inside a fresh sandbox, beside an ``outside/`` folder that symbolic links of the probe may point
at. Recorded per probe: the exit status, whether a Python traceback or a planted secret was
printed, whether anything in the sandbox was written (a refusal must write nothing), and
whether anything in ``outside/`` was read (its access times are set to 1970 before the run:
the file system updates them on a read, ``relatime`` included) or written. A probe is *clean*
when all of these are as its expectation says: a refusal exits 2 with one ``error:`` line
naming the thing (the expected text), a tolerated input exits 0 with a named ``warning:`` line,
and no probe prints a traceback or a secret or touches ``outside/``.

    python benchmarks/hostile_inputs.py                  # every set, two probes at a time
    python benchmarks/hostile_inputs.py --set new -k lock  # probes whose id holds "lock"
    python benchmarks/hostile_inputs.py -k lock -k row   # ... "lock" or "row"
    python benchmarks/hostile_inputs.py --slow           # also the probes that start Ray

Writes ``benchmarks/out/hostile_inputs.json`` and the table ``benchmarks/out/hostile_inputs.md``
(set, probe, command, exit, traceback, secret, written, outside, clean) and prints the clean
rate of each set. Probes that need ``unshare`` (no network, a full tmpfs) run as root only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
sys.path[:0] = [str(ROOT), str(HERE)]

import hostile_probes  # noqa: E402 - the probes, beside this file
from hostile_probes import SECRETS, Box, Call, Probe  # noqa: E402

TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\w+(Error|Exception): ", re.M)
#: A progress bar's line (tqdm: ``decoding x at 16px:  14%|...| 256/1797 [...]``): long work
#: shows progress on stderr, which is neither an error line nor noise.
PROGRESS = re.compile(r"^[^|]*: +\d+%\|.*\| *\d+/\d+ ")
#: Files the harness itself leaves in a sandbox (ignored by the written-files check).
HARNESS_PREFIX = ".probe-"


@dataclass
class Outcome:
    """What one probe did."""

    set: str
    id: str
    kind: str
    command: str
    expect: str
    status: int | None
    seconds: float
    traceback: bool
    secret: bool
    written: list[str]
    outside: list[str]
    clean: bool
    why: str
    stderr: str = field(repr=False, default="")
    stdout: str = field(repr=False, default="")


# ------------------------------------------------------------------------------ sandbox


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` without following links: a file's size and mtime, a
    folder, or a link's target (nothing is read, so the access times stay)."""
    entries: dict[str, str] = {}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(base) / name
            rel = path.relative_to(root).as_posix()
            if rel.startswith(HARNESS_PREFIX):
                continue
            info = path.lstat()
            if path.is_symlink():
                entries[rel] = f"link {os.readlink(path)}"
            elif path.is_dir():
                entries[rel] = "dir"
            else:
                entries[rel] = f"file {info.st_size} {info.st_mtime_ns}"
    return entries


def _entries(folder: Path) -> list[Path]:
    return [Path(base) / name for base, dirs, files in os.walk(folder) for name in dirs + files]


def age_outside(outside: Path) -> list[Path]:
    """Set every access time under ``outside`` to 1 s after 1970 (listed first: listing a
    folder is reading it); a read moves it to now, modification times stay. Returns the
    entries, for :func:`read_outside` (which must not list the folders again)."""
    entries = [path for path in _entries(outside) if not path.is_symlink()]
    for path in entries:
        os.utime(path, ns=(10**9, path.lstat().st_mtime_ns))
    return entries


def read_outside(entries: list[Path], root: Path) -> list[str]:
    """The ``entries`` whose access time moved (read or listed), relative to ``root``."""
    return [path.relative_to(root).as_posix() for path in entries
            if path.exists() and path.lstat().st_atime_ns > 10**9]


def diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    changed = [k for k, v in after.items() if before.get(k) != v]
    return sorted(changed + [f"{k} (removed)" for k in before if k not in after])


def kill_tagged(tag: str) -> None:
    """SIGKILL every process whose environment holds ``HOSTILE_PROBE=tag`` (a probe's Ray
    processes, which run in process groups of their own)."""
    marker = f"HOSTILE_PROBE={tag}".encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if marker in environ.read_bytes().split(b"\0"):
                os.kill(int(environ.parent.name), signal.SIGKILL)


# ------------------------------------------------------------------------------- running


def _environment(box: Box, call: Call, tag: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "HOME": str(box.home), "TORCH_HOME": str(box.home / ".cache" / "torch"),
        "RAYSWEEP_CACHE": str(box.cache), "MPLCONFIGDIR": str(box.shared / "matplotlib"),
        "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "HOSTILE_PROBE": tag,
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    for key, value in call.env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _run_cli(box: Box, call: Call, timeout: float, tag: str) -> tuple[int | None, str, str]:
    command = [*call.wrap, sys.executable, "-m", "raysweep.cli", *call.argv]
    process = subprocess.Popen(command, cwd=box.cwd, env=_environment(box, call, tag),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               errors="replace", start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
        return process.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        return None, out, err + f"\n[killed after {timeout:.0f} s]"
    finally:
        kill_tagged(tag)


@contextlib.contextmanager
def _inside(box: Box, call: Call) -> Iterator[None]:
    """The sandbox's environment and working directory, in this process (API probes)."""
    saved = dict(os.environ)
    cwd = os.getcwd()
    os.environ.update({"HOME": str(box.home), "RAYSWEEP_CACHE": str(box.cache),
                       "TORCH_HOME": str(box.home / ".cache" / "torch")})
    os.environ.update({k: v for k, v in call.env.items() if v is not None})
    os.chdir(box.cwd)
    try:
        yield
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)


def _run_api(box: Box, call: Call) -> tuple[int | None, str, str]:
    from raysweep.errors import RaysweepError

    assert call.api is not None
    with _inside(box, call):
        try:
            call.api()
        except RaysweepError as err:
            return 2, "", f"error: {err}\n"
        except Exception as err:  # noqa: BLE001 - the probe records it
            import traceback

            return 1, "", "".join(traceback.format_exception(err))
    return 0, "", ""


def judge(probe: Probe, status: int | None, out: str, err: str, written: list[str],
          outside: list[str], seconds: float) -> str:
    """Why the probe is not clean ('' when it is)."""
    text = out + err
    if status is None:
        return "timed out"
    if TRACEBACK.search(err):
        return "traceback"
    if any(secret in text for secret in SECRETS):
        return "secret printed"
    if outside:
        return "outside read or written"
    if probe.max_seconds is not None and seconds > probe.max_seconds:
        return f"took {seconds:.0f} s (> {probe.max_seconds:.0f} s)"
    lines = [line for line in err.replace("\r", "\n").splitlines()
             if line.strip() and not PROGRESS.match(line.strip())]
    if probe.expect == "refuse":
        if status != 2:
            return f"exit {status}, not 2"
        errors = [line for line in lines if line.startswith("error: ")]
        if len(errors) != probe.lines or len(lines) != len(errors):
            return f"{len(errors)} error lines among {len(lines)} stderr lines"
        if written and not probe.may_write:
            return "wrote " + ", ".join(written[:3])
    elif probe.expect == "warn":
        if status != 0:
            return f"exit {status}, not 0"
        if not any(line.startswith("warning: ") and all(t in line for t in probe.texts)
                   for line in lines):
            return f"no warning line naming {' and '.join(map(repr, probe.texts))}"
    elif status != 0:
        return f"exit {status}, not 0"
    missing = [t for t in probe.texts if t and t not in text]
    if missing:
        return f"{missing[0]!r} not in the output"
    shown = [t for t in probe.absent if t in text]
    if shown:
        return f"{shown[0]!r} in the output"
    return ""


def run_probe(probe: Probe, work: Path, shared: Path) -> Outcome:
    box = Box(Path(tempfile.mkdtemp(prefix=f"{probe.id[:40]}-", dir=work)), shared)
    try:
        call = probe.build(box)
        before = snapshot(box.root)
        aged = age_outside(box.outside)
        started = time.perf_counter()
        if call.api is not None:
            status, out, err = _run_api(box, call)
        else:
            status, out, err = _run_cli(box, call, probe.timeout, f"{os.getpid()}-{probe.id}")
        seconds = time.perf_counter() - started
        outside = read_outside(aged, box.root)
        written = diff(before, snapshot(box.root))
        outside += [w for w in written if w.startswith("outside/")]
        why = judge(probe, status, out, err, written, outside, seconds)
        if not why and probe.check is not None:
            why = probe.check(box)
        return Outcome(probe.set, probe.id, probe.kind, box.show(call), probe.expect, status,
                       round(seconds, 1), bool(TRACEBACK.search(err)),
                       any(s in out + err for s in SECRETS), written, outside, not why, why,
                       box.hide(err)[-2000:], box.hide(out)[-1000:])
    finally:
        with contextlib.suppress(OSError):
            subprocess.run(["chmod", "-R", "u+rwX", str(box.root)], check=False,
                           capture_output=True)
            shutil.rmtree(box.root, ignore_errors=True)


# ------------------------------------------------------------------------------ reporting


def _mark(flag: bool) -> str:
    return "yes" if flag else "-"


def table(outcomes: list[Outcome]) -> str:
    lines = ["| set | probe | command | exit | traceback | secret | written | outside | clean |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for o in outcomes:
        cell = o.command.replace("|", "\\|")
        clean = "yes" if o.clean else f"**no**: {o.why}".replace("|", "\\|")
        lines.append(f"| {o.set} | {o.id} | `{cell}` | {o.status} | {_mark(o.traceback)} | "
                     f"{_mark(o.secret)} | {_mark(bool(o.written))} | {_mark(bool(o.outside))} | "
                     f"{clean} |")
    return "\n".join(lines) + "\n"


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    sets: dict[str, Any] = {}
    for name in dict.fromkeys(o.set for o in outcomes):
        mine = [o for o in outcomes if o.set == name]
        sets[name] = {"probes": len(mine), "clean": sum(o.clean for o in mine),
                      "secrets": sum(o.secret for o in mine),
                      "outside": sum(bool(o.outside) for o in mine),
                      "tracebacks": sum(o.traceback for o in mine)}
    total = len(outcomes)
    clean = sum(o.clean for o in outcomes)
    return {"sets": sets, "probes": total, "clean": clean,
            "clean_rate": clean / total if total else None,
            "secrets": sum(o.secret for o in outcomes),
            "outside": sum(bool(o.outside) for o in outcomes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("old", "new", "held-out", "all"), default="all")
    parser.add_argument("-k", action="append", default=None,
                        help="only probes whose id contains this (repeatable: any of them)")
    parser.add_argument("-j", type=int, default=2, help="probes at a time (default 2)")
    parser.add_argument("--slow", action="store_true", help="also the probes that start Ray")
    parser.add_argument("--out", default=str(OUT / "hostile_inputs"),
                        help="stem of the .json and .md written (default benchmarks/out/...)")
    parser.add_argument("-v", action="store_true", help="print the stderr of unclean probes")
    args = parser.parse_args(argv)
    probes = [p for p in hostile_probes.all_probes()
              if (args.set == "all" or p.set == args.set) and (args.k is None or any(k in p.id for k in args.k))
              and (args.slow or not p.slow) and (os.geteuid() == 0 or not p.root)]
    load = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="raysweep-hostile-") as tmp:
        work, shared = Path(tmp) / "probes", Path(tmp) / "shared"
        work.mkdir()
        hostile_probes.prepare(shared)
        with ThreadPoolExecutor(max_workers=max(1, args.j)) as pool:
            outcomes = list(pool.map(lambda p: run_probe(p, work, shared), probes))
    for o in outcomes:
        if not o.clean:
            print(f"unclean {o.set}/{o.id}: {o.why}", file=sys.stderr)
            if args.v:
                print("    " + (o.stderr.strip() or o.stdout.strip()).replace("\n", "\n    ")[-1500:],
                      file=sys.stderr)
    result = {"summary": summary(outcomes), "load_average_before": load,
              "seconds": round(time.perf_counter() - started),
              "outcomes": [asdict(o) for o in outcomes]}
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(table(outcomes))
    for name, counts in result["summary"]["sets"].items():
        print(f"{name}: {counts['clean']} of {counts['probes']} clean "
              f"({counts['clean'] / counts['probes']:.0%}); secrets printed {counts['secrets']}, "
              f"outside touched {counts['outside']}, tracebacks {counts['tracebacks']}")
    total = result["summary"]
    if total["probes"]:
        print(f"all: {total['clean']} of {total['probes']} clean ({total['clean_rate']:.1%}) in "
              f"{result['seconds']} s; table: {stem.with_suffix('.md')}")
    print(shlex.join(["python", "benchmarks/hostile_inputs.py", *(argv or sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
