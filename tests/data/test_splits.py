"""Stratified splits, label subsets and oversampling against independent counts."""

from __future__ import annotations

import numpy as np
import pytest

from raysweep.data import allocate, oversample, stratified_split, stratified_subset


def _classes(counts: dict[str, int]) -> list[str]:
    return [name for name, count in counts.items() for _ in range(count)]


@pytest.mark.parametrize("test_fraction,val_fraction", [(0.2, 0.0), (0.25, 0.1), (0.5, 0.2)])
def test_stratified_split_proportions_within_one_item(test_fraction, val_fraction):
    counts = {"a": 97, "b": 13, "c": 250, "d": 5}
    strata = _classes(counts)
    codes = stratified_split(strata, test_fraction=test_fraction, val_fraction=val_fraction,
                             seed=3, purpose="p")
    names = np.asarray(strata)
    for name, n in counts.items():
        mine = codes[names == name]
        assert abs((mine == 2).sum() - test_fraction * n) <= 1
        assert abs((mine == 1).sum() - val_fraction * n) <= 1
        assert (mine == 0).sum() >= 1
    # Disjoint and covering: each item in exactly one split.
    parts = [set(np.flatnonzero(codes == c)) for c in (0, 1, 2)]
    assert sum(len(p) for p in parts) == len(strata)
    assert set().union(*parts) == set(range(len(strata)))


def test_stratified_split_depends_only_on_seed_and_purpose():
    strata = _classes({"x": 40, "y": 60})
    first = stratified_split(strata, test_fraction=0.2, val_fraction=0.1, seed=7, purpose="s")
    again = stratified_split(strata, test_fraction=0.2, val_fraction=0.1, seed=7, purpose="s")
    other = stratified_split(strata, test_fraction=0.2, val_fraction=0.1, seed=8, purpose="s")
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    # Machine-independent: numpy's PCG64 stream behind derive_seed is fixed, so the indices
    # are pinned (a change here means every user's splits changed).
    assert np.flatnonzero(first == 2).tolist()[:5] == PINNED_TEST_HEAD


PINNED_TEST_HEAD = [1, 14, 17, 24, 26]


def test_allocate_largest_remainder_and_minimum_one():
    assert allocate(np.array([10, 30]), 4).tolist() == [1, 3]
    # quotas 0.5, 2.5, 7: floors 0, 2, 7; min-one bumps the first; total 10 exactly.
    assert allocate(np.array([1, 5, 14]), 10).tolist() == [1, 2, 7]
    shares = allocate(np.array([2, 500, 3]), 6)
    assert shares.sum() == 6 and (shares >= 1).all()
    assert allocate(np.array([3, 4]), 100).tolist() == [3, 4]  # capped at what exists
    assert allocate(np.array([50, 50, 50]), 2).sum() == 2  # too few for one each


def test_stratified_subset_exact_count_stratified_and_nested():
    counts = {"a": 306, "b": 55, "c": 500}
    names = _classes(counts)
    indices = np.arange(1000, 1000 + len(names))
    small = stratified_subset(indices, names, count=100, seed=1, purpose="labels")
    large = stratified_subset(indices, names, count=250, seed=1, purpose="labels")
    assert len(small) == 100 and len(large) == 250
    assert set(small) <= set(large)
    lookup = dict(zip(indices.tolist(), names, strict=True))
    for name, n in counts.items():
        kept = sum(lookup[i] == name for i in small.tolist())
        assert abs(kept - 100 * n / len(names)) <= 1
    fraction = stratified_subset(indices, names, fraction=0.1, seed=1, purpose="labels")
    assert len(fraction) == round(0.1 * len(names))
    assert np.array_equal(stratified_subset(indices, names, seed=1, purpose="labels"), indices)


def test_oversample_integer_ratio_repeats_each_index_exactly():
    indices = np.arange(10)
    ratios = np.array([2.0] * 6 + [1.0] * 4)
    strata = ["iu"] * 6 + ["d"] * 4
    out = oversample(indices, ratios, strata, seed=0, purpose="t")
    assert len(out) == 2 * 6 + 4
    assert np.bincount(out).tolist() == [2] * 6 + [1] * 4


def test_oversample_fractional_ratio_is_exact_and_deterministic():
    n = 40
    out = oversample(np.arange(n), np.full(n, 1.5), ["s"] * n, seed=5, purpose="t")
    copies = np.bincount(out, minlength=n)
    assert len(out) == n + round(0.5 * n)
    assert set(copies.tolist()) == {1, 2} and (copies == 2).sum() == 20
    again = oversample(np.arange(n), np.full(n, 1.5), ["s"] * n, seed=5, purpose="t")
    other = oversample(np.arange(n), np.full(n, 1.5), ["s"] * n, seed=6, purpose="t")
    assert np.array_equal(out, again) and not np.array_equal(out, other)
    # A ratio below one subsamples: 0.25 of 40 items, each at most once.
    sub = oversample(np.arange(n), np.full(n, 0.25), ["s"] * n, seed=5, purpose="t")
    assert len(sub) == 10 and len(set(sub.tolist())) == 10
