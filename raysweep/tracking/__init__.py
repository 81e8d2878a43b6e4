"""Experiment tracking: MLflow, Weights & Biases and TensorBoard mirror what an experiment
stores, chosen in the spec (``tracking:``, off by default;
docs/design.md "Experiment tracking").


Tracked are every evaluation row (a run named ``<condition>/<protocol>/seed-NNNN``: the
condition's keys and the protocol as parameters, the row's metrics, its row id as a tag),
every finished pre-training run (one step per epoch: loss terms, learning rate, throughput,
proxy) and every search trial (its parameters and objective). Rows and pre-training runs are
recorded from the stored artefacts (:mod:`~raysweep.tracking.records`) through each tracker's
client (:mod:`~raysweep.tracking.backends`); search trials through Ray Tune's own MLflow and W&B
logger callbacks (:mod:`~raysweep.tracking.tune`). A tracker that is down is a warning, never
a lost row (:mod:`~raysweep.tracking.trackers`).

Layout: ``records`` (pure: stored artefacts to records), ``backends`` (the trackers' clients),
``trackers`` (which trackers a spec opens; guarding), ``tune`` (Ray Tune callbacks). The
stages call :mod:`raysweep.tracking.stage`.
"""

from raysweep.tracking.records import (
    TrackedRecord,
    pretrain_record,
    row_record,
    search_trial_record,
)
from raysweep.tracking.trackers import (
    EXTRAS,
    Trackers,
    TrackingWarning,
    open_trackers,
    tracking_dir,
    tracking_problems,
)

__all__ = ["EXTRAS", "TrackedRecord", "Trackers", "TrackingWarning", "open_trackers",
           "pretrain_record", "row_record", "search_trial_record", "tracking_dir",
           "tracking_problems"]
