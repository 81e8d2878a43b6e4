"""The ``raysweep`` command: exit statuses and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from raysweep.cli import main


def test_validate_accepts_a_good_spec(tmp_path: Path, capsys):
    spec = tmp_path / "ok.yaml"
    spec.write_text(yaml.safe_dump({"name": "exp", "evaluate": {
        "data": {"sources": [{"kind": "digits"}]},
        "encoders": [{"name": "rand", "encoder": {"name": "small_resnet"}}]}}))
    assert main(["validate", str(spec)]) == 0
    assert "ok: " in capsys.readouterr().out


def test_validate_exits_2_with_one_line(tmp_path: Path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"name": "exp", "pretrain": [
        {"name": "a", "data": {"sources": [{"kind": "digits"}]}, "alpha": -0.1}]}))
    proc = subprocess.run([sys.executable, "-m", "raysweep.cli", "validate", str(spec)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {spec}: pretrain[0].alpha: must be >= 0, got -0.1"]
