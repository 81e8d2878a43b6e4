"""Barlow Twins pre-training throughput (images/s): device pipeline against a per-sample one.

Two data pipelines feed the same training step (encoder + projector, Barlow Twins loss, Adam),
measured side by side in one process on the same images (BreastMNIST, all 780 images):

* ``device``: raysweep's path, the decode-once uint8 cache (``raysweep.data.load_dataset``),
  index batches, ``to_float_rgb`` and the batched kornia Barlow Twins views
  (``raysweep.augment.build_views``) on the training device;
* ``per_sample``: the classic torchvision path, a ``DataLoader`` over PNG files decoded with PIL
  per sample, each view built by torchvision transforms per image (the Barlow Twins recipe:
  random resized crop, flip, colour jitter, grayscale, blur, solarise), collated on the CPU.

For each encoder: images/s of the data pipeline alone and of full training steps, and the
training step's FLOPs (``torch.utils.flop_counter.FlopCounterMode``) giving achieved FLOP/s. On a
GPU also fp32 against bf16 autocast + channels_last, and model FLOPs utilisation against the
device's peak (``bench_common.PEAK_FLOPS``). Writes ``benchmarks/out/pretrain_throughput.json``.

    OMP_NUM_THREADS=1 python benchmarks/bench_pretrain_throughput.py [--device cuda] [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_common import DATA, ROOT, count_flops, device_name, peak_flops, sync

from raysweep.augment import build_views
from raysweep.config import DatasetSpec
from raysweep.data import load_dataset, to_float_rgb
from raysweep.models import Projector, build_encoder
from raysweep.ssl.losses import barlow_twins_loss
from raysweep.ssl.pretrain.loop import PretrainNet
from raysweep.storage.atomic import atomic_write_json
from raysweep.storage.provenance import package_versions

#: (encoder, image size, global batch, projector widths) per configuration. CPU: small
#: resolutions and a narrow projector so that a 2-core machine finishes in minutes.
CONFIGS_CPU = (("small_resnet", 32, 64, (512, 512)), ("resnet50", 64, 32, (1024, 1024)))
CONFIGS_GPU = (("small_resnet", 32, 256, (512, 512)),
               ("resnet50", 224, 128, (8192, 8192, 8192)))


# ---------------------------------------------------------------------------------------------
# The two pipelines: each yields (view_a, view_b) float batches on the device.
# ---------------------------------------------------------------------------------------------


def device_batches(images: Any, index: np.ndarray, size: int, batch: int,
                   device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    views = build_views("barlow_twins", image_size=size)
    generator = torch.Generator().manual_seed(0)
    order = np.random.default_rng(0).permutation(index)
    step = 0
    while True:
        chunk = order[(step * batch) % (len(order) - batch):][:batch]
        x = to_float_rgb(torch.from_numpy(np.ascontiguousarray(images[np.sort(chunk)]))
                         .to(device, non_blocking=True))
        yield views(x, generator=generator)
        step += 1


def write_pngs(images: Any, index: np.ndarray, folder: Path) -> list[Path]:
    from PIL import Image

    paths = []
    for i in index:
        image = np.asarray(images[i])
        path = folder / f"{i:06d}.png"
        Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)).save(path)
        paths.append(path)
    return paths


def per_sample_batches(paths: list[Path], size: int, batch: int, device: torch.device,
                       workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    from PIL import Image
    from torchvision import transforms as T

    def view(blur_p: float, solarize_p: float) -> Callable[[Any], torch.Tensor]:
        kernel = max(3, (size // 10) | 1)
        return T.Compose([
            T.RandomResizedCrop(size, scale=(0.08, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur_p),
            T.RandomSolarize(128, p=solarize_p),
            T.ToTensor(),
        ])

    first, second = view(1.0, 0.0), view(0.1, 0.2)

    class Files(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            with Image.open(paths[i]) as handle:
                image = handle.convert("RGB")
            return first(image), second(image)

    loader = torch.utils.data.DataLoader(
        Files(), batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0))
    while True:
        for a, b in loader:
            yield a.to(device, non_blocking=True), b.to(device, non_blocking=True)


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def make_step(encoder_name: str, widths: tuple[int, ...], device: torch.device, bf16: bool,
              channels_last: bool) -> Callable[[torch.Tensor, torch.Tensor], float]:
    g = torch.Generator().manual_seed(0)
    encoder = build_encoder(encoder_name, generator=g)
    net = PretrainNet(encoder, Projector(encoder.output_dim, widths, generator=g))
    net = net.to(device, memory_format=torch.channels_last if channels_last
                 else torch.contiguous_format).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=1.5e-6)

    def step(a: torch.Tensor, b: torch.Tensor) -> float:
        if channels_last:
            a = a.contiguous(memory_format=torch.channels_last)
            b = b.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            z_a, z_b = net(a, b)
        loss = barlow_twins_loss(z_a, z_b, lambda_offdiag=1 / 8192)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def images_per_s(batches: Iterator[tuple[torch.Tensor, torch.Tensor]], batch: int, steps: int,
                 device: torch.device, step: Callable[..., float] | None) -> float:
    for _ in range(2):  # warm-up: loader workers, kernels, allocator
        a, b = next(batches)
        if step is not None:
            step(a, b)
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        a, b = next(batches)
        if step is not None:
            step(a, b)
    sync(device)
    return steps * batch / (time.perf_counter() - started)


def step_flops(step: Callable[..., float], batches: Iterator[Any]) -> int:
    a, b = next(batches)
    return count_flops(lambda: step(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--loader-workers", type=int, default=1)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "out" / "pretrain_throughput.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    configs = CONFIGS_GPU if device.type == "cuda" else CONFIGS_CPU
    precisions = ((False, False), (True, True)) if device.type == "cuda" else ((False, False),)
    rows = []
    with tempfile.TemporaryDirectory(prefix="raysweep-bench-") as tmp:
        for encoder_name, size, batch, widths in configs:
            data = load_dataset(DatasetSpec(
                sources=({"kind": "medmnist", "path": str(DATA / "breastmnist.npz")},),
                image_size=size, cache_dir=str(Path(tmp) / "cache")), progress=False)
            index = data.unlabelled()
            folder = Path(tmp) / f"png{size}"
            folder.mkdir()
            paths = write_pngs(data.images, np.unique(index), folder)
            pipelines = {
                "device": lambda data=data, index=index, size=size, batch=batch:
                    device_batches(data.images, index, size, batch, device),
                "per_sample": lambda paths=paths, size=size, batch=batch:
                    per_sample_batches(paths, size, batch, device, args.loader_workers),
            }
            for bf16, channels_last in precisions:
                step = make_step(encoder_name, widths, device, bf16, channels_last)
                flops = step_flops(step, pipelines["device"]())
                row: dict[str, Any] = {
                    "encoder": encoder_name, "image_size": size, "batch": batch,
                    "projector": list(widths), "bf16": bf16, "channels_last": channels_last,
                    "train_step_flops": flops,
                }
                for name, make in pipelines.items():
                    row[f"{name}_data_images_per_s"] = images_per_s(make(), batch, args.steps,
                                                                    device, None)
                    row[f"{name}_train_images_per_s"] = images_per_s(make(), batch, args.steps,
                                                                     device, step)
                achieved = flops / batch * row["device_train_images_per_s"]
                row["device_train_flops_per_s"] = achieved
                peak = peak_flops(device_name(device), bf16)[0] if device.type == "cuda" else None
                row["mfu"] = achieved / peak if peak else None
                row["speedup_device_vs_per_sample"] = (row["device_train_images_per_s"]
                                                       / row["per_sample_train_images_per_s"])
                rows.append(row)
                print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()},
                      flush=True)
    result = {
        "device": str(device),
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "steps": args.steps, "loader_workers": args.loader_workers,
        "packages": package_versions(), "rows": rows,
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
