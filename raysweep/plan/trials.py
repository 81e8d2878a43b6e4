"""From an experiment spec to a plan: pretrain waves, evaluation trials, resources.

The plan is pure (it starts nothing), so ``raysweep run --dry-run`` prints it and tests check
it. Pre-training runs are ordered in *waves*: a run whose initial weights are another run's
output (``pretrain:NAME``, e.g. further pre-training of the demo's own SL encoder) waits for it.
Evaluation trials are one per (condition, protocol, seed), except batched linear probes and the
logistic protocol, which are one trial per condition covering all its seeds (they share the
encoder's forward pass, or its features). A condition may have fewer seeds than the stage
(``EncoderCondition.seeds``: the paper's 5-run random baseline). Every trial scores its trained
heads on every test set (the data's test split and the stage's external ``test_sets``), so test
sets add no trial, only rows: one per (condition, protocol, seed, test set). The plan lists
them, and each condition's label budget (:mod:`raysweep.plan.budgets`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from raysweep.config import (
    IN_DISTRIBUTION,
    EncoderCondition,
    EvaluationSpec,
    ExperimentSpec,
    PretrainSpec,
    non_default_fields,
    pretrain_reference,
)
from raysweep.errors import SpecError
from raysweep.plan.budgets import describe_test_sets, label_budgets
from raysweep.plan.gpu_memory import (
    MemoryMeasurement,
    TrialKind,
    describe_measurement,
    gpu_fraction,
    read_measurements,
)
from raysweep.plan.resources import (
    ClusterResources,
    PretrainResources,
    TrialResources,
    concurrent_pretrain_runs,
    evaluation_trial_resources,
    gpu_wait,
    max_concurrent_trials,
    measuring_trial_resources,
    pretrain_resources,
    unreachable_gpus_reason,
)
from raysweep.plan.searches import describe_searches
from raysweep.store.results import RowKey


@dataclass(frozen=True)
class EvalTrial:
    """One Tune trial of the evaluate stage: a condition, a protocol and its seeds, the external
    test sets its trained heads are scored on besides the data's test split, and, once
    identified (:func:`raysweep.plan.identity.identify_trials`), the identity of each of its
    rows, in :meth:`row_keys` order, and the device kind they were identified for."""

    condition: str
    protocol: str
    seeds: tuple[int, ...]
    row_ids: tuple[str | None, ...] = ()
    test_sets: tuple[str, ...] = ()
    #: Whether the identities were computed for a GPU (its ``auto`` arithmetic).
    on_gpu: bool = False

    def row_keys(self) -> list[RowKey]:
        """The trial's rows: per seed, the data's test split, then each external test set."""
        return [RowKey(self.condition, self.protocol, seed, test_set)
                for seed in self.seeds for test_set in (IN_DISTRIBUTION, *self.test_sets)]

    @property
    def trial_name(self) -> str:
        seeds = (f"seed{self.seeds[0]}" if len(self.seeds) == 1
                 else f"seeds{self.seeds[0]}-{self.seeds[-1]}")
        return f"{self.condition}-{self.protocol}-{seeds}"


@dataclass(frozen=True)
class Plan:
    spec: ExperimentSpec
    cluster: ClusterResources
    pretrain_waves: tuple[tuple[PretrainSpec, ...], ...]
    pretrain_resources: dict[str, PretrainResources]
    pretrain_concurrency: int
    eval_trials: tuple[EvalTrial, ...]
    eval_resources: TrialResources
    eval_concurrency: int
    notes: tuple[str, ...] = field(default=())
    #: Requests the cluster can never meet (GPUs it has not and cannot add), one line each,
    #: of the pretrain stage and of the evaluate stage.
    unreachable_pretrain: dict[str, str] = field(default_factory=dict)  # by run name
    unreachable_evaluate: tuple[str, ...] = field(default=())
    #: Each kind's resources when GPU shares are sized from measured memory (auto GPU share on
    #: a cluster with GPUs), else empty: every trial then takes ``eval_resources``.
    eval_kinds: dict[TrialKind, TrialResources] = field(default_factory=dict)

    @property
    def unreachable(self) -> tuple[str, ...]:
        return tuple(self.unreachable_pretrain.values()) + self.unreachable_evaluate

    @property
    def n_rows(self) -> int:
        return sum(len(t.row_keys()) for t in self.eval_trials)

    def kind_of(self, trial: EvalTrial) -> TrialKind:
        return trial_kind(self.spec, trial)

    def resources_of(self, trial: EvalTrial) -> TrialResources:
        """The resources of one evaluation trial: its kind's (measured, or a whole GPU while
        the kind's first trial measures) when GPU shares are sized from memory, else the
        stage's."""
        return self.eval_kinds.get(self.kind_of(trial), self.eval_resources)

    def measuring_trials(self, trials: tuple[EvalTrial, ...]) -> tuple[EvalTrial, ...]:
        """Of ``trials``, the first of each kind whose peak GPU memory is not measured yet."""
        first: dict[TrialKind, EvalTrial] = {}
        for trial in trials:
            if self.resources_of(trial).measures_itself:
                first.setdefault(self.kind_of(trial), trial)
        return tuple(first.values())

    def measuring_concurrency(self, n_trials: int) -> int:
        """How many of ``n_trials`` measuring trials (a whole GPU each) run at once."""
        whole = measuring_trial_resources(self.spec.resources, self.cluster)
        return max_concurrent_trials(whole, self.cluster,
                                     self.spec.resources.max_concurrent_trials, n_trials)

    def describe(self, verbose: bool = False) -> str:
        """The human-readable plan printed by ``raysweep run --dry-run``; ``verbose`` adds,
        under every pretrain run and evaluated condition, its resolved fields that differ from
        the defaults (``raysweep run --dry-run --verbose``)."""
        spec = self.spec
        # A storage URI is shown as written (file://, s3://, ...), a folder as the path.
        where = (f"{spec.storage.rstrip('/')}/{spec.name}"
                 if isinstance(spec.directory, Path) and "://" in spec.storage
                 else spec.directory)
        lines = [f"experiment {spec.name!r} -> {where}",
                 f"cluster: {self.cluster.describe()}",
                 *self._pretrain_lines(verbose), *self._evaluate_lines(verbose),
                 *describe_searches(spec, self.cluster),
                 f"stage report: metrics {_report_metrics(spec)}, "
                 f"{spec.report.correction} correction at alpha {spec.report.alpha}"]
        lines.extend(f"note: {note}" for note in self.notes)
        lines.extend(f"cannot run on this cluster: {line}" for line in self.unreachable)
        return "\n".join(lines)

    def _pretrain_lines(self, verbose: bool) -> list[str]:
        n_pre = sum(len(w) for w in self.pretrain_waves)
        lines = [f"stage pretrain: {n_pre} Ray Train runs in {len(self.pretrain_waves)} "
                 f"wave(s), up to {self.pretrain_concurrency} at once"]
        for index, wave in enumerate(self.pretrain_waves, 1):
            for run in wave:
                res = self.pretrain_resources[run.name]
                device = (f"{res.gpus_per_worker} whole GPU each" if res.use_gpu
                          else "no GPU") + f" ({res.basis})"
                lines.append(f"  wave {index}: {run.name}: {run.method}, "
                             f"{'further' if run.further else 'scratch'} from "
                             f"{run.encoder.name}:{run.encoder.weights}, trainable "
                             f"{run.trainable}, {run.epochs} epochs; {res.num_workers} worker(s) "
                             f"x {res.cpu_per_worker:g} CPU, {device}")
                if run.allow_test_overlap:
                    lines.append("      allow_test_overlap: may train on test images of the "
                                 "conditions evaluating it (transductive; counted below)")
                if verbose:
                    lines.extend(_field_lines([(k, v) for k, v in non_default_fields(run)
                                               if k != "name"], "      "))
        return lines

    def _evaluate_lines(self, verbose: bool) -> list[str]:
        spec = self.spec
        if spec.evaluate is None:
            return ["stage evaluate: none"]
        lines = [f"stage evaluate: {len(self.eval_trials)} Tune trials, {self.n_rows} result "
                 f"rows ({len(spec.evaluate.encoders)} encoders, {spec.evaluate.seeds} seeds"
                 f"{_per_test_set(spec)}); each trial {self._share_text()}; up to "
                 f"{self.eval_concurrency} at once"]
        lines.extend(self._kind_lines())
        for cond in spec.evaluate.encoders:
            trials = [t for t in self.eval_trials if t.condition == cond.name]
            protocols = sorted({t.protocol for t in trials})
            seeds = (f"; {cond.seeds} seeds" if cond.seeds is not None
                     and cond.seeds != spec.evaluate.seeds else "")
            lines.append(f"  {cond.name}: {cond.encoder.name}:{cond.encoder.weights}; "
                         f"{', '.join(protocols)}; {len(trials)} trials{seeds}")
            if verbose:
                lines.extend(_field_lines(condition_fields(spec, cond), "      "))
        lines.extend(_test_set_lines(spec))
        lines.extend(_budget_lines(spec))
        if spec.evaluate.representations is not None:
            lines.append(f"  representation analysis of each encoder: "
                         f"{len(spec.evaluate.encoders)} conditions, once each (not per seed)")
        if verbose:
            stage_fields = [(k, v) for k, v in non_default_fields(spec.evaluate)
                            if not k.startswith(("encoders", "settings."))]
            lines.append("  stage fields:")
            lines.extend(_field_lines(stage_fields, "      "))
        return lines

    def _share_text(self) -> str:
        res = self.eval_resources
        text = f"{res.cpu:g} CPU ({res.cpu_basis}), {res.gpu:g} GPU ({res.basis})"
        return (f"the share of its kind (encoder, protocol, batch size; below), else {text}"
                if self.eval_kinds else text)

    def _kind_lines(self) -> list[str]:
        """The GPU share of each kind of trial, and where it came from."""
        return [f"  {kind.describe()}: {res.cpu:g} CPU, {res.gpu:.4g} GPU ({res.basis})"
                for kind, res in sorted(self.eval_kinds.items())]


