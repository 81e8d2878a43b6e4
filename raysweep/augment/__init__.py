"""kornia augmentation pipelines (Barlow Twins, SimCLR, medical SimCLR, supervised), batched on
the device with per-sample randomness drawn from an explicit ``torch.Generator``."""

from raysweep.augment.ops import RandomCenterDropout, RandomLumaEqualize
from raysweep.augment.pipelines import (
    MAX_STRENGTH,
    PIPELINES,
    VIEWS,
    Pipeline,
    TwoViews,
    build_pipeline,
    build_views,
    scaled_crop_lower_bound,
    scaled_probability,
)

__all__ = [
    "MAX_STRENGTH",
    "PIPELINES",
    "VIEWS",
    "Pipeline",
    "RandomCenterDropout",
    "RandomLumaEqualize",
    "TwoViews",
    "build_pipeline",
    "build_views",
    "scaled_crop_lower_bound",
    "scaled_probability",
]
