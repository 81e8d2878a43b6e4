"""What a study will cost before it runs: device-hours and wall time of each stage
(``raysweep run SPEC --dry-run --estimate``).

Two ingredients, multiplied:

- **measured speed**: a few timed training steps (forward + backward + Adam step of the encoder
  and a linear head) and forward-only steps of each encoder, on this machine's device (CUDA when
  there is one, else the CPU), at the spec's batch size and image size, on random images
  (:func:`measure_step`; one warm-up step, then the median of ``steps`` timed ones);
- **the plan's work**: the images each run sees, from the data's listing (nothing is decoded):

  - a pre-training run: ``(frozen_epochs + epochs) x ceil(images / batch_size)`` training steps
    (plus ``lr_finder_iters`` when ``lr_max`` is unset), each of ``views x batch_size /
    num_workers`` images per worker (two views for the SSL methods); the projector's cost is
    not counted;
  - an evaluation trial, per seed: fine-tuning ``(head_epochs + epochs) x ceil(train /
    batch_size)`` training steps (plus the LR finder's), probes as many forward-only steps (the
    encoder is frozen; batched probes once for all seeds), the logistic protocol one forward pass
    over its images; then ``(1 + tta_views) x ceil(test / batch_size)`` forward steps of testing.

Ray's own start-up (a Ray Train worker group, actors, scheduling) and data loading are not
counted: on a small study they dominate (``benchmarks/BENCHMARKS.md``), on a long one the steps
do. A stage's wall time packs its runs into the plan's slots: pre-training wave by wave (each wave
``ceil(runs / concurrent runs)`` times its longest run), evaluation trials as ``max(longest
trial, total / slots)``. Device-hours are run time x the run's devices: GPU-hours when the stage
uses GPUs (a trial's GPU share, a run's whole GPUs), else CPU-hours (its CPUs). Trials that share
a GPU slow each other down, so on shared GPUs the wall time is a lower bound. The cluster is the
plan's: the running one, this machine, or the cluster-launcher YAML named by
``RAYSWEEP_AUTOSCALER_CONFIG`` (:mod:`raysweep.plan.resources`).

Nothing is written: the experiment's storage is not touched.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from raysweep.config import DatasetSpec, PretrainSpec
from raysweep.console import format_duration, plural
from raysweep.data import index_dataset
from raysweep.errors import RaysweepError
from raysweep.models import build_encoder
from raysweep.plan.trials import EvalTrial, Plan, condition_settings

__all__ = ["StageEstimate", "StepTiming", "check_step_fits", "estimate_plan", "measure_step",
           "step_memory_bytes"]

#: Timed steps per encoder (after one warm-up step).
TIMED_STEPS = 3


@dataclass(frozen=True)
class StepTiming:
    """Seconds of one training step and of one forward-only step of a batch."""

    train_s: float
    forward_s: float


#: ``(encoder, batch of images, image size) -> StepTiming``: measured, or injected by tests.
Timer = Callable[[str, int, int], StepTiming]


@dataclass(frozen=True)
class StageEstimate:
    """One stage's expected cost: ``device_hours`` of ``unit`` (``GPU`` or ``CPU``) and wall
    seconds on the plan's cluster; ``work`` says what was counted."""

    stage: str
    device_hours: float
    unit: str
    wall_s: float
    work: str

    def describe(self) -> str:
        return (f"estimate {self.stage}: {self.device_hours:.3g} {self.unit}-hours, wall "
                f"{format_duration(self.wall_s)} ({self.work})")


