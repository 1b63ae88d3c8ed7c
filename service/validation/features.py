"""Feature spaces for the distribution metrics.

Default: a fixed, randomly initialised convolutional net in NumPy ("random-net features").
No pretrained network can be downloaded here, and a space fitted on the data (say PCA of the
real pixels) would change with every real set, so its numbers could not be compared between
runs. A frozen random net is the same function everywhere: random conv features keep colour,
texture and multi-scale structure, and Naeem et al. (2020, "Reliable fidelity and diversity
metrics for generative models") found randomly initialised embeddings usable for
precision/recall/density/coverage on non-ImageNet domains.

The net (weights drawn once from numpy.random.default_rng(FEATURE_SEED), He-normal, no bias):
    input  uint8 RGB resized to 64x64 (INTER_AREA down, INTER_LINEAR up), x / 127.5 - 1
    4 x [3x3 conv, stride 2, reflect padding, ReLU]  with 32, 64, 128, 256 filters
    feature = global average of every layer's ReLU output, concatenated: 480 numbers
so the vector holds colour (layer 1) up to lesion-scale shape (layer 4, receptive field ~45 px).

Optional: standard Inception-v3 pool features from a user-supplied Keras weights file.
"""

from __future__ import annotations

import hashlib
import os

import cv2
import numpy as np
from tqdm import tqdm

from service.errors import UserError

FEATURE_SEED = 2017  # the ISIC 2017 challenge year; any fixed value would do
FEATURE_INPUT_SIZE = 64
FEATURE_WIDTHS = (32, 64, 128, 256)
FEATURE_DIM = sum(FEATURE_WIDTHS)
BATCH_SIZE = 256


def _random_net_weights() -> list[np.ndarray]:
    rng = np.random.default_rng(FEATURE_SEED)
    weights, channels_in = [], 3
    for channels_out in FEATURE_WIDTHS:
        fan_in = 9 * channels_in
        kernel = rng.standard_normal((3, 3, channels_in, channels_out)) * np.sqrt(2.0 / fan_in)
        weights.append(kernel.astype(np.float32).reshape(fan_in, channels_out))
        channels_in = channels_out
    return weights


_WEIGHTS = _random_net_weights()
FEATURE_FINGERPRINT = hashlib.sha256(b"".join(w.tobytes() for w in _WEIGHTS)).hexdigest()[:16]

FEATURE_SPACE = {
    "name": "random-net-480",
    "description": "fixed random-initialised 4-layer conv net (3x3 stride-2 convs, 32/64/128/256 "
    "filters, ReLU, He-normal weights from numpy default_rng(2017)) on 64x64 inputs; "
    "feature = global average of each layer's output (480-D)",
    "seed": FEATURE_SEED,
    "dim": FEATURE_DIM,
    "weights_sha256_16": FEATURE_FINGERPRINT,
}


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 NHWC -> uint8 N x size x size x C (area filter to shrink, bilinear to enlarge)."""
    images = np.asarray(images)
    if images.shape[1] == size and images.shape[2] == size:
        return images
    shrinking = images.shape[1] > size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    out = np.empty((len(images), size, size, images.shape[3]), images.dtype)
    for i, image in enumerate(images):
        out[i] = cv2.resize(image, (size, size), interpolation=interpolation).reshape(size, size, -1)
    return out


def _conv3x3_stride2_relu(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """NHWC conv, 3x3 window, stride 2, reflect padding by 1, as an im2col matmul."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))[:, ::2, ::2]
    # windows: (N, H/2, W/2, C, 3, 3) -> columns in the kernel's (kh, kw, cin) order
    n, h, w = windows.shape[:3]
    columns = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * h * w, -1)
    out = columns @ kernel
    np.maximum(out, 0, out=out)
    return out.reshape(n, h, w, -1)


def random_net_features(images_uint8: np.ndarray, progress: bool = False, desc: str = "features") -> np.ndarray:
    """(N, 480) float32 random-net features of uint8 NHWC RGB images."""
    images_uint8 = np.asarray(images_uint8)
    features = np.empty((len(images_uint8), FEATURE_DIM), np.float32)
    starts = range(0, len(images_uint8), BATCH_SIZE)
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False, unit="batch"):
        batch = resize_images(images_uint8[start : start + BATCH_SIZE], FEATURE_INPUT_SIZE)
        x = batch.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
        pooled = []
        for kernel in _WEIGHTS:
            x = _conv3x3_stride2_relu(x, kernel)
            pooled.append(x.mean(axis=(1, 2)))
        features[start : start + len(batch)] = np.concatenate(pooled, axis=1)
    return features


class InceptionFeatures:
    """Inception-v3 2048-D pool features from a Keras weights file (TF is imported only here)."""

    def __init__(self, weights_path: str | os.PathLike):
        weights_path = os.fspath(weights_path)
        self.weights_path = weights_path  # named in metrics.json
        if not os.path.isfile(weights_path):
            raise UserError(f"--inception-weights: no such file: {weights_path}")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import keras

            self._model = keras.applications.InceptionV3(
                weights=weights_path, include_top=False, pooling="avg", input_shape=(299, 299, 3)
            )
        except Exception as e:  # any reason the file is not InceptionV3 weights
            reason = " ".join(str(e).split())[:200]
            raise UserError(f"--inception-weights: cannot load {weights_path} as InceptionV3 weights: {reason}") from None
        self._preprocess = keras.applications.inception_v3.preprocess_input

    def __call__(self, images_uint8: np.ndarray, progress: bool = False, desc: str = "inception") -> np.ndarray:
        images_uint8 = np.asarray(images_uint8)
        batch_size = 64
        features = np.empty((len(images_uint8), 2048), np.float32)
        starts = range(0, len(images_uint8), batch_size)
        for start in tqdm(starts, desc=desc, disable=not progress, leave=False, unit="batch"):
            batch = resize_images_bilinear(images_uint8[start : start + batch_size], 299)
            x = self._preprocess(batch.astype(np.float32))
            features[start : start + len(batch)] = np.asarray(self._model(x, training=False))
        return features


def resize_images_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize either way (Inception's usual preprocessing)."""
    out = np.empty((len(images), size, size, images.shape[3]), images.dtype)
    for i, image in enumerate(images):
        out[i] = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR).reshape(size, size, -1)
    return out