def _report_metrics(spec: ExperimentSpec) -> str:
    """The report's metrics as the plan names them (``report.metrics`` unset: the defaults, and
    when the imbalance-aware ones join them)."""
    if spec.report.metrics:
        return ", ".join(spec.report.metrics)
    return ("accuracy, f1_weighted (+ balanced_accuracy, f1_macro, auc_ovr where a test set's "
            "largest class holds more than half of it)")


def _per_test_set(spec: ExperimentSpec) -> str:
    assert spec.evaluate is not None
    n_sets = 1 + len(spec.evaluate.test_sets)
    return f", {n_sets} test sets" if n_sets > 1 else ""


def _test_set_lines(spec: ExperimentSpec) -> list[str]:
    """The test sets every trained head is scored on (only when there are external ones)."""
    assert spec.evaluate is not None
    if not spec.evaluate.test_sets:
        return []

    sets = describe_test_sets(spec)
    return ([f"  test sets: {len(sets)}, every trained model scored on each (results: one "
             "row per condition, protocol, seed and test set)"]
            + [f"    {line}" for line in sets])


def _budget_lines(spec: ExperimentSpec) -> list[str]:
    """The label budgets of the conditions (only when some condition keeps fewer than all
    training labels): each budget once, with its count when the data can be listed."""

    if all(b.rule == "all training labels" for b in label_budgets(spec, count=False)):
        return []
    groups: dict[tuple, list[str]] = {}
    for budget in label_budgets(spec):
        key = (budget.rule, budget.used, budget.available, budget.problem is not None)
        groups.setdefault(key, []).append(budget.condition)
    lines = ["  label budgets (labelled training images kept, before oversampling):"]
    for (rule, used, available, unknown), names in groups.items():
        text = (f"{rule} (counted once the data can be listed)" if unknown
                else f"{rule}: {used:,} of {available:,}")
        lines.append(f"    {text}: {', '.join(names)}")
    return lines


