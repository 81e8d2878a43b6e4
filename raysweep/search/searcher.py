"""A Ray Tune ``Searcher`` over an Optuna study's ask-and-tell interface.

Ray's own ``OptunaSearch`` expects the objective in *every* result (Tune refuses a result
without the searcher's metric, and ``OptunaSearch.on_trial_result`` reads it), takes a trial
that ended without it for pruned, and saves its state as a pickle; a search trial reports the
objective once, at the end, a trial stopped by ASHA reports nothing, and an interrupted trial
must not count as finished. :class:`StudySearcher` instead:

* declares no metric to Tune (so Tune checks no result for one) and reads the objective itself
  when a trial completes;
* tells the study ``COMPLETE`` with the objective (per-seed values and metric means as user
  attributes), ``PRUNED`` when ASHA stopped it (decided and recorded in the study from inside
  the run: :mod:`raysweep.search.pruning`), ``FAIL`` on an error; a trial that ended otherwise without a final result was interrupted
  (Ctrl-C): it stays running in the study, and the next run re-asks its parameters
  (:func:`~raysweep.search.study.recover_interrupted`);
* keeps no state of its own: the study in the experiment's storage is the state, so
  ``save_to_dir`` writes nothing and a rerun builds a fresh searcher over the same study.

The first suggestion may be the *default* configuration (the search's base run and settings
as written, outside the study, never stopped early): ``on_default`` receives its result.
``on_finished`` is called after each trial has been recorded (to store an object-store
study's journal: :mod:`raysweep.search.journal`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from optuna.trial import TrialState
from ray.tune.search import Searcher

from raysweep.search.pruning import PRUNED_AT
from raysweep.search.study import runner_record

__all__ = ["DEFAULT_ROLE", "EPOCHS_DONE", "MEAN_PREFIX", "OBJECTIVE", "TRIAL_ROLE",
           "VALUES_PER_SEED", "StudySearcher"]

#: Result keys of a search trial (see :mod:`raysweep.search.trial`).
OBJECTIVE = "objective"
VALUES_PER_SEED = "values_per_seed"
EPOCHS_DONE = "epochs_done"
MEAN_PREFIX = "mean_"  # mean_<metric>: every overall probe metric, mean over the seeds
#: Trial configs: ``{"role": ..., "number": study trial number or None, "params": {...}}``.
TRIAL_ROLE = "trial"
DEFAULT_ROLE = "default"
#: Result keys copied to the study trial's user attributes when it completes.
RECORDED = (VALUES_PER_SEED, "seeds")


class StudySearcher(Searcher):
    """Suggest ``n_trials`` configurations from ``study`` (plus the default first when
    ``include_default``)."""

    def __init__(self, study: Any, distributions: dict[str, Any], *, n_trials: int,
                 include_default: bool = False,
                 on_default: Callable[[dict[str, Any] | None, bool], None] | None = None,
                 on_finished: Callable[[], None] | None = None):
        super().__init__(metric=None, mode=None)
        self._study = study
        self._distributions = distributions
        self._n_trials = n_trials
        self._default_pending = include_default
        self._on_default = on_default
        self._on_finished = on_finished
        self._runner = runner_record()
        self._asked = 0
        self._live: dict[str, Any] = {}  # Tune trial id -> optuna Trial
        self._default_id: str | None = None

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return True  # the space comes from the spec, not from a Tune param_space

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self._default_pending:
            self._default_pending = False
            self._default_id = trial_id
            return {"role": DEFAULT_ROLE, "number": None, "params": {}}
        if self._asked >= self._n_trials:
            # Ray's annotation (Optional[Dict]) leaves out the FINISHED str its docs allow.
            return Searcher.FINISHED  # type: ignore[return-value]
        trial = self._study.ask(self._distributions)
        trial.set_user_attr("runner", self._runner)
        self._asked += 1
        self._live[trial_id] = trial
        return {"role": TRIAL_ROLE, "number": trial.number, "params": dict(trial.params)}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        try:
            self._record(trial_id, result, error)
        finally:
            if self._on_finished is not None:
                self._on_finished()

    def _record(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:

        if trial_id == self._default_id:
            if self._on_default is not None:
                self._on_default(result, error)
            return
        trial = self._live.pop(trial_id, None)
        if trial is None:
            return
        result = result or {}
        if EPOCHS_DONE in result:
            trial.set_user_attr(EPOCHS_DONE, int(result[EPOCHS_DONE]))
        if "pretrain_run" in result:
            trial.set_user_attr("pretrain_run", result["pretrain_run"])
        value = result.get(OBJECTIVE)
        if error:
            self._study.tell(trial, state=TrialState.FAIL)
        elif value is None:
            stored = next(t for t in self._study.get_trials(deepcopy=False)
                          if t.number == trial.number)  # fresh from the storage
            stopped = stored.user_attrs.get(PRUNED_AT)
            if stopped is not None:
                trial.set_user_attr(EPOCHS_DONE, int(stopped))
                self._study.tell(trial, state=TrialState.PRUNED)
            # else: interrupted; left running for the next run to re-ask
        elif not math.isfinite(float(value)):
            trial.set_user_attr("error", f"objective is {value}")
            self._study.tell(trial, state=TrialState.FAIL)
        else:
            for key in RECORDED:
                if key in result:
                    trial.set_user_attr(key, result[key])
            trial.set_user_attr("metric_means", {k[len(MEAN_PREFIX):]: v for k, v in result.items()
                                                 if k.startswith(MEAN_PREFIX)})
            self._study.tell(trial, float(value))

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Nothing to save: the study in the experiment's storage is the searcher's state."""

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        """Nothing to restore (see :meth:`save_to_dir`); the study is reopened instead."""
