"""35-seed linear probe: batched (one shared encoder pass) against 35 sequential single-seed runs.

Same protocol, data (breastmnist, 28 px: 546 train / 156 test images), encoder (``small_resnet``,
random init from a fixed generator) and ``supervised`` augmentation, measured side by side in one
process. The epochs are reduced so the sequential arm finishes in minutes on a CPU: ``epochs``
(default 3, the paper's 40); LR finder 100 iterations, head epoch, batch 64 and 3 TTA views as
in the paper. Both arms do the same number of encoder passes per seed, so the speed-up does not
depend much on the epoch count. One untimed single-seed probe warms up first (allocator, kernels).

Checks that both arms give the same rows (timings aside) and the same TTA probabilities (1e-5),
writes ``benchmarks/out/probe_batched.json``.

    OMP_NUM_THREADS=1 python benchmarks/bench_probe_batched.py [--seeds 35] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from raysweep.artefacts import atomic_write_json
from raysweep.augment import build_pipeline
from raysweep.config import EvaluationSpec
from raysweep.evaluate import probe_batched, probe_single
from raysweep.models import build_encoder

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RAYSWEEP_SHARED_DATA", ROOT / "tests" / "data" / "medmnist"))
TIMINGS = ("time_train_s", "time_eval_s", "time_total_s", "batched_heads")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=35)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr-finder-iters", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" /
                        "probe_batched.json")
    args = parser.parse_args()

    data = np.load(DATA / "breastmnist.npz")
    train = (data["train_images"][:, None], data["train_labels"].astype(np.int64))
    test = (data["test_images"][:, None], data["test_labels"].astype(np.int64))
    classes = ("malignant", "normal-benign")
    encoder = build_encoder("small_resnet", generator=torch.Generator().manual_seed(0))
    augment = build_pipeline("supervised", image_size=28)
    settings = EvaluationSpec(epochs=args.epochs, lr_finder_iters=args.lr_finder_iters,
                              device=args.device)
    seeds = list(range(args.seeds))
    probe_single(encoder, train, test, settings=settings.replace(epochs=1, lr_finder_iters=5),
                 seed=0, class_names=classes, augment=augment, device=args.device)

    start = time.perf_counter()
    rows, probs = probe_batched(encoder, train, test, settings=settings, seeds=seeds,
                                class_names=classes, augment=augment, device=args.device,
                                return_probabilities=True)
    batched_s = time.perf_counter() - start

    start = time.perf_counter()
    singles = [probe_single(encoder, train, test, settings=settings, seed=seed,
                            class_names=classes, augment=augment, device=args.device,
                            return_probabilities=True) for seed in seeds]
    sequential_s = time.perf_counter() - start

    strip = [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]
    same_rows = all(strip[k] == {k2: v for k2, v in singles[k][0].items() if k2 not in TIMINGS}
                    for k in range(len(seeds)))
    max_prob_diff = max(float((probs[k] - singles[k][1]).abs().max()) for k in range(len(seeds)))
    same_predictions = all(torch.equal(probs[k].argmax(1), singles[k][1].argmax(1))
                           for k in range(len(seeds)))
    result = {
        "benchmark": "probe_batched",
        "seeds": len(seeds),
        "settings": {"epochs": args.epochs, "head_epochs": settings.head_epochs,
                     "lr_finder_iters": args.lr_finder_iters,
                     "batch_size": settings.batch_size, "tta_views": settings.tta_views},
        "data": "breastmnist 28px, 546 train / 156 test",
        "encoder": "small_resnet (random init)",
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "batched_s": batched_s,
        "sequential_s": sequential_s,
        "speedup": sequential_s / batched_s,
        "same_rows": same_rows,
        "same_predictions": same_predictions,
        "max_probability_diff": max_prob_diff,
        "mean_accuracy": float(np.mean([r["accuracy"] for r in rows])),
        "mean_f1_weighted": float(np.mean([r["f1_weighted"] for r in rows])),
    }
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    if not (same_predictions and max_prob_diff <= 1e-5):
        raise SystemExit("batched and sequential probes disagree")


if __name__ == "__main__":
    main()
