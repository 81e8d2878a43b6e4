"""Ctrl-C during a run: stop within seconds, then say what is kept and how to resume.

Three parts:

* :func:`run_concurrently` runs the pre-training runs of one wave in daemon threads and waits
  for them in a way Ctrl-C interrupts at once. (A ``ThreadPoolExecutor`` does not: leaving its
  ``with`` block, and the interpreter's exit, join every busy worker thread, so a SIGINT during
  ``TorchTrainer.fit()`` was only acted on after the whole run had finished training.)
* :func:`stop_ray` ends this driver's Ray work: it shuts down the local Ray instance the driver
  started (every trainer, worker and trial with it), or disconnects from a cluster, whose GCS
  then ends the actors this driver owned.
* :func:`kept_lines` reads the experiment directory afterwards: finished pre-training runs,
  the newest epoch checkpoint of unfinished ones (Ray Train continues from it on the next run),
  and the result rows written (one per finished seed). Every artefact is written atomically,
  so nothing half-written is left to clean up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TypeVar

from raysweep.config import ExperimentSpec
from raysweep.storage.paths import AnyPath

__all__ = ["kept_lines", "latest_checkpoint_epoch", "run_concurrently", "stop_ray"]

T = TypeVar("T")

#: Ray Train's checkpoint directories of a pre-training run (named by the driver's hooks).
_CHECKPOINT_GLOB = "checkpoint_[0-9]*"


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


def stop_ray() -> None:
    """Shut down this driver's Ray (the local instance it started, or its cluster connection)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def latest_checkpoint_epoch(run_dir: AnyPath) -> int | None:
    """Epochs covered by the newest complete checkpoint of a pre-training run, or None.

    Ray Train keeps them as ``<run_dir>/train/checkpoint_<epoch>`` (the epoch counted from 0);
    a directory without the state file is a copy that was cut short and is ignored.
    """
    from raysweep.ssl.pretrain.checkpoint import STATE_FILE
    from raysweep.runtime.pretrain_driver import RAY_RUN_NAME

    epochs = [int(path.name.rsplit("_", 1)[1])
              for path in (run_dir / RAY_RUN_NAME).glob(_CHECKPOINT_GLOB)
              if (path / STATE_FILE).is_file()]
    return max(epochs) + 1 if epochs else None


def kept_lines(spec: ExperimentSpec) -> list[str]:
    """What the experiment directory holds after an interruption, one line per item."""
    from raysweep.store.run_dirs import is_finished
    from raysweep.stages.pretrain import pretrain_run_dir
    from raysweep.store.results import ResultsStore

    lines = []
    for run in spec.pretrain:
        total = (run.frozen_epochs if run.further else 0) + run.epochs
        run_dir = pretrain_run_dir(spec, run)
        if is_finished(run_dir):
            lines.append(f"pretrain {run.name}: finished (encoder.pt kept)")
            continue
        done = latest_checkpoint_epoch(run_dir)
        if done is None:
            lines.append(f"pretrain {run.name}: not started or no epoch finished yet")
        else:
            lines.append(f"pretrain {run.name}: checkpoint after epoch {done}/{total} kept, "
                         "training continues from it")
    if spec.evaluate is not None:
        from raysweep.stages.evaluate import stage_refs

        status = ResultsStore(spec.directory).status(stage_refs(spec))
        total = len(status.done) + len(status.missing)
        lines.append(f"evaluate: {len(status.done)} of {total} result rows kept (one per "
                     "finished seed; they are not computed again)")
    return lines
