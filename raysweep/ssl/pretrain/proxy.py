"""A cheap downstream proxy during pre-training: kNN or linear-probe accuracy.

Every ``proxy_every`` epochs the encoder (eval mode, no augmentation) embeds the labelled train
split and the validation split (the test split when the data has no validation split) of
``spec.proxy_data``; the score is reported as ``proxy_knn_acc`` / ``proxy_linear_acc``, a
metric a Tune scheduler (ASHA) can stop on. The decoded images are loaded once per process
and kept (the decode-once cache makes reloading cheap anyway); features are recomputed each
time because the encoder changes.

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
from torch import nn

from raysweep.artefacts import stable_hash
from raysweep.config import DatasetSpec

__all__ = ["KNN_K", "KNN_TEMPERATURE", "embed", "knn_accuracy", "linear_probe_accuracy",
           "proxy_score"]

KNN_K = 20
KNN_TEMPERATURE = 0.07


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
    from raysweep.data import load_dataset

    dataset = load_dataset(spec, progress=False)
    train_index, train_labels = dataset.labelled_indices("train")
    has_val = bool(np.any(dataset.labels[dataset.indices("val")] >= 0))
    eval_index, eval_labels = dataset.labelled_indices("val" if has_val else "test")
    # Oversampling repeats do not help a kNN / probe: keep each training image once.
    train_index, first = np.unique(train_index, return_index=True)
    return dataset.images, train_index, train_labels[first], eval_index, eval_labels


@torch.no_grad()
def embed(encoder: nn.Module, images: Any, index: np.ndarray, *, device: torch.device,
          bf16: bool = False, batch_size: int = 256) -> torch.Tensor:
    """Encoder features (n, d), float32 on CPU, of ``images[index]`` (uint8 (N, C, H, W))."""
    from raysweep.data import to_float_rgb

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
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

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
