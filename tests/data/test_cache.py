"""The decode cache under damage and failure: damaged entries are detected (one warning line
naming the entry) and rebuilt; a refused load leaves the cache exactly as it was; leftovers of
killed builds are removed without touching live ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from raysweep.config import DatasetSpec, SourceSpec
from raysweep.data import DataWarning, load_dataset
from raysweep.data import cache as cache_module
from raysweep.errors import DataError


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.is_dir()) if cache.exists() else []


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: its bytes and mtime (what 'as it was' means)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _expected_pixels(paths: list[Path], size: int) -> np.ndarray:
    """Independent decode: PIL convert + bilinear resize, (N, 3, size, size)."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB").resize(
        (size, size), Image.Resampling.BILINEAR)).transpose(2, 0, 1) for p in paths])


@pytest.fixture
def folder_spec(make_folder):
    root = make_folder("f", {"a": 3, "b": 3}, size=20)
    spec = DatasetSpec(sources=(SourceSpec(kind="folder", path=str(root)),), image_size=12)
    files = sorted(root / c / f"img{i}.png" for c in "ab" for i in range(3))
    return spec, files


def _load_warning(spec: DatasetSpec) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dataset = load_dataset(spec, progress=False)
    return dataset, [str(w.message) for w in record if issubclass(w.category, DataWarning)]


