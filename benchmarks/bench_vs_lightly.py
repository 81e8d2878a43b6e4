"""Barlow Twins pre-training images/s: raysweep's training step against the ``lightly`` library's.

Both arms do the same work on the same images: the same encoder (default: ResNet-18 with a
3x3 stride-1 stem and no max-pool, the CIFAR variant, built by ``small_resnet`` with ResNet-18's
widths and blocks) and the same projector (``--projector H-H-O``: three linear layers, BatchNorm +
ReLU after the first two; default 2048-2048-2048, i.e. 512 -> 2048 -> 2048 -> 2048 on
ResNet-18's 512 features), starting from the *same* weights, trained with Adam (same lr and
weight decay) on the Barlow Twins loss (lambda 1/8192) over two Barlow Twins views of a
MedMNIST set at ``--image-size`` px, global batch ``--batch``:

* ``raysweep``: the product's step, :func:`raysweep.ssl.pretrain.loop.train_step` (index batch
  -> sorted read from the decode-once uint8 cache -> ``to_float_rgb`` on the device -> batched
  kornia Barlow Twins views -> ``PretrainNet`` -> ``barlow_twins_terms`` -> Adam), fp32;
* ``lightly``: what a lightly user writes (its Barlow Twins example): lightly's
  ``BarlowTwinsProjectionHead``, ``BarlowTwinsLoss`` and per-sample ``BYOLTransform`` views
  (lightly's Barlow Twins recipe) of PIL images in a ``DataLoader`` of ``--loader-workers``
  processes (default 1; on a GPU its users run one per core); the images are
  the same uint8 arrays handed over as PIL images (MedMNIST's own dataset class does this), so
  no file decoding is counted on either side. The transforms leave out lightly's ImageNet
  normalisation because the shared encoder normalises internally.

Variants of the raysweep step: ``raysweep+channels_last`` (model and views in channels_last),
``raysweep+compile`` (the model under ``torch.compile``, inductor; a failure is recorded, not
raised) and, on CUDA, ``raysweep+bf16+channels_last`` (the product's GPU default);
``--lightly-bf16`` adds ``lightly+bf16``, lightly's recipe under bf16 autocast.

All arms run in one process. ``--schedule alternate`` (default, for a shared machine): one
warm-up round, then ``A B C D A B C D ...`` for ``--rounds`` rounds of ``--steps`` steps each,
so that load changes hit every arm alike. ``--schedule blocks`` (a machine of its own, e.g. a
GPU): each arm in turn, ``--warmup-steps`` untimed steps then ``--rounds`` timed blocks, its
loader workers working ahead as in a real run. The median images/s over the rounds is reported
per arm, with the ratio to lightly; ``--flops`` adds each arm's FLOPs per step
(``FlopCounterMode``) and, on a GPU, its model FLOPs utilisation against the card's peak
(``bench_common.PEAK_FLOPS``). Every arm's losses, step by step, show that the arms do the
same work (same start, same descent); the loss functions are also compared on one pair of
embeddings. Without lightly installed its arms are recorded as skipped, with the reason.
Writes ``benchmarks/out/vs_lightly.json``.

    OMP_NUM_THREADS=1 nice python benchmarks/bench_vs_lightly.py
    python benchmarks/bench_vs_lightly.py --device cuda --image-size 224 --encoder resnet50 \\
        --projector 8192-8192-8192
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import os
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from bench_common import (
    DATA,
    OUT,
    count_flops,
    device_name,
    load_average,
    peak_flops,
    process_cpu_seconds,
    sync,
    uptime,
)
from torch import nn

from raysweep.config import DatasetSpec, PretrainSpec
from raysweep.data import load_dataset
from raysweep.models import Projector, build_encoder
from raysweep.ssl.losses import barlow_twins_loss
from raysweep.ssl.pretrain.loop import (
    PretrainNet,
    StepContext,
    TrainingData,
    build_transform,
    configure_phase,
    make_optimizer,
    train_step,
)
from raysweep.ssl.pretrain.sharding import epoch_order, local_batch
from raysweep.storage.atomic import atomic_write_json
from raysweep.storage.provenance import package_versions

#: Encoders by benchmark name: registry name and ``small_resnet`` options.
ENCODERS: dict[str, tuple[str, dict[str, Any]]] = {
    # CIFAR-style ResNet-18: 3x3 stride-1 stem, no max-pool, BasicBlocks 2-2-2-2, 64..512.
    "resnet18-3x3": ("small_resnet", {"widths": (64, 128, 256, 512), "blocks": (2, 2, 2, 2)}),
    "resnet18": ("resnet18", {}),
    "resnet50": ("resnet50", {}),
    "small_resnet": ("small_resnet", {}),
}
LAMBDA_OFFDIAG = 1 / 8192
LR = 1e-3
SEED = 0


def parse_projector(text: str) -> tuple[int, int, int]:
    """``"H-H-O"`` -> (H, H, O): lightly's head has two hidden layers of one width."""
    try:
        widths = tuple(int(part) for part in text.split("-"))
    except ValueError:
        widths = ()
    if len(widths) != 3 or widths[0] != widths[1] or min(widths) < 1:
        raise argparse.ArgumentTypeError(
            f"--projector must be H-H-O (three positive widths, the first two equal), got {text!r}")
    return widths  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Arms: each exposes ``run(steps) -> list[float]`` (the losses) and keeps its state across rounds.
