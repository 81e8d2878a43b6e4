"""One console line per pre-training epoch, printed by the driver from rank 0's ``metrics.jsonl``.

::

    pretrain SSL: epoch 3/8  loss 118.9  412 img/s  ETA 25 s
    pretrain simclr: epoch 3/8  loss 4.21  top-1 0.412  val loss 4.58  val top-1 0.350  ...

Why the driver watches a file rather than registering a Ray Train callback: under Ray Train V2
a ``RunConfig.callbacks`` entry (``ray.train.UserCallback``) runs inside the TrainController
actor, not in the driver process. Its lines would reach the console only through Ray's log
forwarding (prefixed ``(TrainController pid=...)``, and not at all with ``log_to_driver`` off),
and the driver's ``--quiet`` / ``--verbose`` would not reach it. Rank 0 already rewrites
``metrics.jsonl`` atomically after every epoch, in the run directory the driver reads the final
artefacts from, so a thread beside ``trainer.fit()`` that looks at the file once a second sees
every epoch, also after Ray Train restarted a failed worker group, with no Ray API involved and
no change to what the workers compute.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from raysweep import console
from raysweep.storage.paths import AnyPath, storage_path

__all__ = ["EpochProgress", "epoch_line"]


#: ``metrics.jsonl`` keys on the epoch line, in order: (key, label, format). The contrastive
#: top-1 accuracy and the held-out validation terms are the thesis' Figure 7.1.
_MONITORED = (("loss", "loss", ".4g"), ("contrastive_top1", "top-1", ".3f"),
              ("val_loss", "val loss", ".4g"), ("val_contrastive_top1", "val top-1", ".3f"))


def epoch_line(run: str, metrics: Mapping[str, Any], total_epochs: int,
               eta_s: float | None) -> str:
    """The console line of one finished epoch (``metrics``: one line of ``metrics.jsonl``,
    whose ``epoch`` counts from 0)."""
    parts = [f"pretrain {run}: epoch {int(metrics['epoch']) + 1}/{total_epochs}"]
    if metrics.get("phase") == "frozen":
        parts[0] += " (encoder frozen)"
    for key, label, form in _MONITORED:
        if metrics.get(key) is not None:
            parts.append(f"{label} {float(metrics[key]):{form}}")
    if "images_per_s" in metrics:
        parts.append(f"{float(metrics['images_per_s']):.0f} img/s")
    for key, value in metrics.items():
        if key.startswith("proxy_"):
            parts.append(f"{key} {float(value):.4f}")
    if eta_s is not None:
        parts.append(f"ETA {console.format_duration(eta_s)}" if eta_s > 0 else "last epoch")
    return "  ".join(parts)


def _epoch_detail(metrics: Mapping[str, Any]) -> str:
    shown = {k: v for k, v in metrics.items()
             if k in ("invariance", "redundancy", "sparsity", "lr", "lr_max", "epoch_time_s")
             and v is not None}
    return "    " + "  ".join(f"{k} {float(v):.4g}" for k, v in shown.items())


class EpochProgress:
    """Watch ``metrics_path`` in a daemon thread while a run trains; print each new epoch once.

    Use as a context manager around ``trainer.fit()``; leaving it reads the file a last time,
    so the final epoch is printed even when training ends between two looks. Epochs already in
    the file when watching starts (a resumed run) are counted in :attr:`resumed_after` and not
    printed again.

    The ETA is ``remaining epochs x seconds per epoch``, the seconds per epoch measured on the
    wall clock between the epochs seen here (checkpointing included), or the epoch's own
    ``epoch_time_s`` until two epochs have been seen.
    """

    def __init__(self, run: str, metrics_path: str | AnyPath, total_epochs: int, *,
                 interval_s: float = 1.0) -> None:
        self.run = run
        self.path = storage_path(metrics_path)
        self.total_epochs = total_epochs
        self.interval_s = interval_s
        self.lines: list[str] = []  # what was printed, for callers and tests
        self._printed_up_to = -1
        self._seen_at: list[tuple[int, float]] = []  # (epoch, wall time first seen)
        self._stamp: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.resumed_after = 0  # epochs already in the file when watching started

    # -- reading ------------------------------------------------------------------------------

    def _read(self) -> list[dict[str, Any]] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return None
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError:
            return None
        self._stamp = stamp
        history = []
        for line in text.splitlines():
            try:
                history.append(json.loads(line))
            except ValueError:  # never expected (atomic rewrites); skip rather than stop
                continue
        return history

    def _seconds_per_epoch(self, latest: Mapping[str, Any]) -> float | None:
        if len(self._seen_at) >= 2:
            (e0, t0), (e1, t1) = self._seen_at[0], self._seen_at[-1]
            if e1 > e0:
                return (t1 - t0) / (e1 - e0)
        value = latest.get("epoch_time_s")
        return float(value) if value is not None else None

    def poll(self, now: float | None = None) -> list[str]:
        """Print (and return) the lines of epochs that appeared since the last look."""
        history = self._read()
        if not history:
            return []
        now = time.time() if now is None else now
        printed = []
        for metrics in history:
            epoch = int(metrics.get("epoch", -1))
            if epoch <= self._printed_up_to:
                continue
            self._seen_at.append((epoch, now))
            per_epoch = self._seconds_per_epoch(metrics)
            remaining = self.total_epochs - epoch - 1
            eta = remaining * per_epoch if per_epoch is not None else None
            line = epoch_line(self.run, metrics, self.total_epochs, eta)
            console.say(line)
            console.detail(_epoch_detail(metrics))
            printed.append(line)
            self._printed_up_to = epoch
        self.lines.extend(printed)
        return printed

    # -- watching -----------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception as err:  # progress must never stop a run
                console.detail(f"pretrain {self.run}: progress unavailable ({err})")
                return

    def __enter__(self) -> EpochProgress:
        # A resumed run's file holds the epochs trained before: they are not printed again.
        history = self._read() or []
        self.resumed_after = 1 + max((int(m.get("epoch", -1)) for m in history), default=-1)
        self._printed_up_to = self.resumed_after - 1
        self._thread = threading.Thread(target=self._watch, name=f"progress-{self.run}",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if exc_info[0] is None:
            self.poll()
