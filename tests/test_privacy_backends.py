"""DP-SGD in the backends: per-example gradients, clipping and noise against their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from backends.config import GANConfig
from backends.numpy.backend import NumpyBackend, clipped_sum
from backends.numpy.networks import build_network

BATCH = 4


def private_config(**changes) -> GANConfig:
    values = dict(image_size=32, width=4, max_width=16, base_side=4, batch_size=BATCH, dtype="float64",
                  dp_noise=1.0, dp_clip=0.05, dropout=0.0, seed=3)
    values.update(changes)
    return GANConfig(**values)


def batch(config, real_count=BATCH, seed=0):
    rng = np.random.default_rng(seed)
    real = rng.uniform(-1, 1, (real_count, config.image_size, config.image_size, config.channels))
    z = rng.uniform(-1, 1, (config.batch_size, config.z_size))
    return real, z


# --------------------------------------------------------------------------- core: per-example gradients


@pytest.mark.parametrize(
    "changes",
    [{}, {"spectral_norm": True}, {"num_classes": 3, "d_conditioning": "projection"}, {"num_classes": 2}],
    ids=["plain", "spectral_norm", "projection", "concat"],
)
def test_per_example_gradients_equal_one_example_at_a_time(changes):
    config = private_config(**changes)
    rng = np.random.default_rng(1)
    net = build_network(config, "discriminator", rng, rng)
    channels = config.channels + (config.num_classes if config.d_conditioning == "concat" else config.num_classes)
    inputs = rng.uniform(-1, 1, (5, 32, 32, channels))
    if config.num_classes:  # label planes: one-hot, constant over the image
        inputs[..., config.channels:] = np.eye(config.num_classes)[rng.integers(0, config.num_classes, 5)][:, None, None, :]
    for layer in net.layers:
        if hasattr(layer, "power_iteration"):
            layer.power_iteration()
    dlogits = rng.normal(size=(5, 1))
    net.forward(inputs, training=True)
    per_example = net.backward_per_example(dlogits)
    assert list(per_example) == list(net.parameters())
    for i in range(5):
        net.forward(inputs[i : i + 1], training=True)
        net.backward(dlogits[i : i + 1], need_input_grad=False)
        for name, grad in net.gradients().items():
            np.testing.assert_allclose(per_example[name][i], grad, rtol=1e-10, atol=1e-14, err_msg=name)


# --------------------------------------------------------------------------- clipping and noise


def test_clipped_sum_is_its_definition():
    rng = np.random.default_rng(2)
    per_example = {"a": rng.normal(size=(6, 3, 2)), "b": rng.normal(size=(6, 5)) * np.arange(6)[:, None]}
    clip = 2.0
    summed = clipped_sum(per_example, clip)
    expected = {name: np.zeros(g.shape[1:]) for name, g in per_example.items()}
    for b in range(6):
        norm = np.sqrt(sum(np.sum(g[b] ** 2) for g in per_example.values()))
        factor = min(1.0, clip / norm) if norm > 0 else 1.0
        for name, g in per_example.items():
            expected[name] += factor * g[b]
    for name in per_example:
        np.testing.assert_allclose(summed[name], expected[name], rtol=1e-13, atol=1e-15)
    # a clip above every norm leaves the plain sum
    plain = clipped_sum(per_example, 1e9)
    for name, g in per_example.items():
        np.testing.assert_allclose(plain[name], g.sum(axis=0), rtol=1e-13)


def reference_private_gradients(backend, real, z):
    """The definition, one real example at a time through the ordinary backward (dropout off):
    (sum_b clip(1/2 grad of example b's BCE term) + fakes' gradient of their half) / batch."""
    config = backend.config
    d = backend.discriminator
    fake = backend.generator.forward(backend._generator_input(z, None), training=True)
    for layer in d.layers:
        if hasattr(layer, "power_iteration"):
            layer.power_iteration()
    total = {name: np.zeros_like(w) for name, w in d.parameters().items()}
    for i in range(len(real)):
        logit = d.forward(real[i : i + 1], training=True)
        d.backward(0.5 * (1.0 / (1.0 + np.exp(-logit)) - 1.0), need_input_grad=False)
        grads = d.gradients()
        norm = np.sqrt(sum(np.sum(g**2) for g in grads.values()))
        factor = min(1.0, config.dp_clip / norm)
        for name, g in grads.items():
            total[name] += factor * g / config.batch_size
    logits = d.forward(fake, training=True)
    d.backward(0.5 / len(fake) * (1.0 / (1.0 + np.exp(-logits))), need_input_grad=False)
    return {name: total[name] + g for name, g in d.gradients().items()}


@pytest.mark.parametrize("real_count", [BATCH, 2, 0])
def test_numpy_private_gradient_noise_off_is_the_clipped_sum(real_count):
    config = private_config()
    backend = NumpyBackend(config)
    real, z = batch(config, real_count)
    got = backend.compute_private_gradients(real, z, noise=False)["grads"]
    expected = reference_private_gradients(NumpyBackend(config), real, z)
    assert set(got) == set(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-9, atol=1e-13, err_msg=name)


def test_numpy_private_gradient_noise_has_sigma_clip_over_batch():
    config = private_config(dp_noise=1.7, dp_clip=0.3)
    backend = NumpyBackend(config)
    real, z = batch(config)
    clean = backend.compute_private_gradients(real, z, noise=False)["grads"]
    noise = np.concatenate([
        np.concatenate([(g - clean[n]).ravel() for n, g in backend.compute_private_gradients(real, z)["grads"].items()])
        for _ in range(5)
    ])
    expected = config.dp_noise * config.dp_clip / config.batch_size
    assert noise.size > 10_000
    assert np.std(noise) == pytest.approx(expected, rel=0.03)
    assert abs(np.mean(noise)) < 5 * expected / np.sqrt(noise.size)


@pytest.mark.parametrize("changes", [{}, {"dropout": 0.3, "diffaugment": "translation,cutout", "spectral_norm": True}])
def test_private_step_with_huge_clip_and_no_noise_is_the_ordinary_step(changes):
    ordinary = NumpyBackend(private_config(dp_noise=0.0, **changes))
    private = NumpyBackend(private_config(dp_clip=1e12, **changes))
    private.set_dp_noise(0.0)
    real, z = batch(ordinary.config)
    for _ in range(2):
        ordinary.d_step(real, z)
        private.d_step(real, z)
        ordinary.train_step(real, z)
        private.train_step(real, z)
    theirs = private.get_weights()
    for name, value in ordinary.get_weights().items():
        np.testing.assert_allclose(theirs[name], value, rtol=1e-9, atol=1e-12, err_msg=name)


def test_private_noise_stream_is_checkpointed_and_only_in_private_runs():
    assert not any("dp_noise" in n for n in NumpyBackend(private_config(dp_noise=0.0)).get_rng_state())
    config = private_config()
    first = NumpyBackend(config)
    real, z = batch(config, 3)
    first.train_step(real, z)
    state, weights, optimizer = first.get_rng_state(), first.get_weights(), first.get_optimizer_state()
    assert any("dp_noise" in n for n in state)
    first.train_step(real, z)
    second = NumpyBackend(config)
    second.set_weights(weights)
    second.set_optimizer_state(optimizer)
    second.set_rng_state(state)
    second.train_step(real, z)
    for name, value in first.get_weights().items():
        np.testing.assert_array_equal(second.get_weights()[name], value)


# --------------------------------------------------------------------------- TF: parity with NumPy, noise

from test_parity import TOLERANCE, assert_arrays_match, with_random_noise_strengths  # noqa: E402

PRIVATE_CASES = {
    "32-unconditional": dict(),
    "32-projection-spectral-norm": dict(num_classes=3, d_conditioning="projection", spectral_norm=True,
                                        label_smoothing=0.1),
    "32-concat-float32": dict(num_classes=2, dtype="float32", dp_clip=0.02),
}


@pytest.mark.parametrize("real_count", [BATCH, 0, 6])
@pytest.mark.parametrize("case", list(PRIVATE_CASES))
def test_tf_private_gradient_noise_off_matches_numpy(case, real_count):
    from backends.tf import TFBackend

    config = private_config(**PRIVATE_CASES[case])
    tf_backend = TFBackend(config)
    tf_backend.set_weights(with_random_noise_strengths(tf_backend.get_weights(), seed=3))
    np_backend = NumpyBackend(config)
    np_backend.set_weights(tf_backend.get_weights())
    real, z = batch(config, real_count)
    real, z = real.astype(config.dtype), z.astype(config.dtype)
    labels = None
    if config.num_classes:
        rng = np.random.default_rng(5)
        labels = (rng.integers(0, config.num_classes, real_count), rng.integers(0, config.num_classes, len(z)))
    want = np_backend.compute_private_gradients(real, z, labels, noise=False)
    got = tf_backend.compute_private_gradients(real, z, labels, noise=False)
    assert got["d_loss"] == pytest.approx(want["d_loss"], rel=TOLERANCE[config.dtype])
    assert_arrays_match(want["grads"], got["grads"], TOLERANCE[config.dtype], "private gradients")
    # some examples were clipped (the comparison covers the clipping, not only the sum)
    if real_count:
        plain = NumpyBackend(config.replace(dp_clip=1e9))
        plain.set_weights(tf_backend.get_weights())
        unclipped = plain.compute_private_gradients(real, z, labels, noise=False)["grads"]
        assert any(not np.allclose(unclipped[n], want["grads"][n]) for n in unclipped)


@pytest.mark.slow
def test_tf_private_noise_has_sigma_clip_over_batch_and_resumes():
    from backends.tf import TFBackend

    config = private_config(dp_noise=1.7, dp_clip=0.3)
    backend = TFBackend(config)
    real, z = batch(config)
    clean = backend.compute_private_gradients(real, z, noise=False)["grads"]
    state = backend.get_rng_state()
    assert "rng/tf/dp_noise/state" in state
    draws = [backend.compute_private_gradients(real, z)["grads"] for _ in range(5)]
    noise = np.concatenate([np.concatenate([(g - clean[n]).ravel() for n, g in d.items()]) for d in draws])
    expected = config.dp_noise * config.dp_clip / config.batch_size
    assert np.std(noise) == pytest.approx(expected, rel=0.03)
    assert abs(np.mean(noise)) < 5 * expected / np.sqrt(noise.size)
    # the noise stream is the checkpointed state: restored, it draws the same noise again
    backend.set_rng_state(state)
    again = backend.compute_private_gradients(real, z)["grads"]
    for name, value in draws[0].items():
        np.testing.assert_array_equal(again[name], value)
    assert "rng/tf/dp_noise/state" not in TFBackend(private_config(dp_noise=0.0)).get_rng_state()


@pytest.mark.slow
@pytest.mark.parametrize(
    "changes",
    [{}, {"dropout": 0.3, "diffaugment": "translation,cutout", "spectral_norm": True},
     {"dropout": 0.2, "diffaugment": "translation", "num_classes": 2, "d_conditioning": "projection"}],
    ids=["plain", "dropout-augment-spectral-norm", "dropout-augment-projection"],
)
def test_tf_private_step_with_huge_clip_and_no_noise_is_the_ordinary_step(changes):
    """The per-example pass draws augmentation and dropout as the ordinary step does."""
    from backends.tf import TFBackend

    ordinary = TFBackend(private_config(dp_noise=0.0, **changes))
    private = TFBackend(private_config(dp_clip=1e12, **changes))
    private.set_weights(ordinary.get_weights())
    private.set_dp_noise(0.0)
    real, z = batch(ordinary.config)
    labels = np.arange(BATCH) % 2 if changes.get("num_classes") else None
    for backend in (ordinary, private):
        backend.d_step(real, z, labels)
        backend.train_step(real, z, labels)
    assert_arrays_match(ordinary.get_weights(), private.get_weights(), 1e-9, "weights")
    assert private.trace_counts()["train_step"] == 1
    private.train_step(real[:2], z, None if labels is None else (labels[:2], labels))  # another real count
    assert private.trace_counts()["train_step"] == 1  # the same trace
