"""The mechanisms behind the hostile-input refusals, each on several inputs: the journal check
(agreeing with Optuna's own reader), ``raysweep search`` refusing a damaged journal before Ray
starts, a full decode cache, an estimate that cannot be measured here, an object store without
a network, ``.npz`` files that are no archive, non-finite means in ``--from-stats`` and a
``--dry-run`` on an experiment holding a link out of it."""

from __future__ import annotations

import errno
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from raysweep.cli import main
from raysweep.errors import DataError, OutputError, RaysweepError, SpecError
from raysweep.storage.reading import StoredFileError

GARBAGE = np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes()
CREATE = '{"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}\n'
TRIAL = ('{"op_code": 4, "worker_id": "w", "study_id": 0, "datetime_start": null, '
         '"state": %s}\n')


# --------------------------------------------------------------------- the journal check


@pytest.mark.parametrize(("text", "reason"), [
    (CREATE + "\n" + TRIAL % 1, "line 2 is blank"),
    ("\n\n", "line 1 is blank"),
    (CREATE + TRIAL % 99, "99 is not a valid TrialState"),
    (CREATE + '{"op_code": 6, "trial_id": 0, "values": [1e400]}\n', "not a finite number"),
    (CREATE + "[1, 2]\n" + TRIAL % 1, "line 2 is no Optuna journal record"),
    (CREATE + "{oops\n" + TRIAL % 1, "line 2 is not JSON"),
])
def test_a_journal_optuna_cannot_replay_is_one_line(tmp_path: Path, text: str,
                                                     reason: str) -> None:
    from raysweep.search.study import open_storage

    path = tmp_path / "study.journal"
    path.write_text(text)
    with pytest.raises(StoredFileError, match=reason) as caught:
        open_storage(path, root=tmp_path)
    assert str(caught.value).startswith("study.journal is unreadable")


@pytest.mark.parametrize("tail", ["", "\n", TRIAL[:25]])
def test_a_journal_optuna_reads_is_accepted(tmp_path: Path, tail: str) -> None:
    """A trailing blank line or a last line still being appended: Optuna skips both."""
    from raysweep.search.study import load_stored_study

    path = tmp_path / "study.journal"
    path.write_text(CREATE + TRIAL % 1 + tail)
    study = load_stored_study(path, "s", root=tmp_path)
    assert len(study.trials) == 1


def test_stored_study_missing_foreign_folder_or_linked_out(tmp_path: Path) -> None:
    from raysweep.search.study import load_stored_study

    root = tmp_path / "exp"
    root.mkdir()
    with pytest.raises(StoredFileError, match="missing"):
        load_stored_study(root / "study.journal", "s", root=root)
    assert not (root / "study.journal").exists()  # reading creates nothing
    (root / "study.journal").write_text(CREATE)
    with pytest.raises(StoredFileError, match="holds no study 'other'"):
        load_stored_study(root / "study.journal", "other", root=root)
    (root / "study.journal").unlink()
    (root / "study.journal").mkdir()
    with pytest.raises(StoredFileError, match="a folder, not a file"):
        load_stored_study(root / "study.journal", "s", root=root)
    (root / "study.journal").rmdir()
    (tmp_path / "elsewhere").write_text(CREATE)
    (root / "study.journal").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StoredFileError, match="a symbolic link to"):
        load_stored_study(root / "study.journal", "s", root=root)


