"""Latent noise, drawn by the service (not the backends) so both backends see the same z.

z is (count, config.z_size): the latent (config.latent_dim values from config.noise), then,
with config.noise_inputs, G's per-pixel noise maps (config.noise_map_size standard normal
values: the maps of config.noise_map_sides in order, each row-major). The maps are part of z so
that whatever draws z (the trainer's checkpointed stream, generation's per-index stream, a
caller of `generate` or of an exported model) decides them too: an image stays a function of
its z.
"""

from __future__ import annotations

import numpy as np

from backends.config import GANConfig


def sample_noise(rng: np.random.Generator, count: int, config: GANConfig) -> np.ndarray:
    if config.noise == "uniform":
        z = rng.uniform(-1.0, 1.0, size=(count, config.latent_dim))
    else:
        z = rng.standard_normal(size=(count, config.latent_dim))
    if config.noise_map_size:  # drawn after the latent: without noise inputs the stream is as before
        z = np.concatenate([z, rng.standard_normal(size=(count, config.noise_map_size))], axis=1)
    return z.astype(config.dtype)
