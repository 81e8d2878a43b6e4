"""Augmentation pipelines: op frequencies, strength law, seeding, shapes and the custom ops."""

from __future__ import annotations

import math

import kornia.augmentation as K
import pytest
import torch
from kornia.color import rgb_to_ycbcr

from raysweep.augment import (
    PIPELINES,
    VIEWS,
    RandomCenterDropout,
    RandomLumaEqualize,
    build_pipeline,
    build_views,
)
from raysweep.augment.pipelines import Pipeline

N, SIZE = 2000, 16


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(N, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_binomial(fired: torch.Tensor, p: float, what: str) -> None:
    count, n = int(fired.sum()), fired.numel()
    if p in (0.0, 1.0):
        assert count == round(p * n), what
        return
    bound = 4.5 * math.sqrt(n * p * (1 - p))
    assert abs(count - n * p) <= bound, f"{what}: {count}/{n} fired, expected p={p}"


def _frequencies(pipeline) -> dict[str, torch.Tensor]:
    return {type(op).__name__: op._params["batch_prob"].bool() for op in pipeline.ops}


BARLOW_TWINS_P = {  # Zbontar et al. / paper Table 12, per view
    1: {"RandomResizedCrop": 1.0, "RandomCenterDropout": 0.33, "RandomHorizontalFlip": 0.5,
        "ColorJitter": 0.8, "RandomGrayscale": 0.2, "RandomGaussianBlur": 1.0},
    2: {"RandomResizedCrop": 1.0, "RandomCenterDropout": 0.33, "RandomHorizontalFlip": 0.5,
        "ColorJitter": 0.8, "RandomGrayscale": 0.2, "RandomGaussianBlur": 0.1,
        "RandomSolarize": 0.2},
}


def test_barlow_twins_op_frequencies_within_binomial_bounds(images: torch.Tensor) -> None:
    views = build_views("barlow_twins", image_size=SIZE, center_dropout=True)
    views(images, generator=_gen(1))
    for view, pipeline in ((1, views.first), (2, views.second)):
        fired = _frequencies(pipeline)
        assert set(fired) == set(BARLOW_TWINS_P[view])  # solarisation p 0 in view 1: absent
        for op, p in BARLOW_TWINS_P[view].items():
            _assert_binomial(fired[op], p, f"view {view} {op}")


@pytest.mark.parametrize("name", ["simclr", "simclr_medical", "simclr_short", "simclr_grey",
                                  "supervised"])
def test_single_view_op_frequencies(images: torch.Tensor, name: str) -> None:
    expected = {
        # the thesis' tau_short (section 4.1): tau_nat without the flip and the grayscale
        "simclr_short": {"RandomResizedCrop": 1.0, "ColorJitter": 0.8,
                         "RandomGaussianBlur": 1.0},
        # the thesis' tau_grey (section 6.1.1): tau_nov without the colour distortion
        "simclr_grey": {"RandomHorizontalFlip": 0.5, "RandomResizedCrop": 1.0,
                        "RandomGrayscale": 0.2, "RandomGaussianBlur": 1.0,
                        "RandomLumaEqualize": 0.5, "RandomSharpness": 1.0},
        "simclr": {"RandomHorizontalFlip": 0.5, "RandomResizedCrop": 1.0, "ColorJitter": 0.8,
                   "RandomGrayscale": 0.2, "RandomGaussianBlur": 1.0},
        "simclr_medical": {"RandomHorizontalFlip": 0.5, "RandomResizedCrop": 1.0,
                           "ColorJitter": 0.8, "RandomGrayscale": 0.2,
                           "RandomGaussianBlur": 1.0, "RandomLumaEqualize": 0.5,
                           "RandomSharpness": 1.0},
        "supervised": {"RandomResizedCrop": 1.0, "RandomRotation": 1.0,
                       "RandomHorizontalFlip": 0.5, "RandomVerticalFlip": 0.5},
    }[name]
    pipeline = build_pipeline(name, image_size=SIZE)
    pipeline(images, generator=_gen(2))
    fired = _frequencies(pipeline)
    assert list(fired) == list(expected)  # and in the documented order
    for op, p in expected.items():
        _assert_binomial(fired[op], p, f"{name} {op}")


def test_recorded_firing_matches_what_the_op_did(images: torch.Tensor) -> None:
    # Grayscale isolated: a sample fired exactly when its three channels became equal.
    gray = K.RandomGrayscale(p=0.2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        out = gray(images)
    became_gray = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
    assert torch.equal(became_gray, gray._params["batch_prob"].bool())
    _assert_binomial(became_gray, 0.2, "isolated grayscale")


def test_center_dropout_geometry_and_scaling() -> None:
    op = RandomCenterDropout(p=1.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        out = op(torch.ones(64, 3, 256, 256))
    zero = out[:, 0] == 0
    heights, widths = zero.any(dim=2).sum(dim=1), zero.any(dim=1).sum(dim=1)
    assert heights.min() >= 185 and heights.max() <= 190
    assert widths.min() >= 50 and widths.max() <= 100 and widths.float().std() > 5
    assert (zero.sum(dim=(1, 2)) == heights * widths).all()  # a solid rectangle
    assert zero[:, 128, 128].all() and not zero[:, 0, 0].any()  # centred
    rows = zero.any(dim=2).float().argmax(dim=1)
    assert ((rows - (256 - heights) // 2).abs() <= 1).all()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        small = op(torch.ones(64, 3, 32, 32))[:, 0] == 0
    assert small.any(dim=2).sum(dim=1).min() >= round(185 / 8) - 1
    assert small.any(dim=1).sum(dim=1).max() <= round(100 / 8) + 1


def test_the_watermark_cutout_touches_only_the_images_of_a_watermarked_source() -> None:
    """``cutout`` (B,) says which images come from a ``watermark_cutout: true`` source; the
    others leave the pipeline as they would without the cutout, and the cut images as they
    would with every image eligible (the draws do not depend on the mask)."""
    views = build_views("barlow_twins", image_size=32, center_dropout=True)
    plain = build_views("barlow_twins", image_size=32, center_dropout=False)
    x = torch.rand(48, 3, 32, 32, generator=_gen(11))
    mask = torch.arange(48) % 3 == 0
    masked = views(x, generator=_gen(12), cutout=mask)
    everyone = views(x, generator=_gen(12))
    for view, full, op in zip(masked, everyone, (views.first, views.second), strict=True):
        assert torch.equal(view[mask], full[mask])
        cut = next(o for o in op.ops if isinstance(o, RandomCenterDropout))
        assert (cut._params["batch_prob"].bool() & ~mask).any()  # the draw saw every image
    assert len(plain.first.ops) == len(views.first.ops) - 1
    only_cutout = Pipeline("cutout", [RandomCenterDropout(p=1.0)], {})
    out = only_cutout(torch.ones(6, 3, 64, 64), generator=_gen(13),
                      cutout=torch.tensor([True, False] * 3))
    assert (out[0::2, :, 32, 32] == 0).all() and (out[1::2] == 1).all()



def test_luma_equalisation_stretches_contrast_and_keeps_chroma() -> None:

    g = _gen(6)
    base = torch.tensor([0.45, 0.5, 0.55]).view(1, 3, 1, 1)
    x = (base + 0.05 * torch.rand(4, 1, 24, 24, generator=g)).clamp(0, 1)  # low contrast
    op = RandomLumaEqualize(p=1.0)
    out = op(x)
    y_in, y_out = rgb_to_ycbcr(x)[:, 0], rgb_to_ycbcr(out)[:, 0]
    assert (y_in.amax(dim=(1, 2)) - y_in.amin(dim=(1, 2))).max() < 0.06
    assert (y_out.amax(dim=(1, 2)) - y_out.amin(dim=(1, 2))).min() > 0.9
    # Chroma is kept wherever the new luma leaves room for it inside the RGB cube.
    unclipped = ((y_out > 0.1) & (y_out < 0.9)).unsqueeze(1).expand(-1, 2, -1, -1)
    chroma_in, chroma_out = rgb_to_ycbcr(x)[:, 1:], rgb_to_ycbcr(out)[:, 1:]
    assert unclipped.float().mean() > 0.5
    torch.testing.assert_close(chroma_out[unclipped], chroma_in[unclipped], atol=1e-4, rtol=0)


STRENGTHS = (0.0, 0.5, 1.0, 1.5, 2.0)


@pytest.mark.parametrize("name", ["barlow_twins/view1", "barlow_twins/view2", "simclr",
                                  "simclr_medical", "simclr_short", "simclr_grey", "supervised"])
def test_strength_is_monotonic(name: str) -> None:
    settings = [build_pipeline(name, image_size=32, strength=s).settings for s in STRENGTHS]
    for weaker, stronger in zip(settings, settings[1:], strict=False):
        assert stronger["crop_scale"][0] <= weaker["crop_scale"][0]
        for key in ("p_grayscale", "p_blur", "p_solarize", "p_equalize"):
            if key in weaker:
                assert stronger[key] >= weaker[key], key
        for key in ("jitter", "blur_sigma", "sharpness", "rotation_degrees"):
            if key in weaker:
                assert all(b >= a for a, b in zip(weaker[key], stronger[key], strict=True)), key
    assert settings[0]["crop_scale"] == (1.0, 1.0)
    assert settings[-1]["crop_scale"][0] < settings[2]["crop_scale"][0]


def test_strength_one_is_the_paper_and_zero_is_crop_and_flip() -> None:
    view2 = build_pipeline("barlow_twins/view2", image_size=224).settings
    assert view2["crop_scale"] == pytest.approx((0.08, 1.0))
    assert view2["jitter"] == pytest.approx((0.4, 0.4, 0.2, 0.1)) and view2["p_jitter"] == 0.8
    assert (view2["p_grayscale"], view2["p_blur"], view2["p_solarize"]) == (0.2, 0.1, 0.2)
    assert view2["blur_sigma"] == pytest.approx((0.1, 2.0))
    medical = build_pipeline("simclr_medical", image_size=28).settings
    assert medical["jitter"] == pytest.approx((0.2, 0.2, 0.2, 0.04))
    assert medical["p_equalize"] == 0.5 and medical["sharpness"] == (1.0, 10.0)
    assert medical["blur_kernel"] == 9
    supervised = build_pipeline("supervised", image_size=32).settings
    assert supervised["crop_scale"] == pytest.approx((0.7, 1.0))
    assert supervised["crop_ratio"] == (0.75, 1.33) and supervised["rotation_degrees"] == (0, 45)
    for name in ("barlow_twins/view1", "barlow_twins/view2", "simclr", "simclr_medical",
                 "simclr_short", "simclr_grey", "supervised"):
        ops = {type(op).__name__ for op in build_pipeline(name, image_size=32, strength=0).ops}
        assert ops <= {"RandomResizedCrop", "RandomHorizontalFlip", "RandomVerticalFlip"}, name
    with pytest.raises(ValueError, match=r"strength must be in \[0, 2.0\]"):
        build_views("barlow_twins", image_size=32, strength=2.5)


def test_measured_grayscale_frequency_grows_with_strength(images: torch.Tensor) -> None:
    counts = []
    for s in (0.0, 1.0, 2.0):
        out = build_pipeline("simclr", image_size=SIZE, strength=s)(images, generator=_gen(7))
        counts.append(int(((out[:, 0] == out[:, 1]) & (out[:, 1] == out[:, 2])).all(dim=(1, 2)).sum()))
    assert counts[0] == 0 and counts[0] < counts[1] < counts[2]
    _assert_binomial(torch.arange(N) < counts[2], 0.4, "grayscale at strength 2")


@pytest.mark.parametrize("name", PIPELINES)
def test_same_seed_same_views_and_global_rng_untouched(name: str) -> None:
    x = torch.rand(1, 3, 20, 20, generator=_gen(8)).expand(16, -1, -1, -1)
    make = build_views if name in VIEWS else build_pipeline
    aug = make(name, image_size=SIZE)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = aug(x, generator=_gen(9))
    assert torch.equal(torch.get_rng_state(), state)
    again = aug(x, generator=_gen(9))
    other = aug(x, generator=_gen(10))
    first, again, other = (t if isinstance(t, tuple) else (t,) for t in (first, again, other))
    for a, b, c in zip(first, again, other, strict=True):
        assert torch.equal(a, b)
        assert not torch.equal(a, c)
        assert a.shape == (16, 3, SIZE, SIZE) and a.dtype == torch.float32
        assert a.min() >= 0 and a.max() <= 1
        assert not torch.equal(a[0], a[1])  # per-sample randomness on identical images
    if len(first) == 2:
        assert not torch.equal(first[0], first[1])  # the two views differ


def test_bad_input_is_a_clear_error() -> None:
    pipeline = build_pipeline("supervised", image_size=SIZE)
    with pytest.raises(ValueError, match="float images in"):
        pipeline(torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8), generator=_gen(0))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\), got \(2, 1, 16, 16\)"):
        pipeline(torch.zeros(2, 1, SIZE, SIZE), generator=_gen(0))
    with pytest.raises(ValueError, match="CPU torch.Generator"):
        pipeline(torch.zeros(2, 3, SIZE, SIZE), generator=0)
    with pytest.raises(ValueError, match="unknown augmentation pipeline 'autoaugment'"):
        build_pipeline("autoaugment", image_size=SIZE)
    with pytest.raises(ValueError, match="unknown augmentation pipeline 'supervised'"):
        build_views("supervised", image_size=SIZE)


def test_upright_pipeline_never_flips() -> None:
    # An asymmetric image (bright left column): with crops and rotations up to 45 degrees the
    # bright mass stays on the left half in every view unless the image was mirrored.
    x = torch.zeros(400, 3, SIZE, SIZE)
    x[:, :, 4:-4, : SIZE // 4] = 1.0
    def left_share(views: torch.Tensor) -> torch.Tensor:
        half = views.shape[-1] // 2
        total = views.sum(dim=(1, 2, 3))
        visible = total > 1.0  # a crop may miss the bright column altogether
        return (views[..., :half].sum(dim=(1, 2, 3)) / total.clamp_min(1e-6))[visible]
    upright = build_pipeline("supervised_upright", image_size=SIZE)(x, generator=_gen(3))
    flipping = build_pipeline("supervised", image_size=SIZE)(x, generator=_gen(3))
    assert len(left_share(upright)) > 300 and (left_share(upright) > 0.5).all()
    mirrored = (left_share(flipping) < 0.5).float().mean().item()
    assert 0.35 < mirrored < 0.65  # horizontal flip p 0.5 (vertical flips keep left-right)
