"""Stratified splits, stratified label subsets and exact oversampling (pure numpy functions).

All randomness comes from ``numpy.random.default_rng`` seeded by
:func:`raysweep.seeding.derive_seed` of the *split seed* (never a training seed) and a purpose
string naming the stratum (its class name, not its index), so the same split seed gives the
same indices on every machine, and adding a class or a source elsewhere in a mixture does not
reshuffle the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from raysweep.seeding import numpy_rng


def _round_half_up(value: float) -> int:
    return int(np.floor(value + 0.5))


def stratified_split(strata: Sequence[str], *, test_fraction: float, val_fraction: float,
                     seed: int, purpose: str) -> np.ndarray:
    """Split codes int8 (n,) (0 train, 1 val, 2 test), stratified by ``strata`` (one name per
    item): within each stratum of n_c items, ``round(test_fraction * n_c)`` go to test and
    ``round(val_fraction * n_c)`` to val (halves round up; train keeps at least one item when
    n_c >= 2), chosen by a permutation seeded by (seed, purpose, stratum name)."""
    names = np.asarray(strata, dtype=object)
    codes = np.zeros(len(names), dtype=np.int8)
    for stratum in sorted(set(names.tolist())):
        members = np.flatnonzero(names == stratum)
        n = len(members)
        n_test = _round_half_up(test_fraction * n)
        n_val = _round_half_up(val_fraction * n)
        while n >= 2 and n_test + n_val >= n:  # keep one training item per stratum
            if n_val:
                n_val -= 1
            else:
                n_test -= 1
        order = numpy_rng(seed, "split", purpose, stratum).permutation(n)
        codes[members[order[:n_test]]] = 2
        codes[members[order[n_test:n_test + n_val]]] = 1
    return codes


def allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Largest-remainder allocation of ``total`` over classes with ``counts`` items, at least one
    per non-empty class when ``total`` allows, never more than a class has.

    >>> allocate(np.array([10, 30]), 4).tolist()
    [1, 3]
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(min(total, counts.sum()))
    if total <= 0 or counts.sum() == 0:
        return np.zeros_like(counts)
    quota = counts * (total / counts.sum())
    share = np.floor(quota).astype(np.int64)
    non_empty = counts > 0
    if total >= non_empty.sum():
        share = np.maximum(share, non_empty.astype(np.int64))
    while share.sum() > total:  # minimum-one bumps overshot: take from the most over-served
        candidates = np.flatnonzero(share > 1)
        share[candidates[np.argmax((share - quota)[candidates])]] -= 1
    remainder = quota - share
    for index in np.argsort(-remainder, kind="stable"):
        if share.sum() >= total:
            break
        if share[index] < counts[index]:
            share[index] += 1
    while share.sum() < total:  # only when ties left capacity unused
        share[np.flatnonzero(share < counts)[0]] += 1
    return share


def fraction_count(fraction: float, n: int, rounding: str = "nearest") -> int:
    """How many of ``n`` labels ``fraction`` keeps, at least 1: ``round(fraction * n)`` with
    halves up (``nearest``), or ``floor(fraction * n)`` (``down``: Chaves et al.'s 1 / 10 % of
    14,805 ISIC 2019 images are 148 / 1,480). ``fraction >= 1`` keeps all ``n``.

    >>> fraction_count(0.1, 14805), fraction_count(0.1, 14805, "down")
    (1481, 1480)
    """
    if fraction >= 1.0:
        return n
    if rounding == "down":
        # fraction * n in decimal arithmetic: 0.1 * 14805 is 1480.5000000000002 in binary
        exact = float(np.format_float_positional(fraction * n, precision=9, unique=False))
        return max(1, int(np.floor(exact)))
    return max(1, _round_half_up(fraction * n))


def stratified_subset(indices: np.ndarray, classes: Sequence[str] | np.ndarray, *,
                      fraction: float = 1.0, count: int | None = None,
                      per_class: int | None = None, rounding: str = "nearest", seed: int,
                      purpose: str) -> np.ndarray:
    """A stratified subset of ``indices`` (sorted int64), given each item's class name.

    ``count`` items (or :func:`fraction_count` of ``fraction``) are allocated over classes by
    :func:`allocate`; with ``per_class`` every class keeps ``min(per_class, its size)`` items
    instead (a class-balanced subset). Each class keeps the first k of a permutation seeded by
    (seed, purpose, class name), so subsets are nested: the 100-label subset lies inside the
    250-label one, and the 25-per-class subset inside the 100-per-class one.
    """
    indices = np.asarray(indices, dtype=np.int64)
    names = np.asarray(classes, dtype=object)
    if count is None and per_class is None and fraction >= 1.0:
        return np.sort(indices)
    strata = sorted(set(names.tolist()))
    members = [np.flatnonzero(names == s) for s in strata]
    sizes = np.array([len(m) for m in members], dtype=np.int64)
    if per_class is not None:
        shares = np.minimum(sizes, per_class)
    else:
        total = fraction_count(fraction, len(indices), rounding) if count is None else count
        shares = allocate(sizes, int(total))
    chosen = []
    for stratum, member, share in zip(strata, members, shares, strict=True):
        order = numpy_rng(seed, "subset", purpose, stratum).permutation(len(member))
        chosen.append(indices[member[order[:share]]])
    return np.sort(np.concatenate(chosen)) if chosen else indices[:0]


def oversample(indices: np.ndarray, ratios: np.ndarray, strata: Sequence[str] | np.ndarray, *,
               seed: int, purpose: str) -> np.ndarray:
    """Repeat each index by its ratio, exactly and deterministically (sorted int64 result).

    An integer ratio r puts every index in the result exactly r times. A fractional ratio r
    puts each index in floor(r) times, plus once more for a subset of round(frac(r) * n) of the
    n indices of its stratum (source x class), chosen by a permutation seeded by (seed,
    purpose, stratum name); a ratio below 1 therefore subsamples. ``ratios`` is the source's
    ``oversample`` times its ``class_oversample`` of the item's class, e.g. the paper's
    IUD = 2 x IU + DermNet, or the oral-cancer OSCC class oversampled 10:1.
    """
    indices = np.asarray(indices, dtype=np.int64)
    ratios = np.asarray(ratios, dtype=np.float64)
    names = np.asarray(strata, dtype=object)
    copies = np.floor(ratios + 1e-9).astype(np.int64)
    fractions = np.clip(ratios - copies, 0.0, None)
    for stratum in sorted(set(names[fractions > 1e-9].tolist())):
        members = np.flatnonzero(names == stratum)
        extra = _round_half_up(float(fractions[members].mean()) * len(members))
        order = numpy_rng(seed, "oversample", purpose, stratum).permutation(len(members))
        copies[members[order[:extra]]] += 1
    return np.repeat(indices, copies)
