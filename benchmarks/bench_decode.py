"""Decode-once cache: decoding JPEGs to the cache serially and on every core.

Writes ``--images`` JPEGs of 600 x 450 px (the size of ISIC 2019 / HAM10000 images; smooth
colour fields with texture and noise, quality 90, about 75 KB each, seeded) into a scratch folder,
then decodes them into a fresh cache entry at ``--size`` px twice, side by side in one process:
**serial** (``RAYSWEEP_DECODE_WORKERS=1``: this process only) and **parallel**
(``--workers``, default every CPU this process may use). Each arm runs the cache's own decode
(header probe, decode, resize, write into ``images.u8``); file hashing, which both arms share and
which is cached across runs, is not timed. CPU time (this process and the pool's workers) is
measured too: on a shared machine the CPUs the parallel arm actually got explain its speed-up.
The arms run ``--repeat`` times in alternating order
(S P P S ...) and each keeps its fastest run, so that a load that comes and goes on a shared
machine favours neither. Checks that every entry holds the same bytes, writes
``benchmarks/out/decode.json``.

    python benchmarks/bench_decode.py [--images 2000] [--size 256] [--workers N] [--repeat 2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from raysweep.config import SourceSpec
from raysweep.data import read_source
from raysweep.data.cache import _decode_source
from raysweep.data.decode_pool import decode_workers
from raysweep.storage.atomic import atomic_write_json
from raysweep.storage.provenance import package_versions

ROOT = Path(__file__).resolve().parents[1]


def write_images(folder: Path, count: int, seed: int = 0) -> int:
    """``count`` 600 x 450 RGB JPEGs in ``folder/lesion``; returns their total bytes."""
    rng = np.random.default_rng(seed)
    (folder / "lesion").mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:450, 0:600].astype(np.float32)
    total = 0
    for i in range(count):
        cy, cx, r = rng.uniform(150, 300), rng.uniform(200, 400), rng.uniform(60, 160)
        blob = np.exp(-(((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r)))[..., None]
        skin = rng.uniform(150, 230, size=3).astype(np.float32)
        lesion = rng.uniform(40, 120, size=3).astype(np.float32)
        texture = 12 * np.sin(x / rng.uniform(5, 15) + y / rng.uniform(5, 15))[..., None]
        noise = rng.normal(0, 6, size=(450, 600, 1)).astype(np.float32)
        pixels = skin * (1 - blob) + lesion * blob + texture + noise
        path = folder / "lesion" / f"img{i:05d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        total += path.stat().st_size
    return total


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (user + system)."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def decode_arm(folder: Path, size: int, workers: int) -> tuple[float, float, str, tuple]:
    """Wall and CPU seconds to decode ``folder`` into a fresh entry with ``workers`` processes
    (pool start included, its workers stopped before the CPU time is read); the sha256 of the
    entry's bytes and its shape."""
    from joblib.externals.loky import get_reusable_executor

    os.environ["RAYSWEEP_DECODE_WORKERS"] = str(workers)
    listing = read_source(SourceSpec(kind="folder", path=str(folder), labelled=False))
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        get_reusable_executor().shutdown(wait=True)  # each arm starts its own workers
        cpu, start = cpu_seconds(), time.perf_counter()
        shape, kept, skipped = _decode_source(listing, size, Path(tmp), progress=True)
        seconds = time.perf_counter() - start
        get_reusable_executor().shutdown(wait=True)  # reaps the workers: their CPU time counts
        cpu = cpu_seconds() - cpu
        assert not skipped and len(kept) == len(listing)
        digest = hashlib.sha256((Path(tmp) / "images.u8").read_bytes()).hexdigest()
    return seconds, cpu, digest, shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=decode_workers())
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "decode.json")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-decode-images-"))
    try:
        start = time.perf_counter()
        jpeg_bytes = write_images(scratch, args.images)
        written_s = time.perf_counter() - start
        load_before = os.getloadavg()
        runs: dict[int, list[tuple[float, float]]] = {1: [], args.workers: []}
        digests, shape = set(), ()
        for repeat in range(args.repeat):
            order = (1, args.workers) if repeat % 2 == 0 else (args.workers, 1)
            for workers in order:
                seconds, cpu, digest, shape = decode_arm(scratch, args.size, workers)
                runs[workers].append((seconds, cpu))
                digests.add(digest)
        load_after = os.getloadavg()
        (serial_s, serial_cpu), (parallel_s, parallel_cpu) = (min(runs[1]),
                                                              min(runs[args.workers]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    result = {
        "benchmark": "decode",
        "command": f"python benchmarks/bench_decode.py --images {args.images} --size {args.size}"
                   f" --workers {args.workers} --repeat {args.repeat}",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
                    "load_average_before": load_before, "load_average_after": load_after},
        "images": args.images, "source_px": [600, 450], "size": args.size,
        "mean_jpeg_kb": round(jpeg_bytes / args.images / 1024, 1),
        "write_images_s": round(written_s, 2), "entry_shape": list(shape),
        "workers": args.workers,
        "runs_wall_cpu_s": {"serial": [[round(w, 2), round(c, 2)] for w, c in runs[1]],
                            "parallel": [[round(w, 2), round(c, 2)] for w, c in
                                         runs[args.workers]]},
        "serial_s": round(serial_s, 2), "parallel_s": round(parallel_s, 2),
        "serial_cpu_s": round(serial_cpu, 2), "parallel_cpu_s": round(parallel_cpu, 2),
        # CPUs the parallel arm actually got, on average, and the work the pool added:
        "parallel_cpus_used": round(parallel_cpu / parallel_s, 2),
        "pool_cpu_overhead": round(parallel_cpu / serial_cpu - 1, 3),
        "serial_img_per_s": round(args.images / serial_s, 1),
        "parallel_img_per_s": round(args.images / parallel_s, 1),
        "speedup": round(serial_s / parallel_s, 2),
        "identical_bytes": len(digests) == 1, "entry_sha256": sorted(digests),
        "versions": package_versions(),
    }
    atomic_write_json(args.out, result)
    print(f"serial {result['serial_img_per_s']} img/s, parallel ({args.workers} workers) "
          f"{result['parallel_img_per_s']} img/s: {result['speedup']}x (the parallel arm got "
          f"{result['parallel_cpus_used']} CPUs on average; pool CPU overhead "
          f"{100 * result['pool_cpu_overhead']:.1f}%); identical bytes: "
          f"{result['identical_bytes']} -> {args.out}")
    if not result["identical_bytes"]:
        raise SystemExit("parallel decode differs from serial")


if __name__ == "__main__":
    main()
