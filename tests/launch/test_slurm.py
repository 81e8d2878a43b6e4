"""``launch/slurm.sbatch`` on a real single-node SLURM (:mod:`slurm_helpers`): the cluster smoke
spec submitted with ``sbatch --wait`` ends in its result rows and report, a second submission
adds no row and recomputes nothing, the job's own token is made readable by its owner only,
never printed or stored, and removed with every Ray process of the job when it ends."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import slurm_helpers
import yaml
from launch_helpers import REPO, free_port, kill_processes_naming, processes_naming, ray_env
from slurm_helpers import LocalSlurm, require_slurm

SBATCH = REPO / "launch" / "slurm.sbatch"
SMOKE = REPO / "search_spaces" / "cluster_smoke.yaml"
JOB_TIMEOUT_S = 900  # the smoke study takes 2-3 minutes on a loaded 2-core machine


@pytest.fixture
def local_slurm() -> Iterator[LocalSlurm]:
    require_slurm()
    root = Path(tempfile.mkdtemp(prefix="rs-slurm-", dir="/tmp"))  # short: socket paths
    slurm = LocalSlurm(root, nodes=2, cpus=1)
    try:
        slurm.start()
        yield slurm
    finally:
        slurm.stop()
        kill_processes_naming(root)
        shutil.rmtree(root, ignore_errors=True)


def files_of(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_the_script_refuses_outside_a_job_and_a_bad_token_file(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RAY_"))}
    proc = subprocess.run(["bash", str(SBATCH), str(SMOKE)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: slurm.sbatch: not inside a SLURM job: submit it with "
                                   "`sbatch launch/slurm.sbatch SPEC`")
    job = {**env, "SLURM_JOB_ID": "7", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "none")}
    proc = subprocess.run(["bash", str(SBATCH), str(SMOKE)], env=job, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert f"RAY_AUTH_TOKEN_PATH={tmp_path / 'none'} is not a readable" in proc.stderr
    proc = subprocess.run(["bash", str(SBATCH)], env={**job, "RAY_AUTH_TOKEN_PATH": ""},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage: sbatch [sbatch options]" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_missing_slurm_skips_with_its_reason_but_fails_where_required(monkeypatch):
    reason = "SLURM is not installed (sbatch not found; Debian: apt-get install slurm-wlm munge)"
    monkeypatch.setattr(slurm_helpers, "slurm_missing", lambda: reason)
    monkeypatch.delenv("RAYSWEEP_REQUIRE_SLURM", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^SLURM is not installed \(sbatch"):
        require_slurm()
    monkeypatch.setenv("RAYSWEEP_REQUIRE_SLURM", "1")
    with pytest.raises(pytest.fail.Exception, match=r"^RAYSWEEP_REQUIRE_SLURM=1 but SLURM is"):
        require_slurm()


@pytest.mark.slow
def test_sbatch_smoke_study_then_resubmission_adds_no_row(local_slurm: LocalSlurm,
                                                          tmp_path: Path):
    data = yaml.safe_load(SMOKE.read_text())
    data["storage"] = str(tmp_path / "runs")
    spec = tmp_path / "cluster_smoke.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    experiment = tmp_path / "runs" / "cluster-smoke"
    home = tmp_path / "home"
    home.mkdir()
    temp_dir = local_slurm.root / "ray"
    env = ray_env(tmp_path / "unused", HOME=str(home), SLURM_CONF=str(local_slurm.conf),
                  RAYSWEEP_CACHE=str(tmp_path / "cache"), RAYSWEEP_RAY_TEMP_DIR=str(temp_dir),
                  **{f"RAYSWEEP_{name}_PORT": str(free_port())
                     for name in ("RAY", "DASHBOARD", "DASHBOARD_AGENT", "RAY_CLIENT")})
    del env["RAY_AUTH_TOKEN_PATH"]   # the job makes a token of its own
    sbatch = ["sbatch", "--wait", "--parsable", "--nodes=2", "--cpus-per-task=1",
              f"--output={tmp_path}/job-%j.out", str(SBATCH), str(spec)]

    started = time.monotonic()
    first = subprocess.Popen(sbatch, env=env, cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    token, token_mode = "", 0
    while first.poll() is None and not token:   # the job's token, while it runs
        for path in (home / ".ray").glob("raysweep-slurm-*.token"):
            token, token_mode = path.read_text(), path.stat().st_mode & 0o777
        time.sleep(0.5)
    stdout, stderr = first.communicate(timeout=JOB_TIMEOUT_S)
    first_s = time.monotonic() - started
    job_id = stdout.strip().split(";")[0]
    output = (tmp_path / f"job-{job_id}.out").read_text()
    assert first.returncode == 0, output[-5000:] + stderr + local_slurm.logs()
    assert len(token) == 64 and token_mode == 0o600
    assert "Ray head on node1 (" in output and ", 2 node(s), --num-cpus 1 per node" in output
    assert output.count("Ray runtime started.") == 2   # the head and the worker on node2
    assert "6 result rows (6 new), 1 pretrain runs" in output

    table = pd.read_parquet(experiment / "results.parquet")
    assert sorted(table.groupby(["condition", "protocol"]).size().items()) == [
        (("SSL", "finetune"), 3), (("random", "finetune"), 3)]
    assert table["accuracy"].between(0, 1).all()
    assert (experiment / "report" / "report.html").is_file()
    assert list((home / ".ray").iterdir()) == []   # the job's token is gone with it
    assert processes_naming(temp_dir) == []        # and so is every Ray process of the job

    rows_before = files_of(experiment / "rows")
    encoder = next((experiment / "pretrain").glob("SSL-*/encoder.pt"))
    encoder_stamp = encoder.stat().st_mtime_ns
    started = time.monotonic()
    second = subprocess.run(sbatch, env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=JOB_TIMEOUT_S)
    second_s = time.monotonic() - started
    output_2 = (tmp_path / f"job-{second.stdout.strip().split(';')[0]}.out").read_text()
    assert second.returncode == 0, output_2[-5000:] + second.stderr
    assert "6 result rows (0 new), 1 pretrain runs" in output_2
    assert files_of(experiment / "rows") == rows_before
    assert encoder.stat().st_mtime_ns == encoder_stamp
    assert len(pd.read_parquet(experiment / "results.parquet")) == 6

    for text in (output, output_2, stdout, stderr, second.stdout, second.stderr):
        assert token not in text
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    print(f"sbatch --wait: first submission {first_s:.0f} s, second {second_s:.0f} s")