def test_search_refuses_a_damaged_journal_before_ray_starts(tmp_path: Path,
                                                            monkeypatch) -> None:
    import raysweep.experiment.runner as experiment
    from raysweep.config import spec_from_data
    from raysweep.experiment.runner import run_searches
    from raysweep.store.searches import search_directory

    spec = spec_from_data({"name": "s", "storage": str(tmp_path), "search": [{
        "name": "bt", "pretrain": {"name": "bt", "data": {"sources": [{"kind": "digits"}],
                                                          "image_size": 16},
                                   "encoder": {"name": "small_resnet"}, "epochs": 1,
                                   "batch_size": 32, "projector": [32, 32]},
        "evaluate": {"data": {"sources": [{"kind": "digits"}], "image_size": 16}},
        "space": {"pretrain.lr_max": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}}]})
    journal = search_directory(spec, spec.search[0]) / "study.journal"
    journal.parent.mkdir(parents=True)
    journal.write_bytes(GARBAGE)

    def no_ray() -> None:
        raise AssertionError("Ray started before the journal was checked")

    monkeypatch.setattr(experiment, "ensure_ray", no_ray)
    with pytest.raises(StoredFileError, match="study.journal is unreadable"):
        run_searches(spec)
    assert sorted(p.name for p in spec.directory.rglob("*")) == ["bt", "search",
                                                                 "study.journal"]


# ------------------------------------------------------------------------ a full cache


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_a_cache_that_cannot_hold_an_entry_is_one_line_and_keeps_nothing(
        tmp_path: Path, code: int) -> None:
    from raysweep.data.cache import CacheTransaction

    txn = CacheTransaction(tmp_path / "cache")

    def write(tmp: Path) -> tuple:
        (tmp / "images.u8").write_bytes(b"\0" * 64)
        raise OSError(code, "the disk says no")

    with pytest.raises(OutputError, match=r"decode cache .*cache cannot hold the images of "
                                          r"digits \(the disk says no\).*RAYSWEEP_CACHE"):
        txn.build("k" * 24, write, {"source": "digits"})
    assert list((tmp_path / "cache").iterdir()) == []
    txn.commit()  # nothing pending: nothing installed
    assert list((tmp_path / "cache").iterdir()) == []


# --------------------------------------------------------------------------- estimates


def test_step_memory_grows_with_batch_and_pixels_and_counts_weights() -> None:
    """Linear in the batch (every leaf output and the input scale with it), close to
    quadratic in the image size, and at batch 0 the weights' 4 x 4 bytes per parameter."""
    from raysweep.models import build_encoder
    from raysweep.plan.estimate import step_memory_bytes

    one, two, three = (step_memory_bytes("small_resnet", b, 32) for b in (1, 2, 3))
    assert two - one == three - two > 0
    weights = sum(p.numel() for p in build_encoder("small_resnet").parameters())
    assert one - (two - one) == 16 * weights
    small, large = (step_memory_bytes("small_resnet", 1, s) - 16 * weights for s in (32, 64))
    assert 3.5 < large / small <= 4.0


@pytest.mark.parametrize(("encoder", "batch", "size"), [
    ("resnet50", 1024, 4096), ("resnet18", 512, 4096), ("small_resnet", 4096, 2048)])
def test_an_estimate_that_cannot_fit_is_refused_before_allocating(
        encoder: str, batch: int, size: int, monkeypatch) -> None:
    import torch

    from raysweep.plan import estimate

    def no_allocation(*args, **kwargs):
        raise AssertionError("tried to allocate the batch")

    monkeypatch.setattr(estimate, "free_memory_bytes", lambda device: 16 * 2**30)
    monkeypatch.setattr(torch, "rand", no_allocation)
    with pytest.raises(RaysweepError, match=rf"estimate: one timed training step of {encoder} "
                                            rf"on {batch} images of {size} px needs about"):
        estimate.measure_step(encoder, batch, size, device="cpu")
    estimate.check_step_fits("small_resnet", 8, 16, "cpu")  # what fits passes


# ------------------------------------------------------------- a store with no network


