"""``launch/submit.sh`` and ``launch/local_multi_gpu.sh`` against real Ray heads on loopback with
token authentication: refusals without a token, a submitted smoke study that ends in a results
table and a report, a resubmission that adds no row, ``raysweep status`` while the job runs, and
no token in any output or artefact."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from launch_helpers import (
    REPO,
    free_port,
    kill_processes_naming,
    processes_naming,
    ray_env,
    run_in_group,
    write_token,
)

SUBMIT = REPO / "launch" / "submit.sh"
LOCAL = REPO / "launch" / "local_multi_gpu.sh"
SMOKE = REPO / "search_spaces" / "cluster_smoke.yaml"
JOB_TIMEOUT_S = 900  # the smoke study takes 2-3 minutes on a loaded 2-core machine


def smoke_spec(tmp_path: Path) -> Path:
    """The shipped smoke spec with its storage in ``tmp_path`` (absolute: the head sees it)."""
    data = yaml.safe_load(SMOKE.read_text())
    data["storage"] = str(tmp_path / "runs")
    path = tmp_path / "cluster_smoke.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return run_in_group(args, env, timeout)


# ---------------------------------------------------------------------------- refusals


def test_submit_refuses_without_token_auth_and_never_prints_the_token(tmp_path: Path):
    token = write_token(tmp_path / "token")
    spec = smoke_spec(tmp_path)
    base = ray_env(token, HOME=str(tmp_path / "home"), RAY_ADDRESS="http://127.0.0.1:1")
    cases = [
        ({"RAY_AUTH_MODE": "disabled"}, "RAY_AUTH_MODE is 'disabled', not 'token'"),
        ({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "none")}, "is not a readable, non-empty file"),
        ({"RAY_ADDRESS": "http://10.1.2.3:8265"}, "plain http to another machine"),
        ({"RAY_ADDRESS": "ray-head.example.org:8265"}, "plain http to another machine"),
    ]
    for change, message in cases:
        proc = run(["bash", str(SUBMIT), str(spec)], {**base, **change})
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: submit.sh: ") and message in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert token.read_text() not in proc.stdout + proc.stderr
    unset = {k: v for k, v in base.items() if k != "RAY_AUTH_TOKEN_PATH"}
    proc = run(["bash", str(SUBMIT), str(spec)], unset)  # and no ~/.ray/auth_token in HOME
    assert proc.returncode == 2 and "no token: set RAY_AUTH_TOKEN_PATH" in proc.stderr
    # --insecure skips the checks: here the spec check is the next thing to fail
    proc = run(["bash", str(SUBMIT), str(tmp_path / "nothing.yaml"), "--insecure"],
               {**base, "RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 2 and "spec file not found" in proc.stderr


# ---------------------------------------------------------------------- the whole study


def files_of(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.slow
@pytest.mark.ray
def test_submitted_smoke_study_then_resubmission_adds_no_row(local_cluster, tmp_path: Path):
    cache = tmp_path / "cache"
    local_cluster.env["RAYSWEEP_CACHE"] = str(cache)
    local_cluster.start_head(cpus=2)
    spec = smoke_spec(tmp_path)
    experiment = tmp_path / "runs" / "cluster-smoke"
    env = {**local_cluster.env, "RAY_ADDRESS": local_cluster.dashboard}
    token = local_cluster.token.read_text()

    # The dashboard (and with it the job API) answers on loopback only.
    machine_ip = socket.gethostbyname(socket.gethostname())
    if not machine_ip.startswith("127."):
        with pytest.raises(OSError):
            socket.create_connection((machine_ip, local_cluster.nodes[0].dashboard_port), 5)

    first = run(["bash", str(SUBMIT), str(spec), "--no-wait", "--submission-id", "smoke-1"], env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    seen_running, status_outputs = False, []
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        state = run(["ray", "job", "status", "smoke-1"], env, timeout=120)
        said = state.stdout + state.stderr  # e.g. "Job 'smoke-1' succeeded"
        if any(f"Job 'smoke-1' {end}" in said for end in ("succeeded", "failed", "was stopped")):
            break
        assert time.monotonic() < deadline, "the submitted job did not finish"
        if (experiment / "experiment.yaml").is_file():
            status = run(["python", "-m", "raysweep.cli", "status", str(experiment)], env)
            status_outputs.append(status.stdout + status.stderr)
            running = [line for line in status.stdout.splitlines()
                       if line.startswith("running: ")]
            seen_running |= (status.returncode == 0 and len(running) == 1
                             and " pid " in running[0] and f"run {spec}" in running[0])
        time.sleep(3)
    logs = run(["ray", "job", "logs", "smoke-1"], env, timeout=120).stdout
    assert "Job 'smoke-1' succeeded" in said, logs[-5000:]
    assert "6 result rows (6 new), 1 pretrain runs" in logs
    assert seen_running, status_outputs[-3:]  # `raysweep status` saw the job at work

    table = pd.read_parquet(experiment / "results.parquet")
    assert len(table) == 6
    assert sorted(table.groupby(["condition", "protocol"]).size().items()) == [
        (("SSL", "finetune"), 3), (("random", "finetune"), 3)]
    assert sorted(table["seed"].unique()) == [0, 1, 2]
    assert table["accuracy"].between(0, 1).all() and table["accuracy"].notna().all()
    assert (experiment / "report" / "report.html").is_file()
    done = run(["python", "-m", "raysweep.cli", "status", str(experiment)], env)
    assert "running: nothing" in done.stdout and "rows: 6 done, 0 stale, 0 missing" in done.stdout
    assert "pretrain: 1 of 1 runs finished" in done.stdout

    rows_before = files_of(experiment / "rows")
    encoder = next((experiment / "pretrain").glob("SSL-*/encoder.pt"))
    encoder_stamp = encoder.stat().st_mtime_ns
    second = run(["bash", str(SUBMIT), str(spec)], env, timeout=JOB_TIMEOUT_S)
    assert second.returncode == 0, second.stdout[-5000:] + second.stderr[-3000:]
    assert "6 result rows (0 new), 1 pretrain runs" in second.stdout
    assert files_of(experiment / "rows") == rows_before
    assert encoder.stat().st_mtime_ns == encoder_stamp
    assert len(pd.read_parquet(experiment / "results.parquet")) == 6

    # Nothing prints or stores the token: the outputs, the job logs, every artefact.
    for text in (first.stdout, first.stderr, second.stdout, second.stderr, logs, *status_outputs):
        assert token not in text
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path

    # The same study through local_multi_gpu.sh: its own head, nothing new, the head stopped.
    local_cluster.stop()
    temp_dir = local_cluster.root / "local"  # short: Ray's socket paths must fit
    local_env = {**env, "RAYSWEEP_RAY_PORT": str(free_port()),
                 "RAYSWEEP_DASHBOARD_PORT": str(free_port()),
                 "RAYSWEEP_DASHBOARD_AGENT_PORT": str(free_port()),
                 "RAYSWEEP_RAY_CLIENT_PORT": str(free_port()),
                 "RAYSWEEP_RAY_TEMP_DIR": str(temp_dir)}
    local_env.pop("RAY_ADDRESS")
    try:
        local = run(["bash", str(LOCAL), str(spec)], local_env, timeout=JOB_TIMEOUT_S)
        assert local.returncode == 0, local.stdout[-5000:] + local.stderr[-3000:]
        assert "6 result rows (0 new), 1 pretrain runs" in local.stdout
        assert token not in local.stdout + local.stderr
        assert files_of(experiment / "rows") == rows_before
        deadline = time.monotonic() + 60
        while processes_naming(temp_dir) and time.monotonic() < deadline:
            time.sleep(1)
        assert processes_naming(temp_dir) == []  # the script stopped its head
    finally:
        kill_processes_naming(temp_dir, wait_s=0)  # only if it did not
    json.loads((experiment / "provenance.json").read_text())  # still a whole file
