"""Cross-backend parity: the NumPy core and TensorFlow agree on the same model.

For the same weights and batch (dropout off): G's images, D's logits, both losses and the
gradient of every parameter; then one full train_step (both Adam updates and G's batch-norm
moving statistics) leaves the same weights and optimizer state; and a checkpoint written by
either backend after two steps generates the same images in the other.

Comparisons are element-wise: |tf - numpy| <= tol * (|numpy| + scale), where scale is the
largest magnitude among arrays of the same kind in the same network. The scale term matters
for values that are zero in exact arithmetic and rounding noise in both backends, such as the
gradient of a conv bias that a batch norm follows.
"""

from __future__ import annotations

import numpy as np
import pytest

import backends.tf  # noqa: E402,F401  (before TensorFlow itself: it sets TF start-up options)
import backends.numpy as numpy_backend  # noqa: E402

from backends import spec  # noqa: E402
from backends.config import GANConfig  # noqa: E402
from backends.tf import TFBackend  # noqa: E402
from service import checkpoint as ckpt  # noqa: E402

NumpyBackend = numpy_backend.NumpyBackend

BATCH = 4
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}
# `generate` returns float32 images by contract: in float64 runs they match to float32 rounding.
IMAGE_TOLERANCE = {"float64": 1e-6, "float32": 1e-4}

CASES = {
    "32-unconditional": dict(image_size=32),
    "32-conditional": dict(image_size=32, num_classes=3, label_smoothing=0.1),
    "64-unconditional": dict(image_size=64, beta_1=0.5, epsilon=1e-7),
    "64-conditional": dict(image_size=64, num_classes=3),
    "32-conditional-float32": dict(image_size=32, num_classes=3, dtype="float32"),
    "32-conditional-pack2": dict(image_size=32, num_classes=3, pack=2),
    "32-unconditional-minibatch-std": dict(image_size=32, minibatch_std=2, label_smoothing=0.1),
    "64-pack2-minibatch-std": dict(image_size=64, pack=2, minibatch_std=2),
    "32-base-side-4-minibatch-std": dict(image_size=32, base_side=4, minibatch_std=2),
    "32-spectral-norm-minibatch-std": dict(image_size=32, base_side=4, minibatch_std=2, spectral_norm=True),
    "64-spectral-norm-conditional": dict(image_size=64, num_classes=3, spectral_norm=True),
    "32-ema-no-rampup": dict(image_size=32, base_side=4, ema_kimg=0.01, ema_rampup=0.0),
    "64-ema-conditional": dict(image_size=64, num_classes=3, ema_kimg=0.02),
    # noise strengths set away from their zero start (the `pair` fixture), so the maps count
    "64-noise-inputs": dict(image_size=64, noise_inputs=True, beta_1=0.5),
    # width 8: at width 4 some 3x3 neighbourhoods of G's last features are all dead ReLUs, so pixels
    # are exactly tanh(0) and D's first LeakyReLU sits exactly on its kink, where the backends pick
    # different one-sided slopes (measure zero in training; a case of ties, not of upsampling)
    "32-bilinear-kernel-3": dict(image_size=32, base_side=4, upsample="bilinear", kernel_size=3, width=8,
                                 minibatch_std=2),
    "32-bilinear-float32": dict(image_size=32, base_side=4, upsample="bilinear", dtype="float32"),  # Keras's layer in TF
    "64-bilinear-noise-inputs-conditional": dict(image_size=64, upsample="bilinear", noise_inputs=True, num_classes=3,
                                                 g_conditioning="cbn"),
    "32-noise-inputs-conditional-ema": dict(image_size=32, base_side=4, num_classes=3, noise_inputs=True, ema_kimg=0.02),
    "32-wider-discriminator": dict(image_size=32, base_side=4, d_width=8, minibatch_std=2),
    "32-noise-inputs-float32": dict(image_size=32, base_side=4, noise_inputs=True, minibatch_std=2, dtype="float32"),
    # conditioning mechanisms (their zero-start weights set away from zero by the `pair` fixture)
    "32-projection-cbn": dict(image_size=32, base_side=4, num_classes=3, d_conditioning="projection",
                              g_conditioning="cbn", label_smoothing=0.1),
    "64-projection-spectral-norm": dict(image_size=64, num_classes=3, d_conditioning="projection", spectral_norm=True),
    "32-cbn-noise-inputs-ema": dict(image_size=32, base_side=4, num_classes=3, g_conditioning="cbn",
                                    noise_inputs=True, ema_kimg=0.02),
    "32-class-loss-projection-cbn": dict(image_size=32, base_side=4, num_classes=3, class_loss=0.7,
                                         d_conditioning="projection", g_conditioning="cbn", label_smoothing=0.1),
    "64-class-loss-concat-spectral-norm": dict(image_size=64, num_classes=3, class_loss=1.0, spectral_norm=True),
    "32-projection-cbn-minibatch-std-float32": dict(image_size=32, base_side=4, num_classes=7, minibatch_std=2,
                                                    d_conditioning="projection", g_conditioning="cbn", dtype="float32"),
}