# ---------------------------------------------------------------------------------------------


@dataclass
class Arm:
    name: str
    run: Callable[[int], list[float]]
    bf16: bool = False
    losses: list[float] = field(default_factory=list)
    images_per_s: list[float] = field(default_factory=list)
    #: CPU seconds used so far by this arm's helper processes (lightly's loader workers).
    helper_cpu_s: Callable[[], float] = lambda: 0.0
    #: Ends the arm's helper processes (lightly's loader workers) once it is measured.
    close: Callable[[], None] = lambda: None
    cpu_ms_per_image: list[float] = field(default_factory=list)
    warmup_s: float | None = None
    flops_per_step: int | None = None
    error: str | None = None
    skipped: str | None = None


def build_reference_net(encoder: str, widths: tuple[int, ...]) -> PretrainNet:
    name, options = ENCODERS[encoder]
    g = torch.Generator().manual_seed(SEED)
    body = build_encoder(name, generator=g, **options)
    return PretrainNet(body, Projector(body.output_dim, widths, generator=g))


def raysweep_arm(name: str, reference: PretrainNet, spec: PretrainSpec, data: TrainingData,
                 device: torch.device, *, channels_last: bool = False, bf16: bool = False,
                 compile_model: bool = False) -> Arm:
    """raysweep's ``train_step`` on a copy of ``reference``, batches as the pre-training loop
    draws them (``epoch_order`` + ``local_batch``)."""
    net = copy.deepcopy(reference).to(
        device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    params = configure_phase(net, "train", spec.trainable)
    model: nn.Module = torch.compile(net) if compile_model else net
    ctx = StepContext(spec, model, net, data, build_transform(spec), device, bf16,
                      channels_last, rank=0, world_size=1)
    optimizer = make_optimizer(spec, params, "train", LR)
    steps_per_epoch = len(data.indices) // spec.batch_size
    counter = {"step": 0}

    def run(steps: int) -> list[float]:
        losses = []
        for _ in range(steps):
            epoch, step = divmod(counter["step"], steps_per_epoch)
            order = epoch_order(data.indices, seed=spec.seed, epoch=epoch)
            index = local_batch(order, step=step, batch_size=spec.batch_size, rank=0,
                                world_size=1)
            losses.append(train_step(ctx, optimizer, index, epoch=epoch, step=step)["loss"])
            counter["step"] += 1
        sync(device)
        return losses

    return Arm(name, run, bf16=bf16)


class RoundSampler(torch.utils.data.Sampler[int]):
    """Shuffled epochs cut into rounds: each ``iter()`` yields the next ``length`` indices.

    A loader iterator over one round has nothing left to prefetch once the round's batches are
    out, so lightly's workers are idle while the other arms run (and cannot work ahead for
    free).
    """

    def __init__(self, size: int, length: int, seed: int) -> None:
        self.size, self.length = size, length
        self.rng = np.random.default_rng(seed)
        self.pending: list[int] = []

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        while len(self.pending) < self.length:
            self.pending.extend(self.rng.permutation(self.size).tolist())
        chunk, self.pending = self.pending[:self.length], self.pending[self.length:]
        return iter(chunk)


class PilImages(torch.utils.data.Dataset):
    """uint8 (N, C, H, W) images at ``index`` as PIL RGB images through ``transform``."""

    def __init__(self, images: Any, index: np.ndarray, transform: Callable[[Any], Any]) -> None:
        self.images, self.index, self.transform = images, index, transform

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        image = np.asarray(self.images[self.index[i]])
        pil = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        return self.transform(pil.convert("RGB"))


def lightly_head(reference: PretrainNet, widths: tuple[int, int, int]) -> nn.Module:
    """lightly's ``BarlowTwinsProjectionHead`` holding the reference projector's weights (its
    last layer has a bias, which starts at zero)."""
    from lightly.models.modules import BarlowTwinsProjectionHead

    head = BarlowTwinsProjectionHead(reference.encoder.output_dim, widths[0], widths[2])
    ours = [m for m in reference.head if isinstance(m, nn.Linear | nn.BatchNorm1d)]
    theirs = [m for m in head.layers if isinstance(m, nn.Linear | nn.BatchNorm1d)]
    assert [type(m) for m in ours] == [type(m) for m in theirs]
    with torch.no_grad():
        for mine, other in zip(ours, theirs, strict=True):
            other.weight.copy_(mine.weight)
            if isinstance(mine, nn.BatchNorm1d):
                other.bias.copy_(mine.bias)
            elif other.bias is not None:
                other.bias.zero_()
    return head


def lightly_loader(images: Any, index: np.ndarray, size: int, batch: int, round_steps: int,
                   workers: int, device: torch.device) -> torch.utils.data.DataLoader:
    """lightly's Barlow Twins views (``BYOLTransform``) of PIL images in a ``DataLoader`` of
    ``workers`` processes, ``round_steps`` batches per iterator (:class:`RoundSampler`)."""
    from lightly.transforms.byol_transform import (
        BYOLTransform,
        BYOLView1Transform,
        BYOLView2Transform,
    )

    transform = BYOLTransform(BYOLView1Transform(input_size=size, normalize=None),
                              BYOLView2Transform(input_size=size, normalize=None))
    return torch.utils.data.DataLoader(
        PilImages(images, index, transform), batch_size=batch, drop_last=True,
        sampler=RoundSampler(len(index), round_steps * batch, SEED), num_workers=workers,
        persistent_workers=workers > 0, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(SEED))


def lightly_arm(name: str, reference: PretrainNet, widths: tuple[int, int, int],
                loader: torch.utils.data.DataLoader, device: torch.device, *,
                bf16: bool = False) -> Arm:
    """lightly's Barlow Twins example: head, loss and per-sample views in a ``DataLoader``;
    with ``bf16`` the forward passes and the loss under bf16 autocast (what PyTorch
    Lightning's ``precision="bf16-mixed"`` does). Batches continue the loader's current
    iterator and a new one starts when it runs out (every round, or every block)."""
    from lightly.loss import BarlowTwinsLoss

    backbone = copy.deepcopy(reference.encoder)
    head = lightly_head(reference, widths)
    model = nn.Sequential(backbone, head).to(device).train()
    criterion = BarlowTwinsLoss(lambda_param=LAMBDA_OFFDIAG)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=1.5e-6)
    state: dict[str, Any] = {"it": None}

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        if state["it"] is not None:
            try:
                return next(state["it"])
            except StopIteration:
                pass
        state["it"] = iter(loader)
        return next(state["it"])

    def run(count: int) -> list[float]:
        losses = []
        for _ in range(count):
            x0, x1 = next_batch()
            x0, x1 = x0.to(device, non_blocking=True), x1.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = criterion(model(x0), model(x1))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
        sync(device)
        return losses

    def worker_cpu_s() -> float:
        workers = getattr(state["it"], "_workers", None) or []
        return sum(process_cpu_seconds(w.pid) for w in workers if w.pid)

    def close() -> None:
        shutdown = getattr(state["it"], "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        state["it"] = None

    return Arm(name, run, bf16=bf16, helper_cpu_s=worker_cpu_s, close=close)


def loss_agreement(device: torch.device) -> float:
    """|lightly's BarlowTwinsLoss - raysweep's barlow_twins_loss| on one random pair."""
    from lightly.loss import BarlowTwinsLoss

    g = torch.Generator().manual_seed(1)
    z_a, z_b = torch.randn(128, 256, generator=g), torch.randn(128, 256, generator=g)
    z_b = z_b + z_a  # correlated views
    ours = barlow_twins_loss(z_a.to(device), z_b.to(device), lambda_offdiag=LAMBDA_OFFDIAG)
    theirs = BarlowTwinsLoss(lambda_param=LAMBDA_OFFDIAG)(z_a.to(device), z_b.to(device))
    return abs(float(ours) - float(theirs))


# ---------------------------------------------------------------------------------------------
# Timing: alternated rounds (a shared, loaded machine) or one block per arm (a machine of its own)
# ---------------------------------------------------------------------------------------------


def timed_round(arm: Arm, steps: int, batch: int) -> None:
    """Run ``steps`` steps of ``arm``; record its images/s (wall) and CPU-ms per image (this
    process, all threads, plus the arm's helper processes)."""
    helper, cpu, started = arm.helper_cpu_s(), time.process_time(), time.perf_counter()
    arm.losses.extend(arm.run(steps))
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu + arm.helper_cpu_s() - helper
    arm.images_per_s.append(steps * batch / wall)
    arm.cpu_ms_per_image.append(1e3 * cpu / (steps * batch))


def warm_up(arm: Arm, steps: int) -> None:
    """Untimed steps (compilation, allocator, cuDNN's choices, loader workers); a failure is
    recorded on the arm (a failed variant is a result, not a crash)."""
    started = time.perf_counter()
    try:
        arm.losses.extend(arm.run(steps))
    except Exception as err:  # noqa: BLE001 - recorded, the other arms go on
        arm.error = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        traceback.print_exc()
    arm.warmup_s = time.perf_counter() - started
    print(f"warm-up {arm.name}: {arm.warmup_s:.1f} s {arm.error or ''}", flush=True)


def measure_flops(arm: Arm) -> None:
    """FLOPs of one more step of ``arm`` (untimed)."""
    try:
        arm.flops_per_step = count_flops(lambda: arm.run(1))
    except Exception as err:  # noqa: BLE001 - MFU is then unknown, the timing stands
        print(f"{arm.name}: FLOPs not counted ({type(err).__name__}: {err})", flush=True)


def alternate(arms: list[Arm], rounds: int, steps: int, batch: int) -> None:
    """One warm-up round, then ``rounds`` timed rounds; within a round the arms run one after
    another in a fixed order, so that load changes on a shared machine hit every arm alike."""
    for arm in arms:
        warm_up(arm, steps)
    for r in range(rounds):
        for arm in arms:
            if arm.error is None:
                timed_round(arm, steps, batch)
        print(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{a.name} {a.images_per_s[-1]:.1f}" for a in arms if a.error is None)
            + f" img/s; load {load_average()}", flush=True)


def blocks(arms: list[Arm], rounds: int, steps: int, warmup_steps: int, batch: int,
           flops: bool) -> None:
    """Each arm in turn: ``warmup_steps`` untimed steps, ``rounds`` timed blocks of ``steps``
    steps (its loader workers keep working between blocks, as in a real run), its FLOPs per
    step when ``flops``, then its helper processes end."""
    for arm in arms:
        warm_up(arm, warmup_steps)
        try:
            for _ in range(rounds if arm.error is None else 0):
                timed_round(arm, steps, batch)
            if flops and arm.error is None:
                measure_flops(arm)
        except Exception as err:  # noqa: BLE001 - e.g. out of memory: the next arm goes on
            arm.error = f"{type(err).__name__}: {err}".splitlines()[0][:500]
            traceback.print_exc()
        finally:
            arm.close()
        print(f"{arm.name}: " + ", ".join(f"{v:.1f}" for v in arm.images_per_s)
              + f" img/s {arm.error or ''}", flush=True)


def summarise(arms: list[Arm], first_losses: int, batch: int,
              device: torch.device) -> dict[str, Any]:
    """Per arm: median images/s and CPU-ms per image, the ratio to lightly's fp32 arm, and with
    FLOPs counted the achieved FLOP/s and MFU against the device's peak
    (:func:`bench_common.peak_flops`)."""
    out: dict[str, Any] = {}
    lightly = next((a for a in arms if a.name == "lightly" and a.images_per_s), None)
    base = statistics.median(lightly.images_per_s) if lightly else None
    for arm in arms:
        median = statistics.median(arm.images_per_s) if arm.images_per_s else None
        achieved = (arm.flops_per_step * median / batch
                    if median and arm.flops_per_step else None)
        peak, basis = (peak_flops(device_name(device), arm.bf16) if device.type == "cuda"
                       else (None, "no peak for a CPU"))
        out[arm.name] = {
            "median_images_per_s": median,
            "images_per_s_per_round": arm.images_per_s,
            "ratio_to_lightly": median / base if median and base else None,
            "median_cpu_ms_per_image": (statistics.median(arm.cpu_ms_per_image)
                                        if arm.cpu_ms_per_image else None),
            "cpu_ms_per_image_per_round": arm.cpu_ms_per_image,
            "warmup_s": arm.warmup_s,
            "bf16": arm.bf16,
            "flops_per_step": arm.flops_per_step,
            "achieved_flops_per_s": achieved,
            "peak_flops_per_s": peak,
            "peak_basis": basis,
            "mfu": achieved / peak if achieved and peak else None,
            "error": arm.error,
            "skipped": arm.skipped,
            "losses": arm.losses[:first_losses],
        }
    return out


# ---------------------------------------------------------------------------------------------
# One comparison
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One comparison: the work (encoder, image size, batch, projector, data), the arms, and
    how they are timed (``schedule``: ``alternate`` rounds on a shared machine, ``blocks`` of
    one arm at a time on a machine of its own)."""

    encoder: str = "resnet18-3x3"
    image_size: int = 32
    batch: int = 128
    projector: tuple[int, int, int] = (2048, 2048, 2048)
    dataset: str = "pneumoniamnist"
    max_images: int | None = None  # the first this many images of the data (None: all)
    variants: tuple[str, ...] = ("channels_last", "compile")
    lightly_bf16: bool = False  # also lightly's recipe under bf16 autocast
    loader_workers: int = 1
    rounds: int = 4
    steps: int = 1
    warmup_steps: int = 1
    schedule: Literal["alternate", "blocks"] = "alternate"
    flops: bool = False
    first_losses: int = 12


def lightly_missing() -> str | None:
    """Why lightly's arms cannot run here (None when ``lightly`` is installed)."""
    if importlib.util.find_spec("lightly") is None:
        return "lightly is not installed (pip install -e '.[bench]', which pins lightly==1.6.0)"
    return None


def build_arms(setting: Setting, reference: PretrainNet, spec: PretrainSpec,
               training: TrainingData, images: Any, device: torch.device
               ) -> tuple[list[Arm], list[Arm]]:
    """(the arms to time, lightly's arms skipped here with the reason)."""
    arms = [raysweep_arm("raysweep", reference, spec, training, device)]
    lightly_names = ["lightly"] + (["lightly+bf16"] if setting.lightly_bf16 else [])
    missing = lightly_missing()
    if missing is None:
        round_steps = (setting.steps if setting.schedule == "alternate"
                       else setting.warmup_steps + setting.rounds * setting.steps + 1)
        for name in lightly_names:
            loader = lightly_loader(images, training.indices, setting.image_size, setting.batch,
                                    round_steps, setting.loader_workers, device)
            arms.append(lightly_arm(name, reference, setting.projector, loader, device,
                                    bf16=name.endswith("bf16")))
    skipped = [Arm(name, lambda steps: [], skipped=missing) for name in lightly_names] \
        if missing else []
    if "channels_last" in setting.variants:
        arms.append(raysweep_arm("raysweep+channels_last", reference, spec, training, device,
                                 channels_last=True))
    if "compile" in setting.variants:
        arms.append(raysweep_arm("raysweep+compile", reference, spec, training, device,
                                 compile_model=True))
    if "bf16+channels_last" in setting.variants:
        arms.append(raysweep_arm("raysweep+bf16+channels_last", reference, spec, training,
                                 device, channels_last=True, bf16=True))
    return arms, skipped


def compare(setting: Setting, device: torch.device) -> dict[str, Any]:
    """Time every arm of ``setting`` on ``device``; the record written as JSON (arms by name,
    the work, the machine's load before and after)."""
    load_before, uptime_before = load_average(), uptime()
    with tempfile.TemporaryDirectory(prefix="raysweep-bench-") as tmp:
        data_spec = DatasetSpec(
            sources=({"kind": "medmnist", "path": str(DATA / f"{setting.dataset}.npz")},),
            image_size=setting.image_size, cache_dir=str(Path(tmp) / "cache"))
        dataset = load_dataset(data_spec, progress=False)
        index = np.asarray(dataset.unlabelled(), dtype=np.int64)[:setting.max_images]
        spec = PretrainSpec(name="bench", data=data_spec, method="barlow_twins", further=False,
                            batch_size=setting.batch, projector=setting.projector,
                            lambda_offdiag=LAMBDA_OFFDIAG, alpha=0.0, lr_max=LR, seed=SEED)
        training = TrainingData(dataset.images, index)
        reference = build_reference_net(setting.encoder, setting.projector)
        arms, skipped = build_arms(setting, reference, spec, training, dataset.images, device)
        if setting.schedule == "alternate":
            alternate(arms, setting.rounds, setting.steps, setting.batch)
            if setting.flops:
                for arm in arms:
                    measure_flops(arm)
        else:
            blocks(arms, setting.rounds, setting.steps, setting.warmup_steps, setting.batch,
                   setting.flops)
        for arm in arms:
            arm.close()
        agreement = loss_agreement(device) if lightly_missing() is None else None
    packages = package_versions()
    if lightly_missing() is None:
        packages["lightly"] = metadata.version("lightly")
    return {
        "benchmark": "vs_lightly",
        "device": str(device), "device_name": device_name(device),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_before": load_before, "load_average_after": load_average(),
        "uptime_before": uptime_before, "uptime_after": uptime(),
        **{k: list(v) if isinstance(v, tuple) else v
           for k, v in dataclasses.asdict(setting).items()},
        "images": len(index), "steps_per_round": setting.steps,
        "lr": LR, "lambda_offdiag": LAMBDA_OFFDIAG,
        "loss_function_abs_difference": agreement,
        "packages": packages,
        "arms": summarise(arms + skipped, setting.first_losses, setting.batch, device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default="resnet18-3x3")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--projector", type=parse_projector, default=(2048, 2048, 2048),
                        help="H-H-O widths of the three projector layers (default 2048-2048-2048)")
    parser.add_argument("--dataset", default="pneumoniamnist",
                        help="a MedMNIST .npz in tests/data/medmnist (or $RAYSWEEP_SHARED_DATA)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1, help="steps per arm per round")
    parser.add_argument("--warmup-steps", type=int, default=1,
                        help="untimed steps per arm first (--schedule blocks)")
    parser.add_argument("--schedule", choices=("alternate", "blocks"), default="alternate",
                        help="alternate the arms round by round (a shared machine) or time "
                             "each arm in one block (a machine of its own)")
    parser.add_argument("--loader-workers", type=int, default=1)
    parser.add_argument("--variants", default="channels_last,compile",
                        help="raysweep variants to time besides fp32 (comma-separated among "
                             "channels_last, compile, bf16+channels_last; '' = none)")
    parser.add_argument("--lightly-bf16", action="store_true",
                        help="also time lightly's recipe under bf16 autocast")
    parser.add_argument("--flops", action="store_true",
                        help="count each arm's FLOPs per step (MFU on a GPU)")
    parser.add_argument("--first-losses", type=int, default=12,
                        help="losses of each arm recorded, from its first step")
    parser.add_argument("--out", type=Path, default=OUT / "vs_lightly.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    variants = tuple(v for v in args.variants.split(",") if v)
    if device.type == "cuda" and "bf16+channels_last" not in variants:
        variants += ("bf16+channels_last",)  # raysweep's GPU default
    setting = Setting(encoder=args.encoder, image_size=args.image_size, batch=args.batch,
                      projector=args.projector, dataset=args.dataset, variants=variants,
                      lightly_bf16=args.lightly_bf16, loader_workers=args.loader_workers,
                      rounds=args.rounds, steps=args.steps, warmup_steps=args.warmup_steps,
                      schedule=args.schedule, flops=args.flops, first_losses=args.first_losses)
    result = compare(setting, device)
    atomic_write_json(args.out, result)
    for name, arm in result["arms"].items():
        ratio = arm["ratio_to_lightly"]
        print(f"{name:28s} {arm['median_images_per_s'] or float('nan'):8.2f} img/s"
              f"  x{ratio or float('nan'):.2f} of lightly"
              f"  {arm['median_cpu_ms_per_image'] or float('nan'):8.1f} CPU-ms/img"
              f"  {arm['error'] or arm['skipped'] or ''}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