def step_memory_bytes(encoder: str, batch: int, image_size: int) -> int:
    """Bytes one training step of :func:`measure_step` holds at least: the output of every
    leaf module for ``batch`` images of ``image_size`` px (what backward keeps, float32), the
    input batch, and the weights with their gradients and Adam's two moments (4 x). Computed on
    PyTorch's ``meta`` device: shapes only, nothing allocated."""
    model = build_encoder(encoder).to("meta")
    elements = [batch * 3 * image_size * image_size]

    def count(module: torch.nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and not list(module.children()):
            elements.append(output.numel())

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    try:
        with torch.no_grad():
            model(torch.empty(batch, 3, image_size, image_size, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    weights = sum(p.numel() for p in model.parameters())
    return 4 * (sum(elements) + 4 * weights)


def free_memory_bytes(device: str) -> int | None:
    """Bytes free on ``device`` (CUDA: ``torch.cuda.mem_get_info``; the CPU: ``MemAvailable``
    of ``/proc/meminfo``); None when unknown."""
    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_step_fits(encoder: str, batch: int, image_size: int, device: str) -> None:
    """:class:`~raysweep.errors.RaysweepError` (one line) when a timed step of ``encoder`` on
    ``batch`` images of ``image_size`` px cannot fit in this machine's free memory: the
    estimate refuses instead of trying to allocate it."""
    needed = step_memory_bytes(encoder, batch, image_size)
    free = free_memory_bytes(device)
    if free is not None and needed > free:
        where = "GPU" if device.startswith("cuda") else "CPU memory"
        raise RaysweepError(
            f"estimate: one timed training step of {encoder} on {batch} images of "
            f"{image_size} px needs about {needed / 2**30:.1f} GiB, more than the "
            f"{free / 2**30:.1f} GiB free on this machine's {where}; it cannot be measured "
            "here (estimate on a machine it fits, or with a smaller batch_size or image_size)")


def measure_step(encoder: str, batch: int, image_size: int, *, device: str | None = None,
                 steps: int = TIMED_STEPS) -> StepTiming:
    """Median seconds of a training step (forward, cross-entropy through a linear head,
    backward, Adam step) and of a forward-only step of ``encoder`` on ``batch`` random images
    of ``image_size`` px, on ``device`` (default: CUDA when available, else the CPU)."""


    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_step_fits(encoder, batch, image_size, device)
    generator = torch.Generator().manual_seed(0)
    model = build_encoder(encoder, generator=generator).to(device)
    images = torch.rand(batch, 3, image_size, image_size, generator=generator).to(device)
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    with torch.no_grad():
        width = model(images[:1]).shape[1]
    head = torch.nn.Linear(width, 2).to(device)
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()])

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(head(model(images)), labels).backward()
        optimizer.step()

    def forward_step() -> None:
        with torch.no_grad():
            head(model(images))

    return StepTiming(_median_seconds(train_step, steps, device),
                      _median_seconds(forward_step, steps, device))


def _median_seconds(step: Callable[[], None], steps: int, device: str) -> float:

    times = []
    for index in range(steps + 1):  # the first is a warm-up
        started = time.perf_counter()
        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if index:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def cached_timer(device: str | None = None, steps: int = TIMED_STEPS) -> Timer:
    """A :data:`Timer` measuring each (encoder, batch, image size) once."""
    cache: dict[tuple[str, int, int], StepTiming] = {}

    def timer(encoder: str, batch: int, image_size: int) -> StepTiming:
        key = (encoder, batch, image_size)
        if key not in cache:
            cache[key] = measure_step(encoder, batch, image_size, device=device, steps=steps)
        return cache[key]

    return timer


# ------------------------------------------------------------------------- counting images


@dataclass(frozen=True)
class ImageCounts:
    """Images of a data spec: pre-training (every listed item, oversampled), labelled
    training and labelled test images."""

    pretrain: int
    train: int
    test: int


def count_images(data: DatasetSpec) -> ImageCounts:
    """From the data's listing (nothing decoded)."""

    index = index_dataset(data)
    return ImageCounts(pretrain=len(index.unlabelled()),
                       train=len(index.labelled_indices("train")[0]),
                       test=len(index.labelled_indices("test")[0]))


def _steps(images: int, batch: int) -> int:
    return math.ceil(images / batch)


# ------------------------------------------------------------------------- pre-training


def pretrain_run_seconds(run: PretrainSpec, counts: ImageCounts, timer: Timer) -> float:
    """Wall seconds of one pre-training run (see the module docstring)."""
    views = 1 if run.method == "supervised" else 2
    images = counts.train if run.method == "supervised" else counts.pretrain
    epochs = run.epochs + (run.frozen_epochs if run.further else 0)
    steps = epochs * _steps(images, run.batch_size)
    steps += run.lr_finder_iters if run.lr_max is None else 0
    per_worker = max(1, views * run.batch_size // run.num_workers)
    return steps * timer(run.encoder.name, per_worker, run.data.image_size).train_s


def estimate_pretrain(plan: Plan, timer: Timer,
                      counts: Callable[[DatasetSpec], ImageCounts]) -> StageEstimate | None:
    """The pretrain stage's estimate, or None when it has no run."""
    runs = plan.spec.pretrain
    if not runs:
        return None
    seconds = {run.name: pretrain_run_seconds(run, counts(run.data), timer) for run in runs}
    uses_gpu = any(plan.pretrain_resources[run.name].use_gpu for run in runs)
    device_s = 0.0
    for run in runs:
        res = plan.pretrain_resources[run.name]
        devices = res.total_gpus if uses_gpu else res.total_cpus
        device_s += seconds[run.name] * devices
    slots = max(1, plan.pretrain_concurrency)
    wall = sum(math.ceil(len(wave) / slots) * max(seconds[run.name] for run in wave)
               for wave in plan.pretrain_waves)
    return StageEstimate("pretrain", device_s / 3600, "GPU" if uses_gpu else "CPU", wall,
                         f"{plural(len(runs), 'run')}, up to {slots} at once")


# ---------------------------------------------------------------------------- evaluation


def trial_seconds(plan: Plan, trial: EvalTrial, counts: ImageCounts, timer: Timer) -> float:
    """Seconds of one evaluation trial (all its seeds; see the module docstring)."""
    spec = plan.spec
    assert spec.evaluate is not None
    [cond] = [c for c in spec.evaluate.encoders if c.name == trial.condition]
    settings = condition_settings(spec.evaluate.settings, cond)
    data = cond.data or spec.evaluate.data
    timing = timer(cond.encoder.name, settings.batch_size, data.image_size)
    train_steps = (settings.head_epochs + settings.epochs) * _steps(counts.train,
                                                                      settings.batch_size)
    train_steps += settings.lr_finder_iters if settings.lr_max is None else 0
    test_steps = (1 + settings.tta_views) * _steps(counts.test, settings.batch_size)
    runs = len(trial.seeds)
    if trial.protocol == "finetune":
        return runs * (train_steps * timing.train_s + test_steps * timing.forward_s)
    if trial.protocol == "logistic":
        return _steps(counts.train + counts.test, settings.batch_size) * timing.forward_s
    passes = 1 if settings.batched_probes else runs  # batched probes share the encoder pass
    return passes * (train_steps + test_steps) * timing.forward_s


def estimate_evaluate(plan: Plan, timer: Timer,
                      counts: Callable[[DatasetSpec], ImageCounts]) -> StageEstimate | None:
    """The evaluate stage's estimate, or None when it has no trial."""
    spec = plan.spec
    if spec.evaluate is None or not plan.eval_trials:
        return None
    uses_gpu = any(plan.resources_of(t).gpu > 0 for t in plan.eval_trials)
    data_of = {c.name: c.data or spec.evaluate.data for c in spec.evaluate.encoders}
    seconds, device_s = [], 0.0
    for trial in plan.eval_trials:
        took = trial_seconds(plan, trial, counts(data_of[trial.condition]), timer)
        res = plan.resources_of(trial)
        seconds.append(took)
        device_s += took * (res.gpu if uses_gpu else res.cpu)
    slots = max(1, plan.eval_concurrency)
    wall = max(max(seconds), sum(seconds) / slots)
    return StageEstimate("evaluate", device_s / 3600, "GPU" if uses_gpu else "CPU", wall,
                         f"{plural(len(seconds), 'trial')}, up to {slots} at once")


def estimate_plan(plan: Plan, timer: Timer | None = None) -> list[StageEstimate]:
    """The estimates of the plan's stages (pre-training, evaluation), measuring each encoder's
    speed with ``timer`` (default: :func:`cached_timer` on this machine's device)."""
    timer = timer or cached_timer()
    cache: dict[DatasetSpec, ImageCounts] = {}

    def counts(data: DatasetSpec) -> ImageCounts:
        if data not in cache:
            cache[data] = count_images(data)
        return cache[data]

    found = [estimate_pretrain(plan, timer, counts), estimate_evaluate(plan, timer, counts)]
    return [estimate for estimate in found if estimate is not None]


def describe_estimates(plan: Plan, timer: Timer | None = None) -> str:
    """What ``--estimate`` prints: one line per stage, the total and where the speed was
    measured."""

    device = "CUDA" if torch.cuda.is_available() else "CPU"
    estimates = estimate_plan(plan, timer)
    lines = [estimate.describe() for estimate in estimates]
    if estimates:
        units = sorted({e.unit for e in estimates})
        hours = ", ".join(f"{sum(e.device_hours for e in estimates if e.unit == u):.3g} "
                          f"{u}-hours" for u in units)
        lines.append(f"estimate total: {hours}, wall "
                     f"{format_duration(sum(e.wall_s for e in estimates))} (step times measured "
                     f"on this machine's {device}; Ray's start-up and the search stage are not "
                     "counted)")
    return "\n".join(lines)
