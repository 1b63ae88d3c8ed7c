"""A generation folder's images read back as its manifest lists them (files, or members of tar
shards), at their own size and within the pixel limit."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from service.data.decode import PIXEL_LIMIT_ENV, declared_pixels, max_image_bytes, max_image_pixels
from service.data.tars import tar_images
from service.errors import UserError
from service.files import open_regular


def load_generated_images(folder, files: list[str]) -> np.ndarray:
    """uint8 NHWC images of a generation folder, as its manifest lists them: NAME.png, or
    SHARD.tar:KEY.png (a member of a tar shard). Each goes through the bounds of any image
    read (max_image_pixels, from its header, before it is decoded); a file is opened only when
    it is a regular file (never through a link, never a FIFO). UserError, one line, naming the
    first that is too large or not an image."""
    folder = Path(folder)
    max_pixels = max_image_pixels()
    members: dict[str, dict[str, bytes]] = {}
    images = []
    for name in files:
        shard, sep, member = name.partition(":")
        if not sep:
            where = folder / name
            with os.fdopen(open_regular(where, os.O_RDONLY), "rb") as f:
                if os.fstat(f.fileno()).st_size > max_image_bytes(max_pixels):
                    raise UserError(f"{where} is larger than an image within the pixel limit can be ({PIXEL_LIMIT_ENV})")
                data = f.read()
        else:
            where = f"{folder / shard}: member {member}"
            if shard not in members:
                members[shard] = dict(tar_images(folder / shard, max_pixels))
            if member not in members[shard]:
                raise UserError(f"{folder / shard} has no member {member}, which the manifest lists")
            data = members[shard][member]
        buffer = np.frombuffer(data, np.uint8)
        declared = declared_pixels(buffer) if buffer.size else None
        image = None if buffer.size == 0 or (declared or 0) > max_pixels else cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        if image is None:
            raise UserError(f"{where} is not a decodable image (or is over {max_pixels} pixels, {PIXEL_LIMIT_ENV})")
        if images and image.shape != images[0].shape:
            raise UserError(f"{where} is {image.shape[1]}x{image.shape[0]} pixels, unlike {files[0]} "
                            f"({images[0].shape[1]}x{images[0].shape[0]}); generated images are all of one size")
        images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return np.stack(images)
