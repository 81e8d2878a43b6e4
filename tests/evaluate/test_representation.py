"""Representation analysis: on a fixed feature set every score equals scikit-learn's own
computation, the PCA embedding equals PCA fit on the training features, and t-SNE is
reproducible from the settings' seed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from raysweep.config import RepresentationSpec
from raysweep.errors import SpecError
from raysweep.evaluate import LabelledFeatures, representation_analysis
from raysweep.evaluate.representation import embedding_subset, representation_metrics
from raysweep.seeding import derive_seed

CLASSES = ("a", "b", "c")


def features(seed: int = 0, n_train: int = 45, n_test: int = 60) -> LabelledFeatures:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (3, 8))
    scale = rng.uniform(0.2, 5.0, 8)  # unequal feature scales: standardisation matters

    def draw(n: int):
        y = np.arange(n) % 3
        return (centres[y] + rng.normal(0, 1.0, (n, 8))) * scale, y

    (train_x, train_y), (test_x, test_y) = draw(n_train), draw(n_test)
    return LabelledFeatures(train_x, train_y, test_x, test_y, CLASSES)


def test_metrics_equal_scikit_learn_on_a_fixed_feature_set() -> None:
    f = features()
    spec = RepresentationSpec(knn_k=7, separability_folds=4, seed=3)
    got = representation_metrics(f, spec)

    scaler = StandardScaler().fit(f.train_x)
    train, test = scaler.transform(f.train_x), scaler.transform(f.test_x)
    knn = KNeighborsClassifier(n_neighbors=7, metric="cosine").fit(train, f.train_y)
    assert got["knn_accuracy"] == pytest.approx(knn.score(test, f.test_y), abs=1e-12)
    folds = StratifiedKFold(4, shuffle=True,
                            random_state=derive_seed(3, "representation", "separability") % 2**32)
    cv = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(C=1.0)),
                         test, f.test_y, cv=folds)
    assert got["linear_separability"] == pytest.approx(cv.mean(), abs=1e-12)
    assert got["silhouette"] == pytest.approx(silhouette_score(test, f.test_y), abs=1e-12)
    # the unstandardised features would score differently: standardisation is applied
    assert silhouette_score(f.test_x, f.test_y) != pytest.approx(got["silhouette"], abs=1e-3)
    # k is capped at the training size
    capped = representation_metrics(f, RepresentationSpec(knn_k=1000))
    every = KNeighborsClassifier(n_neighbors=45, metric="cosine").fit(train, f.train_y)
    assert capped["knn_accuracy"] == pytest.approx(every.score(test, f.test_y), abs=1e-12)


def test_separability_is_undefined_with_a_single_image_of_a_class() -> None:
    f = features()
    lonely = LabelledFeatures(f.train_x, f.train_y, f.test_x[:7], np.array([0, 1, 2, 0, 1, 0, 1]),
                              CLASSES)
    assert math.isnan(representation_metrics(lonely, RepresentationSpec())["linear_separability"])


def test_embeddings_pca_from_training_features_and_reproducible_tsne() -> None:
    f = features(n_test=90)
    spec = RepresentationSpec(max_points=50, perplexity=10, tsne_pca_dims=5)
    result = representation_analysis(f, spec)
    emb = result["embedding"]
    index = np.asarray(emb["index"])
    assert len(index) == 50 and np.array_equal(index, embedding_subset(90, spec))
    assert np.all(np.diff(index) > 0) and index.max() < 90
    assert emb["labels"] == f.test_y[index].tolist()
    scaler = StandardScaler().fit(f.train_x)
    pca = PCA(2).fit(scaler.transform(f.train_x))
    expected = pca.transform(scaler.transform(f.test_x)[index])
    np.testing.assert_allclose(emb["pca"], expected, atol=1e-5)
    assert emb["pca_explained_variance"] == pytest.approx(pca.explained_variance_ratio_.tolist())
    assert np.asarray(emb["tsne"]).shape == (50, 2)
    assert representation_analysis(f, spec)["embedding"]["tsne"] == emb["tsne"]
    moved = representation_analysis(f, spec.replace(seed=1))["embedding"]
    assert moved["index"] != emb["index"]
    assert (result["n_train"], result["n_test"], result["feature_dim"]) == (45, 90, 8)
    # every test image when there are few enough
    assert len(embedding_subset(90, RepresentationSpec(max_points=2000))) == 90


def test_bad_settings_are_refused() -> None:
    with pytest.raises(SpecError, match="separability_folds"):
        RepresentationSpec(separability_folds=1)
    with pytest.raises(SpecError, match="perplexity"):
        RepresentationSpec(perplexity=0)
