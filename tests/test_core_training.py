"""The loss, Adam, batch-norm moving averages, a whole tiny G -> D stack's gradients, and a
tiny model that learns."""

from __future__ import annotations

import math

import numpy as np
import pytest

import core
from backends.config import GANConfig
from backends.numpy.networks import build_network
from core.gradcheck import numerical_gradient, relative_error, sample_indices

TOLERANCE = 1e-6


def test_bce_from_logits_values_and_stability_at_1e4():
    logits = np.array([1e4, -1e4, 0.0, 3.0, -1e4])
    targets = np.array([1.0, 1.0, 0.5, 0.0, 0.0])
    loss, dlogits = core.bce_from_logits(logits, targets)
    per_example = [0.0, 1e4, math.log(2.0), 3.0 + math.log1p(math.exp(-3.0)), 0.0]
    assert loss == pytest.approx(np.mean(per_example), rel=1e-12)
    sigmoid3 = 1 / (1 + math.exp(-3.0))
    np.testing.assert_allclose(dlogits, np.array([0.0, -1.0, 0.0, sigmoid3, 0.0]) / 5, atol=1e-15)
    loss32, d32 = core.bce_from_logits(logits.astype(np.float32), targets)
    assert np.isfinite(loss32) and np.all(np.isfinite(d32)) and d32.dtype == np.float32


def test_bce_from_logits_gradient():
    rng = np.random.default_rng(0)
    logits, targets = rng.standard_normal(7) * 3, rng.uniform(0, 1, 7)
    _, analytic = core.bce_from_logits(logits, targets)
    numeric = numerical_gradient(lambda: core.bce_from_logits(logits, targets)[0], logits, np.arange(7))
    assert relative_error(analytic, numeric) < TOLERANCE


def test_adam_matches_hand_computed_keras_steps():
    lr, beta_1, beta_2, eps = 0.1, 0.9, 0.999, 1e-7
    weight = np.array([1.0, -2.0])
    adam = core.Adam(lr, beta_1, beta_2, eps)
    params = {"w": weight}
    adam.step(params, {"w": np.array([0.5, 0.1])})
    # t=1: m = 0.1 g, v = 0.001 g^2, lr_t = 0.1 * sqrt(0.001) / 0.1
    m1, v1 = np.array([0.05, 0.01]), np.array([0.00025, 0.00001])
    lr_t1 = 0.1 * math.sqrt(1 - 0.999) / (1 - 0.9)
    expected1 = np.array([1.0, -2.0]) - lr_t1 * m1 / (np.sqrt(v1) + eps)
    np.testing.assert_allclose(weight, expected1, rtol=1e-12)
    adam.step(params, {"w": np.array([-1.0, 0.2])})
    m2 = m1 + (np.array([-1.0, 0.2]) - m1) * 0.1
    v2 = v1 + (np.array([1.0, 0.04]) - v1) * 0.001
    lr_t2 = 0.1 * math.sqrt(1 - 0.999**2) / (1 - 0.9**2)
    np.testing.assert_allclose(weight, expected1 - lr_t2 * m2 / (np.sqrt(v2) + eps), rtol=1e-12)
    np.testing.assert_allclose(adam.m["w"], m2, rtol=1e-12)
    np.testing.assert_allclose(adam.v["w"], v2, rtol=1e-12)
    assert adam.iterations == 2


def test_batchnorm_moving_averages_follow_keras():
    layer = core.BatchNormalization("bn", 2, dtype=np.float64)
    first = np.array([[1.0, 10.0], [3.0, 14.0]])  # mean (2, 12), biased var (1, 4)
    layer.forward(first, training=True)
    np.testing.assert_allclose(layer.buffers["moving_mean"], [0.02, 0.12])
    np.testing.assert_allclose(layer.buffers["moving_variance"], [0.99 + 0.01, 0.99 + 0.04])
    second = np.array([[0.0, 0.0], [0.0, 2.0]])  # mean (0, 1), var (0, 1)
    layer.forward(second, training=True)
    np.testing.assert_allclose(layer.buffers["moving_mean"], [0.02 * 0.99, 0.12 * 0.99 + 0.01])
    np.testing.assert_allclose(layer.buffers["moving_variance"], [1.0 * 0.99, 1.03 * 0.99 + 0.01])
    out = layer.forward(second, training=False)  # inference: moving statistics, eps 1e-3
    mean, var = layer.buffers["moving_mean"], layer.buffers["moving_variance"]
    np.testing.assert_allclose(out, (second - mean) / np.sqrt(var + 1e-3))
    trained = layer.forward(first, training=True)  # training: batch statistics
    np.testing.assert_allclose(trained, (first - [2, 12]) / np.sqrt(np.array([1, 4]) + 1e-3))


