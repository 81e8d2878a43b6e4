"""The ``logistic`` protocol: on a fixed feature set its rows equal scikit-learn's own grid
search (GridSearchCV over the same validation split, refit on all training data); features come
from the encoder in eval mode; the seed changes only the validation split; rows have every
column of the other protocols' rows."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, PredefinedSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from raysweep.config import EvaluationSpec, LogisticSpec
from raysweep.errors import DataError, SpecError
from raysweep.evaluate import LabelledFeatures, classification_metrics, logistic_probe
from raysweep.evaluate.logistic import c_grid, logistic_rows, validation_split
from raysweep.evaluate.protocol import make_row

CLASSES = ("a", "b", "c", "d")


def blobs(seed: int = 0, n_train: int = 60, n_test: int = 80, dim: int = 6) -> LabelledFeatures:
    """Four overlapping Gaussian classes (imbalanced), so C matters and seeds disagree."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 0.5, (len(CLASSES), dim))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.choice(len(CLASSES), size=n, p=[0.4, 0.3, 0.2, 0.1])
        return centres[y] * rng.uniform(0.5, 3.0, dim) + rng.normal(0, 1.0, (n, dim)), y

    (train_x, train_y), (test_x, test_y) = draw(n_train), draw(n_test)
    return LabelledFeatures(train_x, train_y.astype(np.int64), test_x, test_y.astype(np.int64),
                            CLASSES)


def sklearn_reference(features: LabelledFeatures, spec: LogisticSpec, seed: int,
                      scoring: str) -> tuple[float, dict]:
    """C and test metrics by scikit-learn's GridSearchCV on the same validation split."""
    fit, val = validation_split(features.train_x, features.train_y, features.class_names,
                                fraction=spec.val_fraction, seed=seed)
    fold = np.full(len(features.train_y), -1)
    fold[val] = 0
    search = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(
            solver="lbfgs", max_iter=spec.max_iter, tol=spec.tol,
            class_weight=None if spec.class_weight == "none" else "balanced")),
        {"logisticregression__C": list(c_grid(spec))}, cv=PredefinedSplit(fold),
        scoring=scoring, refit=True)
    search.fit(features.train_x, features.train_y)
    probs = np.zeros((len(features.test_y), len(CLASSES)))
    probs[:, search.best_estimator_.classes_] = search.predict_proba(features.test_x)
    return (search.best_params_["logisticregression__C"],
            classification_metrics(features.test_y, probs, CLASSES))


@pytest.mark.parametrize(("spec", "scoring"), [
    (LogisticSpec(c_min=1e-3, c_max=1e2, c_num=6, select_by="accuracy"), "accuracy"),
    (LogisticSpec(c_min=1e-3, c_max=1e2, c_num=6), "neg_log_loss"),  # the default
    (LogisticSpec(c_min=1e-2, c_max=10, c_num=4, class_weight="balanced",
                  select_by="balanced_accuracy", val_fraction=0.3), "balanced_accuracy"),
])
def test_rows_equal_scikit_learn_grid_search(spec: LogisticSpec, scoring: str) -> None:
    features = blobs()
    rows = logistic_rows(features, spec, seeds=[0, 1, 2, 3])
    assert [r["seed"] for r in rows] == [0, 1, 2, 3]
    for row in rows:
        c, metrics = sklearn_reference(features, spec, row["seed"], scoring)
        assert row["logistic_c"] == pytest.approx(c, rel=1e-12)
        for key in ("accuracy", "f1_weighted", "f1_macro", "balanced_accuracy", "auc_ovr"):
            assert row[key] == pytest.approx(metrics[key], abs=1e-9), key
        assert row["confusion_matrix"] == metrics["confusion_matrix"]
        scores = json.loads(row["logistic_val_scores"])
        assert len(scores) == spec.c_num and row["logistic_val_score"] == max(scores)
    # the validation split is what the seed changes
    splits = {tuple(validation_split(features.train_x, features.train_y, CLASSES,
                                     fraction=spec.val_fraction, seed=s)[1]) for s in range(4)}
    assert len(splits) == 4


def test_c_is_chosen_by_log_loss_and_an_edge_of_the_grid_is_flagged() -> None:
    """The default selection is the validation log-loss (a proper scoring rule); a row says
    whether its C is the grid's smallest or largest, and which share of the test images got
    its most frequent answer."""
    assert LogisticSpec().select_by == "log_loss"
    features = blobs(seed=3)
    spec = LogisticSpec(c_min=1e-5, c_max=1e-3, c_num=3)  # all strong: the edge is likely
    rows = logistic_rows(features, spec, seeds=[0, 1, 2, 3])
    grid = c_grid(spec)
    for row in rows:
        assert row["logistic_c_at_edge"] == (row["logistic_c"] in (grid[0], grid[-1]))
        matrix = np.asarray(json.loads(row["confusion_matrix"]))
        predicted = matrix.sum(axis=0)
        assert row["top_prediction_share"] == pytest.approx(predicted.max() / matrix.sum())
        assert row["top_prediction"] == CLASSES[int(np.argmax(predicted))]
    assert any(row["logistic_c_at_edge"] for row in rows)
    single = logistic_rows(features, LogisticSpec(c_min=0.5, c_max=0.5, c_num=1), seeds=[0])
    assert single[0]["logistic_c_at_edge"] is False  # one C: nothing was chosen


