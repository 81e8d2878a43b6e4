"""What a result row *is*: the hash of everything that determines it.

A row's identity covers

- the condition's name (it seeds the random-init encoder) and the protocol;
- the protocol's settings (the stage's :class:`~raysweep.config.EvaluationSpec` with the
  condition's overrides), except the purely operational :data:`NOT_IN_ROW_IDENTITY` and the
  settings of other protocols, with the arithmetic (fp32 / bf16, memory format) resolved for
  the device the trials run on (:func:`protocol_settings`, :func:`arithmetic_identity`);
- the labelled data by content (:func:`raysweep.data.fingerprint.dataset_fingerprint`: the
  file digests, labels, splits and label subset; never the paths);
- for a row of an external test set (:func:`external_row_id`), that test set: its name, content
  fingerprint (at the evaluation data's image size) and ``label_map``. A row of the data's own
  test split covers no external test set, so it keeps the identity it had before test sets
  existed, and adding, changing or removing one test set changes only that test set's rows;
- the encoder: its architecture and the SHA-256 of its initial weights' bytes (a
  ``pretrain:NAME`` run's ``encoder.pt``, a ``file:``, torchvision or torch.hub file; never a
  path), or ``random``;
- the seed index, and :data:`ROW_IDENTITY_VERSION`, bumped whenever raysweep's evaluation code
  changes the numbers a row holds.

Labels that only name things (a condition's ``keys``, its encoder's weight-source string) are not
part of it: renaming them relabels the results table without recomputing anything.

A row is stored under its identity (:mod:`raysweep.store.results`), so after a spec change the
rows of the old spec are simply not found: exactly the affected rows are recomputed, the others
are reused, and nothing of the old spec reaches ``results.parquet`` or the report. The rows of
one (condition, protocol, seed) share their training run; when only some of them are missing
(a test set added or changed), the run is repeated (trained models are not kept), scored on
the test sets whose rows are missing only, and only those rows are written.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from raysweep.config import (
    IN_DISTRIBUTION,
    DatasetSpec,
    EncoderCondition,
    EvaluationSpec,
    ExperimentSpec,
)
from raysweep.data.fingerprint import dataset_fingerprint
from raysweep.evaluate.external import external_data
from raysweep.plan.resources import ClusterResources, evaluation_trial_resources
from raysweep.plan.run_identity import pretrain_run_dir, weights_digest
from raysweep.plan.trials import (
    EvalTrial,
    condition_settings,
    eval_trials,
)
from raysweep.storage.atomic import file_sha256, stable_hash, to_jsonable
from raysweep.store.results import RowRef
from raysweep.store.run_dirs import ENCODER_FILE, is_finished

#: Bump when the evaluation code changes the numbers a row holds (old rows become stale).
ROW_IDENTITY_VERSION = 1

#: EvaluationSpec fields that do not change a row: where it runs, and whether probe seeds share
#: one pass (batched probes are bit-identical to single runs).
NOT_IN_ROW_IDENTITY = frozenset({"device", "batched_probes"})

#: EvaluationSpec fields that concern one protocol only (field -> protocol). They are left out
#: of the settings every row of a condition shares, so changing them recomputes that protocol's
#: rows only (and adding them left every earlier row valid); see :func:`protocol_settings`.
PROTOCOL_ONLY_SETTINGS = {"validation_curves": "finetune", "logistic": "logistic"}

#: EvaluationSpec fields added after rows were first stored (the thesis' downstream optimisers
#: and schedules, training on non-augmented images): each enters the fine-tuning and probe rows'
#: identity only when it differs from its default, so every row stored before the field existed
#: keeps its identity.
ONLY_WHEN_SET = ("optimizer", "schedule", "milestones", "gamma", "train_augmentation")

#: The arithmetic fields: they enter the fine-tuning and probe rows' identity *resolved*
#: (:func:`arithmetic_identity`).
ARITHMETIC = ("precision", "channels_last")


def arithmetic_identity(settings: EvaluationSpec, on_gpu: bool) -> dict[str, Any]:
    """The arithmetic a fine-tuning or probe row is computed with, as its identity holds it:
    ``precision`` (``fp32`` / ``bf16``) and ``channels_last`` resolved for a GPU (``on_gpu``)
    or a CPU (:meth:`EvaluationSpec.arithmetic`), so that a bf16 row of a GPU and an fp32 row
    of a CPU of the same ``precision: auto`` spec are two rows.

    Each enters when the spec sets it, or when it resolves to something other than plain fp32
    in the default memory format. Rows stored before the arithmetic was resolved keep their
    identity whenever they ran as now resolved: a CPU's ``auto`` rows (fp32, nothing entered,
    as before) and every row of a spec that set the fields (the same values, as before). A
    GPU's ``auto`` rows, which shared their identity with a CPU's, are computed again once.
    """
    bf16, channels_last = settings.arithmetic(on_gpu)
    entered: dict[str, Any] = {}
    if settings.precision != "auto" or bf16:
        entered["precision"] = "bf16" if bf16 else "fp32"
    if settings.channels_last is not None or channels_last:
        entered["channels_last"] = channels_last
    return entered


def protocol_settings(settings: EvaluationSpec, protocol: str, *,
                      on_gpu: bool = False) -> dict[str, Any]:
    """The settings in the identity of ``protocol``'s rows, run on a GPU (``on_gpu``) or not.

    - ``finetune`` / ``probe``: every EvaluationSpec field but :data:`NOT_IN_ROW_IDENTITY`,
      :data:`PROTOCOL_ONLY_SETTINGS` and :data:`ARITHMETIC`, the :data:`ONLY_WHEN_SET` fields
      that differ from their defaults, and the resolved arithmetic
      (:func:`arithmetic_identity`); fine-tuning adds ``validation_curves`` only when it is on
      (a row with per-epoch validation metrics holds more than one without).
    - ``logistic``: its own ``logistic`` settings only: it uses none of the fastai protocol's
      (epochs, learning rates, augmentation, TTA, seed scope, arithmetic: its features are
      fp32), so changing those keeps its rows.
    """
    full = to_jsonable(settings)
    if protocol == "logistic":
        return {"logistic": full["logistic"]}
    defaults = to_jsonable(EvaluationSpec())
    shared = {k: v for k, v in full.items()
              if k not in NOT_IN_ROW_IDENTITY and k not in PROTOCOL_ONLY_SETTINGS
              and k not in ARITHMETIC and (k not in ONLY_WHEN_SET or v != defaults[k])}
    shared.update(arithmetic_identity(settings, on_gpu))
    if protocol == "finetune" and settings.validation_curves:
        shared["validation_curves"] = True
    return shared


def trials_run_on_gpu(spec: ExperimentSpec, cluster: Any = None) -> bool:
    """Whether the evaluate stage's trials get a GPU share on ``cluster`` (default: the running
    Ray cluster, else this machine): what ``auto`` arithmetic resolves for."""

    cluster = cluster or ClusterResources.detect()
    return evaluation_trial_resources(spec.resources, cluster).gpu > 0


class _Identities:
    """Condition identities of one spec, each data fingerprint and encoder digest computed
    once."""

    def __init__(self, spec: ExperimentSpec, *, save_digests: bool, on_gpu: bool = False):
        self.spec = spec
        self.save_digests = save_digests
        self.on_gpu = on_gpu
        self._fingerprints: dict[str, str] = {}
        self._conditions: dict[str, dict[str, Any] | None] = {}

    def fingerprint(self, data: DatasetSpec) -> str:

        key = stable_hash(data)
        if key not in self._fingerprints:
            self._fingerprints[key] = dataset_fingerprint(data, save_digests=self.save_digests)
        return self._fingerprints[key]

    def data_fingerprint(self, cond: EncoderCondition) -> str:
        assert self.spec.evaluate is not None
        return self.fingerprint(cond.data or self.spec.evaluate.data)

    def test_sets(self, cond: EncoderCondition) -> dict[str, dict[str, Any]]:
        """Each external test set of the stage as the condition scores it (name -> its name,
        content fingerprint at the condition's image size, and label map)."""

        assert self.spec.evaluate is not None
        data = cond.data or self.spec.evaluate.data
        return {t.name: {"name": t.name, "data": self.fingerprint(external_data(t, data)),
                         "label_map": dict(t.label_map)} for t in self.spec.evaluate.test_sets}

    def encoder_digest(self, cond: EncoderCondition) -> str | None:
        """``random``, the SHA-256 of the weights file, or None when that file does not exist
        yet (a pretrain run that has not finished, a weights file not placed yet)."""
        weights = cond.encoder.weights
        if weights == "random":
            return "random"
        run = self.spec.pretrain_parent(weights)
        if run is None:

            return weights_digest(weights, cond.encoder.name)

        run_dir = pretrain_run_dir(self.spec, run, save_digests=self.save_digests)
        return file_sha256(run_dir / ENCODER_FILE) if is_finished(run_dir) else None

    def shared(self, name: str) -> dict[str, Any] | None:
        """What every row of a condition shares: its name, encoder and data (None while its
        encoder's digest is unknown)."""
        if name not in self._conditions:
            assert self.spec.evaluate is not None
            cond = next(c for c in self.spec.evaluate.encoders if c.name == name)
            digest = self.encoder_digest(cond)
            self._conditions[name] = None if digest is None else {
                "version": ROW_IDENTITY_VERSION,
                "condition": cond.name,
                "encoder": {"arch": cond.encoder.name, "weights_sha256": digest},
                "data": self.data_fingerprint(cond),
            }
        return self._conditions[name]

    def condition(self, name: str, protocol: str) -> dict[str, Any] | None:
        """The identity every row of a condition under ``protocol`` shares: :meth:`shared`
        and the :func:`protocol_settings` of the condition's settings."""
        shared = self.shared(name)
        if shared is None:
            return None
        assert self.spec.evaluate is not None
        cond = next(c for c in self.spec.evaluate.encoders if c.name == name)
        settings = condition_settings(self.spec.evaluate.settings, cond)
        return {**shared, "settings": protocol_settings(settings, protocol, on_gpu=self.on_gpu)}


def condition_identities(spec: ExperimentSpec, *,
                         save_digests: bool = True) -> dict[str, dict[str, Any] | None]:
    """Per evaluated condition, its encoder (architecture and weight digest) and its data's
    fingerprint (None while the encoder does not exist yet): what artefacts computed once per
    encoder, such as its representation analysis, are identified by."""
    if spec.evaluate is None:
        return {}
    identities = _Identities(spec, save_digests=save_digests)
    result = {}
    for cond in spec.evaluate.encoders:
        shared = identities.shared(cond.name)
        result[cond.name] = None if shared is None else {
            k: shared[k] for k in ("condition", "encoder", "data")}
    return result


def row_id(condition_identity: dict[str, Any], protocol: str, seed: int) -> str:
    """A 16-hex-digit identity of one row of the data's own test split (and of the training
    run every test set's row of the same seed shares)."""
    return stable_hash({**condition_identity, "protocol": protocol, "seed": int(seed)},
                       length=16)


def external_row_id(condition_identity: dict[str, Any], protocol: str, seed: int,
                    test_set: dict[str, Any]) -> str:
    """A 16-hex-digit identity of one row of an external test set (``test_set``: its name,
    content fingerprint and label map)."""
    return stable_hash({**condition_identity, "protocol": protocol, "seed": int(seed),
                        "test_set": test_set}, length=16)


def identify_trials(spec: ExperimentSpec, trials: tuple[EvalTrial, ...] | None = None, *,
                    save_digests: bool = True,
                    on_gpu: bool | None = None) -> tuple[EvalTrial, ...]:
    """``trials`` (default: every trial of the spec's evaluate stage) with the identity of each
    of their rows (``row_ids`` in :meth:`EvalTrial.row_keys` order, None while a row's encoder
    does not exist yet), computed on a GPU (``on_gpu``; default :func:`trials_run_on_gpu`), as
    their ``on_gpu`` records.

    ``save_digests=False`` writes nothing (dry runs): data file digests are not remembered.
    """
    trials = eval_trials(spec) if trials is None else trials
    if on_gpu is None:
        on_gpu = trials_run_on_gpu(spec) if trials else False
    identities = _Identities(spec, save_digests=save_digests, on_gpu=on_gpu)
    test_sets: dict[str, dict[str, dict[str, Any]]] = {}
    identified = []
    for trial in trials:
        shared = identities.condition(trial.condition, trial.protocol)
        ids: list[str | None] = []
        for key in trial.row_keys():
            if shared is None:
                ids.append(None)
            elif key.test_set == IN_DISTRIBUTION:
                ids.append(row_id(shared, trial.protocol, key.seed))
            else:
                if trial.condition not in test_sets:
                    assert spec.evaluate is not None
                    cond = next(c for c in spec.evaluate.encoders if c.name == trial.condition)
                    test_sets[trial.condition] = identities.test_sets(cond)
                ids.append(external_row_id(shared, trial.protocol, key.seed,
                                           test_sets[trial.condition][key.test_set]))
        identified.append(dataclasses.replace(trial, row_ids=tuple(ids), on_gpu=on_gpu))
    return tuple(identified)


def trial_refs(trial: EvalTrial) -> list[RowRef]:
    """The rows of an identified trial, in :meth:`EvalTrial.row_keys` order."""
    keys = trial.row_keys()
    if len(trial.row_ids) != len(keys):
        raise ValueError(f"trial {trial.trial_name} has not been identified")
    return [RowRef(key, row) for key, row in zip(keys, trial.row_ids, strict=True)]


def planned_refs(trials: tuple[EvalTrial, ...]) -> list[RowRef]:
    """Every row of identified ``trials``, in plan order."""
    return [ref for trial in trials for ref in trial_refs(trial)]


def unidentified_refs(trials: tuple[EvalTrial, ...]) -> list[RowRef]:
    """Every row of ``trials`` with its identity unknown (a dry run before anything is stored,
    a status without the data), in plan order."""
    return [RowRef(key, None) for trial in trials for key in trial.row_keys()]


def stage_refs(spec: ExperimentSpec) -> list[RowRef]:
    """Every row of the current spec's evaluate stage (identified; see :func:`identify_trials`)."""
    return planned_refs(identify_trials(spec))
