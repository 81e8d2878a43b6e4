"""Failure injection for tests of the restart path: a ``StepHook`` that kills one worker.

:class:`KillOnce` is handed to :func:`raysweep.ssl.pretrain.loop.pretrain_worker` as its
``after_step`` hook (through :func:`raysweep.runtime.pretrain_driver.run_pretrain`'s ``_after_step``
on Ray Train). It lives in the package, not under ``tests/``, because Ray Train unpickles it in
its worker processes, which import ``raysweep`` but not the test modules.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KillOnce"]


@dataclass(frozen=True)
class KillOnce:
    """SIGKILL rank ``rank`` after the first step of ``epoch``, once: ``marker`` is created
    first, and its existence disarms the hook on the restarted run."""

    epoch: int
    marker: str
    rank: int = 0

    def __call__(self, epoch: int, step: int, rank: int) -> None:
        if (epoch, step, rank) != (self.epoch, 0, self.rank) or Path(self.marker).exists():
            return
        Path(self.marker).write_text("killed\n", encoding="utf-8")
        os.kill(os.getpid(), signal.SIGKILL)
