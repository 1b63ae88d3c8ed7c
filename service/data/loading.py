"""What a data path is (a folder of images, tar shards or an .npz) and the loader that reads it
(load_images); the images' own size, to train at when none is asked for."""

from __future__ import annotations

import os
from pathlib import Path

import cv2

from backends.config import SUPPORTED_IMAGE_SIZES
from service import labels as label_files
from service.data.dataset import DEFAULT_IMAGE_SIZE, Dataset, check_image_size
from service.data.decode import CROP_MODES, max_image_pixels
from service.data.folder import list_image_files, load_folder
from service.data.npz import load_npz, npz_image_shape
from service.data.tars import load_tars
from service.errors import UserError, listed


def load_images(
    path: str | os.PathLike,
    image_size: int,
    labels_csv: str | os.PathLike | None = None,
    crop: str = "center",
    strict: bool = False,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    *,
    label_column: str | None = None,
    classes=(),
    binary: str | None = None,
    unknown: str = "drop",
    unlabelled: bool = False,
) -> Dataset:
    """Load a folder of images (labelled by a label file or class folders), tar shards, or a
    DermaMNIST-style .npz (see the module doc); the label choices are service.labels.choose's."""
    check_image_size(image_size)
    if crop not in CROP_MODES:
        raise UserError(f"crop must be one of {', '.join(CROP_MODES)}, got {crop!r}")
    if unknown not in label_files.UNKNOWN_CHOICES:
        raise UserError(f"--unknown must be one of {', '.join(label_files.UNKNOWN_CHOICES)}, got {unknown!r}")
    choice = {"classes": tuple(classes or ()), "binary": binary, "unknown": unknown}
    max_pixels = max_image_pixels()
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"data path not found: {path}")
    if path.is_file():
        if label_column is not None:
            raise UserError(f"--label-column is for label files; {path} is not a folder of images")
        if path.suffix.lower() == ".tar":
            return load_tars([path], image_size, crop, progress, max_pixels)
        if path.suffix.lower() != ".npz":
            raise UserError(f"{path} is a file but not a .npz array file or .tar shard; give a folder of images, a .npz or a .tar")
        return load_npz(path, image_size, crop, None if unlabelled else choice)
    shards = sorted(path.glob("*.tar"))
    if shards:
        loose = [f.relative_to(path).as_posix() for f in list_image_files(path)]
        if loose:  # reading either kind alone would leave the other out without a word
            raise UserError(f"{path} holds both .tar shards ({listed([s.name for s in shards])}) and {len(loose)} image "
                            f"file(s) ({listed(loose)}); give a folder of one kind")
        return load_tars(shards, image_size, crop, progress, max_pixels)
    return load_folder(path, image_size, labels_csv, crop, strict, cache_dir, progress, max_pixels,
                       None if unlabelled else {"label_column": label_column, **choice})


def native_image_size(path) -> int | None:
    """The images' own side when it is a supported size: a `.npz`'s images (read from the array
    header, without loading the pixels), or a folder's first image when it is square. None for
    anything else (an ISIC folder's photographs of many sizes). Commands train and compare at
    this size unless asked otherwise, so 32x32 data is not upscaled to 64x64 behind the
    user's back."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = list_image_files(path)
        image = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED) if files else None
        shape = (0,) if image is None else (1, *image.shape)
    elif path.is_file() and path.suffix.lower() == ".npz":
        shape = npz_image_shape(path)
    else:
        return None
    if len(shape) >= 3 and shape[1] == shape[2] and shape[1] in SUPPORTED_IMAGE_SIZES:
        return int(shape[1])
    return None


def default_image_size(path, dataset: Dataset | None = None) -> int:
    """The size to train at when none is asked for: a given dataset's own, a `.npz`'s own (so
    32x32 data is not upscaled), else DEFAULT_IMAGE_SIZE."""
    if dataset is not None:
        return int(dataset.images.shape[1])
    return (native_image_size(path) if path is not None else None) or DEFAULT_IMAGE_SIZE