def parity_config(**overrides) -> GANConfig:
    values = dict(width=4, max_width=32, latent_dim=16, batch_size=BATCH, dropout=0.0, dtype="float64", seed=7)
    values.update(overrides)
    return GANConfig(**values)


def make_batch(config: GANConfig, seed: int):
    rng = np.random.default_rng(seed)
    real = rng.uniform(-1, 1, (BATCH, config.image_size, config.image_size, config.channels))
    z = rng.uniform(-1, 1, (BATCH, config.z_size))  # with noise inputs, the maps too
    labels = rng.integers(0, config.num_classes, BATCH) if config.num_classes else None
    return real.astype(config.dtype), z.astype(config.dtype), labels


def kind_of(name: str) -> str:
    """Arrays compared on a common scale: same network, same parameter kind, same slot."""
    parts = name.split("/")
    if parts[0] == "opt":
        return "/".join(parts[1:3]) + "/" + parts[-1] if len(parts) > 3 else name
    return parts[0] + "/" + parts[-1]


def assert_arrays_match(expected: dict, actual: dict, tol: float, what: str) -> None:
    assert sorted(expected) == sorted(actual), what
    scales: dict[str, float] = {}
    for name, value in expected.items():
        scales[kind_of(name)] = max(scales.get(kind_of(name), 0.0), float(np.max(np.abs(value), initial=0.0)))
    for name in expected:
        want, got = np.asarray(expected[name], np.float64), np.asarray(actual[name], np.float64)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scales[kind_of(name)], err_msg=f"{what}: {name}")


def biases_before_batch_norm(config: GANConfig) -> list[str]:
    """Biases of layers a batch norm follows: their gradient is zero in exact arithmetic."""
    names = []
    for net in spec.NETS:
        layers = [layer for layer in spec.net_spec(config, net) if layer.kind != "noise"]  # noise adds no constant
        for layer, after in zip(layers, layers[1:]):
            if layer.kind in ("dense", "conv") and after.kind == "bn":
                names.append(f"{net}/{layer.name}/bias")
    return names


def starts_at_zero(name: str) -> bool:
    """Weights that start at zero: noise strengths, the projection's embedding, class affines."""
    return name.endswith(("/strength", "/embedding")) or "/class_affine_" in name


def with_random_noise_strengths(weights: dict, seed: int) -> dict:
    """The weights with every zero-start weight (starts_at_zero; G's and the average's) drawn
    from N(0, 1), so that the parts they scale count; class affines' from N(0, 0.3^2), so that
    1 + gain stays mostly positive (a whole block switched off by its ReLU would put D's first
    layer exactly on LeakyReLU's kink, where the backends pick different one-sided slopes)."""
    rng = np.random.default_rng(seed)
    return {n: (rng.standard_normal(v.shape) * (0.3 if "/class_affine_" in n else 1.0)).astype(v.dtype)
            if starts_at_zero(n) else v for n, v in weights.items()}


def synchronise(source, target) -> None:
    """A checkpoint dict from one backend loaded into the other."""
    target.set_weights(source.get_weights())
    target.set_optimizer_state(source.get_optimizer_state())


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def pair(request):
    config = parity_config(**CASES[request.param])
    tf_backend, np_backend = TFBackend(config), NumpyBackend(config)
    tf_backend.set_weights(with_random_noise_strengths(tf_backend.get_weights(), seed=3))
    synchronise(tf_backend, np_backend)
    return tf_backend, np_backend, TOLERANCE[config.dtype]


def image_tolerance(backend) -> float:
    return IMAGE_TOLERANCE[backend.config.dtype]


