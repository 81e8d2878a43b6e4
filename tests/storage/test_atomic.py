"""Artefact hygiene: atomic writes honour the umask, make the rename durable, and what a killed
writer leaves behind is removed at the next run."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from raysweep.storage import atomic as artefacts
from raysweep.storage.atomic import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    current_umask,
    file_sha256,
    remove_stale_temporaries,
)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path: Path, umask: int, mode: int):
    previous = os.umask(umask)
    try:
        assert current_umask() == umask
        written = [atomic_write_text(tmp_path / "a.txt", "x"),
                   atomic_write_json(tmp_path / "b.json", {"k": 1}),
                   atomic_torch_save({"w": 1}, tmp_path / "c.pt")]
    finally:
        os.umask(previous)
    assert {p.stat().st_mode & 0o777 for p in written} == {mode}
    # What a plain open() creates under the same umask: the mode colleagues expect.
    assert mode == 0o666 & ~umask


def test_the_directory_is_fsynced_after_the_rename(tmp_path: Path, monkeypatch):
    synced = []
    real = artefacts.fsync_directory

    def record(directory):
        synced.append((Path(directory), (tmp_path / "sub" / "r.json").exists()))
        real(directory)

    monkeypatch.setattr(artefacts, "fsync_directory", record)
    atomic_write_json(tmp_path / "sub" / "r.json", {"k": 1})
    assert synced == [(tmp_path / "sub", True)]  # after the rename, of the target's directory


def test_killed_writers_temporaries_are_removed_later(tmp_path: Path):
    old = tmp_path / "rows" / "c" / "probe" / ".seed-0001-abc.json.k2j3.tmp"
    fresh = tmp_path / "rows" / ".results.parquet.x9.tmp"
    keep = tmp_path / "rows" / "seed-0002.json"
    for path in (old, fresh, keep):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("partial")
    stamp = time.time() - 3600
    os.utime(old, (stamp, stamp))
    os.utime(keep, (stamp, stamp))
    assert remove_stale_temporaries(tmp_path, older_than_s=60) == [old]
    assert not old.exists() and fresh.exists() and keep.exists()  # a live writer's file stays


def test_file_digest_is_the_content_sha256_and_follows_changes(tmp_path: Path):
    import hashlib

    path = tmp_path / "w.bin"
    path.write_bytes(b"one")
    assert file_sha256(path) == hashlib.sha256(b"one").hexdigest()
    path.write_bytes(b"two!")
    assert file_sha256(path) == hashlib.sha256(b"two!").hexdigest()
