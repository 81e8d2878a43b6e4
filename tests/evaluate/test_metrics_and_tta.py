"""Metrics against sklearn and the paper's formula; TTA view count and probability averaging."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

from raysweep.evaluate import classification_metrics, tta_probabilities

NAMES = ("akiec", "bcc", "mel")


def random_predictions(seed: int, n: int = 200, classes: int = 3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs


@pytest.mark.parametrize("seed", range(3))
def test_weighted_f1_equals_sklearn_and_the_papers_formula(seed: int) -> None:
    labels, probs = random_predictions(seed)
    row = classification_metrics(labels, probs, NAMES)
    predictions = probs.argmax(axis=1)
    assert row["f1_weighted"] == f1_score(labels, predictions, average="weighted")
    # section 3.6: sum_j w_j F1_j, w_j = share of class j in the test set
    paper = 0.0
    for j in range(3):
        tp = np.sum((predictions == j) & (labels == j))
        precision = tp / max(np.sum(predictions == j), 1)
        recall = tp / np.sum(labels == j)
        f1 = 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)
        assert row[f"f1/{NAMES[j]}"] == pytest.approx(f1)
        assert row[f"support/{NAMES[j]}"] == np.sum(labels == j)
        paper += np.mean(labels == j) * f1
    assert row["f1_weighted"] == pytest.approx(paper, abs=1e-12)
    assert row["accuracy"] == np.mean(predictions == labels)
    matrix = np.array(json.loads(row["confusion_matrix"]))
    assert matrix.sum() == len(labels) and np.trace(matrix) == np.sum(predictions == labels)
    assert row["auc_ovr"] == roc_auc_score(labels, probs, multi_class="ovr")


def test_binary_auc_uses_the_positive_class_probability() -> None:
    labels, probs = random_predictions(7, classes=2)
    row = classification_metrics(labels, probs, ("benign", "malignant"))
    assert row["auc_ovr"] == roc_auc_score(labels, probs[:, 1])
    assert 0.5 < row["auc_ovr"] <= 1.0


def test_tta_uses_exactly_three_views_and_averages_probabilities() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8, generator=gen)
    weight = torch.randn(3 * 8 * 8, 4, generator=gen)
    calls: list[int] = []

    def augment(x: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
        calls.append(x.shape[0])
        return x * torch.rand(x.shape[0], 1, 1, 1, generator=generator)

    def logits_fn(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ weight

    probs = tta_probabilities(logits_fn, images, augment=augment, views=3,
                              generator=torch.Generator().manual_seed(5), batch_size=4)
    assert calls == [4, 4, 4, 4, 4, 4, 2, 2, 2]  # 3 views for each of the 3 batches
    # manual: the same draws, in the same order, then the mean of the softmaxes
    replay = torch.Generator().manual_seed(5)
    expected = []
    for start in range(0, 10, 4):
        x = images[start:start + 4].float().div(255).expand(-1, 3, -1, -1)
        views = [torch.softmax(logits_fn(x * torch.rand(x.shape[0], 1, 1, 1, generator=replay)),
                               dim=-1) for _ in range(3)]
        expected.append(sum(views) / 3)
    torch.testing.assert_close(probs, torch.cat(expected))
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(10))
    # and it differs from a single un-augmented view
    plain = tta_probabilities(logits_fn, images, augment=augment, views=0,
                              generator=torch.Generator(), batch_size=4)
    assert not torch.allclose(plain, probs)
