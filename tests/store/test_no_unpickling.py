"""Nothing read back from storage is unpickled: pickles planted at every path raysweep reads
(fine-tuning and pre-training checkpoints, rows, Tune's state, the stored spec) never run, and
the results are those of a clean run."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import yaml

from raysweep.config import spec_from_data
from raysweep.plan.identity import identify_trials, trial_refs
from raysweep.stages.evaluate import checkpoint_path, evaluate_trial_rows
from raysweep.store.results import ResultsStore

METRICS = ("accuracy", "f1_weighted", "confusion_matrix", "lr_max")


class Plant:
    """Unpickling this creates ``marker``: proof that code from storage ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path: Path, marker: Path, *, torch_format: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if torch_format:
        torch.save({"epoch": 1, "model": Plant(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Plant(marker)))


def spec_data(storage: Path) -> dict:
    return {
        "name": "planted", "storage": str(storage),
        "evaluate": {
            "data": {"sources": [{"kind": "digits", "classes": ["5", "6", "7"]}],
                     "image_size": 16, "label_count": 30},
            "seeds": 2, "protocols": ["finetune", "probe"],
            "settings": {"epochs": 2, "batch_size": 16, "lr_max": 1e-3, "tta_views": 0},
            "encoders": [{"name": "r", "encoder": {"name": "small_resnet"}}],
        },
    }


def test_planted_evaluation_files_never_run(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "PWNED"
    spec = spec_from_data(spec_data(tmp_path / "runs"))
    trials = identify_trials(spec)
    finetune = [t for t in trials if t.protocol == "finetune"]
    probe = [t for t in trials if t.protocol == "probe"]
    # A fine-tuning checkpoint (torch format and raw pickle) and a row file, at their paths.
    plant(checkpoint_path(spec, trial_refs(finetune[0])[0]), marker)
    plant(checkpoint_path(spec, trial_refs(finetune[1])[0]), marker, torch_format=False)
    store = ResultsStore(spec.directory)
    plant(store.row_path(trial_refs(probe[0])[0]), marker, torch_format=False)
    with pytest.warns(UserWarning, match="ignoring unreadable checkpoint"):
        rows = [row for trial in trials for row in evaluate_trial_rows(spec, trial)]
    assert not marker.exists()
    assert not list((spec.directory / "checkpoints").glob("*.pt"))

    reference = spec_from_data(spec_data(tmp_path / "clean"))
    clean = [row for trial in identify_trials(reference)
             for row in evaluate_trial_rows(reference, trial)]
    for got, expected in zip(rows, clean, strict=True):
        assert {m: got[m] for m in METRICS} == {m: expected[m] for m in METRICS}


def test_a_planted_spec_file_never_runs(tmp_path: Path, capsys):
    from raysweep.cli import main

    marker = tmp_path / "PWNED"
    experiment = tmp_path / "exp"
    experiment.mkdir()
    (experiment / "experiment.yaml").write_text(
        f"!!python/object/apply:os.system ['touch {marker}']\n")
    (experiment / "results.parquet").write_bytes(pickle.dumps(Plant(marker)))
    assert main(["report", str(experiment)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not marker.exists()
    with pytest.raises(yaml.YAMLError):  # what a full loader would have run
        yaml.safe_load((experiment / "experiment.yaml").read_text())


def test_planted_pretraining_checkpoint_never_runs(tmp_path: Path):
    from raysweep.config import DatasetSpec, EncoderSpec, PretrainSpec
    from raysweep.ssl.pretrain import checkpoint as ckpt
    from raysweep.ssl.pretrain.hooks import LocalHooks
    from raysweep.ssl.pretrain.loop import TrainingData, pretrain_worker

    spec = PretrainSpec(name="tiny", data=DatasetSpec(sources=({"kind": "digits"},),
                                                      image_size=16),
                        encoder=EncoderSpec(name="small_resnet"), projector=(32, 32),
                        batch_size=8, epochs=1, frozen_epochs=0, lr_max=1e-2,
                        deterministic=True)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 1, 16, 16), generator=generator, dtype=torch.uint8)
    data = TrainingData(images.numpy(), torch.arange(8).numpy(), (torch.arange(8) % 2).numpy(),
                        ("a", "b"))

    def views(x, generator):
        return x, x.flip(-1)

    marker = tmp_path / "PWNED"
    planted = tmp_path / "planted"
    plant(planted / "checkpoint_000001" / ckpt.STATE_FILE, marker)
    plant(planted / "checkpoint_000001" / "rng_rank0.pt", marker, torch_format=False)
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        pretrain_worker(spec, LocalHooks(planted), data=data, transform=views)
    assert not marker.exists()
    pretrain_worker(spec, LocalHooks(tmp_path / "clean"), data=data, transform=views)
    got = ckpt.load_state(planted / "checkpoint_000000").net  # epoch 0, trained afresh
    expected = ckpt.load_state(tmp_path / "clean" / "checkpoint_000000").net
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)


@pytest.mark.slow
@pytest.mark.ray
def test_planted_tune_state_never_runs(ray_session, tmp_path: Path, monkeypatch):
    from raysweep import api

    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "PWNED"
    data = spec_data(tmp_path / "runs")
    data["evaluate"]["protocols"] = ["probe"]
    spec = spec_from_data(data)
    old = spec.directory / "tune" / "evaluate-20260101-000000-1"
    for name in ("tuner.pkl", "trainable.pkl", "trial-x/params.pkl", "trial-x/checkpoint.pkl"):
        plant(old / name, marker, torch_format=False)
    (old / "experiment_state-2026.json").write_text(
        '{"trial_data": [["' + pickle.dumps(Plant(marker)).hex() + '", "{}"]]}')
    table_path = api.evaluate(spec)
    assert not marker.exists()
    assert not old.exists()  # earlier Tune state is deleted, never read
    import pandas as pd

    assert len(pd.read_parquet(table_path)) == 2
