"""Parallel decoding into the cache: byte-identical to the serial decode (files and arrays,
with skipped corrupt files), first failure in listing order, progress shown, worker count."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raysweep.config import DatasetSpec, SourceSpec
from raysweep.data import cache as cache_module
from raysweep.data import decode_pool, load_dataset
from raysweep.environment import EnvironmentProblem
from raysweep.errors import DataError


@pytest.fixture
def pool_calls(monkeypatch) -> list[int]:
    """Use the process pool even for a few images; record each pooled decode's worker count."""
    calls: list[int] = []
    real = decode_pool._decode_in_pool

    def recording(file, shape, chunks, workers, stop_at_failure, bar):
        calls.append(workers)
        return real(file, shape, chunks, workers, stop_at_failure, bar)

    monkeypatch.setattr(decode_pool, "POOL_MIN_SECONDS", -1.0)  # pool after the first chunk
    monkeypatch.setattr(decode_pool, "MAX_CHUNK", 3)  # many chunks, out-of-order completion
    monkeypatch.setattr(decode_pool, "_decode_in_pool", recording)
    return calls


def _entry_bytes(cache: Path) -> tuple[bytes, dict]:
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    meta = json.loads((entry / "meta.json").read_text())
    return (entry / "images.u8").read_bytes(), {k: meta[k] for k in ("shape", "kept", "skipped")}


def _decode_with(workers: int, spec: DatasetSpec, cache: Path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_DECODE_WORKERS", str(workers))
    dataset = load_dataset(spec.replace(cache_dir=str(cache)), progress=True)
    return dataset, _entry_bytes(cache)


def test_parallel_decode_of_files_is_byte_identical_to_serial(
        tmp_path, image_writer, pool_calls, monkeypatch, capsys):
    root = tmp_path / "images"
    expected = {}
    for i in range(24):  # mixed sizes, formats and modes (grey ones are converted to RGB)
        suffix, mode = [(".png", "RGB"), (".jpg", "RGB"), (".png", "L")][i % 3]
        path = root / ("a" if i % 2 else "b") / f"img{i}{suffix}"
        image_writer(path, i, size=9 + i, mode=mode)
        expected[path] = np.asarray(Image.open(path).convert("RGB").resize(
            (12, 12), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    for bad in ("img4.jpg", "img17.png"):  # pass the header probe, fail to decode: skipped,
        path = next(root.rglob(bad))       # and the rows after them move up
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        del expected[path]
    spec = DatasetSpec(sources=(SourceSpec(kind="folder", path=str(root), skip_corrupt=True),),
                       image_size=12)
    monkeypatch.setattr(cache_module, "PROGRESS_THRESHOLD", 0)
    with pytest.warns(UserWarning, match="skipped 2 corrupt image"):
        serial, serial_bytes = _decode_with(1, spec, tmp_path / "serial", monkeypatch)
    assert pool_calls == []
    with pytest.warns(UserWarning, match="skipped 2 corrupt image"):
        parallel, parallel_bytes = _decode_with(2, spec, tmp_path / "parallel", monkeypatch)
    assert pool_calls == [2]
    assert parallel_bytes == serial_bytes
    assert serial_bytes[1]["shape"] == [22, 3, 12, 12] and len(serial_bytes[1]["skipped"]) == 2
    # Both equal an independent decode of each remaining file, in listing order.
    from raysweep.data import read_source

    listing = read_source(spec.sources[0])
    kept = [path for path in listing.paths if path in expected]
    assert len(kept) == 22
    independent = np.stack([expected[path] for path in kept])
    assert np.array_equal(serial.images, independent)
    assert np.array_equal(parallel.images, independent)
    err = capsys.readouterr().err
    # The progress bar is kept (both decodes): every probed file counted.
    assert len(re.findall(r"decoding images at 12px: 100%\|[^|]*\| (\d+)/\1 ", err)) == 2


def test_parallel_decode_of_an_array_source_is_byte_identical(
        breastmnist_npz, tmp_path, pool_calls, monkeypatch):
    spec = DatasetSpec(sources=(SourceSpec(kind="medmnist", path=str(breastmnist_npz)),),
                       image_size=20)
    serial, serial_bytes = _decode_with(1, spec, tmp_path / "serial", monkeypatch)
    parallel, parallel_bytes = _decode_with(2, spec, tmp_path / "parallel", monkeypatch)
    assert pool_calls == [2] and parallel_bytes == serial_bytes
    with np.load(breastmnist_npz) as data:
        originals = np.concatenate([data[f"{s}_images"] for s in ("train", "val", "test")])
    independent = np.stack([np.asarray(Image.fromarray(a, mode="L").resize(
        (20, 20), Image.Resampling.BILINEAR)) for a in originals])[:, None]
    assert np.array_equal(parallel.images, independent)


def test_parallel_decode_refuses_the_first_corrupt_file_in_order_and_writes_nothing(
        tmp_path, image_writer, pool_calls, monkeypatch, cache_dir):
    root = tmp_path / "images"
    for i in range(30):
        image_writer(root / "a" / f"img{i}.png", i)
    for i in (7, 25):
        (root / "a" / f"img{i}.png").write_bytes(b"junk")
    monkeypatch.setenv("RAYSWEEP_DECODE_WORKERS", "2")
    spec = DatasetSpec(sources=(SourceSpec(kind="folder", path=str(root)),), image_size=12)
    monkeypatch.setattr(decode_pool, "MAX_CHUNK", 2)
    # Header probing finds neither (the PNG signature is missing: probing fails first) ...
    with pytest.raises(DataError, match=r"corrupt image: .*img7\.png \("):
        load_dataset(spec, progress=False)
    # ... so make the files pass the probe and fail in the pool's decode instead.
    valid = (root / "a" / "img0.png").read_bytes()
    for i in (7, 25):
        (root / "a" / f"img{i}.png").write_bytes(valid[: len(valid) // 2])
    with pytest.raises(DataError) as err:
        load_dataset(spec, progress=False)
    assert str(err.value).startswith(f"corrupt image: {root / 'a' / 'img7.png'} (")
    assert "\n" not in str(err.value)
    assert pool_calls == [2] and not cache_dir.exists()


def test_decode_workers(monkeypatch):
    import os

    monkeypatch.delenv("RAYSWEEP_DECODE_WORKERS", raising=False)
    assert decode_pool.decode_workers() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("RAYSWEEP_DECODE_WORKERS", "3")
    assert decode_pool.decode_workers() == 3
    for bad, why in (("0", "outside [1, 1024]"), ("two", "not an integer"),
                     ("-1", "outside [1, 1024]")):
        monkeypatch.setenv("RAYSWEEP_DECODE_WORKERS", bad)
        with pytest.raises(EnvironmentProblem) as err:
            decode_pool.decode_workers()
        assert str(err.value) == (f"RAYSWEEP_DECODE_WORKERS={bad!r}: {why}; expected an "
                                  "integer in [1, 1024]")
    assert [decode_pool.chunk_size(n, w) for n, w in [(5, 2), (2000, 2), (25000, 32), (0, 1)]] \
        == [1, 64, 64, 1]


@pytest.mark.slow
@pytest.mark.ray
def test_decode_workers_inside_ray_uses_the_cpus_ray_assigned(ray_session, monkeypatch):
    monkeypatch.delenv("RAYSWEEP_DECODE_WORKERS", raising=False)

    @ray_session.remote
    def workers() -> int:
        from raysweep.data.decode_pool import decode_workers

        return decode_workers()

    assert ray_session.get(workers.options(num_cpus=1).remote()) == 1
    assert ray_session.get(workers.options(num_cpus=2).remote()) == 2
