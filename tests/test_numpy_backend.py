"""The numpy backend through the Backend interface, on tiny models."""

from __future__ import annotations

import numpy as np
import pytest

from backends import get, spec
from backends.config import ConfigError, GANConfig
from backends.noise import sample_noise
from core.gradcheck import numerical_gradient, relative_error, sample_indices


def tiny_config(**changes) -> GANConfig:
    values = dict(image_size=32, width=4, max_width=8, latent_dim=8, batch_size=3, seed=1)
    values.update(changes)
    return GANConfig(**values)


def batch(config: GANConfig, seed: int = 0, count: int = 3):
    rng = np.random.default_rng(seed)
    real = rng.uniform(-1, 1, (count, config.image_size, config.image_size, config.channels)).astype(np.float32)
    return real, sample_noise(rng, count, config)


def full_state(backend) -> dict:
    return {**backend.get_weights(), **backend.get_optimizer_state(), **backend.get_rng_state()}


def assert_states_equal(first: dict, second: dict):
    assert list(first) == list(second)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_weight_and_optimizer_names_and_shapes_follow_the_spec():
    config = tiny_config()
    backend = get("numpy", config)
    weights = backend.get_weights()
    assert list(weights) == list(spec.weight_shapes(config))
    assert {n: w.shape for n, w in weights.items()} == spec.weight_shapes(config)
    assert all(w.dtype == np.float32 for w in weights.values())
    state = backend.get_optimizer_state()
    assert {n: s.shape for n, s in state.items()} == spec.optimizer_state_shapes(config)
    assert state["opt/generator/iterations"].dtype == np.int64


def test_set_get_round_trip_moves_the_model():
    config = tiny_config()
    source, target = get("numpy", config), get("numpy", config.replace(seed=2))
    real, z = batch(config)
    for _ in range(2):
        source.train_step(real, z)
    assert not np.allclose(source.generate(z), target.generate(z))
    target.set_weights(source.get_weights())
    target.set_optimizer_state(source.get_optimizer_state())
    assert_states_equal(
        {**source.get_weights(), **source.get_optimizer_state()},
        {**target.get_weights(), **target.get_optimizer_state()},
    )
    np.testing.assert_array_equal(source.generate(z), target.generate(z))
    np.testing.assert_array_equal(source.discriminate(real), target.discriminate(real))
    with pytest.raises(ValueError, match="missing"):
        target.set_weights({})
    bad = source.get_weights()
    bad["generator/conv_1/kernel"] = bad["generator/conv_1/kernel"][:1]
    with pytest.raises(ValueError, match="conv_1/kernel"):
        target.set_weights(bad)


def test_rng_state_round_trip_replays_dropout():
    config = tiny_config(dropout=0.5)
    backend = get("numpy", config)
    real, z = batch(config)
    saved = full_state(backend)
    first = backend.train_step(real, z)
    after_first = full_state(backend)
    backend.set_weights({n: saved[n] for n in backend.get_weights()})
    backend.set_optimizer_state({n: saved[n] for n in backend.get_optimizer_state()})
    second_without_replay = backend.train_step(real, z)  # fresh dropout masks
    assert second_without_replay != first
    backend.set_weights({n: saved[n] for n in backend.get_weights()})
    backend.set_optimizer_state({n: saved[n] for n in backend.get_optimizer_state()})
    backend.set_rng_state({n: saved[n] for n in backend.get_rng_state()})
    assert backend.train_step(real, z) == first
    assert_states_equal(full_state(backend), after_first)
    assert all(name.startswith("rng/numpy/") for name in backend.get_rng_state())


def test_train_step_equals_d_step_then_g_step_without_dropout():
    config = tiny_config(dropout=0.0)
    fused, separate = get("numpy", config), get("numpy", config)
    real, z = batch(config)
    d_loss, g_loss = fused.train_step(real, z)
    assert separate.d_step(real, z) == pytest.approx(d_loss, rel=1e-6)
    assert separate.g_step(z) == pytest.approx(g_loss, rel=1e-6)
    fused_weights, separate_weights = fused.get_weights(), separate.get_weights()
    for name in spec.weight_shapes(config):
        if spec.is_trainable(name):  # moving averages moved twice in the separate steps
            np.testing.assert_allclose(fused_weights[name], separate_weights[name], rtol=1e-5, atol=1e-7)
    assert fused.get_optimizer_state()["opt/discriminator/iterations"] == 1


