"""DiffAugment (Zhao et al., 2020): differentiable augmentations of every image D sees in training.

The same random transforms apply to real and fake images, in D's step and in G's step (so G's
gradient flows through them); inference (`discriminate`) sees the images unchanged. The
transforms follow the paper's reference code: colour (brightness, saturation, contrast),
translation by up to 1/8 of the side with zero fill, and cutout of a square half the side.
Randomness comes from one `tf.random.Generator`, whose state the backend checkpoints.
"""

from __future__ import annotations

import tensorflow as tf

TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _per_image_uniform(generator: tf.random.Generator, images, low: float = 0.0, high: float = 1.0):
    return generator.uniform([tf.shape(images)[0], 1, 1, 1], low, high, dtype=images.dtype)


def color(images, generator: tf.random.Generator):
    images = images + (_per_image_uniform(generator, images) - 0.5)  # brightness
    mean = tf.reduce_mean(images, axis=3, keepdims=True)
    images = (images - mean) * (_per_image_uniform(generator, images) * 2) + mean  # saturation
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    return (images - mean) * (_per_image_uniform(generator, images) + 0.5) + mean  # contrast


def _pixel_grid(images):
    size = images.shape[1]
    return tf.range(size)[None, :, None], tf.range(size)[None, None, :], size


def translation(images, generator: tf.random.Generator, ratio: float = TRANSLATION_RATIO):
    rows, cols, size = _pixel_grid(images)
    batch, channels = tf.shape(images)[0], images.shape[3]
    shift = int(size * ratio + 0.5)
    shift_rows = generator.uniform([batch, 1, 1], -shift, shift + 1, dtype=tf.int32)
    shift_cols = generator.uniform([batch, 1, 1], -shift, shift + 1, dtype=tf.int32)
    source_rows, source_cols = rows + shift_rows, cols + shift_cols  # (B, H, 1), (B, 1, W)
    inside = (source_rows >= 0) & (source_rows < size) & (source_cols >= 0) & (source_cols < size)
    index = tf.clip_by_value(source_rows, 0, size - 1) * size + tf.clip_by_value(source_cols, 0, size - 1)
    flat = tf.reshape(images, [batch, size * size, channels])
    moved = tf.gather(flat, tf.reshape(index, [batch, size * size]), batch_dims=1)
    return tf.reshape(moved, tf.shape(images)) * tf.cast(inside, images.dtype)[..., None]  # zero fill


def cutout(images, generator: tf.random.Generator, ratio: float = CUTOUT_RATIO):
    rows, cols, size = _pixel_grid(images)
    batch = tf.shape(images)[0]
    side = int(size * ratio + 0.5)
    top = generator.uniform([batch, 1, 1], 0, size + (1 - side % 2), dtype=tf.int32) - side // 2
    left = generator.uniform([batch, 1, 1], 0, size + (1 - side % 2), dtype=tf.int32) - side // 2
    hole = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return images * tf.cast(~hole, images.dtype)[..., None]


TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(images, policy: tuple[str, ...], generator: tf.random.Generator):
    for name in policy:
        images = TRANSFORMS[name](images, generator)
    return images