def test_single_c_gives_identical_rows_for_every_seed() -> None:
    features = blobs()
    spec = LogisticSpec(c_min=0.5, c_max=0.5, c_num=1)
    rows = logistic_rows(features, spec, seeds=[3, 1, 2])
    assert [r["seed"] for r in rows] == [3, 1, 2]
    assert len({(r["accuracy"], r["f1_weighted"], r["confusion_matrix"]) for r in rows}) == 1
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=1000))
    model.fit(features.train_x, features.train_y)
    expected = classification_metrics(features.test_y, model.predict_proba(features.test_x),
                                      CLASSES)
    assert rows[0]["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert rows[0]["logistic_val_size"] == 0 and math.isnan(rows[0]["logistic_val_score"])


def test_validation_split_is_stratified_seeded_and_keeps_copies_together() -> None:
    features = blobs(n_train=40)
    # oversampling: every item of class "d" three times
    copies = np.flatnonzero(features.train_y == 3)
    x = np.concatenate([features.train_x, features.train_x[copies], features.train_x[copies]])
    y = np.concatenate([features.train_y, features.train_y[copies], features.train_y[copies]])
    fit, val = validation_split(x, y, CLASSES, fraction=0.25, seed=0)
    assert sorted(np.concatenate([fit, val]).tolist()) == list(range(len(y)))
    fit_rows = {tuple(r) for r in x[fit]}
    assert not any(tuple(r) in fit_rows for r in x[val])  # no copy on both sides
    for cls in range(len(CLASSES)):  # per class: round(0.25 * distinct items), one kept to fit
        distinct = len({tuple(r) for r in x[y == cls]})
        expected = min(int(np.floor(0.25 * distinct + 0.5)), distinct - 1)
        assert len({tuple(r) for r in x[val][y[val] == cls]}) == expected
        assert (y[fit] == cls).any()
    again = validation_split(x, y, CLASSES, fraction=0.25, seed=0)
    other = validation_split(x, y, CLASSES, fraction=0.25, seed=1)
    assert np.array_equal(again[1], val) and not np.array_equal(other[1], val)


class FixedProjection(nn.Module):
    """Features = a fixed linear map of the flattened image (floats in [0, 1])."""

    def __init__(self, pixels: int, dim: int):
        super().__init__()
        self.output_dim = dim
        self.project = nn.Linear(pixels, dim, bias=False)
        with torch.no_grad():
            self.project.weight.copy_(torch.linspace(-1, 1, dim * pixels).reshape(dim, pixels))
            self.project.weight.mul_(torch.randn(dim, pixels, generator=torch.Generator()
                                                 .manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x.flatten(1))


def test_logistic_probe_uses_the_encoders_features_once() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 4
    images = (labels.view(-1, 1, 1, 1) * 50 + torch.randint(0, 60, (40, 1, 4, 4), generator=gen))
    images = images.to(torch.uint8)
    train, test = (images[:24], labels[:24]), (images[24:], labels[24:])
    encoder = FixedProjection(3 * 16, 5)
    settings = EvaluationSpec(logistic=LogisticSpec(c_min=0.01, c_max=10, c_num=4,
                                                    val_fraction=0.25))
    rows = logistic_probe(encoder, train, test, settings=settings, seeds=[0, 1],
                          class_names=CLASSES)

    def features(x: torch.Tensor) -> np.ndarray:  # grey -> RGB, uint8 -> [0, 1]
        return encoder(x.float().div(255).expand(-1, 3, -1, -1)).detach().double().numpy()

    expected = logistic_rows(LabelledFeatures(features(train[0]), train[1].numpy(),
                                              features(test[0]), test[1].numpy(), CLASSES),
                             settings.logistic, [0, 1])
    for row, ref in zip(rows, expected, strict=True):
        assert row["logistic_c"] == ref["logistic_c"]
        assert row["confusion_matrix"] == ref["confusion_matrix"]
        assert row["f1_weighted"] == pytest.approx(ref["f1_weighted"], abs=1e-12)
    # every column of a fastai-protocol row exists in a logistic row
    probe_like = make_row(protocol="probe", seed=0, settings=settings,
                          metrics=classification_metrics(np.arange(4), np.eye(4), CLASSES),
                          lr_max=1e-3, finder=None, bn_in_head_epoch="frozen", time_train_s=0,
                          time_eval_s=0, time_total_s=0, batched_heads=1)
    assert set(probe_like) <= set(rows[0])
    assert rows[0]["protocol"] == "logistic" and rows[0]["batched_heads"] == 2


def test_bad_settings_and_data_are_refused_in_one_line() -> None:
    with pytest.raises(SpecError, match="c_max: must not be below c_min"):
        LogisticSpec(c_min=1.0, c_max=0.1)
    with pytest.raises(SpecError, match="c_num: 1 value"):
        LogisticSpec(c_min=0.1, c_max=1.0, c_num=1)
    with pytest.raises(SpecError, match="select_by"):
        LogisticSpec(select_by="auc")
    tiny = LabelledFeatures(np.eye(2), np.array([0, 1]), np.eye(2), np.array([0, 1]), ("a", "b"))
    with pytest.raises(DataError, match="holds no item"):
        logistic_rows(tiny, LogisticSpec(c_num=3, c_min=0.1, c_max=1), [0])
