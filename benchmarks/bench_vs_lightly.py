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
  (lightly's Barlow Twins recipe) of PIL images in a one-worker ``DataLoader``; the images are
  the same uint8 arrays handed over as PIL images (MedMNIST's own dataset class does this), so
  no file decoding is counted on either side. The transforms leave out lightly's ImageNet
  normalisation because the shared encoder normalises internally.

Variants of the raysweep step: ``raysweep+channels_last`` (model and views in channels_last),
``raysweep+compile`` (the model under ``torch.compile``, inductor; a failure is recorded, not
raised) and, on CUDA, ``raysweep+bf16+channels_last`` (the product's GPU default).

All arms run in one process, alternated ``A B C D A B C D ...`` for ``--rounds`` rounds of
``--steps`` steps each after one warm-up round, so that load changes on a shared machine hit
every arm alike; the median images/s over the rounds is reported per arm, with the ratio to
lightly. Every arm's losses, step by step, show that the arms do the same work (same start,
same descent); the loss functions are also compared on one pair of embeddings. Writes
``benchmarks/out/vs_lightly.json``.

    OMP_NUM_THREADS=1 nice python benchmarks/bench_vs_lightly.py
    python benchmarks/bench_vs_lightly.py --device cuda --image-size 224 --encoder resnet50 \\
        --projector 8192-8192-8192
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_pretrain_throughput import DATA, ROOT, sync
from torch import nn

from raysweep.artefacts import atomic_write_json, package_versions
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


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


# ---------------------------------------------------------------------------------------------
# Arms: each exposes ``run(steps) -> list[float]`` (the losses) and keeps its state across rounds.
# ---------------------------------------------------------------------------------------------


@dataclass
class Arm:
    name: str
    run: Callable[[int], list[float]]
    losses: list[float] = field(default_factory=list)
    images_per_s: list[float] = field(default_factory=list)
    #: CPU seconds used so far by this arm's helper processes (lightly's loader worker).
    helper_cpu_s: Callable[[], float] = lambda: 0.0
    cpu_ms_per_image: list[float] = field(default_factory=list)
    warmup_s: float | None = None
    error: str | None = None


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

    return Arm(name, run)


class RoundSampler(torch.utils.data.Sampler[int]):
    """Shuffled epochs cut into rounds: each ``iter()`` yields the next ``length`` indices.

    A loader iterator over one round has nothing left to prefetch once the round's batches are
    out, so lightly's worker is idle while the other arms run (and cannot work ahead for free).
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


def lightly_arm(reference: PretrainNet, widths: tuple[int, int, int], images: Any,
                index: np.ndarray, size: int, batch: int, steps: int, workers: int,
                device: torch.device) -> Arm:
    """lightly's Barlow Twins example: head, loss and per-sample views in a ``DataLoader``."""
    from lightly.loss import BarlowTwinsLoss
    from lightly.transforms.byol_transform import (
        BYOLTransform,
        BYOLView1Transform,
        BYOLView2Transform,
    )

    transform = BYOLTransform(BYOLView1Transform(input_size=size, normalize=None),
                              BYOLView2Transform(input_size=size, normalize=None))
    loader = torch.utils.data.DataLoader(
        PilImages(images, index, transform), batch_size=batch, drop_last=True,
        sampler=RoundSampler(len(index), steps * batch, SEED), num_workers=workers,
        persistent_workers=workers > 0, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(SEED))
    backbone = copy.deepcopy(reference.encoder)
    head = lightly_head(reference, widths)
    model = nn.Sequential(backbone, head).to(device).train()
    criterion = BarlowTwinsLoss(lambda_param=LAMBDA_OFFDIAG)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=1.5e-6)

    def run(count: int) -> list[float]:
        losses = []
        for (x0, x1) in loader:
            x0, x1 = x0.to(device, non_blocking=True), x1.to(device, non_blocking=True)
            loss = criterion(model(x0), model(x1))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
        assert len(losses) == count, (len(losses), count)
        sync(device)
        return losses

    def worker_cpu_s() -> float:
        workers = getattr(getattr(loader, "_iterator", None), "_workers", None) or []
        return sum(process_cpu_seconds(w.pid) for w in workers if w.pid)

    return Arm("lightly", run, helper_cpu_s=worker_cpu_s)


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
# The alternation
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


def alternate(arms: list[Arm], rounds: int, steps: int, batch: int) -> None:
    """One warm-up round (compilation, allocator, loader worker start), then ``rounds`` timed
    rounds; within a round the arms run one after another in a fixed order."""
    for arm in arms:
        started = time.perf_counter()
        try:
            arm.losses.extend(arm.run(steps))
        except Exception as err:  # noqa: BLE001 - a failed variant is a result, not a crash
            arm.error = f"{type(err).__name__}: {err}".splitlines()[0][:500]
            traceback.print_exc()
        arm.warmup_s = time.perf_counter() - started
        print(f"warm-up {arm.name}: {arm.warmup_s:.1f} s {arm.error or ''}", flush=True)
    for r in range(rounds):
        for arm in arms:
            if arm.error is None:
                timed_round(arm, steps, batch)
        print(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{a.name} {a.images_per_s[-1]:.1f}" for a in arms if a.error is None)
            + f" img/s; load {load_average()}", flush=True)


def summarise(arms: list[Arm], first_losses: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    lightly = next((a for a in arms if a.name == "lightly" and a.images_per_s), None)
    base = statistics.median(lightly.images_per_s) if lightly else None
    for arm in arms:
        median = statistics.median(arm.images_per_s) if arm.images_per_s else None
        out[arm.name] = {
            "median_images_per_s": median,
            "images_per_s_per_round": arm.images_per_s,
            "ratio_to_lightly": median / base if median and base else None,
            "median_cpu_ms_per_image": (statistics.median(arm.cpu_ms_per_image)
                                        if arm.cpu_ms_per_image else None),
            "cpu_ms_per_image_per_round": arm.cpu_ms_per_image,
            "warmup_s": arm.warmup_s,
            "error": arm.error,
            "losses": arm.losses[:first_losses],
        }
    return out


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
    parser.add_argument("--loader-workers", type=int, default=1)
    parser.add_argument("--variants", default="channels_last,compile",
                        help="raysweep variants to time besides fp32 (comma-separated; '' = none)")
    parser.add_argument("--first-losses", type=int, default=12,
                        help="losses of each arm recorded, from its first step")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "vs_lightly.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    variants = [v for v in args.variants.split(",") if v]
    load_before, uptime_before = load_average(), uptime()

    with tempfile.TemporaryDirectory(prefix="raysweep-bench-") as tmp:
        data_spec = DatasetSpec(
            sources=({"kind": "medmnist", "path": str(DATA / f"{args.dataset}.npz")},),
            image_size=args.image_size, cache_dir=str(Path(tmp) / "cache"))
        dataset = load_dataset(data_spec, progress=False)
        index = np.asarray(dataset.unlabelled(), dtype=np.int64)
        spec = PretrainSpec(name="bench", data=data_spec, method="barlow_twins", further=False,
                            batch_size=args.batch, projector=args.projector,
                            lambda_offdiag=LAMBDA_OFFDIAG, alpha=0.0, lr_max=LR, seed=SEED)
        training = TrainingData(dataset.images, index)
        reference = build_reference_net(args.encoder, args.projector)
        arms = [raysweep_arm("raysweep", reference, spec, training, device),
                lightly_arm(reference, args.projector, dataset.images, index, args.image_size,
                            args.batch, args.steps, args.loader_workers, device)]
        if "channels_last" in variants:
            arms.append(raysweep_arm("raysweep+channels_last", reference, spec, training, device,
                                     channels_last=True))
        if "compile" in variants:
            arms.append(raysweep_arm("raysweep+compile", reference, spec, training, device,
                                     compile_model=True))
        if device.type == "cuda":
            arms.append(raysweep_arm("raysweep+bf16+channels_last", reference, spec, training,
                                     device, channels_last=True, bf16=True))
        alternate(arms, args.rounds, args.steps, args.batch)
        agreement = loss_agreement(device)

    arms_out = summarise(arms, args.first_losses)
    result = {
        "benchmark": "vs_lightly",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_before": load_before, "load_average_after": load_average(),
        "uptime_before": uptime_before, "uptime_after": uptime(),
        "encoder": args.encoder, "image_size": args.image_size, "batch": args.batch,
        "projector": list(args.projector), "dataset": args.dataset, "images": len(index),
        "rounds": args.rounds, "steps_per_round": args.steps,
        "loader_workers": args.loader_workers, "lr": LR, "lambda_offdiag": LAMBDA_OFFDIAG,
        "loss_function_abs_difference": agreement,
        "packages": {**package_versions(), "lightly": metadata.version("lightly")},
        "arms": arms_out,
    }
    atomic_write_json(args.out, result)
    for name, arm in arms_out.items():
        ratio = arm["ratio_to_lightly"]
        print(f"{name:28s} {arm['median_images_per_s'] or float('nan'):8.2f} img/s"
              f"  x{ratio or float('nan'):.2f} of lightly"
              f"  {arm['median_cpu_ms_per_image'] or float('nan'):8.1f} CPU-ms/img"
              f"  {arm['error'] or ''}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
