"""The TensorFlow backend on tiny models: names and shapes of the spec, state round trips,
training-step semantics, no retracing, side-effect-free gradients."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import backends.tf  # noqa: E402,F401  (before TensorFlow itself: it sets TF start-up options)

from backends import spec  # noqa: E402
from backends.config import GANConfig  # noqa: E402
from backends.tf import TFBackend  # noqa: E402

BATCH = 6


def tiny_config(**overrides) -> GANConfig:
    values = dict(image_size=32, width=4, max_width=16, latent_dim=8, batch_size=BATCH, dropout=0.0, seed=3)
    values.update(overrides)
    return GANConfig(**values)


def batch(config: GANConfig, count: int = BATCH, seed: int = 0):
    rng = np.random.default_rng(seed)
    real = rng.uniform(-1, 1, (count, config.image_size, config.image_size, config.channels)).astype(np.float32)
    z = rng.uniform(-1, 1, (count, config.latent_dim)).astype(np.float32)
    labels = rng.integers(0, config.num_classes, count) if config.num_classes else None
    return real, z, labels


def full_state(backend) -> dict:
    return {**backend.get_weights(), **backend.get_optimizer_state(), **backend.get_rng_state()}


def assert_states_equal(a: dict, b: dict, rtol=0.0, atol=0.0):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=atol, err_msg=name)


@pytest.fixture
def twins():
    """Two unconditional backends built from the same config: the same initial weights. Fresh for
    each test (tests train them), so any order of tests gives the same results."""
    return TFBackend(tiny_config()), TFBackend(tiny_config())


@pytest.fixture
def conditional_backend():
    return TFBackend(tiny_config(num_classes=3, dropout=0.3))


def test_weight_and_optimizer_names_and_shapes_are_the_spec(twins, conditional_backend):
    for b in (twins[0], conditional_backend):
        weights = b.get_weights()
        assert list(weights) == list(spec.weight_shapes(b.config))
        assert {n: w.shape for n, w in weights.items()} == spec.weight_shapes(b.config)
        assert all(w.dtype == np.float32 for w in weights.values())
        opt = b.get_optimizer_state()
        assert {n: np.shape(v) for n, v in opt.items()} == spec.optimizer_state_shapes(b.config)
        assert opt["opt/generator/iterations"].dtype == np.int64


def test_train_step_is_a_d_step_then_a_g_step_sharing_one_g_forward(twins):
    """Same trainable weights as d_step + g_step; the BN moving averages move once, not twice."""
    fused, separate = twins
    assert_states_equal(fused.get_weights(), separate.get_weights())
    real, z, _ = batch(fused.config, seed=4)
    fused.train_step(real, z)
    separate.d_step(real, z)
    separate.g_step(z)
    a, b = fused.get_weights(), separate.get_weights()
    for name in a:
        if spec.is_trainable(name):
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # From zero, one update gives 0.01 * mean, two give 0.0199 * mean.
    mean_fused, mean_twice = a["generator/bn_0/moving_mean"], b["generator/bn_0/moving_mean"]
    np.testing.assert_allclose(mean_twice, 1.99 * mean_fused, rtol=1e-4, atol=1e-7)
    assert np.abs(mean_fused).max() > 0
    assert fused.get_optimizer_state()["opt/generator/iterations"] == 1
    assert separate.get_optimizer_state()["opt/discriminator/iterations"] == 1


def test_no_retracing_across_steps_and_a_partial_last_batch(twins):
    fused, separate = twins
    real, z, _ = batch(fused.config, count=BATCH + 4)
    for _ in range(3):
        fused.train_step(real[:BATCH], z[:BATCH])
    fused.train_step(real[BATCH:], z[BATCH:])  # the last, smaller batch of an epoch
    separate.d_step(real[:3], z[:3])
    separate.g_step(z[:2])
    fused.generate(z)
    fused.generate(z[:1])
    assert fused.trace_counts()["train_step"] == 1 and fused.trace_counts()["generate"] == 1
    assert separate.trace_counts()["d_step"] == 1 and separate.trace_counts()["g_step"] == 1
    assert fused.get_optimizer_state()["opt/discriminator/iterations"] == 4


def test_weights_round_trip_and_reproduce_generation(twins):
    source, target = twins
    real, z, _ = batch(source.config)
    source.train_step(real, z)
    assert not np.allclose(target.generate(z), source.generate(z))
    target.set_weights(source.get_weights())
    assert_states_equal(target.get_weights(), source.get_weights())
    np.testing.assert_array_equal(target.generate(z), source.generate(z))


def test_generation_is_per_image_in_inference_mode(twins):
    _, z, _ = batch(twins[0].config)
    np.testing.assert_allclose(twins[0].generate(z)[:2], twins[0].generate(z[:2]), rtol=1e-5, atol=1e-6)


def test_bad_weights_are_named(twins):
    backend = twins[0]
    weights = backend.get_weights()
    del weights["generator/conv_1/kernel"]
    with pytest.raises(ValueError, match="generator/conv_1/kernel"):
        backend.set_weights(weights)
    weights = backend.get_weights()
    weights["discriminator/dense_out/bias"] = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="dense_out/bias"):
        backend.set_weights(weights)
    with pytest.raises(ValueError, match="missing"):
        backend.set_optimizer_state({})


def test_rng_state_round_trip_replays_dropout(conditional_backend):
    b = conditional_backend
    real, z, labels = batch(b.config, seed=2)
    rng_names = b.get_rng_state()
    assert rng_names and all(n.startswith("rng/tf/discriminator/dropout_") for n in rng_names)
    saved = (b.get_weights(), b.get_optimizer_state(), b.get_rng_state())
    first = b.train_step(real, z, labels)
    second = b.train_step(real, z, labels)
    assert first != second
    b.set_weights(saved[0])
    b.set_optimizer_state(saved[1])
    b.set_rng_state({**saved[2], "rng/numpy/state": np.zeros(2, np.uint64)})  # other backends' entries ignored
    assert b.train_step(real, z, labels) == first
    assert b.train_step(real, z, labels) == second
    # Inference has no dropout: the same call twice gives the same logits.
    np.testing.assert_array_equal(b.discriminate(real, labels), b.discriminate(real, labels))


def test_full_state_round_trip_continues_training_identically(conditional_backend):
    """Weights + optimizer moments + dropout RNG copied into a fresh backend: the next step is the same."""
    real, z, labels = batch(conditional_backend.config, seed=1)
    conditional_backend.train_step(real, z, labels)
    fresh = TFBackend(tiny_config(num_classes=3, dropout=0.3, seed=99))
    fresh.set_weights(conditional_backend.get_weights())
    fresh.set_optimizer_state(conditional_backend.get_optimizer_state())
    fresh.set_rng_state(conditional_backend.get_rng_state())
    assert_states_equal(full_state(fresh), full_state(conditional_backend))
    losses = [fresh.train_step(real, z, labels), conditional_backend.train_step(real, z, labels)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert_states_equal(full_state(fresh), full_state(conditional_backend), rtol=1e-6, atol=1e-7)


def test_compute_gradients_changes_nothing(conditional_backend):
    b = conditional_backend
    real, z, labels = batch(b.config, seed=5)
    before = full_state(b)
    first = b.compute_gradients(real, z, labels)
    assert_states_equal(full_state(b), before)
    second = b.compute_gradients(real, z, labels)
    assert first["d_loss"] == second["d_loss"] and first["g_loss"] == second["g_loss"]
    trainable = [n for n in spec.weight_shapes(b.config) if spec.is_trainable(n)]
    assert sorted(first["grads"]) == sorted(trainable)
    for name in trainable:
        np.testing.assert_array_equal(first["grads"][name], second["grads"][name])
    # The gradients are the ones train_step follows: D's loss at these weights is the step's D loss.
    assert b.train_step(real, z, labels)[0] == pytest.approx(first["d_loss"], rel=1e-6)


def test_conditional_generation_depends_on_the_label(conditional_backend):
    b = conditional_backend
    _, z, _ = batch(b.config)
    images = [b.generate(z, np.full(BATCH, k)) for k in range(3)]
    assert images[0].shape == (BATCH, 32, 32, 3) and images[0].dtype == np.float32
    assert np.abs(images[0]).max() <= 1.0
    assert not np.allclose(images[0], images[1]) and not np.allclose(images[1], images[2])
    with pytest.raises(ValueError, match="labels are required"):
        b.generate(z)
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        b.generate(z, np.full(BATCH, 3))


def test_float64_and_mixed_precision_options():
    # float64 training is exercised by tests/test_parity.py; here only its weights' dtype.
    b64 = TFBackend(tiny_config(dtype="float64"))
    assert all(w.dtype == np.float64 for w in b64.get_weights().values())
    with warnings.catch_warnings():  # CPUs without native bfloat16 warn that it is emulated
        warnings.simplefilter("ignore")
        mixed = TFBackend(tiny_config(mixed_precision=True))
    assert mixed.generator.get_layer("conv_1").compute_dtype == "bfloat16"
    assert mixed.generator.get_layer("tanh_4").compute_dtype == "float32"  # images leave in float32
    assert all(w.dtype == np.float32 for w in mixed.get_weights().values())
    real, z, _ = batch(mixed.config)
    assert np.isfinite(mixed.train_step(real, z)).all()


def test_mismatched_batches_fail_clearly(twins):
    real, z, _ = batch(twins[0].config)
    with pytest.raises(ValueError, match="differ"):
        twins[0].train_step(real, z[:2])


def test_diffaugment_transforms_move_pixels_and_pass_gradients():
    import tensorflow as tf

    from backends.tf.augment import cutout, diff_augment, translation

    ones = tf.ones([16, 8, 8, 3])
    generator = tf.random.Generator.from_seed(1)
    moved = translation(ones, generator).numpy()
    assert set(np.unique(moved)) <= {0.0, 1.0}  # pixels move, the rest is zero fill
    empty_rows = (moved[..., 0] == 0).all(axis=2).sum(axis=1)
    assert empty_rows.max() <= 1 and 0 < (moved == 0).mean() < 0.5  # shift of at most 8 / 8 = 1 pixel
    holes = (cutout(ones, generator).numpy()[..., 0] == 0).sum(axis=(1, 2))
    assert holes.max() == 16 and holes.min() >= 4  # a 4x4 square, cut by the border at most to 2x2
    images = tf.random.uniform([4, 8, 8, 3], -1, 1)
    with tf.GradientTape() as tape:
        tape.watch(images)
        loss = tf.reduce_sum(diff_augment(images, ("color", "translation", "cutout"), generator) ** 2)
    assert np.abs(tape.gradient(loss, images).numpy()).max() > 0


def test_diffaugment_training_replays_from_its_rng_state():
    b = TFBackend(tiny_config(diffaugment="color,translation,cutout"))
    real, z, _ = batch(b.config, count=BATCH + 2, seed=6)
    assert "rng/tf/diffaugment/state" in b.get_rng_state()
    logits = b.discriminate(real)
    saved = full_state(b)
    first = b.train_step(real[:BATCH], z[:BATCH])
    second = b.train_step(real[:BATCH], z[:BATCH])
    assert first != second
    b.set_weights({n: v for n, v in saved.items() if n in b.get_weights()})
    b.set_optimizer_state({n: v for n, v in saved.items() if n.startswith("opt/")})
    b.set_rng_state({n: v for n, v in saved.items() if n.startswith("rng/")})
    assert b.train_step(real[:BATCH], z[:BATCH]) == first
    assert b.train_step(real[:BATCH], z[:BATCH]) == second
    b.train_step(real[BATCH:], z[BATCH:])
    assert b.trace_counts()["train_step"] == 1
    b.set_weights({n: v for n, v in saved.items() if n in b.get_weights()})
    np.testing.assert_array_equal(b.discriminate(real), logits)  # inference sees images unchanged


def test_ragged_batches_are_refused_before_anything_moves_and_discriminate_keeps_groups_whole():
    b = TFBackend(tiny_config(batch_size=6, minibatch_std=3))
    real, z, _ = batch(b.config, count=6)
    before = full_state(b)
    with pytest.raises(ValueError, match="groups of 3"):
        b.train_step(real[:4], z[:4])
    with pytest.raises(ValueError, match="groups of 3"):
        b.g_step(z[:2])
    assert_states_equal(before, full_state(b))
    images, _, _ = batch(b.config, count=258)  # more than one inference chunk of 256
    by_group = np.concatenate([b.discriminate(images[i : i + 3]) for i in range(0, 258, 3)])
    np.testing.assert_allclose(b.discriminate(images), by_group, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("first, warned", [("import tensorflow", True), ("pass", False)])
def test_importing_tensorflow_first_warns_that_onednn_is_off(first, warned):
    # TensorFlow reads TF_ENABLE_ONEDNN_OPTS on its own import: the backend can only ask for
    # oneDNN when it is imported first, and says so when it was not
    code = (f"{first}\nimport warnings\nwith warnings.catch_warnings(record=True) as seen:\n"
            "    warnings.simplefilter('always')\n    from backends.tf import runtime\n"
            "print(runtime.onednn_enabled(), any('oneDNN' in str(w.message) for w in seen))")
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == [str(not warned), str(warned)]
