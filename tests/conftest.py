"""Shared test fixtures: paths to the real MedMNIST files and one Ray instance per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two cores on CI: keep each torch process to one intra-op thread so that Ray workers and the
# test process do not oversubscribe the CPU.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not SHARED_DATA.is_dir():  # a checkout elsewhere: fall back to an environment variable
    SHARED_DATA = Path(os.environ.get("RAYSWEEP_SHARED_DATA", SHARED_DATA))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the project root (breastmnist.npz, pneumoniamnist.npz)."""
    if not (SHARED_DATA / "breastmnist.npz").is_file():
        pytest.fail(f"real test data not found at {SHARED_DATA} (set RAYSWEEP_SHARED_DATA)")
    return SHARED_DATA


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