def _damage(kind: str, entry: Path) -> None:
    images, meta = entry / "images.u8", entry / "meta.json"
    if kind == "truncated images":
        images.write_bytes(images.read_bytes()[:100])
    elif kind == "missing images":
        images.unlink()
    elif kind == "longer images":
        images.write_bytes(images.read_bytes() + b"\0")
    elif kind == "flipped byte":
        data = bytearray(images.read_bytes())
        data[len(data) // 2] ^= 0x01
        images.write_bytes(bytes(data))
    elif kind == "empty meta":
        meta.write_text("")
    elif kind == "invalid meta":
        meta.write_text('{"shape": [6, 3, 12')
    elif kind == "meta with a wrong shape":
        content = json.loads(meta.read_text())
        content["shape"] = [5, 3, 12, 12]
        meta.write_text(json.dumps(content))
    elif kind == "missing meta":
        meta.unlink()
    else:  # pragma: no cover
        raise ValueError(kind)


DAMAGE = {
    "truncated images": "images.u8 has 100 bytes, meta.json says 2592",
    "missing images": "images.u8 is missing",
    "longer images": "images.u8 has 2593 bytes, meta.json says 2592",
    "flipped byte": "images.u8 fails its checksum in 1 of 1 block(s), first at byte 0",
    "empty meta": "meta.json is empty",
    "invalid meta": "meta.json is not valid JSON",
    "meta with a wrong shape": "meta.json: images_bytes 2592 does not match shape [5, 3, 12, 12]",
    "missing meta": "meta.json is missing",
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_entry_is_reported_in_one_line_and_rebuilt(kind, folder_spec, cache_dir):
    spec, files = folder_spec
    first = np.array(load_dataset(spec, progress=False).images)
    assert np.array_equal(first, _expected_pixels(files, 12))
    (entry,) = _entries(cache_dir)
    good = _snapshot(entry)
    _damage(kind, entry)
    cache_module._INTACT.clear()  # a new process: the full checksum is checked once
    dataset, messages = _load_warning(spec)
    assert messages == [f"damaged cache entry {entry} ({DAMAGE[kind]}): rebuilding it"]
    assert np.array_equal(dataset.images, first)
    assert _entries(cache_dir) == [entry]  # replaced in place, no temporary directory left
    rebuilt = _snapshot(entry)
    assert rebuilt["images.u8"][0] == good["images.u8"][0]
    # The rebuilt entry is a plain hit afterwards, also for a new process.
    cache_module._INTACT.clear()
    again, messages = _load_warning(spec)
    assert messages == [] and np.array_equal(again.images, first)


def test_full_checksum_is_checked_once_per_process(folder_spec, cache_dir, monkeypatch):
    spec, _ = folder_spec
    load_dataset(spec, progress=False)
    calls = []
    real = cache_module.block_checksums
    monkeypatch.setattr(cache_module, "block_checksums",
                        lambda *a: calls.append(a) or real(*a))
    load_dataset(spec, progress=False)
    assert calls == []  # written by this process: known intact
    cache_module._INTACT.clear()
    load_dataset(spec, progress=False)
    load_dataset(spec, progress=False)
    assert len(calls) == 1


def test_damaged_source_of_a_mixture_is_rebuilt_when_the_union_is(make_folder, cache_dir):
    """A mixture maps its union entry; its sources' checksums are checked when the union is built
    from them, so a damaged source is rebuilt before it is copied."""
    one = make_folder("one", {"a": 2}, size=20)
    two = make_folder("two", {"b": 3}, size=20, mode="L")
    spec = DatasetSpec(sources=(SourceSpec(kind="folder", path=str(one)),
                                SourceSpec(kind="folder", path=str(two))), image_size=12)
    first = np.array(load_dataset(spec, progress=False).images)
    entries = _entries(cache_dir)
    assert len(entries) == 3
    metas = {e: json.loads((e / "meta.json").read_text()) for e in entries}
    (union,) = [e for e, m in metas.items() if "union_of" in m]
    grey = [e for e, m in metas.items() if m.get("shape", [0, 0])[1] == 1]
    assert len(grey) == 1
    _damage("flipped byte", grey[0])
    cache_module._INTACT.clear()
    # The union is intact: it is all the dataset reads, and the damaged source is not opened.
    assert _load_warning(spec)[1] == []
    _damage("missing meta", union)
    cache_module._INTACT.clear()
    dataset, messages = _load_warning(spec)
    assert messages == [f"damaged cache entry {union} (meta.json is missing): rebuilding it",
                        f"damaged cache entry {grey[0]} ({DAMAGE['flipped byte']}): "
                        "rebuilding it"]
    assert np.array_equal(dataset.images, first)
    assert _entries(cache_dir) == entries


def test_refused_image_leaves_the_cache_as_it_was(make_folder, breastmnist_npz, cache_dir):
    # A cache in use: an entry and digests.json from an earlier load.
    good = make_folder("good", {"a": 2, "b": 2}, suffix=".jpg", size=20)
    load_dataset(DatasetSpec(sources=(SourceSpec(kind="folder", path=str(good)),),
                             image_size=12), progress=False)
    before = _snapshot(cache_dir)
    assert "digests.json" in before and len(_entries(cache_dir)) == 1
    bad = make_folder("bad", {"a": 3, "b": 3}, suffix=".jpg", size=20)
    (bad / "b" / "img2.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    specs = [
        DatasetSpec(sources=(SourceSpec(kind="folder", path=str(bad)),), image_size=12),
        # A mixture whose first source decodes fine: its entry is not kept either.
        DatasetSpec(sources=(SourceSpec(kind="medmnist", path=str(breastmnist_npz)),
                             SourceSpec(kind="folder", path=str(bad))), image_size=12),
    ]
    for spec in specs:
        with pytest.raises(DataError, match=r"^corrupt image: .*img2\.jpg \("):
            load_dataset(spec, progress=False)
        assert _snapshot(cache_dir) == before
        assert sorted(os.listdir(cache_dir)) == sorted({Path(k).parts[0] for k in before})


def test_refused_load_into_a_new_cache_creates_no_directory(make_folder, tmp_path):
    bad = make_folder("bad", {"a": 2}, suffix=".jpg", size=20)
    (bad / "a" / "img0.jpg").write_bytes(b"junk")
    cache = tmp_path / "new" / "cache"
    spec = DatasetSpec(sources=(SourceSpec(kind="folder", path=str(bad)),), image_size=12,
                       cache_dir=str(cache))
    with pytest.raises(DataError, match="corrupt image"):
        load_dataset(spec, progress=False)
    assert not (tmp_path / "new").exists()


def test_label_count_error_after_decoding_writes_nothing(make_folder, cache_dir):
    root = make_folder("f", {"a": 3, "b": 3}, size=20)
    spec = DatasetSpec(sources=(SourceSpec(kind="folder", path=str(root)),), image_size=12,
                       label_count=99)
    with pytest.raises(DataError, match="label_count 99 exceeds"):
        load_dataset(spec, progress=False)
    assert not cache_dir.exists()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_build_directories_are_removed_at_the_next_build(folder_spec, cache_dir):
    spec, _ = folder_spec
    cache_dir.mkdir()
    host = cache_module._HOST
    old = time.time() - 2 * cache_module.STALE_TMP_AGE_S
    very_old = time.time() - 2 * cache_module.FOREIGN_TMP_AGE_S
    dead, alive = _dead_pid(), os.getppid()
    layout = {  # name: (age stamp, removed?)
        f".tmp-{'a' * 24}-{host}-{dead}-0123abcd": (old, True),  # killed build of this host
        f".tmp-{'b' * 24}-{host}-{dead}-0123abcd": (time.time(), False),  # too recent
        f".tmp-{'c' * 24}-{host}-{alive}-0123abcd": (old, False),  # its process is running
        f".tmp-{'d' * 24}-otherhost-{dead}-0123abcd": (old, False),  # other host, not old enough
        f".tmp-{'e' * 24}-otherhost-12-0123abcd": (very_old, True),  # other host, a day old
        ".tmp-legacy-name": (very_old, True),
        "unrelated": (very_old, False),
    }
    for name, (stamp, _) in layout.items():
        directory = cache_dir / name
        directory.mkdir()
        (directory / "images.u8").write_bytes(b"\0" * 10)
        os.utime(directory / "images.u8", (stamp, stamp))
        os.utime(directory, (stamp, stamp))
    load_dataset(spec, progress=False)  # a miss: builds, and cleans first
    left = {p.name for p in cache_dir.iterdir() if p.is_dir()}
    assert {n for n, (_, removed) in layout.items() if not removed} <= left
    assert not {n for n, (_, removed) in layout.items() if removed} & left
    # A hit builds nothing and removes nothing.
    (cache_dir / f".tmp-{'f' * 24}-{host}-{dead}-0123abcd").mkdir()
    os.utime(cache_dir / f".tmp-{'f' * 24}-{host}-{dead}-0123abcd", (old, old))
    load_dataset(spec, progress=False)
    assert (cache_dir / f".tmp-{'f' * 24}-{host}-{dead}-0123abcd").exists()


@pytest.mark.slow
def test_killed_build_leaves_a_directory_the_next_build_removes(folder_spec, cache_dir,
                                                                monkeypatch):
    """A build killed mid-decode (SIGKILL: no cleanup runs) leaves its temporary directory;
    once it is old enough, the next build removes it."""
    spec, files = folder_spec
    code = (
        "import os, signal\n"
        "from raysweep.data import decode, load_dataset\n"
        "from raysweep.config import DatasetSpec, SourceSpec\n"
        "real = decode.decode_image\n"
        "calls = []\n"
        "def die(*a):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 3: os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(*a)\n"
        "decode.decode_image = die\n"
        f"load_dataset(DatasetSpec(sources=(SourceSpec(kind='folder', path={str(files[0].parents[1])!r}),),"
        " image_size=12), progress=False)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code], env=env)
    assert result.returncode == -9
    (left,) = [p for p in cache_dir.iterdir() if p.name.startswith(".tmp-")]
    assert _entries(cache_dir) == [left]
    monkeypatch.setattr(cache_module, "STALE_TMP_AGE_S", 0)
    dataset = load_dataset(spec, progress=False)
    assert not left.exists() and np.array_equal(dataset.images, _expected_pixels(files, 12))
