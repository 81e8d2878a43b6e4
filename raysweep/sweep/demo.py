"""``raysweep demo``: a study shaped like the paper, on a fresh offline machine.

Data: scikit-learn's bundled handwritten digits (1,797 real 8x8 images, no download), upsampled
to 16 px. The "ImageNet" of the demo is digits 0-4 (the *source*); the "skin lesion" task is
digits 5-9 (the *target*) with only a few labels.

- ``SL``: supervised pre-training of a small CIFAR-style ResNet on the source (labels used);
- ``SSL``: Barlow Twins on the same source images, labels ignored;
- ``SL-T-SSL_p`` / ``SSL-T-SSL_p``: further Barlow Twins pre-training of each on the target's
  unlabelled training images, last block only (the paper's SSL_p), after one frozen epoch;
- every encoder (and a random-init baseline) fine-tuned and linearly probed on the target over
  5 seeds with 100 labels (the paper's protocols), and evaluated with the SSL papers' logistic
  regression on standardised frozen features (``logistic``);
- a representation analysis of every encoder (kNN accuracy, linear separability, silhouette,
  PCA and t-SNE), then the significance report, including a comparison across protocols (the
  frozen further-pre-trained SSL encoder's probe against the random-init encoder fine-tuned).

``smoke=True`` keeps the same shape with one epoch everywhere (about a minute on 2 CPU cores).

``raysweep demo --search`` (:func:`demo_search_spec`) is the search counterpart: Optuna + ASHA
over Barlow Twins lambda, alpha, lr_max and strength on the target's images.
"""

from __future__ import annotations

from typing import Any

from raysweep.config import ExperimentSpec, spec_from_data

SOURCE_CLASSES = ["0", "1", "2", "3", "4"]
TARGET_CLASSES = ["5", "6", "7", "8", "9"]
IMAGE_SIZE = 16


def demo_spec_dict(*, smoke: bool = False, storage: str | None = None) -> dict[str, Any]:
    """The demo experiment as plain data (what a YAML spec of it would hold)."""
    source = {"sources": [{"kind": "digits", "classes": SOURCE_CLASSES}],
              "image_size": IMAGE_SIZE, "test_fraction": 0.2}
    target_unlabelled = {"sources": [{"kind": "digits", "classes": TARGET_CLASSES,
                                      "labelled": False}],
                         "image_size": IMAGE_SIZE, "test_fraction": 0.2}
    target = {"sources": [{"kind": "digits", "classes": TARGET_CLASSES}],
              "image_size": IMAGE_SIZE, "test_fraction": 0.3, "label_count": 100}
    pre_epochs = 1 if smoke else 8
    further_epochs = 1 if smoke else 4
    # A fixed lr_max keeps the demo's short pre-training runs stable (the LR finder needs more
    # iterations than a one-epoch smoke run has to be meaningful).
    common = {"encoder": {"name": "small_resnet"}, "batch_size": 64, "projector": [128, 128],
              "lr_max": 2e-3, "seed": 0, "num_workers": 1,
              "lambda_offdiag": 1 / 128, "weight_decay": 1.5e-6}
    further = {**common, "data": target_unlabelled, "method": "barlow_twins", "further": True,
               "frozen_epochs": 1, "trainable": "last_block", "epochs": further_epochs}
    pretrain = [
        {**common, "name": "SL", "data": source, "method": "supervised", "further": False,
         "frozen_epochs": 0, "epochs": pre_epochs, "augmentation": "supervised",
         "keys": {"initial": "SL"}},
        {**common, "name": "SSL", "data": source, "method": "barlow_twins", "further": False,
         "frozen_epochs": 0, "epochs": pre_epochs, "keys": {"initial": "SSL"}},
        {**further, "name": "SL-T-SSL_p", "encoder": {"name": "small_resnet",
                                                     "weights": "pretrain:SL"},
         "keys": {"initial": "SL", "further_data": "T", "further_method": "SSL_p"}},
        {**further, "name": "SSL-T-SSL_p", "encoder": {"name": "small_resnet",
                                                      "weights": "pretrain:SSL"},
         "keys": {"initial": "SSL", "further_data": "T", "further_method": "SSL_p"}},
    ]
    none = {"further_data": "-", "further_method": "-"}
    encoders = [
        {"name": "SL", "encoder": {"name": "small_resnet", "weights": "pretrain:SL"},
         "keys": none},
        {"name": "SSL", "encoder": {"name": "small_resnet", "weights": "pretrain:SSL"},
         "keys": none},
        {"name": "SL-T-SSL_p", "encoder": {"name": "small_resnet", "weights": "pretrain:SL-T-SSL_p"}},
        {"name": "SSL-T-SSL_p", "encoder": {"name": "small_resnet",
                                            "weights": "pretrain:SSL-T-SSL_p"}},
        {"name": "random", "encoder": {"name": "small_resnet", "weights": "random"},
         "protocols": ["finetune"], "keys": {"initial": "random", **none}},
    ]
    spec: dict[str, Any] = {
        "name": "demo-smoke" if smoke else "demo",
        "description": "SL vs SSL initial encoders, further SSL_p pre-training, few labels "
                       "(digits 0-4 -> 5-9)",
        "pretrain": pretrain,
        "evaluate": {
            "data": target,
            "protocols": ["finetune", "probe", "logistic"],
            "seeds": 5,
            # Digits have an orientation (a mirrored 2 is no 2): no flips in fine-tuning / TTA.
            # Batch 16 gives the 100 labels 6 steps per epoch.
            "settings": {"epochs": 1 if smoke else 20, "batch_size": 16,
                         "lr_finder_iters": 10 if smoke else 50,
                         "augmentation": "supervised_upright"},
            "encoders": encoders,
            "representations": {},
        },
        "report": {
            "comparisons": [
                {"model_1": "SSL", "model_2": "SL", "alternative": "greater"},
                {"model_1": "SL-T-SSL_p", "model_2": "SL", "alternative": "greater"},
                {"model_1": "SSL-T-SSL_p", "model_2": "SSL", "alternative": "greater"},
                {"model_1": "SL-T-SSL_p", "model_2": "SSL-T-SSL_p", "alternative": "two-sided"},
                {"model_1": "SSL-T-SSL_p", "protocol_1": "probe", "model_2": "random",
                 "protocol_2": "finetune", "alternative": "greater"},
            ],
            "bootstrap_resamples": 2000,
        },
    }
    if storage:
        spec["storage"] = storage
    return spec


