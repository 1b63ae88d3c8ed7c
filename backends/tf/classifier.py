"""The downstream-utility classifier (service.utility): one fixed small Keras CNN per image size,
its input normalisation and classic augmentation, and its training for a fixed budget.

Backend-neutral callers (service.utility) import this module only when they train: importing
it starts TensorFlow. `settings` below is any object with the fields of
service.utility.UtilitySettings that training reads (widths, blocks_per_stage, dropout,
colour_constancy, batch_size, learning_rate, weight_decay).
"""

from __future__ import annotations

import math

import numpy as np

from backends.tf import runtime  # noqa: F401 - TensorFlow's start-up settings, before Keras

import keras  # noqa: E402
from keras import layers  # noqa: E402

# Photometric augmentation of the real+augment arms. Images are in [-1, 1]: the colour layers are
# told so (Keras' default value_range is (0, 255), and RandomContrast clips to it: every
# negative value became 0, which made that arm near chance).
BRIGHTNESS = 0.1  # per-image shift of all channels by up to +-0.1 of the value range (+-0.2 in [-1, 1])
CONTRAST = 0.2  # per-image contrast factor in [0.8, 1.2], about each channel's image mean


def augmentation_layers() -> list:
    """The real+augment arms' classic photometric augmentation, in training only (in inference,
    validation included, images pass through unchanged): a brightness shift of up to
    +-`BRIGHTNESS` of the value range and a contrast factor in [1 - `CONTRAST`, 1 + `CONTRAST`]
    about each channel's mean, both drawn per image and clipped to [-1, 1]. (The geometric
    part, `square_symmetry_layer`, is in every arm's classifier.)"""
    return [layers.RandomBrightness(BRIGHTNESS, value_range=(-1.0, 1.0)),
            layers.RandomContrast(CONTRAST, value_range=(-1.0, 1.0))]


class RandomSquareSymmetry(keras.layers.Layer):
    """Moves each square image's pixels by one of the 8 symmetries of the square (a turn by 0,
    90, 180 or 270 degrees, mirrored or not), drawn uniformly per image, in training only. One
    gather per batch. (Keras 3's RandomFlip("horizontal_and_vertical") draws one coin for both
    axes, so it gives a half turn or nothing, never a mirror; RandomRotation turns by any angle
    and interpolates.)"""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.generator = keras.random.SeedGenerator()  # its seed from the global one (set_random_seed)

    def call(self, images, training=None):
        if not training:
            return images
        from keras import ops

        size = images.shape[1]
        grid = np.arange(size * size).reshape(size, size)
        symmetries = np.stack([np.rot90(g, k).ravel() for g in (grid, grid.T) for k in range(4)]).astype(np.int32)
        shape = ops.shape(images)
        count = shape[0]
        which = keras.random.randint((count,), 0, 8, seed=self.generator, dtype="int32")
        source = ops.take(ops.convert_to_tensor(symmetries), which, axis=0)
        source = source + ops.expand_dims(ops.arange(count, dtype="int32") * (size * size), 1)
        pixels = ops.take(ops.reshape(images, (-1, shape[3])), ops.reshape(source, (-1,)), axis=0)
        return ops.reshape(pixels, shape)

    def compute_output_shape(self, input_shape):
        return input_shape


def square_symmetry_layer() -> RandomSquareSymmetry:
    return RandomSquareSymmetry()


class ShadesOfGray(keras.layers.Layer):
    """Colour constancy (Finlayson and Trezzi 2004, the shades-of-gray method used in ISIC
    pipelines): each image's illuminant is estimated per channel as the Minkowski p-mean of its
    values (p = 6), scaled to the grey illuminant's norm, and divided out; values clipped to
    [-1, 1]. In training and inference alike: it normalises the input, it does not augment.
    Dermoscopes and their lighting differ between clinics; chosen on real lesions
    (docs/benchmarks.md)."""

    def __init__(self, power: float = 6.0, **kwargs):
        super().__init__(**kwargs)
        self.power = power

    def call(self, images):
        from keras import ops

        values = (images + 1.0) * 0.5
        illuminant = ops.power(ops.mean(ops.power(values, self.power), axis=(1, 2), keepdims=True), 1.0 / self.power)
        illuminant = illuminant * (3.0 ** 0.5) / (ops.sqrt(ops.sum(illuminant * illuminant, axis=3, keepdims=True)) + 1e-6)
        return ops.clip(values / (illuminant + 1e-6), 0.0, 1.0) * 2.0 - 1.0

    def compute_output_shape(self, input_shape):
        return input_shape


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization computed by TensorFlow's fused kernel: the same arithmetic
    (batch mean and biased variance in training, moving statistics updated with them, moving
    statistics in inference; outputs equal to ~1e-6), about a quarter less time per training
    step on a CPU (Keras' own layer spends ~40% of this classifier's step in separate moment
    and normalisation ops)."""

    def call(self, inputs, training=None, mask=None):
        tf = runtime.tf
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)
            # the kernel returns the unbiased variance; Keras' layer keeps the biased one
            count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), variance.dtype)
            variance = variance * (count - 1) / tf.maximum(count, 2)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1 - self.momentum))
            return outputs
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, mean=self.moving_mean, variance=self.moving_variance,
            epsilon=self.epsilon, is_training=False)
        return outputs


def batch_norm_layer(momentum: float):
    """`FusedBatchNormalization` on TensorFlow, Keras' own layer on another Keras backend."""
    if keras.backend.backend() != "tensorflow":
        return keras.layers.BatchNormalization(momentum=momentum)
    return FusedBatchNormalization(momentum=momentum)


