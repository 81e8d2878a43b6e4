"""``raysweep demo --smoke``: the paper-shaped study end to end, twice; the second run trains
nothing and prints the same paths; a copy of the experiment directory elsewhere trains nothing
either (results and pre-training runs are identified by content, not by path)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from raysweep.cli import main
from raysweep.experiment.demo import demo_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_demo_smoke_twice(demo_smoke_run, tmp_path: Path, monkeypatch, capsys):
    # the first run: the session's (tests/conftest.py), which the notebook test shares
    monkeypatch.setenv("RAYSWEEP_CACHE", str(demo_smoke_run.cache))
    storage = demo_smoke_run.storage
    first = demo_smoke_run.last_line
    spec = demo_spec(smoke=True, storage=str(storage))
    table = pd.read_parquet(spec.directory / "results.parquet")
    # 4 pre-trained encoders x (fine-tune + probe + logistic) + a random-init fine-tune
    # baseline, 5 seeds.
    assert len(table) == (4 * 3 + 1) * 5
    assert set(table["condition"]) == {"SL", "SSL", "SL-T-SSL_p", "SSL-T-SSL_p", "random"}
    assert table.groupby(["condition", "protocol"]).size().eq(5).all()
    encoders = sorted((spec.directory / "pretrain").glob("*/encoder.pt"))
    assert len(encoders) == 4
    stamps = {p: p.stat().st_mtime_ns for p in encoders}
    report = spec.directory / "report" / "report.html"
    assert report.is_file() and "SSL-T-SSL_p" in report.read_text(encoding="utf-8")
    # one representation analysis per encoder; the report shows them and the logistic protocol
    analyses = sorted((spec.directory / "representations").glob("*.json"))
    assert len(analyses) == 5
    stamps.update({p: p.stat().st_mtime_ns for p in analyses})
    markdown = (spec.directory / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Representations" in markdown and "finetune vs logistic vs probe" in markdown
    assert "SSL-T-SSL_p (probe) | random (finetune)" in markdown
    assert f"results: {spec.directory / 'results.parquet'}" in first
    assert f"report: {report}" in first

    assert main(["demo", "--smoke", "--storage", str(storage)]) == 0
    second = capsys.readouterr().out.strip().splitlines()[-1]
    assert "(0 new)" in second
    assert re.sub(r"done in \d+ s", "", second) == re.sub(
        r"done in \d+ s", "", first).replace("(65 new)", "(0 new)")
    again = pd.read_parquet(spec.directory / "results.parquet")
    assert list(again["run_id"]) == list(table["run_id"])  # no row was recomputed
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained

    # Moved to other storage (laptop to NFS, a renamed folder): nothing trains again.
    moved = tmp_path / "moved"
    shutil.copytree(storage, moved)
    assert main(["demo", "--smoke", "--storage", str(moved)]) == 0
    assert "(0 new), 4 pretrain runs" in capsys.readouterr().out.strip().splitlines()[-1]
    moved_spec = demo_spec(smoke=True, storage=str(moved))
    assert sorted(p.name for p in (moved_spec.directory / "pretrain").iterdir()) == sorted(
        p.parent.name for p in encoders)
    moved_table = pd.read_parquet(moved_spec.directory / "results.parquet")
    assert list(moved_table["run_id"]) == list(table["run_id"])
