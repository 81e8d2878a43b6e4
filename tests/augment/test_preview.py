"""``render_preview``: a PNG grid of real images and their views, reproducible, atomic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from raysweep.augment.preview import render_preview


@pytest.fixture(scope="module")
def breast_images(breastmnist_npz: Path) -> np.ndarray:
    with np.load(breastmnist_npz) as data:
        return data["train_images"][:6, None]  # (6, 1, 28, 28) uint8


def test_preview_grid_reproducible_from_seed(breast_images: np.ndarray, tmp_path: Path) -> None:
    out = render_preview(breast_images, "barlow_twins", tmp_path / "views.png", seed=0,
                         image_size=28, n=4)
    assert out == tmp_path / "views.png"
    grid = imread(out)
    assert grid.shape[:2] == (4 * 160, 3 * 160)  # 4 rows x 3 columns at 1.6 in, 100 dpi
    same = imread(render_preview(breast_images, "barlow_twins", tmp_path / "same.png", seed=0,
                                 image_size=28, n=4))
    other = imread(render_preview(breast_images, "barlow_twins", tmp_path / "other.png", seed=1,
                                  image_size=28, n=4))
    assert np.array_equal(grid, same)
    assert not np.array_equal(grid, other)
    # The original column does not depend on the seed; the view columns do.
    third = grid.shape[1] // 3
    assert np.array_equal(grid[:, :third], other[:, :third])
    assert not np.array_equal(grid[:, third:], other[:, third:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.png", "same.png", "views.png"]


def test_single_view_pipeline_and_bad_input(breast_images: np.ndarray, tmp_path: Path) -> None:
    grid = imread(render_preview(breast_images, "supervised", tmp_path / "s.png", seed=2,
                                 image_size=32, n=2))
    assert grid.shape[:2] == (2 * 160, 3 * 160)
    with pytest.raises(ValueError, match="unknown augmentation pipeline"):
        render_preview(breast_images, "nope", tmp_path / "bad.png", seed=0, image_size=28)
    with pytest.raises(ValueError, match="uint8 images"):
        render_preview(breast_images.astype(np.float32), "simclr", tmp_path / "bad.png", seed=0,
                       image_size=28)
    assert not (tmp_path / "bad.png").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["s.png"]
