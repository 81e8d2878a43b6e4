"""The ``local_cluster`` fixture (see :mod:`launch_helpers`), and this folder on ``sys.path`` so
that its tests import their helpers by name."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from launch_helpers import LocalCluster  # noqa: E402


@pytest.fixture
def local_cluster() -> Iterator[LocalCluster]:
    """A fresh loopback cluster (start nodes with ``start_head`` / ``add_node``), stopped and
    its folder removed after the test. The folder is short: Ray's socket paths must fit."""
    root = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))
    cluster = LocalCluster(root)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
