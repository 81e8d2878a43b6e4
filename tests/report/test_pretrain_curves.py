"""The report's pre-training curves (Jiang's thesis, Figure 7.1): the loss and the contrastive
top-1 accuracy, training and held-out validation, read from ``metrics.jsonl``, and the
exponential smoothing of plotted curves (Appendix D) as a report setting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raysweep.config import ReportSpec
from raysweep.errors import SpecError
from raysweep.report import write_report
from raysweep.report.inputs import load_pretrain_curves
from raysweep.report.plots import exponential_smoothing


def ema_by_hand(values: list[float], alpha: float) -> list[float]:
    """Eq. D.1 with the average's previous value, one step at a time."""
    out: list[float] = []
    for value in values:
        out.append(value if not out else (1 - alpha) * value + alpha * out[-1])
    return out


def test_exponential_smoothing_is_eq_d1() -> None:
    values = [4.0, 2.0, 3.0, 0.5, 1.5]
    np.testing.assert_allclose(exponential_smoothing(values, 0.6), ema_by_hand(values, 0.6),
                               rtol=1e-15)
    assert exponential_smoothing(values, 0.6)[1] == pytest.approx(0.4 * 2.0 + 0.6 * 4.0)
    assert exponential_smoothing(values, 0.0).tolist() == values
    with_gap = exponential_smoothing([1.0, np.nan, 3.0], 0.5)
    assert np.isnan(with_gap[1]) and with_gap[2] == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        exponential_smoothing(values, 1.0)
    with pytest.raises(SpecError, match="curve_smoothing: must be in"):
        ReportSpec(curve_smoothing=1.5)


def _experiment(root: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = [{"protocol": "finetune", "condition": c, "seed": s, "accuracy": rng.random(),
             "f1_weighted": rng.random()} for c in ("a", "b") for s in range(3)]
    root.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(root / "results.parquet")
    monitored = root / "pretrain" / "simclr-0a1b2c"
    monitored.mkdir(parents=True)
    monitored.joinpath("metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "loss": 5 - e, "contrastive_top1": 0.1 * e,
                    "val_loss": 5.5 - e, "val_contrastive_top1": 0.08 * e}) + "\n"
        for e in range(5)))
    monitored.joinpath("meta.json").write_text(json.dumps({"name": "simclr"}))
    plain = root / "pretrain" / "sl-3c4d5e"
    plain.mkdir(parents=True)
    plain.joinpath("metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "loss": 2.0 / (e + 1)}) + "\n" for e in range(3)))
    plain.joinpath("meta.json").write_text(json.dumps({"name": "sl"}))
    return root


def test_the_report_draws_loss_and_top1_with_their_validation_curves(tmp_path: Path) -> None:
    experiment = _experiment(tmp_path / "exp")
    curves = load_pretrain_curves(experiment)
    assert list(curves.columns) == ["run", "epoch", "loss", "contrastive_top1", "val_loss",
                                    "val_contrastive_top1"]
    monitored = curves[curves["run"] == "simclr"].sort_values("epoch")
    assert monitored["val_contrastive_top1"].tolist() == pytest.approx(
        [0.08 * e for e in range(5)])
    assert curves[curves["run"] == "sl"]["contrastive_top1"].isna().all()

    settings = ReportSpec(metrics=("accuracy",), tests=("welch",), bootstrap_resamples=100,
                          curve_smoothing=0.6)
    paths = write_report(experiment, settings=settings, dpi=30)
    names = {p.name for p in paths.figures}
    assert {"pretrain-loss.png", "pretrain-top1.png"} <= names
    text = paths.markdown.read_text()
    assert "Contrastive top-1 accuracy" in text
    assert "Exponentially smoothed (alpha 0.6), the true lines semi-transparent." in text
    # without smoothing the captions say nothing of it, and no run with a top-1: no figure
    (experiment / "pretrain" / "simclr-0a1b2c" / "metrics.jsonl").unlink()
    paths = write_report(experiment, out_dir=tmp_path / "plain",
                         settings=settings.replace(curve_smoothing=0.0), dpi=30)
    assert "pretrain-top1.png" not in {p.name for p in paths.figures}
    assert "smoothed" not in paths.markdown.read_text()
