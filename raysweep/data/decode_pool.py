"""Decoding many images on every core: a process pool writing straight into the cache file.

Items (image files, or the in-memory uint8 arrays of an array source) are decoded in chunks of
consecutive *slots* of the output file (raw uint8, C-order, shape (N, C, S, S)); each row is
written at its own offset with ``os.pwrite``, so only file names, small arrays and the reasons of
failures cross process boundaries. Decoding one image depends on its bytes only, so the file holds
the same bytes whichever process decodes which chunk: a parallel decode is byte-identical to the
serial one (``workers=1``, which runs in this process; ``tests/data/test_decode_pool.py`` checks
it). The first chunk is always decoded in this process and timed: a source that decodes in a
second or two (small images, few items) never pays for starting workers.

Worker count (:func:`decode_workers`): ``$RAYSWEEP_DECODE_WORKERS`` when set; inside a Ray task or
actor, the CPUs Ray assigned to it (concurrent trials on one node must not oversubscribe it);
otherwise every CPU this process may run on. The pool is joblib's ``loky`` backend: workers are
fresh interpreters (no ``fork`` of a process holding Ray's and torch's threads), they do not
re-run the caller's ``__main__`` (a user's script needs no ``if __name__ == "__main__"`` guard),
and they are reused by the next decode until idle for :data:`IDLE_WORKER_TIMEOUT_S`. This module
and :mod:`raysweep.data.decode` import only numpy and PIL, so a worker starts quickly.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from raysweep.data import decode
from raysweep.environment import value
from raysweep.errors import DataError

#: The first chunk is decoded in this process and timed; the pool starts only when the rest
#: would take longer than this (seconds) serially: starting workers costs about a second.
POOL_MIN_SECONDS = 2.0

#: Largest chunk (items per task); smaller for small sources so every worker gets several.
MAX_CHUNK = 64

#: Chunks submitted ahead of the one being collected, per worker (bounds the memory that
#: array items waiting in the pool's queue take).
CHUNKS_AHEAD_PER_WORKER = 4

#: Idle pool workers exit after this many seconds (the pool is reused by decodes in between).
IDLE_WORKER_TIMEOUT_S = 30

Item = Path | np.ndarray
#: (slot, item name, one-line reason) of an item that could not be decoded.
Failure = tuple[int, str, str]


def decode_workers() -> int:
    """How many processes decode (see the module docstring); at least 1."""
    configured = value("RAYSWEEP_DECODE_WORKERS")
    if configured is not None:
        return int(configured)  # type: ignore[call-overload]
    ray_cpus = _ray_assigned_cpus()
    if ray_cpus is not None:
        return ray_cpus
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _ray_assigned_cpus() -> int | None:
    """CPUs Ray assigned to this process when it is a Ray worker (task or actor), else None."""
    ray = sys.modules.get("ray")  # a Ray worker has imported ray; never import it here
    if ray is None or not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:
        return None
    return max(1, int(context.get_assigned_resources().get("CPU", 1)))


def chunk_size(count: int, workers: int) -> int:
    """Items per task: about eight chunks per worker, at most :data:`MAX_CHUNK`."""
    return max(1, min(MAX_CHUNK, math.ceil(count / (workers * 8))))


def decode_into(file: Path, shape: tuple[int, int, int, int], items: Iterable[Item], *,
                workers: int, stop_at_failure: bool, desc: str, show: bool) -> list[Failure]:
    """Decode ``items`` (slot ``i`` = the ``i``-th item) into ``file`` (existing, ``shape``).

    Files are decoded with :func:`~raysweep.data.decode.decode_image`, arrays resized with
    :func:`~raysweep.data.decode.resize_array`, to ``shape[1]`` channels and ``shape[2]`` px.
    Chunks are decoded here until the time they take says the rest is worth a pool of
    ``workers`` processes (:data:`POOL_MIN_SECONDS`). Returns the failures in slot order; with
    ``stop_at_failure`` it returns at the first failure in slot order (rows after it may be
    partly written). A progress bar shows when ``show``.
    """
    count, channels, size = shape[0], shape[1], shape[2]
    workers = max(1, min(workers, count))
    chunks = _chunks(items, chunk_size(count, workers))
    failures: list[Failure] = []
    with tqdm(total=count, disable=not show, unit="img", desc=desc) as bar:
        descriptor = os.open(file, os.O_WRONLY)
        try:
            started, done, pooled = time.perf_counter(), 0, False
            for start, chunk in chunks:
                failures += decode_chunk(descriptor, start, chunk, channels, size,
                                         stop_at_failure)
                bar.update(len(chunk))
                done += len(chunk)
                if failures and stop_at_failure:
                    break
                rest = (time.perf_counter() - started) / done * (count - done)
                if workers > 1 and rest > POOL_MIN_SECONDS:
                    pooled = True  # the remaining chunks go to the pool
                    break
        finally:
            os.close(descriptor)
        if pooled:
            failures += _decode_in_pool(file, shape, chunks, workers, stop_at_failure, bar)
        return failures


def _decode_in_pool(file: Path, shape: tuple[int, int, int, int],
                    chunks: Iterator[tuple[int, list[Item]]], workers: int,
                    stop_at_failure: bool, bar) -> list[Failure]:
    """The remaining chunks on ``workers`` loky processes (joblib's reusable pool); results
    are collected in submission (slot) order, so the first failure returned is the first in
    slot order, as in a serial decode. After a failure that stops the decode no chunk is
    submitted, and the few already submitted are let finish (cancelling running tasks is
    where process pools race)."""

    channels, size = shape[1], shape[2]
    failures: list[Failure] = []
    stopped = False

    def tasks():
        for start, chunk in chunks:
            if stopped:
                return
            yield delayed(_decode_chunk_to_file)(str(file), start, chunk, channels, size,
                                                 stop_at_failure)

    parallel = Parallel(n_jobs=workers, backend="loky", return_as="generator", batch_size=1,
                        pre_dispatch=f"{CHUNKS_AHEAD_PER_WORKER} * n_jobs", max_nbytes=None,
                        idle_worker_timeout=IDLE_WORKER_TIMEOUT_S)
    for length, chunk_failures in parallel(tasks()):
        failures += chunk_failures
        bar.update(length)
        stopped = stopped or bool(failures and stop_at_failure)
    return failures


def decode_chunk(descriptor: int, start: int, chunk: list[Item], channels: int, size: int,
                 stop_at_failure: bool) -> list[Failure]:
    """Decode ``chunk`` into rows ``start ...`` of the raw file open as ``descriptor`` (each row
    C*S*S bytes, written with ``os.pwrite``). Returns the failures."""
    failures: list[Failure] = []
    row_bytes = channels * size * size
    for offset, item in enumerate(chunk):
        try:
            if isinstance(item, Path):
                pixels = decode.decode_image(item, channels, size)
            else:
                pixels = decode.resize_array(item, channels, size)
        except DataError as err:
            name = str(item) if isinstance(item, Path) else f"item {start + offset}"
            failures.append((start + offset, name, str(getattr(err, "reason", err))))
            if stop_at_failure:
                break
            continue
        os.pwrite(descriptor, np.ascontiguousarray(pixels).data, (start + offset) * row_bytes)
    return failures


def _chunks(items: Iterable[Item], step: int) -> Iterator[tuple[int, list[Item]]]:
    chunk: list[Item] = []
    start = 0
    for item in items:
        chunk.append(item)
        if len(chunk) == step:
            yield start, chunk
            start += step
            chunk = []
    if chunk:
        yield start, chunk


def _decode_chunk_to_file(file: str, start: int, chunk: list[Item], channels: int, size: int,
                          stop_at_failure: bool) -> tuple[int, list[Failure]]:
    """A pool task: decode ``chunk`` into rows ``start ...`` of ``file``; (items, failures)."""
    descriptor = os.open(file, os.O_WRONLY)
    try:
        return len(chunk), decode_chunk(descriptor, start, chunk, channels, size,
                                        stop_at_failure)
    finally:
        os.close(descriptor)
