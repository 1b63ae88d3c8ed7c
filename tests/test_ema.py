"""The generator average against its definition (StyleGAN2-ADA's G_ema): with the ramp-up off,
every ema_kimg * 1000 images G trains on halve the average's distance to G, however those
images are cut into steps. Checked on the rule (spec.ema_beta) and on both backends, each of
which computes beta its own way (the tf backend inside its compiled step)."""

from __future__ import annotations

import numpy as np
import pytest

from backends import get, spec
from backends.config import GANConfig
from backends.noise import sample_noise

BATCH = 3
HALF_LIFE_IMAGES = 12  # ema_kimg = 0.012: four G steps of 3 images


def ema_config(**changes) -> GANConfig:
    values = dict(image_size=32, width=4, max_width=8, latent_dim=8, batch_size=BATCH, seed=1,
                  ema_kimg=HALF_LIFE_IMAGES / 1000, ema_rampup=0.0)
    values.update(changes)
    return GANConfig(**values)


@pytest.mark.parametrize("images_seen", [0, 5, 10**6])
def test_the_rule_keeps_half_of_the_average_per_half_life(images_seen):
    config = ema_config()
    assert spec.ema_beta(config, images_seen, HALF_LIFE_IMAGES) == 0.5
    # cut into steps of any size, the betas of one half-life multiply to one half
    for batch in (1, 3, 4):
        assert spec.ema_beta(config, images_seen, batch) ** (HALF_LIFE_IMAGES // batch) == pytest.approx(0.5, rel=1e-12)
    assert spec.ema_beta(config, images_seen, 2 * HALF_LIFE_IMAGES) == 0.25


@pytest.mark.slow
def test_the_average_moves_half_way_to_a_fixed_g_in_one_half_life(backend_name):
    """G held still (learning rate 0: Adam moves no weight), the average set away from it:
    after one half-life of images it sits exactly half way, after two a quarter of the way
    from G, in lone G steps and fused steps alike."""
    config = ema_config()
    backend = get(backend_name, config)
    rng = np.random.default_rng(0)
    weights = backend.get_weights()
    g_names = spec.trainable_names(config, "generator")
    offsets = {name: rng.uniform(0.5, 1.5, weights[name].shape).astype(np.float32) for name in g_names}
    backend.set_weights({**weights, **{spec.ema_name(n): weights[n] + offsets[n] for n in g_names}})
    backend.set_learning_rate_scale(0.0)
    real = rng.uniform(-1, 1, (BATCH, 32, 32, 3)).astype(np.float32)

    def train(images: int, fused: bool) -> None:
        for _ in range(images // BATCH):
            z = sample_noise(rng, BATCH, config)
            if fused:
                backend.train_step(real, z)
            else:
                backend.g_step(z)

    for half_lives, fused in ((1, False), (2, True)):
        train(HALF_LIFE_IMAGES, fused)
        current = backend.get_weights()
        for name in g_names:
            np.testing.assert_array_equal(current[name], weights[name], err_msg=f"{name}: G moved")
            np.testing.assert_allclose(current[spec.ema_name(name)] - current[name], offsets[name] * 0.5**half_lives,
                                       rtol=1e-5, atol=1e-6, err_msg=f"{name} after {half_lives} half-lives")
