"""Shared test fixtures: paths to the real MedMNIST files, one Ray instance per session, the
demo's smoke study run once per session, and local object stores (moto's S3, a GCS emulator) for
the object-store tests."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# Two cores on CI: keep each torch process to one intra-op thread so that Ray workers and the
# test process do not oversubscribe the CPU.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Ray Train's controller polls its workers every 2 s by default, so each run's start, each
# report and its end wait up to 2 s for the next poll; with ~40 short runs in the suite that
# is minutes of idle waiting. Poll every 0.5 s (set before any Ray starts: the session's Ray,
# and every `raysweep` subprocess, which inherits it and passes it to Ray Train's controller).
# A missed poll is no failure: workers are declared dead only after
# RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S (10 min).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")

#: The small real MedMNIST files kept in the repository (see tests/data/medmnist/README.md);
#: ``RAYSWEEP_SHARED_DATA`` points the tests at another folder holding files of the same names.
BUNDLED_DATA = Path(__file__).resolve().parent / "data" / "medmnist"
TEST_DATA = Path(os.path.expanduser(os.environ.get("RAYSWEEP_SHARED_DATA") or BUNDLED_DATA))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of the real test datasets (breastmnist.npz, pneumoniamnist.npz)."""
    missing = [name for name in ("breastmnist.npz", "pneumoniamnist.npz")
               if not (TEST_DATA / name).is_file()]
    if missing:
        source = "RAYSWEEP_SHARED_DATA" if os.environ.get("RAYSWEEP_SHARED_DATA") else "the checkout"
        pytest.fail(f"real test data {', '.join(missing)} not found in {TEST_DATA} ({source})")
    return TEST_DATA


@pytest.fixture(scope="session")
def breastmnist_npz(shared_data: Path) -> Path:
    return shared_data / "breastmnist.npz"


@pytest.fixture(scope="session")
def pneumoniamnist_npz(shared_data: Path) -> Path:
    return shared_data / "pneumoniamnist.npz"


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance (2 CPUs, loopback only) shared by every test that needs Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            _node_ip_address="127.0.0.1",
        )
    yield ray
    ray.shutdown()


# ----------------------------------------------------------------------------- the demo


@dataclass(frozen=True)
class DemoRun:
    """One finished ``raysweep demo --smoke --storage STORAGE`` (with ``RAYSWEEP_CACHE=cache``)
    and the last line it printed."""

    storage: Path
    cache: Path
    last_line: str


@pytest.fixture(scope="session")
def demo_smoke_run(ray_session, tmp_path_factory) -> DemoRun:
    """The demo's smoke study (4 Ray Train pre-training runs, 33 Tune trials, the report), run
    once per session through the CLI in this process: tests/experiment/test_demo.py checks it
    and reruns it, tests/launch/test_notebook.py starts from its pre-training runs. Tests must
    not change what it wrote."""
    from raysweep.cli import main

    root = tmp_path_factory.mktemp("demo")
    storage, cache = root / "runs", root / "cache"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setenv("RAYSWEEP_CACHE", str(cache))
        code = main(["demo", "--smoke", "--storage", str(storage)])
    assert code == 0, printed.getvalue()[-3000:]
    return DemoRun(storage, cache, printed.getvalue().strip().splitlines()[-1])


# ----------------------------------------------------------------------------- object store

#: moto's S3 server accepts any credentials; these are set for the tests that reach it.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_credentials() -> dict[str, str]:
    """The environment variables a process needs to reach :func:`s3_base`'s server."""
    return dict(S3_CREDENTIALS)


@pytest.fixture(scope="session")
def s3_base():
    """The URI of a bucket on a local moto S3 server (skipped, with the reason, where moto's
    server is not installed: ``pip install 'moto[server]'``, in the dev extra)."""
    server = shutil.which("moto_server", path=os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if server is None:
        pytest.skip("moto's S3 server is not installed (pip install 'moto[server]', in the dev "
                    "extra)")
    port = _free_port()
    process = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("moto's S3 server did not start")
            time.sleep(0.2)
        import pyarrow.fs

        pyarrow.fs.S3FileSystem(access_key="testing", secret_key="testing", scheme="http",
                                endpoint_override=f"127.0.0.1:{port}", region="us-east-1",
                                allow_bucket_creation=True).create_dir("raysweep-test")
        yield f"s3://raysweep-test/runs?endpoint_override=127.0.0.1:{port}&scheme=http" \
              "&region=us-east-1"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def gcs_base():
    """The URI of a bucket on a local Google Cloud Storage emulator (``gcp-storage-emulator``,
    in the dev extra; skipped, with the reason, where it is not installed), reached without
    credentials (``anonymous=true``)."""
    server = shutil.which("gcp-storage-emulator", path=os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if server is None:
        pytest.skip("the GCS emulator is not installed (pip install gcp-storage-emulator, in "
                    "the dev extra)")
    port = _free_port()
    process = subprocess.Popen([server, "start", "--host", "127.0.0.1", "--port", str(port),
                                "--in-memory", "--default-bucket", "raysweep-test"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("the GCS emulator did not start")
            time.sleep(0.2)
        yield f"gs://raysweep-test/runs?endpoint_override=127.0.0.1:{port}&scheme=http" \
              "&anonymous=true&retry_limit_seconds=10"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(params=["s3", "gs"])
def store_base(request) -> tuple[str, dict[str, str]]:
    """(bucket URI, environment a process needs to reach it) of each local object store: moto's
    S3 server, then the GCS emulator."""
    if request.param == "s3":
        return request.getfixturevalue("s3_base"), dict(S3_CREDENTIALS)
    return request.getfixturevalue("gcs_base"), {}


@pytest.fixture
def store(store_base, monkeypatch, request):
    """A fresh folder in each local object store's test bucket (see :func:`s3`)."""
    from raysweep.storage.paths import StoragePath, storage_path

    base, environment = store_base
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    root = storage_path(base)
    assert isinstance(root, StoragePath)
    return root / request.node.name.replace("[", "-").replace("]", "")


@pytest.fixture
def s3(s3_base, s3_credentials, monkeypatch, request):
    """A fresh folder (a :class:`raysweep.storage.paths.StoragePath`) in the test bucket, with the
    credentials in this process's environment."""
    from raysweep.storage.paths import StoragePath, storage_path

    for key, value in s3_credentials.items():
        monkeypatch.setenv(key, value)
    root = storage_path(s3_base)
    assert isinstance(root, StoragePath)
    return root / request.node.name.replace("[", "-").replace("]", "")
