"""One runner per experiment: a second ``raysweep run`` is refused in one line naming the
holder; a lock left by a killed driver is taken over (at once on the same host, after the
heartbeat goes stale on another)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from raysweep.store.lock import LOCK_FILE, ExperimentLock, ExperimentLocked, read_holder

HOLD = """
import sys, time
from raysweep.store.lock import ExperimentLock
lock = ExperimentLock(sys.argv[1], command="holder-process").acquire()
print("held", flush=True)
time.sleep(120)
"""


def _spec_file(tmp_path: Path) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "locked", "storage": str(tmp_path / "runs"),
                                    "evaluate": {"data": {"sources": [{"kind": "digits"}]},
                                                 "encoders": [{"name": "r", "encoder": {
                                                     "name": "small_resnet"}}]}}))
    return spec


def _start_holder(directory: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.slow
def test_second_runner_is_refused_then_takes_over_a_killed_one(tmp_path: Path):
    experiment = tmp_path / "runs" / "locked"
    holder = _start_holder(experiment)
    try:
        run = subprocess.run([sys.executable, "-m", "raysweep.cli", "run",
                              str(_spec_file(tmp_path))], capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 2
        [line] = run.stderr.strip().splitlines()
        assert line.startswith(f"error: {experiment}: another raysweep run holds this experiment")
        assert f"{socket.gethostname()} pid {holder.pid} since " in line
        assert "holder-process" in line
        assert not (experiment / "experiment.yaml").exists()  # refused before writing anything
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The holder died without releasing: same host, dead pid -> taken over at once.
    taker = subprocess.run([sys.executable, "-c",
                            "import sys; from raysweep.store.lock import ExperimentLock\n"
                            "with ExperimentLock(sys.argv[1]) as lock:\n"
                            "    print(lock.took_over.pid)", str(experiment)],
                           capture_output=True, text=True, timeout=60)
    assert taker.returncode == 0, taker.stderr
    assert taker.stdout.strip() == str(holder.pid)
    assert "took over the lock" in taker.stderr
    assert not (experiment / LOCK_FILE).exists()  # released on exit


def _foreign_lock(directory: Path, age_s: float) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    path.write_text(json.dumps({"host": "another-node", "pid": 1, "since": "earlier",
                                "command": "raysweep run x.yaml", "token": "t0"}))
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_a_foreign_lock_holds_while_its_heartbeat_is_fresh(tmp_path: Path):
    _foreign_lock(tmp_path, age_s=5)
    with pytest.raises(ExperimentLocked, match="another-node pid 1 since earlier"):
        ExperimentLock(tmp_path, stale_after_s=60).acquire()


def test_a_foreign_lock_with_a_stale_heartbeat_is_taken_over(tmp_path: Path):
    _foreign_lock(tmp_path, age_s=600)
    lock = ExperimentLock(tmp_path, stale_after_s=60).acquire()
    try:
        assert lock.took_over is not None and lock.took_over.host == "another-node"
        holder = read_holder(tmp_path / LOCK_FILE)
        assert holder is not None and holder.pid == os.getpid() and holder.token == lock.token
    finally:
        lock.release()


def test_the_heartbeat_keeps_a_long_run_fresh(tmp_path: Path):
    lock = ExperimentLock(tmp_path, heartbeat_s=0.05).acquire()
    try:
        path = tmp_path / LOCK_FILE
        stamp = time.time() - 600
        os.utime(path, (stamp, stamp))
        time.sleep(0.5)
        holder = read_holder(path)
        assert holder is not None and holder.heartbeat_age_s < 5
    finally:
        lock.release()


def test_an_unreadable_fresh_lock_is_respected_then_expires(tmp_path: Path):
    (tmp_path / LOCK_FILE).write_bytes(b"")  # a runner killed while creating it
    with pytest.raises(ExperimentLocked, match="the lock file is unreadable: empty;"):
        ExperimentLock(tmp_path, stale_after_s=60).acquire()
    stamp = time.time() - 120
    os.utime(tmp_path / LOCK_FILE, (stamp, stamp))
    ExperimentLock(tmp_path, stale_after_s=60).acquire().release()
