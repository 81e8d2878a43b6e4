"""ASHA on the downstream proxy, decided and carried out inside a trial's Ray Train run.

Each pre-training epoch that carries the proxy (``proxy_knn_acc`` / ``proxy_linear_acc``) is
reported to the trial's Optuna trial as an intermediate value (step = epochs done, frozen
epochs included); Optuna's ``SuccessiveHalvingPruner`` (asynchronous successive halving, ASHA)
then compares it with every other trial that reached the same rung (rungs at
``min_resource * reduction_factor**k`` epochs). A trial that is not in the top
``1/reduction_factor`` of its rung (or, while a rung has fewer than ``reduction_factor``
values, not the best so far) is stopped: its study trial gets the user attribute
``pruned_at_epoch``, the report callback raises :class:`ProxyPruned`, Ray Train's controller
shuts the run down (its workers and placement group released), and the trial ends without a
final report; the searcher reads the attribute and tells the study ``PRUNED``.

Why not Ray Tune's ``ASHAScheduler``: Tune stops a trial by ending its actor, which leaves a
Ray Train V2 run's placement group to a cleaner that needs Ray's state API; where that is
unavailable (no dashboard) the CPUs of the stopped run never come back and the next trial
waits forever (seen with 2 CPUs: the trial after the first stopped one never started).

The proxy is an accuracy (higher is better); for a study that minimises its objective the
intermediate value is ``1 - accuracy``, so the pruner's direction fits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import optuna
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raysweep.search.study import open_storage

__all__ = ["PRUNED_AT", "ProxyPruned", "ProxyPruner", "quiet_pruned_errors"]

#: User attribute of a study trial that ASHA stopped: the epochs it had done.
PRUNED_AT = "pruned_at_epoch"


class ProxyPruned(optuna.TrialPruned):
    """Raised in the Ray Train controller to stop a run that ASHA pruned."""

    def __init__(self, epochs_done: int, proxy: float) -> None:
        super().__init__(epochs_done, proxy)
        self.epochs_done = int(epochs_done)
        self.proxy = float(proxy)

    def __str__(self) -> str:
        return f"pruned by ASHA after epoch {self.epochs_done} (proxy {self.proxy:.4f})"


_TRIALS: dict[tuple[str, str, int], Any] = {}


@dataclass(frozen=True)
class ProxyPruner:
    """The pruning decision of one study trial, usable from any process of the cluster.

    ``journal``/``study_name``/``trial_number`` locate the trial; ``min_resource`` (epochs
    before the first rung), ``reduction_factor`` and ``maximize`` configure ASHA;
    ``total_epochs``: a trial is never stopped at (or after) its last epoch; ``pretrain_run``:
    the trial's run directory name, recorded when it is stopped; ``node_id``: the Ray node
    whose local disk holds ``journal`` when it is a working copy of an object-store journal
    (:mod:`raysweep.search.journal`): each report then runs there, as a zero-CPU task;
    None: ``journal`` is readable from every node (a local or shared folder).
    """

    journal: str
    study_name: str
    trial_number: int
    min_resource: int
    reduction_factor: int
    total_epochs: int
    maximize: bool = True
    pretrain_run: str = ""
    node_id: str | None = None

    def _trial(self) -> Any:
        key = (self.journal, self.study_name, self.trial_number)
        if key not in _TRIALS:

            storage = open_storage(self.journal)
            pruner = optuna.pruners.SuccessiveHalvingPruner(
                min_resource=self.min_resource, reduction_factor=self.reduction_factor)
            study = optuna.load_study(study_name=self.study_name, storage=storage,
                                      pruner=pruner)
            trial_id = storage.get_trial_id_from_study_id_trial_number(
                storage.get_study_id_from_name(self.study_name), self.trial_number)
            _TRIALS[key] = optuna.trial.Trial(study, trial_id)
        return _TRIALS[key]

    def intermediate(self, proxy: float) -> float:
        """The value reported to the study for a proxy accuracy."""
        return proxy if self.maximize else 1.0 - proxy

    def decide(self, epochs_done: int, proxy: float) -> bool:
        """Report the epoch's proxy to the study; whether ASHA stops the trial now (then
        recorded in the study trial)."""
        trial = self._trial()
        trial.report(self.intermediate(proxy), step=int(epochs_done))
        if epochs_done < self.total_epochs and trial.should_prune():
            trial.set_user_attr("pretrain_run", self.pretrain_run)
            trial.set_user_attr(PRUNED_AT, int(epochs_done))
            return True
        return False

    def check(self, epochs_done: int, proxy: float) -> None:
        """Report the epoch's proxy (on the journal's node when it is a working copy there);
        raise :class:`ProxyPruned` when ASHA stops the trial."""
        if self.node_id is None:
            stop = self.decide(epochs_done, proxy)
        else:

            on_node = NodeAffinitySchedulingStrategy(node_id=self.node_id, soft=False)
            task = ray.remote(_decide).options(num_cpus=0, scheduling_strategy=on_node)  # RAY
            stop = ray.get(task.remote(self, int(epochs_done), float(proxy)))  # RAY
        if stop:
            raise ProxyPruned(epochs_done, proxy)


def _decide(pruner: ProxyPruner, epochs_done: int, proxy: float) -> bool:
    """:meth:`ProxyPruner.decide` as a Ray task on the node of the journal."""
    return pruner.decide(epochs_done, proxy)


class _DropPruned(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        cause = getattr(error, "controller_failure", error)
        return not isinstance(cause, ProxyPruned)


def quiet_pruned_errors() -> None:
    """Keep Ray Train's controller from logging a pruned run's stop as a traceback (this
    process only; other errors are logged as before)."""
    for name in ("ray.train.v2._internal.execution.controller.controller",
                 "ray.train.v2._internal.execution.failure_handling.default"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropPruned) for f in logger.filters):
            logger.addFilter(_DropPruned())
