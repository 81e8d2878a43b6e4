"""Decoding one image (a file or an array) into the cache's uint8 (C, H, W) layout.

The paper resizes every image to 256 x 256 without keeping the aspect ratio (docs/protocol.md
"Fine-tuning"); raysweep does the same at ``image_size`` with PIL's bilinear filter, which
antialiases when shrinking. Grey images stay one channel (C = 1); everything else becomes RGB
(C = 3). EXIF orientation is applied first (smartphone photos such as UFES-20 carry it).

:data:`DECODER_VERSION` is part of every cache key: bump it whenever the decoded pixels of any
input would change, so that stale cache entries are never reused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from raysweep.errors import DataError

#: Bump when decoding/resizing changes the pixels it produces (part of every cache key).
DECODER_VERSION = 1

#: File extensions read as images by the folder reader (lower case).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"})

#: PIL modes stored as one grey channel; every other mode is converted to RGB.
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})

_READ_ERRORS = (OSError, SyntaxError, ValueError, UnidentifiedImageError,
                Image.DecompressionBombError)


class DataWarning(UserWarning):
    """A data problem raysweep worked around (e.g. corrupt images skipped with ``skip_corrupt``)."""


def corrupt(path: Path, reason: object) -> DataError:
    """The one-line error for an unreadable image file."""
    text = str(reason).splitlines()[0] if str(reason) else type(reason).__name__
    error = DataError(f"corrupt image: {path} ({text})")
    error.reason = text  # type: ignore[attr-defined]
    return error


def probe_channels(path: Path) -> int:
    """1 for a grey image file, 3 otherwise, from the header only (no pixel decoding).

    Raises :class:`DataError` (``corrupt image: ...``) when the header is unreadable.
    """
    try:
        with Image.open(path) as image:
            return 1 if image.mode in GREY_MODES else 3
    except _READ_ERRORS as err:
        raise corrupt(path, err) from None


def decode_image(path: Path, channels: int, size: int) -> np.ndarray:
    """Decode an image file to uint8 (channels, size, size): EXIF-transpose, convert to ``L``
    (channels=1) or ``RGB`` (channels=3), bilinear resize to size x size (aspect not kept).

    Raises :class:`DataError` ``corrupt image: <path> (<reason>)`` for unreadable or truncated
    files (PIL's ``LOAD_TRUNCATED_IMAGES`` is never enabled).
    """
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_chw(image, channels, size)
    except _READ_ERRORS as err:
        raise corrupt(path, err) from None


def resize_array(image: np.ndarray, channels: int, size: int) -> np.ndarray:
    """An in-memory uint8 image, (H, W) grey or (H, W, 3) RGB, to uint8 (channels, size, size),
    resized exactly as :func:`decode_image` resizes decoded files."""
    if image.dtype != np.uint8:
        raise TypeError(f"resize_array expects uint8, got {image.dtype}")
    if image.shape[:2] == (size, size):
        hwc = image if image.ndim == 3 else image[:, :, None]
        if hwc.shape[2] == channels:
            return np.ascontiguousarray(hwc.transpose(2, 0, 1))
    pil = Image.fromarray(image, mode="L" if image.ndim == 2 else "RGB")
    return _to_chw(pil, channels, size)


def _to_chw(image: Image.Image, channels: int, size: int) -> np.ndarray:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F") and channels == 1:
        # 16-bit / float grey: scale the full range to 0..255 rather than clipping.
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0
        image = Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array.transpose(2, 0, 1))
