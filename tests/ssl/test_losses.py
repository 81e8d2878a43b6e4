"""Losses against independent straightforward implementations, plus property tests.

The cross-rank (2-process gloo) gradient tests are in ``tests/test_distributed.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raysweep.ssl import (
    barlow_twins_loss,
    barlow_twins_terms,
    contrastive_top1_accuracy,
    l21_norm,
    nt_xent_loss,
    supcon_loss,
)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def reference_barlow_twins(a: np.ndarray, b: np.ndarray, lam: float, eps: float = 1e-5) -> float:
    """Eq. 1 written out with loops, float64 (BatchNorm-style biased variance + eps)."""
    n, d = a.shape

    def standardise(z: np.ndarray) -> np.ndarray:
        out = np.empty_like(z)
        for j in range(d):
            col = z[:, j]
            mean = sum(col) / n
            var = sum((v - mean) ** 2 for v in col) / n
            out[:, j] = (col - mean) / math.sqrt(var + eps)
        return out

    an, bn = standardise(a), standardise(b)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(an[k, i] * bn[k, j] for k in range(n)) / n
            loss += (1.0 - c_ij) ** 2 if i == j else lam * c_ij**2
    return loss


def reference_nt_xent(a: np.ndarray, b: np.ndarray, tau: float) -> float:
    """SimCLR's loss over all 2N anchors, one anchor at a time, float64."""
    z = np.concatenate([a, b])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n2 = z.shape[0]
    half = n2 // 2
    total = 0.0
    for k in range(n2):
        positive = (k + half) % n2
        denominator = sum(math.exp(z[k] @ z[m] / tau) for m in range(n2) if m != k)
        total += -math.log(math.exp(z[k] @ z[positive] / tau) / denominator)
    return total / n2


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lam", [0.0, 1 / 8192, 0.5])
def test_barlow_twins_matches_reference(seed: int, lam: float) -> None:
    a, b = _randn(12, 5, seed=seed), _randn(12, 5, seed=seed + 100) + 0.3 * _randn(12, 5, seed=seed)
    got = barlow_twins_loss(a, b, lambda_offdiag=lam).item()
    assert got == pytest.approx(reference_barlow_twins(a.numpy(), b.numpy(), lam), rel=1e-5)


def test_barlow_twins_terms_add_up() -> None:
    a, b = _randn(16, 7, seed=3), _randn(16, 7, seed=4)
    terms = barlow_twins_terms(a, b, lambda_offdiag=0.25)
    assert terms.loss.item() == pytest.approx(
        terms.invariance.item() + 0.25 * terms.redundancy.item(), rel=1e-6
    )
    assert terms.invariance.item() == pytest.approx(
        reference_barlow_twins(a.numpy(), b.numpy(), 0.0), rel=1e-5
    )


def test_barlow_twins_invariant_to_per_feature_affine_rescaling() -> None:
    a, b = _randn(32, 6, seed=5), _randn(32, 6, seed=6) + _randn(32, 6, seed=5)
    g = torch.Generator().manual_seed(7)
    scale_a, scale_b = 0.5 + 1.5 * torch.rand(6, generator=g), 0.5 + 1.5 * torch.rand(6, generator=g)
    shift_a, shift_b = 10 * torch.randn(6, generator=g), 10 * torch.randn(6, generator=g)
    before = barlow_twins_loss(a, b, lambda_offdiag=0.1)
    after = barlow_twins_loss(a * scale_a + shift_a, b * scale_b + shift_b, lambda_offdiag=0.1)
    assert after.item() == pytest.approx(before.item(), rel=1e-4)
    # A negative scale is not a mere rescaling: it flips a correlation's sign.
    flipped = barlow_twins_loss(a * torch.tensor([-1.0, 1, 1, 1, 1, 1]), b, lambda_offdiag=0.1)
    assert flipped.item() != pytest.approx(before.item(), rel=1e-3)


def test_barlow_twins_symmetric_in_its_views() -> None:
    a, b = _randn(20, 8, seed=8), _randn(20, 8, seed=9)
    ab = barlow_twins_loss(a, b, lambda_offdiag=0.3)
    ba = barlow_twins_loss(b, a, lambda_offdiag=0.3)
    assert ab.item() == pytest.approx(ba.item(), rel=1e-10)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    assert barlow_twins_loss(a[perm], b[perm], lambda_offdiag=0.3).item() == pytest.approx(
        ab.item(), rel=1e-10
    )


