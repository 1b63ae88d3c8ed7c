"""Latent noise, drawn by the service (not the backends) so both backends see the same z."""

from __future__ import annotations

import numpy as np

from backends.config import GANConfig


def sample_noise(rng: np.random.Generator, count: int, config: GANConfig) -> np.ndarray:
    if config.noise == "uniform":
        z = rng.uniform(-1.0, 1.0, size=(count, config.latent_dim))
    else:
        z = rng.standard_normal(size=(count, config.latent_dim))
    return z.astype(config.dtype)
