"""Failures inside Ray trials and workers reach the user as one line (raysweep.runtime.failures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from raysweep.cli import main
from raysweep.errors import TrialError, WeightsError
from raysweep.runtime.failures import evaluation_failure, root_cause, train_failure, trial_error


def _ray_wrapped(error: BaseException):
    from ray.exceptions import RayTaskError

    return RayTaskError("evaluation_trainable", "Traceback (most recent call last):\n  ...",
                        error).as_instanceof_cause()


def test_the_raysweep_error_inside_a_ray_task_error_is_the_message():
    cause = WeightsError("weights 'file:x.pt': tensor fc.weight holds 3 NaN")
    wrapped = _ray_wrapped(cause)
    assert str(wrapped) != str(cause)  # Ray's decorated text, not the user's line
    assert root_cause(wrapped) is cause
    failure = trial_error(wrapped, what="evaluation trial c-probe-seed0", log="/r/error.txt",
                          others=2)
    assert str(failure) == ("evaluation trial c-probe-seed0 failed: weights 'file:x.pt': tensor "
                            "fc.weight holds 3 NaN (2 more failed); log: /r/error.txt")
    assert failure.user_error and failure.__cause__ is wrapped


def test_ray_train_worker_failures_are_searched_by_rank():
    from ray.train.v2.api.exceptions import WorkerGroupError

    error = WorkerGroupError("rank 1 failed", {1: _ray_wrapped(ValueError("bad\nsecond line")),
                                              0: _ray_wrapped(KeyError("k"))})
    failure = train_failure(error, "SSL-I", "/runs/pretrain/SSL-I-abc/train")
    assert str(failure) == ("pretrain run SSL-I failed: KeyError: 'k'; "
                            "log: /runs/pretrain/SSL-I-abc/train")
    assert not failure.user_error  # not the user's mistake: the CLI exits 1


def test_trial_errors_survive_pickling():
    import pickle

    failure = TrialError("trial x failed: y", user_error=False)
    again = pickle.loads(pickle.dumps(failure))
    assert (str(again), again.user_error) == ("trial x failed: y", False)


def test_results_without_errors_are_no_failure():
    class Result:
        error = None
        path = "/nowhere"
        config = {"trial": {"condition": "c", "protocol": "probe", "seeds": (0, 1)}}

    assert evaluation_failure([Result(), Result()]) is None
    failed = Result()
    failed.error = _ray_wrapped(WeightsError("w"))
    assert str(evaluation_failure([Result(), failed])) == (
        "evaluation trial c-probe-seeds0-1 failed: w; log: /nowhere")


@pytest.mark.slow
def test_a_failed_evaluation_trial_ends_the_run_in_one_line(ray_session, tmp_path: Path,
                                                            monkeypatch, capsys):
    """Weights that became NaN after the checks (here: the checks are skipped) fail inside the
    Tune trial; the command ends with that WeightsError's own line, the trial and its log."""
    from raysweep.models import build_encoder

    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("raysweep.plan.preflight.spec_file_problems", lambda spec, source="": [])
    # One restart, not the stage's two: the line must still be the failure's own after Tune
    # restarted the trial, and each restart of this deterministic failure costs a trial start.
    monkeypatch.setattr("raysweep.stages.evaluate.TRIAL_MAX_FAILURES", 1)
    state = build_encoder("small_resnet").state_dict()
    state["conv1.weight"] = torch.full_like(state["conv1.weight"], np.nan)
    torch.save(state, tmp_path / "nan.pt")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "fails", "storage": str(tmp_path / "runs"),
        "evaluate": {"data": {"sources": [{"kind": "digits"}], "image_size": 16}, "seeds": 1,
                     "protocols": ["probe"], "encoders": [{"name": "nan", "encoder": {
                         "name": "small_resnet", "weights": f"file:{tmp_path / 'nan.pt'}"}}]}}))
    assert main(["evaluate", str(spec)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: evaluation trial nan-probe-seed0 failed: weights 'file:")
    assert "tensor conv1.weight holds 432 NaN or infinite value(s) of 432" in last
    log = Path(last.rsplit("; log: ", 1)[1])
    assert log.name == "error.txt" and "WeightsError" in log.read_text()