def test_barlow_twins_minimal_for_identical_decorrelated_features() -> None:
    # Columns of an orthogonal matrix, centred: standardised, uncorrelated features.
    q, _ = torch.linalg.qr(_randn(64, 9, seed=10) - _randn(64, 9, seed=10).mean(0))
    z = torch.cat([q, -q]) * math.sqrt(128)  # zero mean, unit variance, exactly uncorrelated
    best = barlow_twins_loss(z, z, lambda_offdiag=0.5).item()
    assert best == pytest.approx(0.0, abs=1e-6)
    for seed in range(3):
        noisy = z + 0.1 * _randn(*z.shape, seed=seed)
        assert barlow_twins_loss(z, noisy, lambda_offdiag=0.5).item() > best + 1e-3
    mixed = z @ (torch.eye(9, dtype=z.dtype) + 0.3)  # perfectly correlated but not decorrelated
    assert barlow_twins_loss(mixed, mixed, lambda_offdiag=0.5).item() > 0.1


def test_barlow_twins_computes_half_precision_in_float32() -> None:
    a, b = _randn(16, 4, seed=11).half(), _randn(16, 4, seed=12).half()
    got = barlow_twins_loss(a, b, lambda_offdiag=0.1)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(
        reference_barlow_twins(a.double().numpy(), b.double().numpy(), 0.1), rel=1e-3
    )


def test_barlow_twins_rejects_bad_input() -> None:
    a = _randn(8, 4)
    with pytest.raises(ValueError, match="lambda_offdiag"):
        barlow_twins_loss(a, a, lambda_offdiag=-1.0)
    with pytest.raises(ValueError, match=r"\(8, 4\) and \(8, 3\)"):
        barlow_twins_loss(a, a[:, :3], lambda_offdiag=0.1)
    with pytest.raises(ValueError, match="at least 2"):
        barlow_twins_loss(a[:1], a[:1], lambda_offdiag=0.1)


def test_l21_norm_is_sum_of_column_norms() -> None:
    w = torch.tensor([[3.0, 0.0, 1.0], [4.0, 1.0, 0.0]])  # columns: (3,4), (0,1), (1,0)
    assert l21_norm(w).item() == pytest.approx(5.0 + 1.0 + 1.0)
    w = _randn(7, 5, seed=13)
    expected = sum(math.sqrt(sum(w[i, j].item() ** 2 for i in range(7))) for j in range(5))
    assert l21_norm(w).item() == pytest.approx(expected, rel=1e-10)
    linear = torch.nn.Linear(5, 3)
    l21_norm(linear.weight).backward()
    col = linear.weight.detach()[:, 2]
    assert torch.allclose(linear.weight.grad[:, 2], col / col.norm())
    with pytest.raises(ValueError, match="2-D"):
        l21_norm(torch.ones(3))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("tau", [0.07, 0.5, 1.0])
def test_nt_xent_matches_reference(seed: int, tau: float) -> None:
    a, b = _randn(10, 6, seed=seed), _randn(10, 6, seed=seed + 50)
    got = nt_xent_loss(a, b, temperature=tau).item()
    assert got == pytest.approx(reference_nt_xent(a.numpy(), b.numpy(), tau), rel=1e-6)


def test_nt_xent_known_value_for_orthogonal_negatives() -> None:
    # Positives identical, every other pair orthogonal: l = -1/tau + log(e^{1/tau} + 2N - 2).
    n, tau = 4, 0.2
    z = torch.eye(n, dtype=torch.float64) * 3.0  # scale must not matter (cosine similarity)
    expected = -1 / tau + math.log(math.exp(1 / tau) + 2 * n - 2)
    assert nt_xent_loss(z, z, temperature=tau).item() == pytest.approx(expected, rel=1e-10)


def test_nt_xent_symmetric_and_permutation_invariant() -> None:
    a, b = _randn(12, 5, seed=20), _randn(12, 5, seed=21)
    ab = nt_xent_loss(a, b, temperature=0.1).item()
    assert nt_xent_loss(b, a, temperature=0.1).item() == pytest.approx(ab, rel=1e-10)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    assert nt_xent_loss(a[perm], b[perm], temperature=0.1).item() == pytest.approx(ab, rel=1e-10)
    # Shuffling only one view breaks the positives and must raise the loss.
    assert nt_xent_loss(a, b[perm], temperature=0.1).item() != pytest.approx(ab, rel=1e-3)