def demo_spec(*, smoke: bool = False, storage: str | None = None) -> ExperimentSpec:
    return spec_from_data(demo_spec_dict(smoke=smoke, storage=storage), source="<demo>")


def demo_search_spec_dict(*, smoke: bool = False, storage: str | None = None) -> dict[str, Any]:
    """The demo search (``raysweep demo --search``): Optuna over the paper's four knobs (Barlow
    Twins lambda, sparsity alpha, lr_max, augmentation strength) for Barlow Twins pre-training
    of the small ResNet on the target's images (digits 5-9, labels ignored), each trial scored
    by 3-seed linear probes with 100 labels on a validation split; ASHA stops trials whose kNN
    proxy lags after epoch 1 or 3 of 4. 6 trials + the default: a trial is dominated by Ray
    Train's start-up, so the count, not the epochs, sets the wall time (benchmarks/BENCHMARKS.md).
    ``smoke=True``: 4 trials of 2 epochs, 2 probe seeds (the CI test)."""
    unlabelled = {"sources": [{"kind": "digits", "classes": TARGET_CLASSES, "labelled": False}],
                  "image_size": IMAGE_SIZE, "test_fraction": 0.2}
    # A validation split of its own: the search scores on it and never reads the test split.
    labelled = {"sources": [{"kind": "digits", "classes": TARGET_CLASSES}],
                "image_size": IMAGE_SIZE, "test_fraction": 0.3, "val_fraction": 0.2,
                "label_count": 100}
    spec: dict[str, Any] = {
        "name": "demo-search-smoke" if smoke else "demo-search",
        "description": "Optuna + ASHA over Barlow Twins lambda, alpha, lr_max and strength "
                       "(digits 5-9, 100 labels)",
        "search": [{
            "name": "barlow_twins",
            "pretrain": {
                "name": "bt", "data": unlabelled, "method": "barlow_twins", "further": False,
                "encoder": {"name": "small_resnet"}, "epochs": 2 if smoke else 4,
                "batch_size": 64, "projector": [128, 128], "lr_max": 2e-3, "seed": 0,
                "lambda_offdiag": 1 / 128, "alpha": 0.01, "weight_decay": 1.5e-6,
            },
            "evaluate": {
                "data": labelled, "seeds": 2 if smoke else 3,
                "settings": {"epochs": 10 if smoke else 20, "batch_size": 16,
                             "lr_finder_iters": 20 if smoke else 50, "tta_views": 0,
                             "augmentation": "supervised_upright"},
            },
            "space": {
                "pretrain.lambda_offdiag": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
                "pretrain.alpha": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
                "pretrain.lr_max": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
                "pretrain.strength": {"type": "uniform", "low": 0.5, "high": 1.5},
            },
            "num_samples": 4 if smoke else 6,
            "grace_period": 1,
            "reduction_factor": 3,
            "seed": 0,
        }],
    }
    if storage:
        spec["storage"] = storage
    return spec


def demo_search_spec(*, smoke: bool = False, storage: str | None = None) -> ExperimentSpec:
    return spec_from_data(demo_search_spec_dict(smoke=smoke, storage=storage),
                          source="<demo --search>")
