"""Threads that Ctrl-C interrupts at once: the pre-training runs of one wave run side by side
(:func:`run_concurrently`, used by :mod:`raysweep.stages.pretrain`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TypeVar

T = TypeVar("T")


def run_concurrently(calls: Mapping[str, Callable[[], T]], *, max_parallel: int) -> dict[str, T]:
    """Call every ``calls[name]()``, at most ``max_parallel`` at a time, each in a daemon
    thread; return ``{name: result}`` once all are done, or raise the first failure (in the
    order of ``calls``).

    The waiting main thread is interrupted by Ctrl-C at once (``KeyboardInterrupt``); the
    threads, being daemons, then do not keep the process alive.
    """
    results: dict[str, T] = {}
    errors: dict[str, BaseException] = {}
    slots = threading.Semaphore(max(1, max_parallel))

    def target(name: str, call: Callable[[], T]) -> None:
        with slots:
            try:
                results[name] = call()
            except BaseException as err:  # handed to the waiting thread, never printed here
                errors[name] = err

    threads = [threading.Thread(target=target, args=(name, call), name=f"raysweep-{name}",
                                daemon=True) for name, call in calls.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=0.25)
    for name in calls:
        if name in errors:
            raise errors[name]
    return results