@pytest.mark.parametrize(("message", "kind", "said"), [
    ("When resolving region for bucket 'b': AWS Error NETWORK_CONNECTION during HeadBucket "
     "operation: curlCode: 6, Could not resolve hostname", OutputError, "cannot reach"),
    ("Failed to connect to 127.0.0.1 port 9: Connection refused", OutputError, "cannot reach"),
    ("Unrecognized filesystem type in URI", SpecError, "cannot open"),
])
def test_a_store_that_cannot_be_opened_says_why_without_its_secrets(
        monkeypatch, message: str, kind: type, said: str) -> None:
    import pyarrow.fs

    from raysweep.storage import paths as storage

    class Refusing:  # pyarrow.fs.FileSystem, failing as pyarrow does without a network
        @staticmethod
        def from_uri(uri: str):
            raise OSError(message)

    monkeypatch.setattr(pyarrow.fs, "FileSystem", Refusing)
    storage._filesystem.cache_clear()
    uri = f"s3://AKIAKEY:s3cretVALUE@bucket/{said.replace(' ', '-')}?secret_key=s3cretVALUE"
    with pytest.raises(kind) as caught:
        storage._filesystem(uri)
    storage._filesystem.cache_clear()
    assert said in str(caught.value) and "s3cretVALUE" not in str(caught.value)
    assert "AKIAKEY" not in str(caught.value)


# ------------------------------------------------------------------------ .npz archives


def _archive() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, train_images=np.zeros((2, 4, 4), np.uint8))
    return buffer.getvalue()


@pytest.mark.parametrize(("content", "said"), [
    (GARBAGE, "not a zip archive"), (b"", "empty"), (b"hello, not an archive\n",
                                                     "not a zip archive"),
    (_archive()[: len(_archive()) // 2], "cannot read medmnist file"),
    (b"\x80\x04\x95" + GARBAGE, "not a zip archive"),  # a pickle's first bytes
])
def test_an_npz_that_is_no_archive_never_mentions_unpickling(tmp_path: Path, content: bytes,
                                                              said: str) -> None:
    from raysweep.data.sources import _open_npz

    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=said) as caught:
        _open_npz(path)
    assert "pickle" not in str(caught.value) and "unsafe" not in str(caught.value)
    assert str(path) in str(caught.value)
    npy = tmp_path / "one.npz"
    np.save(npy.open("wb"), np.zeros(3))
    with pytest.raises(DataError, match="a single .npy array"):
        _open_npz(npy)
    good = tmp_path / "good.npz"
    good.write_bytes(_archive())
    with _open_npz(good) as data:
        assert isinstance(data, np.lib.npyio.NpzFile) and zipfile.is_zipfile(good)


# ------------------------------------------------------------------------ --from-stats


@pytest.mark.parametrize(("row", "said"), [
    ("A,inf,0.1,35", "line 2: mean inf must be a finite number"),
    ("A,-inf,0.1,35", "line 2: mean -inf must be a finite number"),
    ("A,1e999,0.1,35", "line 2: mean inf must be a finite number"),  # read as a float
    ("A,0.5,inf,35", "line 2: std inf must be finite and >= 0"),
    ("A,0.5,-0.1,35", "line 2: std -0.1 must be finite and >= 0"),
])
def test_a_non_finite_statistic_is_named_as_itself(tmp_path: Path, row: str, said: str) -> None:
    from raysweep.report.from_stats import load_stats_table

    path = tmp_path / "s.csv"
    path.write_text(f"model,mean,std,n\n{row}\nB,0.6,0.1,35\n")
    with pytest.raises(DataError, match=said):
        load_stats_table(path)


# ------------------------------------------------------ --dry-run beside a link out


@pytest.mark.parametrize("planted", ["gpu_memory/small_resnet-probe-b64.json", "gpu_memory",
                                     "rows"])
def test_dry_run_refuses_a_link_out_before_reading_in_it(tmp_path: Path, capsys,
                                                          planted: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text(json.dumps({"encoder": "small_resnet"}))
    data = {"sources": [{"kind": "digits"}], "image_size": 16}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "exp", "storage": str(tmp_path / "runs"),
                                    "evaluate": {"data": data, "seeds": 1, "encoders": [
                                        {"name": "rnd", "encoder": {
                                            "name": "small_resnet", "weights": "random"}}]}}))
    link = tmp_path / "runs" / "exp" / planted
    link.parent.mkdir(parents=True)
    link.symlink_to(outside / ("passwd" if planted.endswith(".json") else ""))
    assert main(["run", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and planted in err[0], err
