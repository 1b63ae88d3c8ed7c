"""Hand-written NumPy + Numba DCGAN engine: layers, loss, Adam, Sequential. No TF, no Ray."""

from core.functional import bce_from_logits
from core.layers import (
    BatchNormActivation,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    LeakyReLU,
    LeakyReLUDropout,
    MinibatchStd,
    NoiseInjection,
    NoiseInputs,
    NoiseMaps,
    ReLU,
    Reshape,
    SpectralNormMixin,
    Tanh,
    UpSampleConv2D,
    UpSampling2D,
)
from core.model import Sequential
from core.optim import Adam

__all__ = [
    "Adam",
    "BatchNormActivation",
    "BatchNormalization",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "LeakyReLU",
    "LeakyReLUDropout",
    "MinibatchStd",
    "NoiseInjection",
    "NoiseInputs",
    "NoiseMaps",
    "ReLU",
    "Reshape",
    "Sequential",
    "SpectralNormMixin",
    "Tanh",
    "UpSampleConv2D",
    "UpSampling2D",
    "bce_from_logits",
]
