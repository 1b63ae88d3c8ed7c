"""Image conversions and PNG output shared by training samples, generation and reports.

Pixel convention of the whole project: float32 NHWC in [-1, 1] (x / 127.5 - 1, as the thesis
normalises) inside the models; uint8 RGB HWC/NHWC on disk and in caches. OpenCV works in BGR,
so the channel swap happens at the OpenCV calls only: here, in `service.data` (decoding) and in
`service.synthetic` (JPEG writing).
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np

from service.errors import UserError
from service.files import write_bytes


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [-1, 1] -> uint8 in [0, 255] (rounded, out-of-range values clipped)."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def from_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [-1, 1] (x / 127.5 - 1)."""
    return np.asarray(images, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


def make_grid(images: np.ndarray, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile uint8 NHWC images (N >= 1, C = 1 or 3) into one uint8 HxWx3 image.

    `columns` defaults to ceil(sqrt(N)); cells are separated (and framed) by `pad` black pixels.
    """
    images = np.asarray(images)
    if images.ndim == 3:  # N grayscale HxW images
        images = images[..., None]
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"make_grid expects a non-empty NHWC array, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"make_grid expects uint8 images, got {images.dtype}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    count, height, width, _ = images.shape
    columns = columns or int(math.ceil(math.sqrt(count)))
    columns = max(1, min(columns, count))
    rows = int(math.ceil(count / columns))
    grid = np.zeros((rows * (height + pad) + pad, columns * (width + pad) + pad, 3), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        top, left = pad + r * (height + pad), pad + c * (width + pad)
        grid[top : top + height, left : left + width] = image
    return grid


def encode_png(image: np.ndarray) -> bytes:
    """A uint8 RGB (or grayscale) image as PNG bytes."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"PNG encoding expects uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[-1] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"could not encode an image of shape {image.shape} as PNG")
    return encoded.tobytes()


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a uint8 RGB (or grayscale) image as PNG, atomically (temp file + os.replace)."""
    write_bytes(path, encode_png(image))


def read_png(path: str | os.PathLike) -> np.ndarray:
    """Read an image file written by save_png back as uint8 RGB HWC."""
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def save_grid(path: str | os.PathLike, images: np.ndarray, columns: int | None = None) -> None:
    """Save a grid of images; float images are taken to be in [-1, 1], uint8 as they are."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = to_uint8(images)
    save_png(path, make_grid(images, columns=columns))