@pytest.mark.slow
def test_forward_losses_and_every_gradient_agree(pair):
    tf_backend, np_backend, tol = pair
    synchronise(tf_backend, np_backend)
    config = tf_backend.config
    real, z, labels = make_batch(config, seed=1)

    images = {"images": tf_backend.generate(z, labels)}
    assert_arrays_match(images, {"images": np_backend.generate(z, labels)}, image_tolerance(tf_backend), "G(z)")
    for source, batch in (("real", real), ("fake", images["images"].astype(config.dtype))):
        tf_logits = tf_backend.discriminate(batch, labels)
        assert tf_logits.shape == (BATCH // config.pack,)  # one logit per group of `pack` images
        assert_arrays_match({"logits": np_backend.discriminate(batch, labels)}, {"logits": tf_logits}, tol, f"D({source})")

    expected, actual = np_backend.compute_gradients(real, z, labels), tf_backend.compute_gradients(real, z, labels)
    assert actual["d_loss"] == pytest.approx(expected["d_loss"], rel=tol)
    assert actual["g_loss"] == pytest.approx(expected["g_loss"], rel=tol)
    trainable = [n for n in spec.weight_shapes(config) if spec.is_trainable(n)]
    assert sorted(expected["grads"]) == sorted(trainable)
    assert_arrays_match(expected["grads"], actual["grads"], tol, "gradients")
    # The test compares something: every layer's kernel (and noise strength) receives a gradient.
    assert all(np.abs(expected["grads"][n]).max() > 0 for n in trainable
               if n.endswith(("kernel", "strength", "embedding", "gain")))


@pytest.mark.slow
def test_one_train_step_leaves_the_same_weights_and_optimizer_state(pair):
    tf_backend, np_backend, tol = pair
    synchronise(tf_backend, np_backend)
    before = tf_backend.get_weights()
    real, z, labels = make_batch(tf_backend.config, seed=2)
    tf_losses, np_losses = tf_backend.train_step(real, z, labels), np_backend.train_step(real, z, labels)
    assert tf_losses == pytest.approx(np_losses, rel=tol)
    after, tf_after = np_backend.get_weights(), tf_backend.get_weights()
    # Those biases' gradients are rounding noise in both backends, and Adam's first step scales
    # noise g up to lr * g / epsilon: in float32 nearly the step size (they agree only to within
    # 2 steps), in float64 (noise ~1e-15) to within lr * 1e-7.
    step = max(tf_backend.config.lr_g, tf_backend.config.lr_d)
    step *= 2 if tf_backend.config.dtype == "float32" else 1e-7
    for name in biases_before_batch_norm(tf_backend.config):
        np.testing.assert_allclose(tf_after.pop(name), after.pop(name), rtol=0, atol=step, err_msg=name)
    assert_arrays_match(after, tf_after, tol, "weights after train_step")
    assert_arrays_match(np_backend.get_optimizer_state(), tf_backend.get_optimizer_state(), tol, "optimizer state")
    # Both Adam updates and the moving statistics actually moved.
    after = np_backend.get_weights()
    for name in ("generator/conv_1/kernel", "discriminator/conv_0/kernel", "generator/bn_1/moving_mean"):
        assert not np.allclose(after[name], before[name]), name


@pytest.mark.slow
@pytest.mark.parametrize("writer", ["tf", "numpy"])
def test_a_checkpoint_after_two_steps_generates_the_same_images_in_the_other_backend(pair, writer, tmp_path):
    """Through a real checkpoint file: written by one backend, read by the other."""
    tf_backend, np_backend, tol = pair
    synchronise(tf_backend, np_backend)
    source, reader = (tf_backend, np_backend) if writer == "tf" else (np_backend, tf_backend)
    for step in range(2):
        real, z, labels = make_batch(source.config, seed=10 + step)
        source.train_step(real, z, labels)
    path = ckpt.save_checkpoint(tmp_path, 2, {**source.get_weights(), **source.get_optimizer_state()})
    parts = ckpt.split_arrays(ckpt.load_checkpoint(path))
    reader.set_weights(parts["weights"])
    reader.set_optimizer_state(parts["opt"])
    assert_arrays_match(source.get_weights(), reader.get_weights(), tol, "weights read back")
    _, z, labels = make_batch(source.config, seed=20)
    assert_arrays_match({"images": source.generate(z, labels)}, {"images": reader.generate(z, labels)}, image_tolerance(source), "images")


@pytest.mark.slow
def test_a_learning_rate_scale_acts_as_the_scaled_rate_in_both_backends():
    config = parity_config(image_size=32, lr_g=4e-4, lr_d=2e-4)
    halved = config.replace(lr_g=2e-4, lr_d=1e-4)
    real, z, _ = make_batch(config, seed=3)
    trained, before = {}, TFBackend(config).get_weights()
    for backend_class in (TFBackend, NumpyBackend):
        scaled, reference = backend_class(config), backend_class(halved)
        scaled.set_weights(before)
        reference.set_weights(before)
        scaled.set_learning_rate_scale(0.5)
        scaled.train_step(real, z)
        reference.train_step(real, z)
        assert_arrays_match(reference.get_weights(), scaled.get_weights(), 1e-12, backend_class.name)
        assert not np.allclose(scaled.get_weights()["generator/conv_1/kernel"], before["generator/conv_1/kernel"])
        trained[backend_class.name] = scaled

        frozen = scaled.get_weights()
        scaled.set_learning_rate_scale(0.0)  # no Adam update; batch-norm statistics still move
        scaled.train_step(real, z)
        after = scaled.get_weights()
        assert all(np.array_equal(after[n], frozen[n]) for n in after if spec.is_trainable(n)), backend_class.name
        scaled.set_learning_rate_scale(0.5)
    assert_arrays_match(trained["numpy"].get_weights(), trained["tf"].get_weights(), TOLERANCE["float64"], "scaled step")


@pytest.mark.slow
def test_the_averaged_generator_agrees_across_backends_after_steps_of_both_kinds():
    """Fused steps and lone G steps (as rebalancing runs them), with the ramp-up on: the
    averaged weights and their images agree, and they differ from G's own."""
    config = parity_config(image_size=32, base_side=4, ema_kimg=0.05, ema_rampup=0.5)
    tf_backend, np_backend = TFBackend(config), NumpyBackend(config)
    synchronise(tf_backend, np_backend)
    for step in range(4):
        real, z, labels = make_batch(config, seed=30 + step)
        for backend in (tf_backend, np_backend):
            backend.train_step(real, z, labels)
            backend.g_step(z, labels)
    weights = np_backend.get_weights()
    assert_arrays_match(weights, tf_backend.get_weights(), TOLERANCE["float64"], "weights with the average")
    averaged = [n for n in weights if n.startswith(spec.EMA_NET + "/")]
    assert len(averaged) == len([n for n in weights if n.startswith("generator/")])
    assert not any(np.allclose(weights[n], weights["generator/" + n.split("/", 1)[1]]) for n in averaged if n.endswith("kernel"))
    _, z, labels = make_batch(config, seed=40)
    images = np_backend.generate(z, labels)
    assert_arrays_match({"images": images}, {"images": tf_backend.generate(z, labels)}, IMAGE_TOLERANCE["float64"], "images")


@pytest.mark.parametrize("strength", [0.0, 0.35])
def test_the_conditioning_ramp_scales_the_class_code_alike_in_both_backends(strength):
    config = parity_config(image_size=32, base_side=4, num_classes=3, d_conditioning="projection", g_conditioning="cbn")
    tf_backend, np_backend = TFBackend(config), NumpyBackend(config)
    tf_backend.set_weights(with_random_noise_strengths(tf_backend.get_weights(), seed=5))
    synchronise(tf_backend, np_backend)
    real, z, labels = make_batch(config, seed=2)
    results = []
    for backend in (np_backend, tf_backend):
        backend.set_condition_strength(strength)
        results.append(backend.compute_gradients(real, z, labels))
    assert_arrays_match(results[0]["grads"], results[1]["grads"], TOLERANCE["float64"], "gradients")
    other = (labels + 1) % 3
    relabelled = np_backend.compute_gradients(real, z, other)
    if strength == 0.0:  # no class code at all: the step cannot depend on the labels
        assert relabelled["d_loss"] == results[0]["d_loss"] and relabelled["g_loss"] == results[0]["g_loss"]
    else:
        assert relabelled["d_loss"] != results[0]["d_loss"]
    # inference always reads the whole code, whatever the training strength
    np_backend.set_condition_strength(1.0)
    full = np_backend.generate(z, labels)
    np_backend.set_condition_strength(strength)
    np.testing.assert_array_equal(np_backend.generate(z, labels), full)
