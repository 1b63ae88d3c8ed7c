"""The embedded stand-in dataset (procedural, NOT medical data; see service.synthetic), drawn once
per size, count and seed and then read from the on-disk cache."""

from __future__ import annotations

import numpy as np

from service import synthetic
from service.data.cache import hash_json, read_cache, write_cache
from service.data.dataset import CLASS_NAMES, Dataset, check_image_size
from service.errors import UserError
from service.imageio import from_uint8

DEFAULT_DATA_COUNT = 2000  # images of the embedded dataset: the ISIC 2017 training set's size


def default_dataset(image_size: int, count: int = DEFAULT_DATA_COUNT, seed: int = 0, cache_dir=None, progress: bool = True) -> Dataset:
    """The embedded stand-in dataset (procedural, NOT medical data; see service.synthetic)."""
    check_image_size(image_size)
    if count < 1:
        raise UserError(f"count must be at least 1, got {count}")
    key = hash_json(["synthetic", synthetic.GENERATOR_VERSION, count, seed, image_size])
    cached = read_cache(cache_dir, "synthetic", key)
    if cached is not None:
        images, labels = cached["images"], cached["labels"]
    else:
        images, labels = synthetic.make_dataset(count, image_size, seed, progress=progress)
        write_cache(cache_dir, "synthetic", key, images=images, labels=labels)
    return Dataset(
        images=from_uint8(images),
        labels=labels.astype(np.int64),
        class_names=CLASS_NAMES,
        files=[],
        source=f"embedded stand-in dataset (procedural, not medical data): {count} images, seed {seed}",
    )
