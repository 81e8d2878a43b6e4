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

from raysweep.config import ExperimentSpec
from raysweep.plan.identity import stage_refs
from raysweep.plan.run_identity import pretrain_run_dir
from raysweep.store.results import ResultsStore
from raysweep.store.run_dirs import is_finished, latest_checkpoint_epoch

__all__ = ["kept_lines"]


def kept_lines(spec: ExperimentSpec) -> list[str]:
    """What the experiment directory holds after an interruption, one line per item."""

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

        status = ResultsStore(spec.directory).status(stage_refs(spec))
        total = len(status.done) + len(status.missing)
        lines.append(f"evaluate: {len(status.done)} of {total} result rows kept (one per "
                     "finished seed; they are not computed again)")
    return lines