def condition_fields(spec: ExperimentSpec, cond: EncoderCondition) -> list[tuple[str, object]]:
    """The resolved fields of one evaluated condition that differ from the defaults: its
    encoder, its protocols, its settings (the stage's with the condition's overrides applied)
    and its own data when it has any; keys are those of :class:`EncoderCondition`."""
    assert spec.evaluate is not None
    settings = condition_settings(spec.evaluate.settings, cond)
    resolved = dataclasses.replace(cond, overrides={},
                                   protocols=cond.protocols or spec.evaluate.protocols)
    fields = [(key, value) for key, value in non_default_fields(resolved)
              if key not in ("name", "overrides")]
    fields.extend((f"settings.{key}", value) for key, value in non_default_fields(settings))
    return fields


def _field_lines(fields: list[tuple[str, object]], indent: str) -> list[str]:
    if not fields:
        return [f"{indent}(all defaults)"]
    return [f"{indent}{key}: {json.dumps(value, default=str)}" for key, value in fields]


def pretrain_waves(runs: tuple[PretrainSpec, ...]) -> tuple[tuple[PretrainSpec, ...], ...]:
    """Order runs so that every ``pretrain:NAME`` dependency is in an earlier wave."""
    by_name = {run.name: run for run in runs}
    depth: dict[str, int] = {}

    def visit(name: str, stack: tuple[str, ...]) -> int:
        if name in stack:
            cycle = " -> ".join(stack + (name,))
            raise SpecError(f"pretrain runs depend on each other in a cycle: {cycle}")
        if name not in depth:
            parent = pretrain_reference(by_name[name].encoder.weights)
            depth[name] = 0 if parent is None else visit(parent, stack + (name,)) + 1
        return depth[name]

    for run in runs:
        visit(run.name, ())
    n_waves = max(depth.values(), default=-1) + 1
    return tuple(tuple(run for run in runs if depth[run.name] == wave) for wave in range(n_waves))