def test_training_moves_generator_bn_statistics_once_per_step():
    config = tiny_config()
    backend = get("numpy", config)
    real, z = batch(config)
    name = "generator/bn_1/moving_mean"
    before = backend.get_weights()[name]
    backend.generate(z)
    np.testing.assert_array_equal(backend.get_weights()[name], before)  # inference changes nothing
    backend.train_step(real, z)
    moved = backend.get_weights()[name]
    assert not np.allclose(moved, before)


def test_compute_gradients_changes_nothing_and_covers_every_trainable_weight():
    config = tiny_config(dropout=0.3)
    backend = get("numpy", config)
    real, z = batch(config)
    before = full_state(backend)
    result = backend.compute_gradients(real, z)
    assert_states_equal(full_state(backend), before)
    trainable = [n for n in spec.weight_shapes(config) if spec.is_trainable(n)]
    assert sorted(result["grads"]) == sorted(trainable)
    for name, grad in result["grads"].items():
        assert grad.shape == spec.weight_shapes(config)[name] and np.all(np.isfinite(grad))
    assert result["d_loss"] > 0 and result["g_loss"] > 0
    # the same weights and RNG give the same D loss as a real step would
    assert backend.d_step(real, z) == pytest.approx(result["d_loss"], rel=1e-6)


def test_generate_is_inference_mode_and_per_image():
    config = tiny_config()
    backend = get("numpy", config)
    _, z = batch(config, count=5)
    images = backend.generate(z)
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.float32
    assert np.all(np.abs(images) <= 1)
    np.testing.assert_allclose(backend.generate(z[:2]), images[:2], rtol=1e-5, atol=1e-6)
    many = sample_noise(np.random.default_rng(9), 70, config)  # more than one inference chunk
    np.testing.assert_allclose(backend.generate(many)[64:], backend.generate(many[64:]), rtol=1e-5, atol=1e-6)
    logits = backend.discriminate(images)
    assert logits.shape == (5,)
    np.testing.assert_array_equal(backend.discriminate(images), logits)  # no dropout


def test_conditional_variant_trains_and_needs_labels():
    config = tiny_config(num_classes=3)
    backend = get("numpy", config)
    real, z = batch(config)
    labels = np.array([0, 2, 1])
    d_loss, g_loss = backend.train_step(real, z, labels)
    assert np.isfinite(d_loss) and np.isfinite(g_loss)
    first, second = backend.generate(z[:1], np.array([0])), backend.generate(z[:1], np.array([2]))
    assert not np.allclose(first, second)  # the label changes the image
    assert backend.discriminate(real, labels).shape == (3,)
    with pytest.raises(ValueError, match="labels"):
        backend.g_step(z)
    with pytest.raises(ValueError, match="labels"):
        backend.g_step(z, np.array([0, 1, 3]))


def test_float64_runs_in_float64_and_bad_inputs_are_refused():
    config = tiny_config(dtype="float64")
    backend = get("numpy", config)
    assert all(w.dtype == np.float64 for w in backend.get_weights().values())
    real, z = batch(config)
    assert np.isfinite(backend.train_step(real, z)).all()
    with pytest.raises(ValueError, match="z must have shape"):
        backend.g_step(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="images must have shape"):
        backend.d_step(real[:, :16], z)
    with pytest.raises(ConfigError, match="diffaugment"):
        get("numpy", tiny_config(diffaugment="color,flip"))


