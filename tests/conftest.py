"""Shared test fixtures: paths to the real MedMNIST files and one Ray instance per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two cores on CI: keep each torch process to one intra-op thread so that Ray workers and the
# test process do not oversubscribe the CPU.
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
