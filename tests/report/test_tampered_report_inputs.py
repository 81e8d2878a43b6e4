"""Every file the report reads goes through the one reader (:mod:`raysweep.storage.reading`): a
tampered ``metrics.jsonl``, ``meta.json``, ``trials.csv``, ``representations.json``,
``results.parquet``, ``best.json`` or ``study.journal`` is one error naming it, and no partial
report is written (the inputs, the search studies included, are read before anything is)."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from raysweep.cli import main
from raysweep.config import ReportSpec
from raysweep.errors import RaysweepError
from raysweep.report import write_report
from tests.report.test_report import make_experiment
from tests.search.test_search_parts import _filled_study, one_search

SETTINGS = ReportSpec(tests=("welch",), bootstrap_resamples=100)
GARBAGE = np.random.default_rng(0).integers(0, 256, 512, dtype=np.uint8).tobytes()


def _replace(path: Path, content: bytes | str | None = None, *, link: Path | None = None,
             folder: bool = False) -> None:
    path.unlink()
    if link is not None:
        path.symlink_to(link)
    elif folder:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(str(content))


def _outside(root: Path) -> Path:
    target = root.parent / "outside.txt"
    target.write_text("root:x:0:0:OUTSIDE:/root:/bin/sh\n")
    return target


# ------------------------------------------------------------ results, curves, histories

RESULTS_TAMPERING: dict[str, tuple[str, Callable[[Path], None]]] = {
    "metrics-binary": ("metrics.jsonl", lambda d: _replace(
        d / "pretrain" / "0a1b2c" / "metrics.jsonl", GARBAGE)),
    "metrics-link-out": ("metrics.jsonl", lambda d: _replace(
        d / "pretrain" / "0a1b2c" / "metrics.jsonl", link=_outside(d))),
    "meta-list": ("meta.json", lambda d: _replace(d / "pretrain" / "0a1b2c" / "meta.json",
                                                 "[1, 2]")),
    "meta-infinite": ("meta.json", lambda d: _replace(d / "pretrain" / "0a1b2c" / "meta.json",
                                                     '{"name": 1e400}')),
    "trials-csv-binary": ("trials.csv", lambda d: _replace(d / "search" / "lambda" /
                                                         "trials.csv", GARBAGE)),
    "results-link-out": ("results.parquet", lambda d: _replace(d / "results.parquet",
                                                               link=_outside(d))),
    "results-folder": ("results.parquet", lambda d: _replace(d / "results.parquet",
                                                             folder=True)),
    "representations-pickle": ("representations.json", lambda d: (
        d / "representations.json").write_bytes(pickle.dumps({"conditions": []}))),
}


@pytest.mark.parametrize("case", sorted(RESULTS_TAMPERING))
def test_a_tampered_results_input_is_one_error_naming_it(tmp_path: Path, case: str) -> None:
    name, tamper = RESULTS_TAMPERING[case]
    experiment = make_experiment(tmp_path / "exp")
    tamper(experiment)
    with pytest.raises(RaysweepError, match=name.replace(".", r"\.")) as caught:
        write_report(experiment, settings=SETTINGS, dpi=30)
    assert "\n" not in str(caught.value)
    assert not (experiment / "report").exists()


# --------------------------------------------------------------------------- searches


@pytest.fixture(scope="module")
def search_template(tmp_path_factory) -> Path:
    """An experiment of one finished search (best.json, trials.parquet, study.journal)."""
    from raysweep.search.outputs import write_outputs

    root = tmp_path_factory.mktemp("search")
    spec, search = one_search(root)
    folder = spec.directory / "search" / search.name
    study, _ = _filled_study(folder, search)
    write_outputs(folder, study, search)
    return Path(spec.directory)


def _hand_edited_journal(path: Path) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        if "state" in record:
            record["state"] = 99
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _other_study(path: Path) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        if "study_name" in record:
            record["study_name"] = "another"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


SEARCH_TAMPERING: dict[str, tuple[str, Callable[[Path], None]]] = {
    "best-list": ("best.json", lambda f: _replace(f / "best.json", "[1]")),
    "best-no-study-name": ("best.json", lambda f: (f / "best.json").write_text(json.dumps(
        {k: v for k, v in json.loads((f / "best.json").read_text()).items()
         if k != "study_name"}))),
    "best-states-wrong-type": ("best.json", lambda f: (f / "best.json").write_text(json.dumps(
        {**json.loads((f / "best.json").read_text()), "states": [3]}))),
    "trials-garbage": ("trials.parquet", lambda f: _replace(f / "trials.parquet", GARBAGE)),
    "journal-garbage": ("study.journal", lambda f: _replace(f / "study.journal", GARBAGE)),
    "journal-pickle": ("study.journal", lambda f: _replace(f / "study.journal",
                                                            pickle.dumps({"op_code": 0}))),
    "journal-state-99": ("study.journal", lambda f: _hand_edited_journal(f / "study.journal")),
    "journal-not-records": ("study.journal", lambda f: _replace(f / "study.journal",
                                                                 '[1, 2]\n{"a": 1}\n')),
    "journal-other-study": ("study.journal", lambda f: _other_study(f / "study.journal")),
    "journal-folder": ("study.journal", lambda f: _replace(f / "study.journal", folder=True)),
    "journal-link-out": ("study.journal", lambda f: _replace(
        f / "study.journal", link=_outside(f.parent.parent))),
}


@pytest.mark.parametrize("case", sorted(SEARCH_TAMPERING))
def test_a_tampered_search_is_one_error_naming_it(search_template: Path, tmp_path: Path,
                                                  case: str, capsys) -> None:
    import shutil

    name, tamper = SEARCH_TAMPERING[case]
    experiment = tmp_path / "exp"
    shutil.copytree(search_template, experiment, symlinks=True)
    tamper(experiment / "search" / "bt")
    before = sorted(os.listdir(experiment / "search" / "bt"))
    assert main(["report", str(experiment)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and name in err, err
    assert "Traceback" not in err
    assert not (experiment / "report").exists()
    assert sorted(os.listdir(experiment / "search" / "bt")) == before  # nothing created


def test_the_untampered_search_still_reports(search_template: Path, tmp_path: Path) -> None:
    import shutil

    experiment = tmp_path / "exp"
    shutil.copytree(search_template, experiment)
    paths = write_report(experiment, dpi=30)
    assert "search-bt-history.png" in {p.name for p in paths.figures}
