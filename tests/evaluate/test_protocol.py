"""The protocol on real data (breastmnist, 28 px) with the small encoder and the ``supervised``
augmentation: reproducibility, batched probes = separate probes, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from raysweep.augment import build_pipeline
from raysweep.config import EvaluationSpec
from raysweep.errors import DataError, WeightsError
from raysweep.evaluate import finetune, probe, probe_batched, probe_single
from raysweep.models import build_encoder

CLASSES = ("malignant", "normal-benign")
TINY = EvaluationSpec(epochs=2, lr_finder_iters=10, batch_size=64)
TIMINGS = ("time_train_s", "time_eval_s", "time_total_s", "batched_heads")


@pytest.fixture(scope="module")
def breast(breastmnist_npz: Path):
    data = np.load(breastmnist_npz)
    train = (data["train_images"][:, None], data["train_labels"].astype(np.int64))
    test = (data["test_images"][:, None], data["test_labels"].astype(np.int64))
    return train, test


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("small_resnet", generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def augment():
    return build_pipeline("supervised", image_size=28)


def without_timings(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMINGS}


@pytest.mark.slow
def test_finetune_row_is_reproducible_and_leaves_the_encoder_alone(breast, encoder,
                                                                   augment) -> None:
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    first = finetune(encoder, *breast, settings=TINY, seed=3, class_names=CLASSES,
                     augment=augment)
    second = finetune(encoder, *breast, settings=TINY, seed=3, class_names=CLASSES,
                      augment=augment)
    assert without_timings(first) == without_timings(second)  # bit-reproducible on CPU
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert first["protocol"] == "finetune" and first["bn_in_head_epoch"] == "trainable"
    finder = json.loads(first["lr_finder"])
    assert len(finder["lrs"]) == len(finder["losses"]) <= 10
    assert finder["suggestion"] == first["lr_max"] and first["lr_max"] in finder["lrs"]
    assert first["support/malignant"] + first["support/normal-benign"] == 156
    assert 0.0 <= first["accuracy"] <= 1.0 and first["seed_scope"] == "head"
    frozen = finetune(encoder, *breast, settings=TINY.replace(bn_in_head_epoch="frozen"),
                      seed=3, class_names=CLASSES, augment=augment)
    assert frozen["bn_in_head_epoch"] == "frozen"
    assert frozen["lr_finder"] != first["lr_finder"]  # the head epoch trained differently


@pytest.mark.slow
def test_batched_k5_probes_equal_five_separate_probes(breast, encoder, augment) -> None:
    seeds = [0, 1, 2, 3, 4]
    rows, probs = probe_batched(encoder, *breast, settings=TINY, seeds=seeds,
                                class_names=CLASSES, augment=augment,
                                return_probabilities=True)
    assert probs.shape == (5, 156, 2)
    for k, seed in enumerate(seeds):
        row, single = probe_single(encoder, *breast, settings=TINY, seed=seed,
                                   class_names=CLASSES, augment=augment,
                                   return_probabilities=True)
        assert torch.equal(probs[k].argmax(dim=1), single.argmax(dim=1))  # same predictions
        torch.testing.assert_close(probs[k].log(), single.log(), rtol=0, atol=1e-5)
        assert without_timings(rows[k]) == {**without_timings(row)}
        assert rows[k]["batched_heads"] == 5 and row["batched_heads"] == 1
    # different seeds: different heads, different outputs
    assert not torch.allclose(probs[0], probs[1])
    assert len({json.loads(r["lr_finder"])["losses"][0] for r in rows}) == 5
    # probe() batches by default and gives the same rows
    again = probe(encoder, *breast, settings=TINY, seeds=[3, 1], class_names=CLASSES,
                  augment=augment)
    assert [without_timings(r) for r in again] == [without_timings(rows[3]),
                                                   without_timings(rows[1])]


def test_unseen_test_class_is_a_data_error(breast, encoder, augment) -> None:
    (train_x, train_y), test = breast
    only_normal = train_y == 1
    with pytest.raises(DataError, match="single class"):
        probe(encoder, (train_x[only_normal], train_y[only_normal]), test, settings=TINY,
              seeds=[0], class_names=CLASSES, augment=augment)
    three = CLASSES + ("cyst",)
    test_x, test_y = test
    test_y = test_y.copy()
    test_y[0] = 2
    with pytest.raises(DataError, match="'cyst' that never occurs in the train split"):
        finetune(encoder, (train_x, train_y), (test_x, test_y), settings=TINY, seed=0,
                 class_names=three, augment=augment)


def test_empty_split_is_a_data_error(breast, encoder, augment) -> None:
    train, (test_x, test_y) = breast
    with pytest.raises(DataError, match="test split is empty"):
        finetune(encoder, train, (test_x[:0], test_y[:0]), settings=TINY, seed=0,
                 class_names=CLASSES, augment=augment)
    with pytest.raises(DataError, match="train split is empty"):
        probe(encoder, (test_x[:0], test_y[:0]), (test_x, test_y), settings=TINY, seeds=[0],
              class_names=CLASSES, augment=augment)


def test_encoder_output_size_mismatch_names_both_sizes(breast, augment) -> None:
    liar = build_encoder("small_resnet", generator=torch.Generator().manual_seed(0))
    liar.output_dim = 512
    with pytest.raises(WeightsError, match=r"shape \(2, 128\).*output_dim .* is 512"):
        probe(liar, *breast, settings=TINY, seeds=[0, 1], class_names=CLASSES, augment=augment)


@pytest.mark.slow
def test_finetune_resumed_from_an_epoch_checkpoint_equals_the_uninterrupted_run(
        breast, encoder, augment, tmp_path: Path) -> None:
    settings = TINY.replace(epochs=3)
    states: list[dict] = []
    whole = finetune(encoder, *breast, settings=settings, seed=5, class_names=CLASSES,
                     augment=augment, on_epoch=states.append)
    assert [s["epoch"] for s in states] == [1, 2, 3]
    # Through a file, as a Tune checkpoint would carry it (weights_only loading).
    torch.save(states[0], tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    resumed = finetune(encoder, *breast, settings=settings, seed=5, class_names=CLASSES,
                       augment=augment, resume=state)
    assert without_timings(resumed) == without_timings(whole)


@pytest.fixture(scope="module")
def small_breast(breast):
    """160 training images (both classes) and the test split: a cheaper fine-tuning run."""
    (images, labels), test = breast
    return (images[:160], labels[:160]), test


@pytest.mark.slow
def test_validation_curve_records_every_epoch_and_changes_nothing_else(small_breast, encoder,
                                                                      augment) -> None:
    """With ``val`` the row gains ``val_curve``: one record per 1cycle epoch; the rest of the
    row equals a run without it. Validating on the test split without TTA, the last record
    equals the row's own test metrics (the same model, the same plain forward pass)."""
    settings = TINY.replace(epochs=2, tta_views=0, batch_size=32)
    plain = finetune(encoder, *small_breast, settings=settings, seed=2, class_names=CLASSES,
                     augment=augment)
    curved = finetune(encoder, *small_breast, settings=settings, seed=2, class_names=CLASSES,
                      augment=augment, val=small_breast[1])
    curve = json.loads(curved.pop("val_curve"))
    assert "val_curve" not in plain
    assert without_timings(curved) == without_timings(plain)
    assert [r["epoch"] for r in curve] == [1, 2]
    assert set(curve[0]) == {"epoch", "loss", "accuracy", "f1_weighted", "f1_macro",
                             "balanced_accuracy"}
    for key in ("accuracy", "f1_weighted", "f1_macro", "balanced_accuracy"):
        assert curve[-1][key] == pytest.approx(plain[key], abs=1e-12), key
    assert all(r["loss"] > 0 for r in curve) and curve[0] != curve[1]


