"""Seed streams, the LR finder leaving no trace, and the multi-seed probe's batching and
fallbacks (tiny encoder)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from raysweep.config import EvaluationSpec
from raysweep.errors import RaysweepError
from raysweep.evaluate import SeedStreams, probe, probe_single

TIMINGS = ("time_train_s", "time_eval_s", "time_total_s", "batched_heads")


class TinyEncoder(nn.Module):
    """Global-average-pooled 3x3 convolution with BatchNorm: (B, 3, H, W) -> (B, 8)."""

    output_dim = 8

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen) * 0.3)
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=gen) * 0.1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))


def flip_and_jitter(x: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return (x * (0.8 + 0.4 * torch.rand(x.shape[0], 1, 1, 1, generator=generator))).clamp(0, 1)


@pytest.fixture(scope="module")
def toy_pair():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=120)
    images = rng.integers(0, 80, size=(120, 1, 12, 12)) + (labels * 60)[:, None, None, None]
    images = images.astype(np.uint8)
    return (images[:90], labels[:90]), (images[90:], labels[90:])


SETTINGS = EvaluationSpec(epochs=2, lr_finder_iters=12, batch_size=16)
NAMES = ("a", "b", "c")


def test_seed_scope_head_shares_every_stream_but_the_head() -> None:
    def draw(gen: torch.Generator) -> list[int]:
        return torch.randint(0, 10**9, (4,), generator=gen).tolist()

    s3, s4 = SeedStreams(3, "head"), SeedStreams(4, "head")
    assert draw(s3.head()) != draw(s4.head())
    for purpose in ("data_order", "train_aug", "tta"):
        assert draw(getattr(s3, purpose)()) == draw(getattr(s4, purpose)())
    assert draw(s3.lr_finder()[0]) == draw(s4.lr_finder()[0])
    a3, a4 = SeedStreams(3, "all"), SeedStreams(4, "all")
    for purpose in ("head", "data_order", "train_aug", "tta"):
        assert draw(getattr(a3, purpose)()) != draw(getattr(a4, purpose)())
    assert draw(a3.head()) == draw(s3.head())  # the head stream never depends on the scope
    # independent purposes: the data order is not the augmentation stream
    assert draw(s3.data_order()) != draw(s3.train_aug())


def test_lr_finder_leaves_no_trace(toy_pair) -> None:
    found = probe_single(TinyEncoder(), *toy_pair, settings=SETTINGS, seed=2, class_names=NAMES,
                         augment=flip_and_jitter)
    given = probe_single(TinyEncoder(), *toy_pair, settings=SETTINGS.replace(
        lr_max=found["lr_max"]), seed=2, class_names=NAMES, augment=flip_and_jitter)
    differs = {k for k in found if k not in TIMINGS and found[k] != given[k]}
    assert differs == {"lr_finder"}  # model, optimiser and data streams were all restored
    assert json.loads(given["lr_finder"])["suggestion"] is None


def test_probe_batches_seeds_and_falls_back_to_separate_runs(toy_pair) -> None:
    encoder = TinyEncoder()
    rows = probe(encoder, *toy_pair, settings=SETTINGS, seeds=[0, 1], class_names=NAMES,
                 augment=flip_and_jitter)
    assert [(r["protocol"], r["seed"]) for r in rows] == [("probe", 0), ("probe", 1)]
    assert [r["batched_heads"] for r in rows] == [2, 2]
    assert all(r["bn_in_head_epoch"] == "frozen" for r in rows)
    # batching off, or seed_scope "all": separate runs; the former gives the same rows
    separate = probe(encoder, *toy_pair, settings=SETTINGS.replace(batched_probes=False),
                     seeds=[0, 1], class_names=NAMES, augment=flip_and_jitter)
    for got, want in zip(separate, rows, strict=True):
        assert {k: v for k, v in got.items() if k not in TIMINGS} == \
            {k: v for k, v in want.items() if k not in TIMINGS}
    scoped = probe(encoder, *toy_pair, settings=SETTINGS.replace(seed_scope="all"),
                   seeds=[0, 1], class_names=NAMES, augment=flip_and_jitter)
    assert [r["batched_heads"] for r in scoped] == [1, 1]
    assert scoped[0]["seed_scope"] == "all" and scoped[1]["lr_finder"] != rows[1]["lr_finder"]
    with pytest.raises(RaysweepError, match="duplicate seeds"):
        probe(encoder, *toy_pair, settings=SETTINGS, seeds=[1, 1], class_names=NAMES,
              augment=flip_and_jitter)


def test_probe_heads_take_torchs_single_tensor_adam_that_batched_heads_repeat(
        toy_pair, monkeypatch) -> None:
    """On CUDA torch's Adam defaults to its multi-tensor path, whose last step rounds
    differently from the single-tensor one that :class:`raysweep.optim.BatchedAdam` repeats:
    a probe's optimiser must ask for the single-tensor path on every device (fine-tuning keeps
    torch's default), and the batched heads still equal single probes bit for bit."""
    from raysweep.evaluate import finetune, probe_batched, protocol

    made = []
    original = protocol.make_optimizer

    def recording(params, lr, settings, **kw):
        optimizer = original(params, lr, settings, **kw)
        made.append(optimizer.defaults["foreach"])
        return optimizer

    monkeypatch.setattr(protocol, "make_optimizer", recording)
    short = SETTINGS.replace(epochs=1, lr_finder_iters=5, tta_views=1)
    single = probe_single(TinyEncoder(), *toy_pair, settings=short, seed=2, class_names=NAMES,
                          augment=flip_and_jitter)
    assert made == [False]  # the probe's one optimiser
    finetune(TinyEncoder(), *toy_pair, settings=short, seed=2, class_names=NAMES,
             augment=flip_and_jitter)
    assert made[1:] == [None, None]  # head epoch and fine-tuning: torch's default
    [batched] = probe_batched(TinyEncoder(), *toy_pair, settings=short, seeds=[2],
                              class_names=NAMES, augment=flip_and_jitter)
    assert {k: v for k, v in batched.items() if k not in TIMINGS} == \
        {k: v for k, v in single.items() if k not in TIMINGS}
