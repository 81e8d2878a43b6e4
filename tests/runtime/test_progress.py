"""The evaluate stage's console lines: a Ray Tune callback, checked on a real Tune run."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysweep import console
from raysweep.runtime.progress import StageProgress, trial_line


@pytest.fixture(autouse=True)
def normal_verbosity():
    console.set_verbosity(console.NORMAL)
    yield
    console.set_verbosity(console.NORMAL)


def test_trial_line() -> None:
    line = trial_line("evaluate", 12, 29, "SL-probe-seeds0-4",
                      {"accuracy": 0.22082, "f1_weighted": 0.12279, "seeds": 5}, eta_s=41)
    assert line == ("evaluate: 12/29 trials done  SL-probe-seeds0-4  accuracy 0.221  "
                    "f1_weighted 0.123  ETA 41 s")
    assert "ETA" not in trial_line("evaluate", 29, 29, "x", {}, eta_s=3)


def test_eta_divides_what_is_left_by_the_rate_seen_here() -> None:
    progress = StageProgress()
    assert progress.eta(done=0, total=10) is None  # nothing finished yet: no rate
    progress._started = 50.0
    progress._finished_here = 4
    # 4 trials in 20 s (however many ran at once): 6 left take 30 s.
    assert progress.eta(done=4, total=10, now=70.0) == pytest.approx(30.0)


def _trainable(config: dict) -> None:
    import ray.tune

    ray.tune.report({"accuracy": config["x"] / 10, "f1_weighted": config["x"] / 20})


@pytest.mark.slow
@pytest.mark.ray
def test_one_line_per_finished_trial_and_a_summary(ray_session, tmp_path: Path, capsys) -> None:
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(_trainable, {"cpu": 1}),
        param_space={"x": tune.grid_search([1, 2, 3])},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=tune.RunConfig(name="progress", storage_path=str(tmp_path),
                                  callbacks=[StageProgress("evaluate")], verbose=0),
    )
    results = tuner.fit()
    assert not results.errors
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.startswith("evaluate:")]
    assert [line.split("  ")[0] for line in lines[:3]] == [
        "evaluate: 1/3 trials done", "evaluate: 2/3 trials done", "evaluate: 3/3 trials done"]
    assert len(lines) == 4
    assert lines[3].startswith("evaluate: 3/3 trials done in ")
    assert lines[3].endswith("(0 failed)")
    shown = {line.split("  ")[2] for line in lines[:3]}
    assert shown == {"accuracy 0.100", "accuracy 0.200", "accuracy 0.300"}
    assert "ETA" in lines[0] and "ETA" not in lines[2]