def build_classifier(image_size: int, num_classes: int, augment: bool, settings):
    """The fixed classifier: with `settings.colour_constancy`, `ShadesOfGray` on the input; in
    training, one of the square's 8 flips and quarter turns per image (`square_symmetry_layer`:
    a lesion's orientation carries no label, so every arm's classifier learns so), and with
    `augment` the photometric `augmentation_layers`; per halving down to 4x4 (or fewer),
    `blocks_per_stage` - 1 3x3
    convolutions then a strided one, each with batch normalisation (momentum 0.9,
    `batch_norm_layer`) and ReLU, the widths `settings.widths` (the last repeated); global
    average pooling, dropout `settings.dropout`, a linear layer to class logits."""
    inputs = keras.Input((image_size, image_size, 3))
    x = ShadesOfGray()(inputs) if settings.colour_constancy else inputs
    x = square_symmetry_layer()(x)
    if augment:
        for layer in augmentation_layers():
            x = layer(x)
    stages = max(1, int(math.log2(image_size // 4)))
    for i in range(stages):
        width = settings.widths[min(i, len(settings.widths) - 1)]
        for block in range(settings.blocks_per_stage):
            last = block == settings.blocks_per_stage - 1
            x = layers.Conv2D(width, 3, strides=2 if last else 1, padding="same", use_bias=False)(x)
            x = batch_norm_layer(momentum=0.9)(x)  # moving statistics settle within a short training
            x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(settings.dropout)(x)
    outputs = layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs)


def arm_epochs(images: int, steps: int, batch_size: int) -> int:
    """Whole passes over an arm's `images` that come nearest to `steps` optimiser steps."""
    return max(1, round(steps / math.ceil(images / batch_size)))


def train_classifier(images, labels, num_classes: int, augment: bool, seed: int, settings, steps: int):
    """The classifier trained on (images, labels) for about `steps` optimiser steps (whole
    epochs, `arm_epochs`): AdamW (weight decay `settings.weight_decay`) with the learning rate
    decaying from `settings.learning_rate` to 0 on a cosine, class-balanced loss
    (n / (classes x n_class)). No validation split and no early stopping: every arm gets the
    same budget and all of its images. Returns the Keras model; its .history holds the epochs
    run.

    Chosen on real lesions (docs/benchmarks.md): on a held-out fifth of the ISIC 2017 training
    images, the validation AUC kept rising to the end of a fixed cosine budget, where early
    stopping on the (weighted, noisy) validation loss of 15% of the images stopped it early."""
    keras.utils.set_random_seed(seed)
    counts = np.bincount(labels, minlength=num_classes)
    weights = {c: len(labels) / (np.count_nonzero(counts) * n) for c, n in enumerate(counts) if n}
    epochs = arm_epochs(len(labels), steps, settings.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        settings.learning_rate, epochs * math.ceil(len(labels) / settings.batch_size))
    model = build_classifier(images.shape[1], num_classes, augment, settings)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=settings.weight_decay),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, labels, epochs=epochs, batch_size=settings.batch_size, class_weight=weights, verbose=0,
              shuffle=True)
    return model


def predict_proba(model, images: np.ndarray) -> np.ndarray:
    """Class probabilities (n, classes), float64."""
    from scipy.special import softmax

    return softmax(np.asarray(model.predict(images, batch_size=256, verbose=0), np.float64), axis=1)