@pytest.mark.slow
def test_validation_curve_survives_a_resume(small_breast, encoder, augment,
                                            tmp_path: Path) -> None:
    settings = TINY.replace(epochs=2, batch_size=32, tta_views=1)
    states: list[dict] = []
    whole = finetune(encoder, *small_breast, settings=settings, seed=5, class_names=CLASSES,
                     augment=augment, on_epoch=states.append, val=small_breast[1])
    torch.save(states[0], tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert [r["epoch"] for r in state["val_curve"]] == [1]
    resumed = finetune(encoder, *small_breast, settings=settings, seed=5, class_names=CLASSES,
                       augment=augment, resume=state, val=small_breast[1])
    assert without_timings(resumed) == without_timings(whole)
    assert [r["epoch"] for r in json.loads(whole["val_curve"])] == [1, 2]
    with pytest.raises(DataError, match="val split"):
        finetune(encoder, *small_breast, settings=settings, seed=5, class_names=CLASSES,
                 augment=augment, val=(small_breast[1][0][:0], small_breast[1][1][:0]))


class CountingAugment:
    """An augmentation that counts the images it is asked to augment."""

    def __init__(self, augment) -> None:
        self.augment, self.images = augment, 0

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self.images += x.shape[0]
        return self.augment(x, generator=generator)


@pytest.mark.slow
def test_training_on_non_augmented_images_is_training_with_the_identity(small_breast, encoder,
                                                                        augment) -> None:
    """``train_augmentation: false`` (Jiang's unfrozen backbone, thesis section 3.2.3): the
    training and LR-finder batches are the images as they are (the run equals one given the
    identity as its augmentation), while TTA keeps the augmentation."""
    (images, labels), test = small_breast
    train = (images[:64], labels[:64])
    plain = TINY.replace(epochs=1, batch_size=32, tta_views=0, lr_finder_iters=4)
    counting = CountingAugment(augment)
    off = finetune(encoder, train, test, settings=plain.replace(train_augmentation=False),
                   seed=1, class_names=CLASSES, augment=counting)
    assert counting.images == 0  # no training batch, no LR-finder batch was augmented
    identity = finetune(encoder, train, test, settings=plain, seed=1, class_names=CLASSES,
                        augment=lambda x, generator: x)
    assert off.pop("train_augmentation") is False and "train_augmentation" not in identity
    assert without_timings(off) == without_timings(identity)
    augmented = finetune(encoder, train, test, settings=plain, seed=1, class_names=CLASSES,
                         augment=augment)
    assert augmented["lr_finder"] != identity["lr_finder"]  # the augmentation matters here
    # TTA still augments: 2 views of each of the 156 test images
    settings = plain.replace(train_augmentation=False, tta_views=2, lr_max=1e-3)
    counting.images = 0
    finetune(encoder, train, test, settings=settings, seed=1, class_names=CLASSES,
             augment=counting)
    assert counting.images == 2 * 156
    # batched probes follow the setting too: a batched probe equals a separate one given the
    # identity (TTA off, so that the augmentation is used nowhere else)
    settings = settings.replace(tta_views=0)
    [batched] = probe_batched(encoder, train, test, settings=settings, seeds=[4],
                              class_names=CLASSES, augment=augment)
    single = probe_single(encoder, train, test, settings=settings.replace(train_augmentation=True),
                          seed=4, class_names=CLASSES, augment=lambda x, generator: x)
    assert batched.pop("train_augmentation") is False
    assert without_timings(batched) == without_timings(single)
