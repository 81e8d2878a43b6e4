"""``is_within``: a path is inside a root only when its symbolic links, followed, keep it
there. Its quick answer (one ``lstat`` per part below the root) must equal full resolution."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raysweep.storage.paths import is_within


def _by_resolution(path: Path, root: Path) -> bool:
    """The reference: both resolved in full, then compared."""
    target, base = path.resolve(), root.resolve()
    return target == base or base in target.parents


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """``real/root`` (reached also through the link ``root_link``) beside ``outside``: files,
    a linked folder and a linked file inside and out, and a ``..`` that leaves."""
    root = tmp_path / "real" / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "x.png").write_bytes(b"x")
    (root / "y.png").write_bytes(b"y")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"s")
    (root / "a" / "out_dir").symlink_to(outside, target_is_directory=True)
    (root / "a" / "out_file.png").symlink_to(outside / "secret.png")
    (root / "a" / "in_file.png").symlink_to(root / "y.png")
    (root / "in_dir").symlink_to(root / "a", target_is_directory=True)
    (tmp_path / "root_link").symlink_to(root, target_is_directory=True)
    return tmp_path, root


@pytest.mark.parametrize("relative, inside", [
    ("a/b/x.png", True), ("y.png", True), ("a/in_file.png", True), ("in_dir/b/x.png", True),
    ("a/out_file.png", False), ("a/out_dir/secret.png", False),
    ("a/b/../../y.png", True), ("a/out_dir/../out_dir/secret.png", False),
    ("a/../../root/y.png", True), ("a/../../../outside/secret.png", False),
])
def test_is_within_equals_full_resolution(tree, relative: str, inside: bool) -> None:
    base, root = tree
    for through in (root, base / "root_link"):  # the root itself may be a link
        path = Path(os.path.join(through, relative))
        assert is_within(path, through) is inside, (path, through)
        assert _by_resolution(path, through) is inside


def test_a_link_loop_is_never_within(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert not is_within(tmp_path / "loop" / "x.png", tmp_path)
