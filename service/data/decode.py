"""Pixels: an encoded image decoded (OpenCV; BGR made RGB, EXIF orientation applied) and fitted to
a square of the training size, and the pixel limit every image read is held to
(LESIONGAN_MAX_IMAGE_PIXELS), checked from the header before anything is decoded."""

from __future__ import annotations

import os

import cv2
import numpy as np

from service.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
CROP_MODES = ("center", "squash")
MAX_IMAGE_PIXELS = 100_000_000  # larger declared images are skipped undecoded (LESIONGAN_MAX_IMAGE_PIXELS)
PIXEL_LIMIT_ENV = "LESIONGAN_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int:
    """The largest image (width x height, as its header declares it) that is decoded."""
    text = os.environ.get(PIXEL_LIMIT_ENV, "").strip()
    if not text:
        return MAX_IMAGE_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{PIXEL_LIMIT_ENV} must be a positive number of pixels, got {text!r}")
    return value


def max_image_bytes(max_pixels: int) -> int:
    """The most bytes an encoded image within `max_pixels` can take (an uncompressed 16-bit
    RGBA PNG: 8 bytes a pixel, a filter byte a row, with room for its chunks): a tar member or
    generated file declaring more is refused before it is read."""
    return 9 * int(max_pixels) + (1 << 20)


def decode_image(data: bytes | np.ndarray, image_size: int, crop: str, max_pixels: int | None = None) -> np.ndarray | None:
    """Encoded file bytes -> uint8 RGB (image_size, image_size, 3), or None if undecodable or
    its header declares more than `max_pixels` pixels (default: max_image_pixels()).

    JPEGs are decoded at 1/2, 1/4 or 1/8 scale when that still leaves at least `image_size`
    pixels (libjpeg scales in the DCT domain, which is much faster than a full decode of a
    large dermoscopy photo); a first cheap 1/8 decode tells the size.
    """
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    if buffer.size == 0:
        return None
    declared = declared_pixels(buffer)
    if declared is not None and declared > (max_pixels or max_image_pixels()):
        return None
    is_jpeg = buffer.size > 3 and buffer[0] == 0xFF and buffer[1] == 0xD8 and buffer[2] == 0xFF
    image = None
    if is_jpeg:
        small = cv2.imdecode(buffer, cv2.IMREAD_REDUCED_COLOR_8)
        if small is None:
            return None
        # Short side at full size (approximate); it must stay >= image_size for both crop modes.
        needed = min(small.shape[0], small.shape[1]) * 8
        factor = next((f for f in (8, 4, 2) if needed // f >= image_size), 1)
        image = small if factor == 8 else cv2.imdecode(buffer, _REDUCED_FLAGS[factor])
    else:
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        return None
    return cv2.cvtColor(fit_square(image, image_size, crop), cv2.COLOR_BGR2RGB)


_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}


def declared_pixels(buffer: np.ndarray) -> float | None:
    """Width x height as the file's header declares it, read by Pillow without decoding the
    pixels (inf for a header Pillow itself refuses as a decompression bomb); None when Pillow
    cannot read the header (OpenCV may still decode the file)."""
    import io
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(buffer.tobytes())) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        return float("inf")
    except Exception:  # noqa: BLE001 - not Pillow's to judge; OpenCV decides
        return None
    return float(width) * float(height)


def fit_square(image: np.ndarray, image_size: int, crop: str) -> np.ndarray:
    """Center-crop to the largest square (crop='center') or not (crop='squash'), then resize."""
    if crop == "center":
        height, width = image.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        image = image[top : top + side, left : left + side]
    shrinking = image.shape[0] >= image_size and image.shape[1] >= image_size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    if image.shape[:2] == (image_size, image_size):
        return np.ascontiguousarray(image)
    return cv2.resize(image, (image_size, image_size), interpolation=interpolation)
