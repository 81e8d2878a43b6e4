"""Representation analysis of one encoder's frozen features (Jiang, thesis section 7.1: PCA,
t-SNE and the silhouette coefficient; kNN accuracy as in DINO, Caron et al. 2021).

Every number is scikit-learn's, on features standardised with the *training* split's mean and
standard deviation (``StandardScaler``):

- ``knn_accuracy``: a ``KNeighborsClassifier`` (``knn_k`` neighbours, capped at the training
  size; cosine distance, uniform vote) fit on the labelled training features, its accuracy on
  the test set.
- ``linear_separability``: how well one linear boundary per class separates the *test*
  features: the mean accuracy of a stratified ``separability_folds``-fold cross-validation
  (folds capped at the smallest test class) of ``StandardScaler`` + ``LogisticRegression``
  (C = 1, L-BFGS) on the test features alone. NaN when a test class has a single image.
- ``silhouette``: ``silhouette_score`` (Euclidean) of the test features, the true classes as
  clusters (Rousseeuw 1987; in [-1, 1], higher = classes better separated).
- 2-D embeddings of up to ``max_points`` test images (a random subset, seeded): PCA fit on the
  training features (the thesis' Figure 7.3), and t-SNE (perplexity ``perplexity``, PCA
  initialisation, seeded) of their first ``tsne_pca_dims`` principal components (PCA fit on
  the training features).

Computed once per encoder and labelled data (``raysweep.stages.representation``), never
per seed: nothing here depends on a training seed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from raysweep.config import RepresentationSpec
from raysweep.evaluate.features import LabelledFeatures
from raysweep.seeding import derive_seed, numpy_rng

__all__ = ["embedding_subset", "representation_metrics", "representation_analysis"]

#: Decimals kept of the 2-D coordinates (plots only).
COORDINATE_DECIMALS = 5


def _standardised(features: LabelledFeatures) -> tuple[np.ndarray, np.ndarray]:
    scaler = StandardScaler().fit(features.train_x)
    return scaler.transform(features.train_x), scaler.transform(features.test_x)


def _sklearn_seed(seed: int, purpose: str) -> int:
    """A 32-bit ``random_state`` for scikit-learn from ``(seed, purpose)``."""
    return derive_seed(seed, "representation", purpose) % (2**32)


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, k: int) -> float:
    model = KNeighborsClassifier(n_neighbors=min(k, len(train_y)), metric="cosine",
                                 algorithm="brute")
    return float(model.fit(train_x, train_y).score(test_x, test_y))


def linear_separability(test_x: np.ndarray, test_y: np.ndarray, folds: int, seed: int) -> float:
    counts = np.unique(test_y, return_counts=True)[1]
    n_splits = min(folds, int(counts.min()))
    if len(counts) < 2 or n_splits < 2:
        return math.nan
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True,
                         random_state=_sklearn_seed(seed, "separability"))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    return float(cross_val_score(model, test_x, test_y, cv=cv, scoring="accuracy").mean())


def silhouette(test_x: np.ndarray, test_y: np.ndarray) -> float:
    n_labels = len(np.unique(test_y))
    if not 2 <= n_labels <= len(test_y) - 1:
        return math.nan
    return float(silhouette_score(test_x, test_y, metric="euclidean"))


def representation_metrics(features: LabelledFeatures, spec: RepresentationSpec
                           ) -> dict[str, float]:
    """``knn_accuracy``, ``linear_separability`` and ``silhouette`` (see the module doc)."""
    train_x, test_x = _standardised(features)
    return {
        "knn_accuracy": knn_accuracy(train_x, features.train_y, test_x, features.test_y,
                                     spec.knn_k),
        "linear_separability": linear_separability(test_x, features.test_y,
                                                   spec.separability_folds, spec.seed),
        "silhouette": silhouette(test_x, features.test_y),
    }


def embedding_subset(n_test: int, spec: RepresentationSpec) -> np.ndarray:
    """Sorted indices of the test images embedded: all of them, or ``max_points`` drawn
    without replacement from ``numpy_rng(seed, "representation", "subset")``."""
    if n_test <= spec.max_points:
        return np.arange(n_test)
    rng = numpy_rng(spec.seed, "representation", "subset")
    return np.sort(rng.choice(n_test, size=spec.max_points, replace=False))


def embeddings(features: LabelledFeatures, spec: RepresentationSpec) -> dict[str, Any]:
    """PCA and t-SNE coordinates (lists of ``[x, y]``) of the :func:`embedding_subset` of the
    test set, with its indices and labels and the share of variance the two principal
    components explain."""
    train_x, test_x = _standardised(features)
    index = embedding_subset(len(features.test_y), spec)
    points = test_x[index]
    pca = PCA(n_components=2).fit(train_x)
    dims = min(spec.tsne_pca_dims, train_x.shape[1], train_x.shape[0])
    reduced = PCA(n_components=dims).fit(train_x).transform(points)
    perplexity = min(spec.perplexity, max(1.0, (len(index) - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca",
                random_state=_sklearn_seed(spec.seed, "tsne")).fit_transform(reduced)
    return {
        "index": index.tolist(),
        "labels": features.test_y[index].tolist(),
        "pca": np.round(pca.transform(points), COORDINATE_DECIMALS).tolist(),
        "pca_explained_variance": [float(v) for v in pca.explained_variance_ratio_],
        "tsne": np.round(tsne, COORDINATE_DECIMALS).tolist(),
        "tsne_perplexity": float(perplexity),
    }


def representation_analysis(features: LabelledFeatures, spec: RepresentationSpec
                            ) -> dict[str, Any]:
    """Everything the report shows of one encoder: :func:`representation_metrics`, the sizes
    and :func:`embeddings`; plain JSON values."""
    return {
        **representation_metrics(features, spec),
        "n_train": int(len(features.train_y)),
        "n_test": int(len(features.test_y)),
        "feature_dim": int(features.train_x.shape[1]),
        "class_names": list(features.class_names),
        "embedding": embeddings(features, spec),
    }
