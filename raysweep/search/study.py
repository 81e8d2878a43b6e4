"""The Optuna study of a search, kept in the experiment's storage.

``<experiment>/search/<name>/study.journal`` is an Optuna ``JournalStorage`` file (JSON lines,
appended under a lock that works on NFS; no pickle is ever read from it); an experiment in an
object store keeps it there too, through a local working copy (:mod:`.search_journal`). Each version of a
search spec has its own study in it, named ``<name>-<hash>``, the hash covering everything
that gives a trial's value its meaning (the base run, the evaluation, the metric, the
direction and the space; not ``num_samples``, the scheduler or the concurrency, so a search can
be extended). ``optuna.load_study(study_name=..., storage=open_storage(path))`` and
``optuna-dashboard <path>`` open it; ``best.json`` names the study.

Resuming: finished trials (complete, pruned by ASHA, or failed in their own right) count
towards ``num_samples`` and are never run again. A trial still marked running in the study
belongs to a runner that was killed (a live runner on this host is refused instead): it is
marked failed and its parameters are enqueued with the user attribute ``retry_of`` naming it,
so the next trial re-asks exactly them; its content-addressed pre-training run then continues from its
last checkpoint. The TPE sampler reads the stored trials; its seed is derived from the search's
seed and the number of stored trials, so a resumed search neither repeats the random draws of
its first run nor depends on when it was killed in any other way.
"""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from raysweep.config import SearchSpec, to_dict
from raysweep.errors import RaysweepError
from raysweep.plan.run_identity import NOT_IN_HASH
from raysweep.search.journal import check_journal
from raysweep.seeding import derive_seed
from raysweep.storage.atomic import stable_hash
from raysweep.storage.reading import StoredFileError
from raysweep.store.searches import STUDY_FILE

__all__ = ["STUDY_FILE", "SearchBusyError", "finished_trials", "interrupted_numbers",
           "load_stored_study", "open_storage", "open_study", "recover_interrupted", "runner_record",
           "state_counts", "study_name", "trial_state"]


class SearchBusyError(RaysweepError):
    """Another live process runs this search."""


def study_name(search: SearchSpec, weights_digest: str | None = None) -> str:
    """``<name>-<hash of what the trial values mean>`` (see the module docstring).

    ``weights_digest``: the SHA-256 of the base encoder's initial weights when they are another
    run's output (``pretrain:NAME``), so that a retrained parent starts a new study.
    """

    base = {k: v for k, v in to_dict(search.pretrain).items() if k not in NOT_IN_HASH}
    if weights_digest:
        base["encoder"] = {**base["encoder"], "weights": f"sha256:{weights_digest}"}
    meaning = {"pretrain": base, "evaluate": to_dict(search.evaluate), "metric": search.metric,
               "mode": search.mode, "space": to_dict(search.space)}
    return f"{search.name}-{stable_hash(meaning, length=8)}"


def open_storage(path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None):
    """The ``JournalStorage`` of a study file (created empty when missing). An existing file
    is checked first (:func:`~raysweep.search.journal.check_journal`: not a folder, not a
    link out of ``root``, every line a record Optuna replays), so that a damaged journal is
    one :class:`~raysweep.storage.reading.StoredFileError` naming it, not a traceback from Optuna."""

    if os.path.lexists(path):
        check_journal(Path(path), root=None if root is None else Path(root))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def load_stored_study(path: Path, name: str, *, root: Path | None = None):
    """The study ``name`` of the existing journal ``path`` (read only: nothing is created);
    :class:`~raysweep.storage.reading.StoredFileError` when the journal is missing, damaged or holds
    no such study."""
    if not os.path.lexists(path):
        raise StoredFileError(path, "missing", root=root)
    storage = open_storage(path, root=root)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise StoredFileError(path, f"holds no study {name!r}", root=root) from None


def open_study(directory: Path, search: SearchSpec, name: str):
    """The study ``name`` of ``search`` in the local journal ``directory/study.journal``
    (created when new), with a TPE sampler seeded from ``(search.seed, number of stored
    trials)``."""

    storage = open_storage(directory / STUDY_FILE)
    try:  # load first: creating an existing study would append to the journal on every run
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        study = optuna.create_study(storage=storage, study_name=name,
                                    direction="maximize" if search.mode == "max" else "minimize")
    stored = len(study.get_trials(deepcopy=False))
    # constant_liar: concurrent trials are not all drawn into the same region.
    study.sampler = optuna.samplers.TPESampler(
        seed=derive_seed(search.seed, "tpe", stored) % 2**32, constant_liar=True)
    return study


def runner_record() -> dict[str, Any]:
    """Who runs the search now (stored on each trial it asks)."""
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def recover_interrupted(study) -> list[int]:
    """Mark the trials of killed runners failed and enqueue their parameters again (with
    ``retry_of``); return their numbers. Raises :class:`SearchBusyError` when a runner on this host is
    still alive."""

    me = runner_record()
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        runner = trial.user_attrs.get("runner") or {}
        pid = runner.get("pid")
        if (runner.get("host") == me["host"] and isinstance(pid, int) and pid != me["pid"]
                and _alive(pid)):
            raise SearchBusyError(
                f"study {study.study_name} is being run by pid {pid} on {me['host']} since "
                f"{runner.get('since')}; wait for it or stop it")
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
        recovered.append(trial.number)
    return recovered


def interrupted_numbers(trials: list[Any]) -> set[int]:
    """Numbers of the trials a killed runner left (another trial retries each of them)."""
    return {int(t.user_attrs["retry_of"]) for t in trials if "retry_of" in t.user_attrs}


def trial_state(trial: Any, interrupted: set[int]) -> str:
    """``complete``, ``pruned``, ``fail``, ``interrupted``, ``running`` or ``waiting``."""
    return "interrupted" if trial.number in interrupted else trial.state.name.lower()


def finished_trials(study) -> list[Any]:
    """Trials that count towards ``num_samples``: complete, pruned, or failed for a reason of
    their own (not interrupted)."""

    trials = study.get_trials(deepcopy=False)
    interrupted = interrupted_numbers(trials)
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [t for t in trials if t.state in done and t.number not in interrupted]


def state_counts(study) -> dict[str, int]:
    """Trials per :func:`trial_state`."""
    trials = study.get_trials(deepcopy=False)
    interrupted = interrupted_numbers(trials)
    counts: dict[str, int] = {}
    for trial in trials:
        state = trial_state(trial, interrupted)
        counts[state] = counts.get(state, 0) + 1
    return counts