@pytest.mark.parametrize("num_classes", [0, 2])
def test_tiny_generator_to_discriminator_stack_gradients(num_classes):
    """loss = BCE(D(G(z)), t) in float64: d/dz and d/d(every parameter of G and D)."""
    config = GANConfig(
        image_size=32, width=2, max_width=4, latent_dim=6, num_classes=num_classes, dtype="float64", seed=3
    )
    rng = np.random.default_rng(num_classes)
    generator = build_network(config, "generator", rng, np.random.default_rng(0))
    discriminator = build_network(config, "discriminator", rng, np.random.default_rng(0))
    for model in (generator, discriminator):  # non-zero biases and BN affine parameters
        for name, value in model.parameters().items():
            if not name.endswith("kernel"):
                value[...] = rng.uniform(0.5, 1.5, value.shape) if "gamma" in name else rng.normal(0, 0.1, value.shape)
    batch = 3
    z = rng.uniform(-1, 1, (batch, config.latent_dim + num_classes))
    planes = rng.uniform(0, 1, (batch, 32, 32, num_classes))
    targets = np.array([1.0, 0.0, 0.9])

    def reseed_dropout():
        for layer in discriminator.layers:
            if isinstance(layer, (core.Dropout, core.LeakyReLUDropout)):  # the builder fuses LeakyReLU + Dropout
                layer.rng = np.random.default_rng(7)

    def loss():
        reseed_dropout()
        images = generator.forward(z, training=True)
        logits = discriminator.forward(np.concatenate([images, planes], axis=3), training=True)
        return core.bce_from_logits(logits.reshape(-1), targets)

    value, dlogits = loss()
    dinput = discriminator.backward(dlogits.reshape(-1, 1))
    dz = generator.backward(np.ascontiguousarray(dinput[..., :3]))
    checks = {"z": (z, dz)}
    for model in (generator, discriminator):
        grads = model.gradients()
        checks.update({name: (array, grads[name]) for name, array in model.parameters().items()})
    assert len(checks) == 1 + len(generator.parameters()) + len(discriminator.parameters())
    for name, (array, analytic) in checks.items():
        idx = sample_indices(rng, array.size, 12)
        numeric = numerical_gradient(lambda: loss()[0], array, idx)
        analytic = analytic.reshape(-1)[idx]
        if np.abs(analytic).max() < 1e-12:  # e.g. a bias right before batch norm: exactly no effect
            assert np.abs(numeric).max() < 1e-7, f"d loss / d {name} should be zero, got {numeric}"
            continue
        err = relative_error(analytic, numeric)
        assert err < TOLERANCE, f"d loss / d {name}: relative error {err:.2e}"


def test_a_tiny_conv_classifier_learns_a_toy_set():
    """Bright-centre vs bright-border 8x8 images: the loss must fall well below chance."""
    rng = np.random.default_rng(0)
    count = 64
    labels = rng.integers(0, 2, count).astype(np.float32)
    images = rng.normal(0, 0.3, (count, 8, 8, 1)).astype(np.float32)
    images[labels == 1, 2:6, 2:6] += 1.0
    images[labels == 0, :2] += 1.0
    model = core.Sequential(
        [
            core.Conv2D("conv", 1, 4, 3, 2, "same", rng),
            core.BatchNormalization("bn", 4),
            core.LeakyReLU("leaky", 0.2),
            core.Flatten("flatten"),
            core.Dense("dense", 4 * 4 * 4, 1, rng),
        ]
    )
    adam = core.Adam(0.01)
    losses = []
    for _ in range(60):
        loss, dlogits = core.bce_from_logits(model.forward(images).reshape(-1), labels)
        model.backward(dlogits.reshape(-1, 1), need_input_grad=False)
        adam.step(model.parameters(), model.gradients())
        losses.append(loss)
    assert losses[0] > 0.3 and losses[-1] < 0.2 * losses[0]
    accuracy = np.mean((model.forward(images, training=False).reshape(-1) > 0) == labels)
    assert accuracy > 0.95


def test_sequential_names_and_unique_layers():
    rng = np.random.default_rng(0)
    model = core.Sequential([core.Dense("d", 2, 3, rng), core.BatchNormalization("bn", 3)], prefix="net/")
    assert list(model.parameters()) == ["net/d/kernel", "net/d/bias", "net/bn/gamma", "net/bn/beta"]
    assert list(model.weights())[-2:] == ["net/bn/moving_mean", "net/bn/moving_variance"]
    with pytest.raises(ValueError, match="unique"):
        core.Sequential([core.ReLU("a"), core.ReLU("a")])
    with pytest.raises(ValueError, match="dense expects"):
        model.forward(np.zeros((2, 5)))