def condition_settings(stage_settings: EvaluationSpec, condition: EncoderCondition) -> EvaluationSpec:
    """The protocol settings of one condition (stage settings + the condition's overrides)."""
    return stage_settings.replace(**condition.overrides) if condition.overrides else stage_settings


def eval_trials(spec: ExperimentSpec) -> tuple[EvalTrial, ...]:
    stage = spec.evaluate
    if stage is None:
        return ()
    trials = []
    external = tuple(t.name for t in stage.test_sets)
    for cond in stage.encoders:
        seeds = stage.condition_seeds(cond)
        settings = condition_settings(stage.settings, cond)
        for protocol in cond.protocols or stage.protocols:
            # batched probes share the encoder pass, logistic rows its features: one trial
            if protocol == "logistic" or (protocol == "probe" and settings.batched_probes):
                trials.append(EvalTrial(cond.name, protocol, seeds, test_sets=external))
            else:
                trials.extend(EvalTrial(cond.name, protocol, (seed,), test_sets=external)
                              for seed in seeds)
    return tuple(trials)


def _waits(what: str, cluster: ClusterResources) -> str:
    return (f"{what} and the cluster has {cluster.gpus:g} GPUs now: waiting for the autoscaler "
            "to add GPU nodes")


def trial_kind(spec: ExperimentSpec, trial: EvalTrial) -> TrialKind:
    """The kind of an evaluation trial, for its GPU memory: its condition's encoder
    architecture, its protocol and its batch size (the condition's settings)."""
    assert spec.evaluate is not None
    [cond] = [c for c in spec.evaluate.encoders if c.name == trial.condition]
    settings = condition_settings(spec.evaluate.settings, cond)
    return TrialKind(cond.encoder.name, trial.protocol, settings.batch_size)


def kind_resources(spec: ExperimentSpec, cluster: ClusterResources,
                   trials: tuple[EvalTrial, ...],
                   measurements: dict[TrialKind, MemoryMeasurement], *,
                   measure_first: bool = True) -> dict[TrialKind, TrialResources]:
    """Each kind's resources, its GPU share sized from its measured peak memory; a kind not
    measured yet gets a whole GPU to measure (``measure_first``) or the default share. Empty
    when the share does not depend on memory (given in the spec, or no GPU)."""
    default = evaluation_trial_resources(spec.resources, cluster)
    if spec.resources.gpus_per_trial is not None or default.gpu <= 0:
        return {}
    margin = spec.resources.gpu_memory_margin
    kinds: dict[TrialKind, TrialResources] = {}
    for kind in sorted({trial_kind(spec, trial) for trial in trials}):
        measured = measurements.get(kind)
        if measured is not None:
            kinds[kind] = evaluation_trial_resources(spec.resources, cluster, measured=(
                gpu_fraction(measured, margin), describe_measurement(measured, margin)))
        elif measure_first:
            kinds[kind] = measuring_trial_resources(spec.resources, cluster)
        else:
            kinds[kind] = dataclasses.replace(default, basis=f"{default.basis}; not measured")
    return kinds


