"""Ctrl-C during a run: the waiting driver is interrupted at once, and what is kept is told."""

from __future__ import annotations

import _thread
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from raysweep.config import spec_from_data
from raysweep.experiment.interrupt import kept_lines
from raysweep.runtime.concurrency import run_concurrently
from raysweep.store.run_dirs import latest_checkpoint_epoch

DIGITS = {"sources": [{"kind": "digits", "classes": ["0", "1", "2"]}], "image_size": 16}
PRETRAIN_DATA = {**DIGITS, "sources": [{**DIGITS["sources"][0], "split": "train"}]}  # never the test images


def test_run_concurrently_returns_every_result_and_respects_the_limit() -> None:
    running, peak, lock = 0, 0, threading.Lock()

    def call(value: int):
        def work() -> int:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.05)
            with lock:
                running -= 1
            return value * value
        return work

    results = run_concurrently({f"r{i}": call(i) for i in range(5)}, max_parallel=2)
    assert results == {f"r{i}": i * i for i in range(5)}
    assert peak == 2


def test_run_concurrently_raises_the_first_failure_in_order() -> None:
    def fail(message: str):
        def work() -> None:
            raise RuntimeError(message)
        return work

    with pytest.raises(RuntimeError, match="^first$"):
        run_concurrently({"a": lambda: 1, "b": fail("first"), "c": fail("second")},
                         max_parallel=3)


def test_ctrl_c_interrupts_the_wait_at_once() -> None:
    """A ThreadPoolExecutor would wait here until the 20 s call returned."""
    # Python's own Ctrl-C handler (an earlier test may have left Ray's or Tune's installed).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    released = threading.Event()
    safety = threading.Timer(20, released.set)  # never hang the test run
    safety.start()
    threading.Timer(0.3, _thread.interrupt_main).start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_concurrently({"fit": released.wait}, max_parallel=1)
    finally:
        signal.signal(signal.SIGINT, previous)
        safety.cancel()
        released.set()
    assert time.monotonic() - started < 3


def experiment(storage: Path) -> dict:
    run = {"data": PRETRAIN_DATA, "method": "barlow_twins", "further": False,
           "encoder": {"name": "small_resnet"}, "batch_size": 64, "projector": [32, 32],
           "lr_max": 1e-3, "epochs": 6}
    return {
        "name": "interrupted", "storage": str(storage),
        "pretrain": [{**run, "name": "done"}, {**run, "name": "half", "seed": 1},
                     {**run, "name": "fresh", "seed": 2}],
        "evaluate": {"data": {**DIGITS, "label_count": 30}, "seeds": 3, "protocols": ["finetune"],
                     "encoders": [{"name": "done", "encoder": {"name": "small_resnet",
                                                               "weights": "pretrain:done"}}]},
    }


def test_kept_lines_read_the_experiment_directory(tmp_path: Path) -> None:
    from raysweep.plan.identity import stage_refs
    from raysweep.plan.run_identity import pretrain_run_dir
    from raysweep.store.results import ResultsStore

    spec = spec_from_data(experiment(tmp_path))
    done, half, _ = spec.pretrain
    finished = pretrain_run_dir(spec, done)
    finished.mkdir(parents=True)
    for name in ("encoder.pt", "metrics.jsonl"):
        (finished / name).write_bytes(b"x")
    (finished / "meta.json").write_text(json.dumps({"status": "finished"}))
    checkpoints = pretrain_run_dir(spec, half) / "train"
    for epoch, complete in ((1, True), (2, True), (3, False)):  # epoch 3: a copy cut short
        (checkpoints / f"checkpoint_{epoch:06d}").mkdir(parents=True)
        if complete:
            (checkpoints / f"checkpoint_{epoch:06d}" / "state.pt").write_bytes(b"x")
    assert latest_checkpoint_epoch(checkpoints.parent) == 3  # epochs 0, 1, 2 are covered
    refs = {ref.key.seed: ref for ref in stage_refs(spec)}
    for seed in (0, 2):
        ResultsStore(spec.directory).write({"condition": "done", "protocol": "finetune",
                                            "seed": seed, "row_id": refs[seed].row_id})
    assert kept_lines(spec) == [
        "pretrain done: finished (encoder.pt kept)",
        "pretrain half: checkpoint after epoch 3/6 kept, training continues from it",
        "pretrain fresh: not started or no epoch finished yet",
        "evaluate: 2 of 3 result rows kept (one per finished seed; they are not computed again)",
    ]


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies left to a non-reaping init do
    not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            return True
    return False


@pytest.mark.slow
@pytest.mark.ray
def test_sigint_during_pretraining_stops_the_run_within_seconds(tmp_path: Path) -> None:
    """A real ``raysweep run`` (its own local Ray) gets SIGINT after its first epoch line."""
    data = experiment(tmp_path / "runs")
    data["pretrain"] = [{**data["pretrain"][0], "name": "long", "epochs": 400}]
    data["evaluate"]["encoders"][0]["encoder"]["weights"] = "pretrain:long"
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    env = {**os.environ, "RAYSWEEP_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    driver = subprocess.Popen([sys.executable, "-m", "raysweep.cli", "run", str(spec_file)],
                              env=env, start_new_session=True, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(driver.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not any(line.startswith("pretrain long: epoch 2/400") for line in lines):
            assert driver.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.2)
        interrupted = time.monotonic()
        driver.send_signal(signal.SIGINT)
        driver.wait(timeout=60)
        took = time.monotonic() - interrupted
        # The local Ray it started (raylet, GCS, workers: its process group) is gone too.
        deadline = time.monotonic() + 30
        while _group_alive(driver.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left_behind = _group_alive(driver.pid)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    reader.join(timeout=5)
    err = "".join(lines)
    assert driver.returncode == 130, err[-3000:]
    assert not left_behind, "Ray processes of the interrupted run are still running"
    # Within seconds, not after the 400 epochs (~2 s each here), on a busy 2-core machine too.
    assert took < 20, f"took {took:.1f} s"
    epoch_lines = [line for line in lines if line.startswith("pretrain long: epoch")]
    assert re.fullmatch(r"pretrain long: epoch 1/400  loss [\d.e+-]+(  top-1 [\d.]+)?  \d+ img/s  ETA .+\n",
                        epoch_lines[0])
    assert "interrupted: stopping Ray" in err
    kept = re.search(r"pretrain long: checkpoint after epoch (\d+)/400 kept", err)
    assert kept and int(kept.group(1)) >= 2
    assert f"resume with: raysweep run {spec_file}" in err
    # The dashboard is on, so Ray Train's placement-group cleaner does not warn every second.
    assert "Failed to query Ray Train Controller" not in err
