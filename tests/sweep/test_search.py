"""An Optuna search inside Ray Tune: each trial pre-trains with its sampled knobs and is scored
by batched linear probes; the history lands in trials.csv."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from raysweep.config import spec_from_data
from raysweep.sweep.search import run_searches, trial_specs

pytestmark = [pytest.mark.ray, pytest.mark.slow]

DIGITS = {"sources": [{"kind": "digits", "classes": ["0", "1", "2"]}], "image_size": 16,
          "test_fraction": 0.3, "label_count": 30}


def search_spec(storage: Path) -> dict:
    return {"name": "searchdemo", "storage": str(storage), "search": [{
        "name": "bt",
        "pretrain": {"name": "bt", "data": DIGITS, "encoder": {"name": "small_resnet"},
                     "further": False, "frozen_epochs": 0, "epochs": 1, "batch_size": 32,
                     "lr_max": 1e-3, "projector": [32, 32]},
        "evaluate": {"data": DIGITS, "seeds": 2, "encoders": [{"name": "unused"}],
                     "settings": {"epochs": 1, "batch_size": 16, "lr_finder_iters": 5,
                                  "tta_views": 0}},
        "space": {"pretrain.lambda_offdiag": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
                  "pretrain.strength": {"type": "uniform", "low": 0.5, "high": 1.5}},
        "num_samples": 2, "max_concurrent_trials": 1, "scheduler": "none", "seed": 3,
    }]}


def test_trial_specs_apply_the_sampled_knobs(tmp_path: Path):
    search = spec_from_data(search_spec(tmp_path)).search[0]
    run, settings = trial_specs(search, {"pretrain.lambda_offdiag": 0.05,
                                         "pretrain.strength": 0.7}, "t1")
    assert (run.name, run.lambda_offdiag, run.strength) == ("bt-t1", 0.05, 0.7)
    assert settings == search.evaluate.settings


def test_search_runs_trials_and_writes_history(ray_session, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    spec = spec_from_data(search_spec(tmp_path))
    run_searches(spec)
    history = pd.read_csv(spec.directory / "search" / "bt" / "trials.csv")
    assert len(history) == 2
    assert history["value"].between(0, 1).all()
    lambdas = history["config/pretrain.lambda_offdiag"]
    assert lambdas.between(1e-3, 1e-1).all() and lambdas.nunique() == 2
    # Each trial pre-trained with its own sampled lambda (recorded in the run's meta.json).
    metas = [json.loads(p.read_text()) for p in
             (spec.directory / "search" / "bt" / "pretrain").glob("*/meta.json")]
    recorded = sorted(m["spec"]["lambda_offdiag"] for m in metas)
    assert recorded == pytest.approx(sorted(lambdas))
    best = json.loads((spec.directory / "search" / "bt" / "best.json").read_text())
    assert best["value"] == pytest.approx(history["value"].max())