def _pretrain_needs(pre_res: dict[str, PretrainResources], cluster: ClusterResources,
                    notes: list[str]) -> dict[str, str]:
    """The pretrain runs whose GPUs the cluster can never offer (why, by run name); a note
    when some wait for the autoscaler."""
    unreachable: dict[str, str] = {}
    waiting = []
    for name, res in pre_res.items():
        wait = gpu_wait(res.total_gpus, cluster)
        if wait == "autoscaler":
            waiting.append(res.total_gpus)
        elif wait == "never":
            unreachable[name] = (
                f"pretrain run {name} asks for {res.total_gpus} whole GPU(s) ({res.basis}) "
                f"but {unreachable_gpus_reason(res.total_gpus, cluster)}")
    if waiting:
        notes.append(_waits(f"{len(waiting)} pretrain run(s) ask for whole GPUs (up to "
                            f"{max(waiting)} per run)", cluster))
    return unreachable


def _evaluate_needs(trial_res: TrialResources, cluster: ClusterResources,
                    notes: list[str]) -> tuple[str, ...]:
    """Why the cluster can never offer an evaluation trial's GPU share (empty when it can);
    a note when the trials wait for the autoscaler."""
    wait = gpu_wait(trial_res.gpu, cluster)
    if wait == "autoscaler":
        notes.append(_waits(f"evaluation trials ask for {trial_res.gpu:g} GPU each", cluster))
    elif wait == "never":
        return (f"evaluation trials ask for {trial_res.gpu:g} GPU each ({trial_res.basis}) "
                f"but {unreachable_gpus_reason(trial_res.gpu, cluster)}",)
    return ()


def make_plan(spec: ExperimentSpec, cluster: ClusterResources | None = None, *,
              measurements: dict[TrialKind, MemoryMeasurement] | None = None,
              measure_first: bool = True) -> Plan:
    """The plan of ``spec`` on ``cluster`` (default: :meth:`ClusterResources.detect`), with
    the GPU memory ``measurements`` of its kinds of trials (default: those stored in the
    experiment; ``measure_first``: see :func:`kind_resources`)."""
    cluster = cluster or ClusterResources.detect()
    pre_res = {run.name: pretrain_resources(run, cluster) for run in spec.pretrain}
    notes: list[str] = []
    unreachable_pretrain = _pretrain_needs(pre_res, cluster, notes)
    trials = eval_trials(spec)
    trial_res = evaluation_trial_resources(spec.resources, cluster)
    unreachable_evaluate = _evaluate_needs(trial_res, cluster, notes) if trials else ()
    kinds = {}
    if trials:
        stored = read_measurements(spec.directory) if measurements is None else measurements
        kinds = kind_resources(spec, cluster, trials, stored, measure_first=measure_first)
    # Concurrency once measured: a kind still to measure counts at the stage's share.
    packed = {res if not res.measures_itself else trial_res for res in kinds.values()}
    concurrency = max(max_concurrent_trials(res, cluster, spec.resources.max_concurrent_trials,
                                            n_trials=len(trials) or None)
                      for res in packed or {trial_res})
    return Plan(
        spec=spec,
        cluster=cluster,
        pretrain_waves=pretrain_waves(spec.pretrain),
        pretrain_resources=pre_res,
        pretrain_concurrency=concurrent_pretrain_runs(list(pre_res.values()), cluster),
        eval_trials=trials,
        eval_resources=trial_res,
        eval_concurrency=concurrency,
        notes=tuple(notes),
        unreachable_pretrain=unreachable_pretrain,
        unreachable_evaluate=unreachable_evaluate,
        eval_kinds=kinds,
    )
