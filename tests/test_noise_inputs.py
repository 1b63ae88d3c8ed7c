"""G's per-pixel noise inputs (config.noise_inputs): the maps are part of z, so they follow z
everywhere (the trainer's stream, generation's per-index stream, export); a zero strength
leaves G as it was; a learned one lets two maps give two images of one latent; the averaged
generator averages the strengths. Gradient checks are in test_core_layers.py; cross-backend
parity of images, losses, gradients, steps and checkpoints in test_parity.py."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import backends
from backends import spec
from backends.config import GANConfig
from backends.noise import sample_noise
from run_fixtures import init_random_run
from service import checkpoint as ckpt
from service import generation

TINY = dict(image_size=32, width=4, max_width=16, latent_dim=8, base_side=4, batch_size=4, dropout=0.0, seed=3)


def tiny_config(**changes) -> GANConfig:
    return GANConfig(**{**TINY, "noise_inputs": True, **changes})


def with_strengths(weights: dict, seed: int, scale: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    return {n: (scale * rng.standard_normal(v.shape)).astype(v.dtype) if n.endswith("/strength") else v
            for n, v in weights.items()}


def other_maps(z: np.ndarray, config: GANConfig, seed: int) -> np.ndarray:
    """The same latents with freshly drawn noise maps."""
    fresh = z.copy()
    fresh[:, config.latent_dim :] = np.random.default_rng(seed).standard_normal((len(z), config.noise_map_size))
    return fresh


def test_z_is_the_latent_as_before_then_standard_normal_maps():
    config = tiny_config(noise="uniform")
    z = sample_noise(np.random.default_rng(1), 200, config)
    before = sample_noise(np.random.default_rng(1), 200, config.replace(noise_inputs=False))
    assert z.shape == (200, 8 + 8 * 8 + 16 * 16) and config.noise_map_sides == (8, 16)
    np.testing.assert_array_equal(z[:, :8], before)  # the latent stream is unchanged
    maps = z[:, 8:]
    assert abs(maps.mean()) < 0.02 and abs(maps.std() - 1) < 0.02 and maps.min() < -3
    # generation's stream: row i a function of (seed, i) alone, maps included
    whole = generation.noise_for_indices(5, range(6), config)
    np.testing.assert_array_equal(generation.noise_for_indices(5, [4], config)[0], whole[4])


def test_the_noise_layers_change_no_other_initial_weight(backend_name):
    noisy = backends.get(backend_name, tiny_config()).get_weights()
    plain = backends.get(backend_name, tiny_config(noise_inputs=False)).get_weights()
    assert all(np.array_equal(noisy[n], v) for n, v in plain.items())
    assert all(not noisy[n].any() for n in noisy if n.endswith("/strength"))  # StyleGAN starts them at zero


def test_with_zero_strength_the_maps_change_nothing(backend_name):
    config = tiny_config(batch_size=8)
    noisy, plain = backends.get(backend_name, config), backends.get(backend_name, config.replace(noise_inputs=False))
    z = sample_noise(np.random.default_rng(2), 8, config)
    images = noisy.generate(z)
    np.testing.assert_array_equal(images, noisy.generate(other_maps(z, config, seed=3)))
    np.testing.assert_allclose(images, plain.generate(z[:, : config.latent_dim]), atol=1e-6)
    real = np.random.default_rng(4).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    assert noisy.train_step(real, z) == pytest.approx(plain.train_step(real, z[:, : config.latent_dim]), rel=1e-5)
    moved = noisy.get_weights()
    assert all(np.abs(moved[n]).max() > 0 for n in moved if n.endswith("/strength"))  # they learn from zero


def test_with_a_strength_two_maps_give_two_images_of_one_latent(backend_name):
    config = tiny_config()
    backend = backends.get(backend_name, config)
    backend.set_weights(with_strengths(backend.get_weights(), seed=5))
    z = sample_noise(np.random.default_rng(6), 4, config)
    images, again = backend.generate(z), backend.generate(z)
    np.testing.assert_array_equal(images, again)  # the maps are input: nothing random inside G
    changed = backend.generate(other_maps(z, config, seed=7))
    assert np.abs(changed - images).max() > 0.01
    # the fine detail changes, the image does not turn into another one
    assert np.abs(changed - images).mean() < np.abs(images - images[::-1]).mean()


def test_the_averaged_generator_averages_the_strengths(backend_name):
    config = tiny_config(ema_kimg=0.01, ema_rampup=0.0)
    backend = backends.get(backend_name, config)
    rng = np.random.default_rng(8)
    for _ in range(3):
        backend.train_step(rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32), sample_noise(rng, 4, config))
    weights = backend.get_weights()
    names = [n for n in weights if n.startswith("generator/") and n.endswith("/strength")]
    assert len(names) == 2 and all(spec.ema_name(n) in weights for n in names)
    for name in names:
        own, average = weights[name], weights[spec.ema_name(name)]
        assert np.abs(average).max() > 0 and not np.allclose(average, own)  # follows G, lagging behind
        assert np.abs(average).max() <= np.abs(own).max() * 1.5
    state = backend.get_optimizer_state()
    assert all(np.abs(state[f"opt/generator/m/{n}"]).max() > 0 for n in names)


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    """A run directory whose checkpoint has random weights and strengths away from zero."""
    config = tiny_config(latent_dim=16)
    run = init_random_run(tmp_path_factory.mktemp("noisy") / "run", config, seed=9)
    path = ckpt.latest_checkpoint(run)
    ckpt.save_checkpoint(run, 1, with_strengths(ckpt.load_checkpoint(path), seed=10, scale=0.5))
    return run


def png_digests(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("img_*.png"))}


def test_generation_is_byte_identical_in_one_or_two_shards(noisy_run, tmp_path):
    jobs = {
        shards: generation.plan_job(noisy_run, 12, tmp_path / f"{shards}", seed=7, backend="numpy",
                                    batch_size=batch, shard_size=12 // shards)
        for shards, batch in ((1, 12), (2, 5))
    }
    for job in jobs.values():
        generation.generate_in_process(job)
    one, two = png_digests(tmp_path / "1"), png_digests(tmp_path / "2")
    assert len(one) == 12 and one == two
    assert len(set(one.values())) == 12


@pytest.mark.slow
def test_export_gives_generate_s_images_with_the_longer_z(tmp_path):
    from test_export import exported_images

    from service.run import main

    config = tiny_config(latent_dim=8, num_classes=3, ema_kimg=1.0)
    run = init_random_run(tmp_path / "run", config, backend="tf", seed=11)
    arrays = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    ckpt.save_checkpoint(run, 1, with_strengths(arrays, seed=12, scale=0.5))  # G's and the average's differ
    model_path = tmp_path / "G.keras"
    assert main(["export", "--run", str(run), "--out", str(model_path)]) == 0
    z = generation.noise_for_indices(0, range(6), config)
    assert z.shape == (6, config.z_size)
    labels = np.arange(6) % 3
    expected = generation.load_generator(run, ckpt.latest_checkpoint(run), "numpy").generate(z, labels)
    images, modules = exported_images(model_path, tmp_path, z, labels)
    assert modules == ["keras"]
    np.testing.assert_allclose(images, expected, atol=2e-5)
    assert np.abs(expected - generation.load_generator(run, ckpt.latest_checkpoint(run), "numpy").generate(
        other_maps(z, config, seed=13), labels)).max() > 0.01  # the maps matter in what was exported