def test_nt_xent_rejects_bad_temperature() -> None:
    a = _randn(4, 3)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(a, a, temperature=0.0)


def reference_supcon(a: np.ndarray, b: np.ndarray, labels: np.ndarray, tau: float) -> float:
    """Khosla et al.'s L^sup_out (eq. 2) one anchor at a time, float64: the 2N views are the
    rows of a then of b; P(i) = the other views of i's class, A(i) = all views but i."""
    z = np.concatenate([a, b])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    classes = list(labels) + list(labels)
    n2 = z.shape[0]
    total = 0.0
    for i in range(n2):
        denominator = sum(math.exp(z[i] @ z[k] / tau) for k in range(n2) if k != i)
        positives = [p for p in range(n2) if p != i and classes[p] == classes[i]]
        total += -sum(math.log(math.exp(z[i] @ z[p] / tau) / denominator)
                      for p in positives) / len(positives)
    return total / n2


@pytest.mark.parametrize("labels", [[0, 1, 0, 1, 2, 2, 0, 1, 1, 0], [3] * 10,
                                    [0, 1, 2, 3, 4, 5, 6, 7, 8, 0]])
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_supcon_matches_the_loop_written_formula(labels: list[int], tau: float) -> None:
    a, b = _randn(10, 6, seed=3), _randn(10, 6, seed=4)
    got = supcon_loss(a, b, torch.tensor(labels), temperature=tau).item()
    assert got == pytest.approx(reference_supcon(a.numpy(), b.numpy(), np.array(labels), tau),
                                rel=1e-6)


def test_supcon_with_one_image_per_class_is_nt_xent() -> None:
    a, b = _randn(9, 5, seed=5), _randn(9, 5, seed=6)
    assert supcon_loss(a, b, torch.arange(9), temperature=0.2).item() == pytest.approx(
        nt_xent_loss(a, b, temperature=0.2).item(), rel=1e-10)
    # a shared class adds positives: the loss changes
    same = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6, 7])
    assert supcon_loss(a, b, same, temperature=0.2).item() != pytest.approx(
        nt_xent_loss(a, b, temperature=0.2).item(), rel=1e-4)


def test_supcon_rejects_bad_input() -> None:
    a = _randn(4, 3)
    with pytest.raises(ValueError, match=r"labels must be \(4,\)"):
        supcon_loss(a, a, torch.zeros(3, dtype=torch.long), temperature=0.1)
    with pytest.raises(ValueError, match="temperature"):
        supcon_loss(a, a, torch.zeros(4, dtype=torch.long), temperature=-1.0)


def brute_force_top1(a: np.ndarray, b: np.ndarray) -> float:
    """Count, anchor by anchor, whether its other view beats every other candidate."""
    z = np.concatenate([a, b])
    n2 = z.shape[0]
    hits = 0
    for i in range(n2):
        positive = (i + n2 // 2) % n2
        cosine = [float(z[i] @ z[k] / (np.linalg.norm(z[i]) * np.linalg.norm(z[k])))
                  for k in range(n2)]
        hits += all(cosine[positive] > cosine[k] for k in range(n2) if k not in (i, positive))
    return hits / n2


def test_contrastive_top1_accuracy_equals_a_brute_force_count() -> None:
    # A fixed batch where some positives are the nearest candidate and some are not.
    a = _randn(8, 4, seed=7)
    b = a + 0.9 * _randn(8, 4, seed=8)
    expected = brute_force_top1(a.numpy(), b.numpy())
    assert 0.0 < expected < 1.0  # a batch that tells hits from misses
    assert contrastive_top1_accuracy(a, b).item() == pytest.approx(expected, abs=1e-7)
    # identical views: every positive is the nearest; one view shuffled: chance-like
    assert contrastive_top1_accuracy(a, a).item() == 1.0
    perm = torch.tensor([1, 2, 3, 4, 5, 6, 7, 0])
    assert contrastive_top1_accuracy(a, a[perm]).item() == pytest.approx(
        brute_force_top1(a.numpy(), a[perm].numpy()), abs=1e-7)
