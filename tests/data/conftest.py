"""Fixtures for the data tests: a private cache per test and tiny real image files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh decode cache for this test ($RAYSWEEP_CACHE)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("RAYSWEEP_CACHE", str(root))
    return root


def write_image(path: Path, seed: int, *, size: int = 12, mode: str = "RGB") -> np.ndarray:
    """Write a random ``size`` x ``size`` image (PNG, or JPEG by suffix); return its pixels as
    PIL will decode them (H, W[, 3])."""
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)
    with Image.open(path) as image:
        return np.asarray(image.convert(mode))


@pytest.fixture
def make_folder(tmp_path: Path) -> Callable[..., Path]:
    """``make_folder(name, {class: count}, mode=..., suffix=...)`` writes an image folder."""
    counter = iter(range(10**6))

    def make(name: str, counts: dict[str, int], *, mode: str = "RGB", suffix: str = ".png",
             size: int = 12) -> Path:
        root = tmp_path / name
        for cls, count in counts.items():
            for i in range(count):
                write_image(root / cls / f"img{i}{suffix}", next(counter), mode=mode, size=size)
        root.mkdir(parents=True, exist_ok=True)
        return root

    return make


@pytest.fixture
def image_writer() -> Callable[..., np.ndarray]:
    """:func:`write_image` (importing from a conftest is fragile under importlib mode)."""
    return write_image
