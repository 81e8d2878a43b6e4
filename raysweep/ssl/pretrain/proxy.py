"""A cheap downstream proxy during pre-training: kNN or linear-probe accuracy.

Every ``proxy_every`` epochs (the frozen epochs count; the last epoch always has one) the
encoder (eval mode, no augmentation) embeds the labelled train split and the validation split
of ``spec.proxy_data``; the score is reported as ``proxy_knn_acc`` / ``proxy_linear_acc``, a
metric a Tune scheduler (ASHA) can stop on. The test split is never read: data without a
validation split are scored on a stratified holdout of their labelled train split
(:func:`validation_split`, :data:`HOLDOUT_FRACTION`), the same images a search scores its
trials on. The decoded images are loaded once per process and kept (the decode-once cache
makes reloading cheap anyway); features are recomputed each time because the encoder changes.

* ``knn``: weighted k-nearest-neighbour vote on L2-normalised features (cosine similarity,
  k = 20, each neighbour weighted by ``exp(sim / 0.07)``: the protocol of Wu et al. 2018, used
  by DINO and solo-learn).
* ``linear``: multinomial logistic regression (scikit-learn, L-BFGS, 200 iterations) on
  standardised features.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from raysweep.config import DatasetSpec
from raysweep.data import load_dataset, to_float_rgb
from raysweep.data.splits import oversample, stratified_split
from raysweep.errors import DataError
from raysweep.storage.atomic import stable_hash

__all__ = ["HOLDOUT_FRACTION", "KNN_K", "KNN_TEMPERATURE", "embed", "knn_accuracy",
           "linear_probe_accuracy", "proxy_score", "validation_split"]

KNN_K = 20
KNN_TEMPERATURE = 0.07

#: Share of each class's labelled training images held out for validation when the data has
#: no validation split of its own.
HOLDOUT_FRACTION = 0.2


_LOADED: dict[str, tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}


def _splits(spec: DatasetSpec) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images, train index, train labels, eval index, eval labels), loaded once per process."""
    key = stable_hash(spec)
    if key not in _LOADED:
        _LOADED.clear()  # one proxy dataset per run: keep only the newest
        _LOADED[key] = _load_splits(spec)
    return _LOADED[key]


def _load_splits(spec: DatasetSpec) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray,
                                              np.ndarray]:

    dataset = load_dataset(spec, progress=False)
    train_index, train_labels, eval_index, eval_labels = validation_split(dataset)
    # Oversampling repeats do not help a kNN / probe: keep each training image once.
    train_index, first = np.unique(train_index, return_index=True)
    return dataset.images, train_index, train_labels[first], eval_index, eval_labels


def validation_split(dataset: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(fit indices, fit labels, validation indices, validation labels), int64 each, of an
    :class:`~raysweep.data.ImageDataset`; its test split is never used.

    The validation part is the dataset's labelled ``val`` split when it has one (the fit part
    is then ``labelled_indices("train")``). Otherwise it is a stratified
    :data:`HOLDOUT_FRACTION` of the labelled training images (after the label subset, chosen
    by the dataset's split seed, so it is the same on every machine and run), and the fit part
    is the rest, oversampled as ``labelled_indices("train")`` would be. Every held-out class
    keeps at least one image in the fit part.
    """

    val = dataset.indices("val")
    if np.any(dataset.labels[val] >= 0):
        fit_index, fit_labels = dataset.labelled_indices("train")
        val_index, val_labels = dataset.labelled_indices("val")
        return fit_index, fit_labels, val_index, val_labels
    chosen = np.asarray(dataset.train_labelled, dtype=np.int64)
    names = [dataset.classes[c] for c in dataset.labels[chosen]]
    codes = stratified_split(names, test_fraction=HOLDOUT_FRACTION, val_fraction=0.0,
                             seed=dataset.split_seed, purpose="validation-holdout")
    held, kept = chosen[codes == 2], chosen[codes != 2]
    if len(np.unique(dataset.labels[held])) < 2:
        raise DataError(f"dataset {dataset.name}: too few labelled training images to hold out "
                        f"a validation set of two or more classes ({len(chosen)} labels); "
                        "give the data a validation split (val_fraction)")
    fit_index = oversample(kept, dataset.ratio[kept], dataset.stratum[kept],
                           seed=dataset.split_seed, purpose="train")
    return fit_index, dataset.labels[fit_index], held, dataset.labels[held]


@torch.no_grad()
def embed(encoder: nn.Module, images: Any, index: np.ndarray, *, device: torch.device,
          bf16: bool = False, batch_size: int = 256) -> torch.Tensor:
    """Encoder features (n, d), float32 on CPU, of ``images[index]`` (uint8 (N, C, H, W))."""

    was_training = encoder.training
    encoder.eval()
    out = []
    for start in range(0, len(index), batch_size):
        chunk = np.sort(index[start:start + batch_size])
        order = np.argsort(np.argsort(index[start:start + batch_size], kind="stable"))
        x = to_float_rgb(torch.from_numpy(np.ascontiguousarray(images[chunk])).to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            features = encoder(x)
        out.append(features.float().cpu()[torch.from_numpy(order)])
    encoder.train(was_training)
    return torch.cat(out)


def knn_accuracy(train: torch.Tensor, train_labels: np.ndarray, test: torch.Tensor,
                 test_labels: np.ndarray, *, k: int = KNN_K,
                 temperature: float = KNN_TEMPERATURE) -> float:
    """Accuracy of the similarity-weighted kNN vote (features (n, d), labels int (n,))."""
    train, test = F.normalize(train.float(), dim=1), F.normalize(test.float(), dim=1)
    labels = torch.as_tensor(train_labels, dtype=torch.long)
    classes = int(max(labels.max().item(), int(np.max(test_labels)))) + 1
    k = min(k, len(train))
    sims, nearest = (test @ train.T).topk(k, dim=1)
    votes = torch.zeros(len(test), classes)
    votes.scatter_add_(1, labels[nearest], torch.exp(sims / temperature))
    predicted = votes.argmax(dim=1).numpy()
    return float(np.mean(predicted == np.asarray(test_labels)))


def linear_probe_accuracy(train: torch.Tensor, train_labels: np.ndarray, test: torch.Tensor,
                          test_labels: np.ndarray, *, seed: int = 0) -> float:
    """Accuracy of logistic regression fitted on standardised ``train`` features."""

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200, random_state=seed))
    model.fit(train.numpy(), np.asarray(train_labels))
    return float(model.score(test.numpy(), np.asarray(test_labels)))


def proxy_score(encoder: nn.Module, data: DatasetSpec, *, kind: str, device: torch.device,
                bf16: bool = False, seed: int = 0) -> float:
    """``kind`` (``knn`` | ``linear``) accuracy of ``encoder``'s features on ``data``."""
    images, train_index, train_labels, eval_index, eval_labels = _splits(data)
    train = embed(encoder, images, train_index, device=device, bf16=bf16)
    test = embed(encoder, images, eval_index, device=device, bf16=bf16)
    if kind == "knn":
        return knn_accuracy(train, train_labels, test, eval_labels)
    if kind == "linear":
        return linear_probe_accuracy(train, train_labels, test, eval_labels, seed=seed)
    raise ValueError(f"unknown proxy {kind!r}; use knn or linear")
