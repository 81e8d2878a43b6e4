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
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_common import DATA, OUT, machine, sync

from raysweep.augment import build_pipeline
from raysweep.config import EvaluationSpec
from raysweep.evaluate import probe_batched, probe_single
from raysweep.models import build_encoder
from raysweep.storage.atomic import atomic_write_json

TIMINGS = ("time_train_s", "time_eval_s", "time_total_s", "batched_heads")
#: The most TTA probabilities may differ for the two arms to count as the same result.
PROBABILITY_TOLERANCE = 1e-5


def breastmnist(max_train: int | None = None, max_test: int | None = None
                ) -> tuple[Any, Any, tuple[str, str]]:
    """BreastMNIST's train and test splits ``(images uint8 (N, 1, 28, 28), labels)`` and its
    class names; ``max_train`` / ``max_test``: the first this many images of a split only."""
    data = np.load(DATA / "breastmnist.npz")
    train = (data["train_images"][:max_train, None],
             data["train_labels"][:max_train].astype(np.int64))
    test = (data["test_images"][:max_test, None],
            data["test_labels"][:max_test].astype(np.int64))
    return train, test, ("malignant", "normal-benign")


def compare_probes(*, seeds: int = 35, epochs: int = 3, lr_finder_iters: int = 100,
                   device: str = "cpu", max_train: int | None = None,
                   max_test: int | None = None) -> dict[str, Any]:
    """Time ``seeds`` batched probes against as many sequential single-seed probes on one
    random ``small_resnet`` and check that they give the same rows; the record (speed-up,
    equality, the largest probability difference)."""
    train, test, classes = breastmnist(max_train, max_test)
    encoder = build_encoder("small_resnet", generator=torch.Generator().manual_seed(0))
    augment = build_pipeline("supervised", image_size=28)
    settings = EvaluationSpec(epochs=epochs, lr_finder_iters=lr_finder_iters, device=device)
    seed_list = list(range(seeds))
    probe_single(encoder, train, test, settings=settings.replace(epochs=1, lr_finder_iters=5),
                 seed=0, class_names=classes, augment=augment, device=device)  # warm-up
    dev = torch.device(device)
    sync(dev)
    start = time.perf_counter()
    rows, probs = probe_batched(encoder, train, test, settings=settings, seeds=seed_list,
                                class_names=classes, augment=augment, device=device,
                                return_probabilities=True)
    sync(dev)
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    singles = [probe_single(encoder, train, test, settings=settings, seed=seed,
                            class_names=classes, augment=augment, device=device,
                            return_probabilities=True) for seed in seed_list]
    sync(dev)
    sequential_s = time.perf_counter() - start
    return {
        "benchmark": "probe_batched", "seeds": seeds,
        "settings": {"epochs": epochs, "head_epochs": settings.head_epochs,
                     "lr_finder_iters": lr_finder_iters, "batch_size": settings.batch_size,
                     "tta_views": settings.tta_views},
        "data": f"breastmnist 28px, {len(train[1])} train / {len(test[1])} test",
        "encoder": "small_resnet (random init)", "device": device,
        "torch_threads": torch.get_num_threads(), "machine": machine(dev),
        "batched_s": batched_s, "sequential_s": sequential_s,
        "speedup": sequential_s / batched_s,
        **agreement(rows, probs, singles),
        "mean_accuracy": float(np.mean([r["accuracy"] for r in rows])),
        "mean_f1_weighted": float(np.mean([r["f1_weighted"] for r in rows])),
    }


def agreement(rows: list[dict[str, Any]], probs: torch.Tensor,
              singles: list[tuple[dict[str, Any], torch.Tensor]]) -> dict[str, Any]:
    """How the batched rows and probabilities (K, N, C) compare with the single runs': rows
    equal (timings aside), seeds whose rows differ (and in which columns), the same
    predictions, the largest probability difference, and whether they count as the same."""
    differing: dict[str, list[str]] = {}
    for row, (single, _) in zip(rows, singles, strict=True):
        columns = sorted(k for k in set(row) | set(single)
                         if k not in TIMINGS and row.get(k) != single.get(k))
        if columns:
            differing[str(row["seed"])] = columns
    max_diff = max(float((probs[k] - p).abs().max()) for k, (_, p) in enumerate(singles))
    same_predictions = all(torch.equal(probs[k].argmax(1), p.argmax(1))
                           for k, (_, p) in enumerate(singles))
    return {"same_rows": not differing, "differing_rows": differing,
            "same_predictions": same_predictions, "max_probability_diff": max_diff,
            "agree": same_predictions and max_diff <= PROBABILITY_TOLERANCE}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=35)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr-finder-iters", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=OUT / "probe_batched.json")
    args = parser.parse_args()
    result = compare_probes(seeds=args.seeds, epochs=args.epochs,
                            lr_finder_iters=args.lr_finder_iters, device=args.device)
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    if not result["agree"]:
        raise SystemExit("batched and sequential probes disagree")


if __name__ == "__main__":
    main()