@pytest.mark.parametrize("num_classes", [0, 3])
def test_backend_gradients_match_central_differences_with_diffaugment(num_classes):
    """End to end through the Backend interface in float64: compute_gradients restores the RNG,
    so every call draws the same dropout masks and augmentations and its losses are a
    deterministic function of the weights."""
    config = tiny_config(
        dtype="float64", diffaugment="color,translation,cutout", dropout=0.2, num_classes=num_classes, width=2, max_width=4
    )
    backend = get("numpy", config)
    real, z = batch(config)
    labels = np.array([0, 2, 1]) if num_classes else None
    analytic = backend.compute_gradients(real, z, labels)["grads"]
    weights = backend.get_weights()
    rng = np.random.default_rng(4)
    for name, loss_key in (
        ("generator/conv_2/kernel", "g_loss"),
        ("generator/bn_1/gamma", "g_loss"),
        ("discriminator/conv_0/kernel", "d_loss"),
        ("discriminator/dense_out/bias", "d_loss"),
    ):
        array = weights[name]
        idx = sample_indices(rng, array.size, 6)

        def loss():
            backend.set_weights(weights)
            return backend.compute_gradients(real, z, labels)[loss_key]

        numeric = numerical_gradient(loss, array, idx)
        assert relative_error(analytic[name].reshape(-1)[idx], numeric) < 1e-6, name


def test_discriminator_learns_to_tell_a_fixed_real_set_from_fakes():
    config = tiny_config(dropout=0.0, lr_d=2e-3, beta_1=0.5)
    backend = get("numpy", config)
    real, z = batch(config, count=4)
    losses = [backend.d_step(real, z) for _ in range(25)]
    assert losses[-1] < 0.5 * losses[0]


def test_pack_and_minibatch_std_give_one_logit_per_group_and_refuse_ragged_batches():
    backend = get("numpy", tiny_config(batch_size=4, pack=2, minibatch_std=2))
    real, z = batch(backend.config, count=4)
    d_loss, g_loss = backend.train_step(real, z)
    assert np.isfinite(d_loss) and np.isfinite(g_loss)
    assert backend.discriminate(real).shape == (2,)
    before = full_state(backend)
    with pytest.raises(ValueError, match="groups of 4"):
        backend.discriminate(real[:3])
    with pytest.raises(ValueError, match="groups of 4"):
        backend.train_step(real[:3], z[:3])
    with pytest.raises(ValueError, match="groups of 4"):
        backend.g_step(z[:2])
    assert_states_equal(before, full_state(backend))  # refused before anything moved


def test_discriminate_chunks_keep_minibatch_std_groups_whole():
    backend = get("numpy", tiny_config(batch_size=3, minibatch_std=3))
    images, _ = batch(backend.config, count=66)  # more than one inference chunk
    logits = backend.discriminate(images)
    by_group = np.concatenate([backend.discriminate(images[i : i + 3]) for i in range(0, 66, 3)])
    np.testing.assert_allclose(logits, by_group, rtol=1e-6)


def test_the_averaged_generator_is_the_documented_average_of_g_and_generates():
    """After every G step, w_ema += (1 - ema_beta) (w - w_ema), from a copy of G; `generate`
    runs the average (BN moving statistics averaged too)."""
    config = tiny_config(ema_kimg=0.01, ema_rampup=0.1)
    backend = get("numpy", config)
    weights = backend.get_weights()
    expected = {spec.ema_name(n): w.astype(np.float64) for n, w in weights.items() if n.startswith("generator/")}
    assert all(np.array_equal(weights[n], expected[n]) for n in expected)  # starts as a copy of G
    real, z = batch(config)
    images_seen = 0
    for step in range(5):
        if step % 2:
            backend.g_step(z)
        else:
            backend.train_step(real, z)
        beta = spec.ema_beta(config, images_seen, len(z))
        images_seen += len(z)
        current = backend.get_weights()
        for name in expected:
            g_weight = current["generator/" + name.split("/", 1)[1]]
            expected[name] += (1.0 - beta) * (g_weight - expected[name])
    assert spec.ema_beta(config, 0, 3) == 0.0 and 0.5 < spec.ema_beta(config, 1000, 3) < 1.0
    current = backend.get_weights()
    for name, value in expected.items():
        np.testing.assert_allclose(current[name], value, rtol=1e-5, atol=1e-7, err_msg=name)
    assert not np.allclose(current["generator_ema/conv_1/kernel"], current["generator/conv_1/kernel"])

    plain = get("numpy", config.replace(ema_kimg=0.0))
    plain.set_weights({("generator/" + n.split("/", 1)[1] if n.startswith("generator_ema/") else n): w
                       for n, w in current.items() if not n.startswith("generator/")})
    np.testing.assert_array_equal(backend.generate(z), plain.generate(z))
