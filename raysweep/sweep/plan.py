"""From an experiment spec to a plan: pretrain waves, evaluation trials, resources.

The plan is pure (it starts nothing), so ``raysweep run --dry-run`` prints it and tests check
it. Pre-training runs are ordered in *waves*: a run whose initial weights are another run's
output (``pretrain:NAME``, e.g. further pre-training of the demo's own SL encoder) waits for it.
Evaluation trials are one per (condition, protocol, seed), except batched linear probes, which
are one trial per condition covering all its seeds (they share the encoder's forward pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raysweep.config import (
    EncoderCondition,
    EvaluationSpec,
    ExperimentSpec,
    PretrainSpec,
    pretrain_reference,
)
from raysweep.errors import SpecError
from raysweep.sweep.resources import (
    ClusterResources,
    PretrainResources,
    TrialResources,
    concurrent_pretrain_runs,
    evaluation_trial_resources,
    max_concurrent_trials,
    pretrain_resources,
)
from raysweep.sweep.search_plan import describe_searches


@dataclass(frozen=True)
class EvalTrial:
    """One Tune trial of the evaluate stage."""

    condition: str
    protocol: str
    seeds: tuple[int, ...]

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

    @property
    def n_rows(self) -> int:
        return sum(len(t.seeds) for t in self.eval_trials)

    def describe(self) -> str:
        """The human-readable plan printed by ``raysweep run --dry-run``."""
        spec = self.spec
        lines = [f"experiment {spec.name!r} -> {spec.directory}",
                 f"cluster: {self.cluster.cpus:g} CPUs, {self.cluster.gpus:g} GPUs"]
        n_pre = sum(len(w) for w in self.pretrain_waves)
        lines.append(f"stage pretrain: {n_pre} Ray Train runs in {len(self.pretrain_waves)} "
                     f"wave(s), up to {self.pretrain_concurrency} at once")
        for index, wave in enumerate(self.pretrain_waves, 1):
            for run in wave:
                res = self.pretrain_resources[run.name]
                device = f"{res.num_workers} GPU" if res.use_gpu else "no GPU"
                lines.append(f"  wave {index}: {run.name}: {run.method}, "
                             f"{'further' if run.further else 'scratch'} from "
                             f"{run.encoder.name}:{run.encoder.weights}, trainable "
                             f"{run.trainable}, {run.epochs} epochs; {res.num_workers} worker(s) "
                             f"x {res.cpu_per_worker:g} CPU, {device}")
        if spec.evaluate is not None:
            lines.append(
                f"stage evaluate: {len(self.eval_trials)} Tune trials, {self.n_rows} result rows "
                f"({len(spec.evaluate.encoders)} encoders, {spec.evaluate.seeds} seeds); each "
                f"trial {self.eval_resources.cpu:g} CPU, {self.eval_resources.gpu:g} GPU; "
                f"up to {self.eval_concurrency} at once")
            for cond in spec.evaluate.encoders:
                trials = [t for t in self.eval_trials if t.condition == cond.name]
                protocols = sorted({t.protocol for t in trials})
                lines.append(f"  {cond.name}: {cond.encoder.name}:{cond.encoder.weights}; "
                             f"{', '.join(protocols)}; {len(trials)} trials")
        else:
            lines.append("stage evaluate: none")
        lines.extend(describe_searches(spec, self.cluster))
        lines.append(f"stage report: metrics {', '.join(spec.report.metrics)}, "
                     f"{spec.report.correction} correction at alpha {spec.report.alpha}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


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
    seeds = tuple(range(stage.first_seed, stage.first_seed + stage.seeds))
    trials = []
    for cond in stage.encoders:
        settings = condition_settings(stage.settings, cond)
        for protocol in cond.protocols or stage.protocols:
            if protocol == "probe" and settings.batched_probes:
                trials.append(EvalTrial(cond.name, protocol, seeds))
            else:
                trials.extend(EvalTrial(cond.name, protocol, (seed,)) for seed in seeds)
    return tuple(trials)


def make_plan(spec: ExperimentSpec, cluster: ClusterResources | None = None) -> Plan:
    cluster = cluster or ClusterResources.detect()
    waves = pretrain_waves(spec.pretrain)
    pre_res = {run.name: pretrain_resources(run, cluster) for run in spec.pretrain}
    notes = []
    for name, res in pre_res.items():
        if res.use_gpu and res.num_workers > cluster.gpus:
            notes.append(f"pretrain run {name} asks for {res.num_workers} GPU workers but the "
                         f"cluster has {cluster.gpus:g} GPUs: it waits for an autoscaler")
    trial_res = evaluation_trial_resources(spec.resources, cluster)
    return Plan(
        spec=spec,
        cluster=cluster,
        pretrain_waves=waves,
        pretrain_resources=pre_res,
        pretrain_concurrency=concurrent_pretrain_runs(list(pre_res.values()), cluster),
        eval_trials=eval_trials(spec),
        eval_resources=trial_res,
        eval_concurrency=max_concurrent_trials(trial_res, cluster,
                                               spec.resources.max_concurrent_trials),
        notes=tuple(notes),
    )
