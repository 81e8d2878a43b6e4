"""bf16 autocast and channels_last for fine-tuning and probes (``EvaluationSpec.precision`` /
``channels_last``): the choice per device, bf16 within the stated tolerance of fp32 (CPU
autocast), and the opt-out being exactly the fp32 path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from raysweep.config import EvaluationSpec
from raysweep.evaluate import finetune, probe_batched, probe_single
from raysweep.evaluate.phases import Precision
from raysweep.models import build_encoder
from raysweep.plan.identity import protocol_settings

CLASSES = ("malignant", "normal-benign")
#: A fixed lr_max: the comparison is of the arithmetic, not of two LR-finder choices.
FIXED = EvaluationSpec(epochs=2, lr_max=1e-3, batch_size=32, tta_views=2)
BF16 = FIXED.replace(precision="bf16", channels_last=True)
#: The tolerances Precision's docstring and docs/protocol.md "Precision" state.
METRIC_TOLERANCE = 0.05
PROBABILITY_TOLERANCE = 0.01
METRICS = ("accuracy", "f1_weighted", "f1_macro", "balanced_accuracy", "auc_ovr")
TIMINGS = ("time_train_s", "time_eval_s", "time_total_s")


@pytest.fixture(scope="module")
def breast(breastmnist_npz: Path):
    data = np.load(breastmnist_npz)
    train = (data["train_images"][:192, None], data["train_labels"][:192].astype(np.int64))
    test = (data["test_images"][:, None], data["test_labels"].astype(np.int64))
    return train, test


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("small_resnet", generator=torch.Generator().manual_seed(0))


def test_auto_is_bf16_and_channels_last_on_gpus_only_and_each_opts_out() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    default = EvaluationSpec()
    assert Precision.resolve(default, cuda) == Precision(True, True, "cuda")
    assert Precision.resolve(default, cpu) == Precision(False, False, "cpu")
    opted_out = default.replace(precision="fp32", channels_last=False)
    assert Precision.resolve(opted_out, cuda) == Precision(False, False, "cuda")
    assert Precision.resolve(default.replace(precision="bf16"), cpu).bf16
    assert Precision.resolve(default.replace(channels_last=True), cpu).channels_last

    def logits(x: torch.Tensor) -> torch.Tensor:
        return x

    assert Precision.resolve(opted_out, cuda).wrap(logits) is logits  # nothing in between
    seen = {}

    def recording(x: torch.Tensor) -> torch.Tensor:
        seen["channels_last"] = x.is_contiguous(memory_format=torch.channels_last)
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        return torch.nn.functional.linear(x.mean(dim=(2, 3)), torch.ones(2, 3))

    out = Precision(True, True, "cpu").wrap(recording)(torch.rand(2, 3, 4, 4))
    assert seen == {"channels_last": True, "autocast": True}
    assert out.dtype == torch.float32  # computed in bf16, handed on as float32
    assert torch.is_autocast_enabled("cpu") is False


def test_precision_enters_row_identity_only_when_set() -> None:
    default = EvaluationSpec()
    for protocol in ("finetune", "probe"):
        assert "precision" not in protocol_settings(default, protocol)
        assert "channels_last" not in protocol_settings(default, protocol)
        assert protocol_settings(default.replace(precision="fp32"), protocol)["precision"] \
            == "fp32"
        assert protocol_settings(default.replace(channels_last=False),
                                 protocol)["channels_last"] is False
    assert protocol_settings(default.replace(precision="bf16"), "logistic") == \
        protocol_settings(default, "logistic")


@pytest.mark.slow
def test_opting_out_is_exactly_the_fp32_path(breast, encoder) -> None:
    short = FIXED.replace(epochs=1)
    opted_out = short.replace(precision="fp32", channels_last=False)
    for run in (finetune, probe_single):
        default = run(encoder, *breast, settings=short, seed=1, class_names=CLASSES)
        explicit = run(encoder, *breast, settings=opted_out, seed=1, class_names=CLASSES)
        assert {k: v for k, v in default.items() if k not in TIMINGS} == \
            {k: v for k, v in explicit.items() if k not in TIMINGS}
        assert "precision" not in explicit and "channels_last" not in explicit


@pytest.mark.slow
def test_bf16_finetune_is_within_tolerance_of_fp32(breast, encoder) -> None:
    fp32 = finetune(encoder, *breast, settings=FIXED, seed=2, class_names=CLASSES)
    bf16 = finetune(encoder, *breast, settings=BF16, seed=2, class_names=CLASSES)
    assert bf16["precision"] == "bf16" and bf16["channels_last"] is True
    for metric in METRICS:
        assert bf16[metric] == pytest.approx(fp32[metric], abs=METRIC_TOLERANCE), metric


@pytest.mark.slow
def test_bf16_probes_are_within_tolerance_of_fp32_batched_and_single(breast, encoder) -> None:
    _, fp32 = probe_single(encoder, *breast, settings=FIXED, seed=3, class_names=CLASSES,
                           return_probabilities=True)
    row, single = probe_single(encoder, *breast, settings=BF16, seed=3, class_names=CLASSES,
                               return_probabilities=True)
    rows, batched = probe_batched(encoder, *breast, settings=BF16, seeds=[3, 4],
                                  class_names=CLASSES, return_probabilities=True)
    assert not torch.equal(single, fp32)  # bf16 really ran
    assert float((single - fp32).abs().max()) <= PROBABILITY_TOLERANCE
    assert float((batched[0] - fp32).abs().max()) <= PROBABILITY_TOLERANCE
    assert rows[0]["precision"] == row["precision"] == "bf16"
    for metric in METRICS:
        assert rows[0][metric] == pytest.approx(row[metric], abs=METRIC_TOLERANCE), metric


def test_the_resolved_arithmetic_enters_row_identity() -> None:
    """``precision: auto`` resolves per device: a GPU's rows hold bf16 and channels_last, a
    CPU's hold nothing (fp32 in the default memory format, as every row stored before); a spec
    that sets both fields has the same identity on either device, the one it always had."""
    default = EvaluationSpec()
    fixed = default.replace(precision="fp32", channels_last=False)
    for protocol in ("finetune", "probe"):
        gpu = protocol_settings(default, protocol, on_gpu=True)
        cpu = protocol_settings(default, protocol, on_gpu=False)
        assert (gpu["precision"], gpu["channels_last"]) == ("bf16", True)
        assert {k: v for k, v in gpu.items() if k not in ("precision", "channels_last")} == cpu
        assert protocol_settings(fixed, protocol, on_gpu=True) == protocol_settings(
            fixed, protocol, on_gpu=False) == {**cpu, "precision": "fp32", "channels_last": False}
        # fp32 set, memory format left to the device: a GPU ran it channels_last
        assert protocol_settings(default.replace(precision="fp32"), protocol,
                                 on_gpu=True)["channels_last"] is True
    assert protocol_settings(default, "logistic", on_gpu=True) == protocol_settings(
        default, "logistic", on_gpu=False)  # its features are fp32 on any device
