"""The driver's per-epoch lines, read from rank 0's metrics.jsonl."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from raysweep import console
from raysweep.ssl.pretrain.progress import EpochProgress, epoch_line


@pytest.fixture(autouse=True)
def normal_verbosity():
    console.set_verbosity(console.NORMAL)
    yield
    console.set_verbosity(console.NORMAL)


def epoch_metrics(epoch: int, *, phase: str = "train", seconds: float = 2.0) -> dict:
    return {"epoch": epoch, "phase": phase, "loss": 100.0 / (epoch + 1), "lr": 1e-3,
            "images_per_s": 512.4, "epoch_time_s": seconds}


def write_history(path: Path, history: list[dict]) -> None:
    path.write_text("".join(json.dumps(m) + "\n" for m in history), encoding="utf-8")


def test_epoch_line_names_run_epoch_loss_speed_and_eta() -> None:
    line = epoch_line("SSL", epoch_metrics(2), total_epochs=8, eta_s=25)
    assert line == "pretrain SSL: epoch 3/8  loss 33.33  512 img/s  ETA 25 s"
    frozen = epoch_line("SL-T", epoch_metrics(0, phase="frozen"), total_epochs=5, eta_s=None)
    assert frozen == "pretrain SL-T: epoch 1/5 (encoder frozen)  loss 100  512 img/s"
    last = epoch_line("SSL", epoch_metrics(7), total_epochs=8, eta_s=0.0)
    assert last.endswith("last epoch")


def test_each_epoch_is_printed_once_with_a_wall_clock_eta(tmp_path: Path, capsys) -> None:
    path = tmp_path / "metrics.jsonl"
    progress = EpochProgress("SSL", path, total_epochs=10)
    assert progress.poll(now=0.0) == []  # no file yet
    history = [epoch_metrics(0, seconds=2.0)]
    write_history(path, history)
    [first] = progress.poll(now=100.0)
    # One epoch seen: its own epoch_time_s (2 s) x 9 epochs to go.
    assert first.endswith("ETA 18 s")
    assert progress.poll(now=101.0) == []  # unchanged file: nothing new
    history += [epoch_metrics(1), epoch_metrics(2)]
    write_history(path, history)
    lines = progress.poll(now=106.0)
    # Epochs 0 and 2 seen 6 s apart: 3 s per epoch (checkpoints included), x 7 to go.
    assert [line.split("  ")[0] for line in lines] == ["pretrain SSL: epoch 2/10",
                                                      "pretrain SSL: epoch 3/10"]
    assert lines[-1].endswith("ETA 21 s")
    assert capsys.readouterr().err.splitlines() == [first, *lines]


def test_a_resumed_run_does_not_repeat_earlier_epochs(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    write_history(path, [epoch_metrics(e) for e in range(3)])
    with EpochProgress("SSL", path, total_epochs=6, interval_s=0.05) as progress:
        assert progress.resumed_after == 3
        # The restarted workers rewrite the history they resumed with, plus new epochs.
        time.sleep(0.1)
        write_history(path, [epoch_metrics(e) for e in range(5)])
        deadline = time.monotonic() + 5
        while len(progress.lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        write_history(path, [epoch_metrics(e) for e in range(6)])
    # Leaving the block reads the file a last time: the final epoch is never lost.
    assert [line.split("  ")[0] for line in progress.lines] == [
        "pretrain SSL: epoch 4/6", "pretrain SSL: epoch 5/6", "pretrain SSL: epoch 6/6"]


def test_quiet_prints_no_epoch_lines(tmp_path: Path, capsys) -> None:
    console.set_verbosity(console.QUIET)
    path = tmp_path / "metrics.jsonl"
    write_history(path, [epoch_metrics(0)])
    assert len(EpochProgress("SSL", path, total_epochs=2).poll()) == 1
    assert capsys.readouterr().err == ""
