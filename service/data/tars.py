"""WebDataset-style tar shards: their image members in order, each held to the bytes an image within
the pixel limit can take before it is read, loaded as an unlabelled Dataset."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from service.data.dataset import Dataset
from service.data.decode import IMAGE_EXTENSIONS, PIXEL_LIMIT_ENV, decode_image, max_image_bytes, max_image_pixels
from service.errors import UserError
from service.imageio import from_uint8


def check_member_size(path, member, limit: int) -> None:
    """UserError when a tar member declares more than `limit` bytes (max_image_bytes)."""
    if member.size > limit:
        raise UserError(f"{path}: member {member.name} declares {member.size} bytes, more than an image within the "
                        f"pixel limit can take ({PIXEL_LIMIT_ENV})")


def tar_images(path: Path, max_pixels: int | None = None):
    """(member name, bytes) of a tar's image members, in order; UserError if it is cut short or
    damaged, or a member declares more bytes than an image within the pixel limit can take (one
    line naming it; nothing of that member is read)."""
    import tarfile

    limit = max_image_bytes(max_pixels or max_image_pixels())
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                if member.isfile() and member.name.lower().endswith(IMAGE_EXTENSIONS):
                    check_member_size(path, member, limit)
                    yield member.name, archive.extractfile(member).read()
    except (OSError, tarfile.TarError) as e:
        raise UserError(f"{path}: cut short or damaged tar shard ({' '.join(str(e).split())})") from None


def load_tars(shards: list[Path], image_size: int, crop: str, progress: bool, max_pixels: int) -> Dataset:
    from tqdm import tqdm

    images, files = [], []
    for shard in tqdm(shards, desc="reading tar shards", unit="shard", disable=not progress, file=sys.stderr):
        for name, data in tar_images(shard, max_pixels):
            image = decode_image(data, image_size, crop, max_pixels)
            if image is None:
                raise UserError(f"{shard}: member {name} is not a decodable image (or is over {max_pixels} pixels)")
            images.append(image)
            files.append(f"{shard}:{name}")
    if not images:
        raise UserError(f"no images in {len(shards)} tar shard(s), e.g. {shards[0]}")
    return Dataset(images=from_uint8(np.stack(images)), labels=None, class_names=(), files=files,
                   source=f"{len(images)} images from {len(shards)} tar shard(s) in {shards[0].parent}")
