"""Central-difference gradient checks, in float64, of every core layer w.r.t. its input and
every parameter, over random shapes, strides and paddings drawn with fixed seeds."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import core
from core import functional as F
from core.gradcheck import numerical_gradient, relative_error, sample_indices

TOLERANCE = 1e-6
SAMPLES = 40  # coordinates checked per array (all of them when the array is smaller)


def check_layer(layer, x, rng, reseed=None, training=True):
    """loss = sum(layer(x) * R) for a fixed random R; compare backward's gradients of the
    input and of every parameter with central differences. `reseed` runs before each forward
    (e.g. to replay dropout's mask)."""
    if reseed:
        reseed()
    upstream = rng.standard_normal(layer.forward(x, training).shape)

    def loss():
        if reseed:
            reseed()
        return float(np.sum(layer.forward(x, training) * upstream))

    loss()
    dx = layer.backward(upstream)
    checks = {"input": (x, dx)}
    checks.update({name: (layer.parameters[name], layer.gradients[name]) for name in layer.parameters})
    for name, (array, analytic) in checks.items():
        assert analytic.shape == array.shape, name
        idx = sample_indices(rng, array.size, SAMPLES)
        numeric = numerical_gradient(loss, array, idx)
        err = relative_error(analytic.reshape(-1)[idx], numeric)
        assert err < TOLERANCE, f"{layer!r} d/d{name}: relative error {err:.2e}"


def random_conv_cases(count, seed):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        kernel = int(rng.integers(1, 6))
        stride = int(rng.integers(1, 3))
        padding = str(rng.choice(["same", "valid"]))
        height, width = (int(v) for v in rng.integers(kernel, kernel + 5, size=2))
        yield kernel, stride, padding, height, width, int(rng.integers(1, 4)), int(rng.integers(1, 5))


@pytest.mark.parametrize("case", list(random_conv_cases(10, seed=1)), ids=str)
def test_conv2d_gradients(case):
    kernel, stride, padding, height, width, cin, cout = case
    rng = np.random.default_rng(zlib.crc32(str(case).encode()))  # hash() of a str differs per process
    layer = core.Conv2D("conv", cin, cout, kernel, stride, padding, rng, np.float64)
    layer.parameters["bias"][:] = rng.standard_normal(cout)
    check_layer(layer, rng.standard_normal((2, height, width, cin)), rng)


@pytest.mark.parametrize("kernel,factor", [(4, 2), (3, 2), (5, 2), (2, 2), (4, 3), (1, 2)])
def test_fused_upsample_conv_matches_upsample_then_conv_and_its_gradients(kernel, factor):
    rng = np.random.default_rng(kernel * 10 + factor)
    x = rng.standard_normal((2, 3, 4, 3))
    layer = core.UpSampleConv2D("conv", 3, 2, kernel, factor, rng, np.float64)
    layer.parameters["bias"][:] = rng.standard_normal(2)
    reference = core.Conv2D("conv", 3, 2, kernel, 1, "same", rng, np.float64)
    reference.parameters.update({k: v.copy() for k, v in layer.parameters.items()})
    upsampled = F.upsample_forward(x, factor)
    np.testing.assert_allclose(layer.forward(x), reference.forward(upsampled), atol=1e-12)
    check_layer(layer, x, rng)


def test_conv_matches_a_direct_loop_with_keras_asymmetric_padding():
    # 'same', even kernel: Keras pads 1 before and 2 after at stride 1 (total k - 1 = 3)
    assert F.same_padding(8, 4, 1) == (1, 2)
    assert F.same_padding(64, 4, 2) == (1, 1)
    assert F.same_padding(7, 4, 2) == (1, 2)  # total = (4-1)*2 + 4 - 7 = 3
    rng = np.random.default_rng(3)
    x, kernel = rng.standard_normal((1, 7, 7, 2)), rng.standard_normal((4, 4, 2, 3))
    out, _ = F.conv2d_forward(x, kernel, np.zeros(3), 2, "same")
    padded = np.pad(x, ((0, 0), (1, 2), (1, 2), (0, 0)))
    direct = np.array(
        [[np.tensordot(padded[0, 2 * i : 2 * i + 4, 2 * j : 2 * j + 4], kernel, 3) for j in range(4)] for i in range(4)]
    )
    np.testing.assert_allclose(out[0], direct, atol=1e-12)


@pytest.mark.parametrize("in_features,units", [(1, 1), (5, 3), (7, 12)])
def test_dense_gradients(in_features, units):
    rng = np.random.default_rng(in_features * 100 + units)
    layer = core.Dense("dense", in_features, units, rng, np.float64)
    layer.parameters["bias"][:] = rng.standard_normal(units)
    check_layer(layer, rng.standard_normal((4, in_features)), rng)


@pytest.mark.parametrize("make", ["dense", "conv"])
def test_spectrally_normalised_gradients(make):
    rng = np.random.default_rng(11 if make == "dense" else 12)
    if make == "dense":
        layer = core.Dense("dense", 6, 4, rng, np.float64, spectral_norm=True)
        x = rng.standard_normal((3, 6))
    else:
        layer = core.Conv2D("conv", 3, 4, 3, 2, "same", rng, np.float64, spectral_norm=True)
        x = rng.standard_normal((2, 5, 5, 3))
    layer.parameters["bias"][:] = rng.standard_normal(4)
    for _ in range(2):  # sn_u away from its equal-entries start
        layer.power_iteration()
    check_layer(layer, x, rng)


def test_spectral_norm_divides_by_the_largest_singular_value_once_the_power_iteration_settles():
    rng = np.random.default_rng(5)
    layer = core.Conv2D("conv", 3, 8, 4, 2, "same", rng, np.float64, spectral_norm=True)
    matrix = layer.parameters["kernel"].reshape(-1, 8)
    largest = np.linalg.svd(matrix, compute_uv=False)[0]
    x = rng.standard_normal((1, 6, 6, 3))
    plain = core.Conv2D("conv", 3, 8, 4, 2, "same", rng, np.float64)
    plain.parameters.update({k: v.copy() for k, v in layer.parameters.items()})
    first = np.linalg.norm(matrix @ layer.buffers["sn_u"])
    for _ in range(100):
        layer.power_iteration()
    assert np.linalg.norm(layer.buffers["sn_u"]) == pytest.approx(1.0)
    assert first < 0.99 * largest  # the equal-entries start is not the answer already
    np.testing.assert_allclose(layer.forward(x), plain.forward(x) / largest, rtol=1e-9)


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 5, 2), (2, 3, 3, 7)])
def test_batchnorm_training_gradients(shape):
    rng = np.random.default_rng(len(shape) * 7 + shape[-1])
    layer = core.BatchNormalization("bn", shape[-1], dtype=np.float64)
    layer.parameters["gamma"][:] = rng.uniform(0.5, 1.5, shape[-1])
    layer.parameters["beta"][:] = rng.standard_normal(shape[-1])
    check_layer(layer, rng.standard_normal(shape) * 2 + 1, rng)


def test_batchnorm_inference_gradients():
    rng = np.random.default_rng(11)
    layer = core.BatchNormalization("bn", 3, dtype=np.float64)
    layer.buffers["moving_mean"][:] = rng.standard_normal(3)
    layer.buffers["moving_variance"][:] = rng.uniform(0.5, 2, 3)
    x = rng.standard_normal((4, 2, 2, 3))
    upstream = rng.standard_normal(x.shape)
    layer.forward(x, training=False)
    dx = layer.backward(upstream)
    idx = np.arange(x.size)
    numeric = numerical_gradient(lambda: float(np.sum(layer.forward(x, training=False) * upstream)), x, idx)
    assert relative_error(dx, numeric) < TOLERANCE


@pytest.mark.parametrize(
    "make",
    [
        lambda: core.ReLU("relu"),
        lambda: core.LeakyReLU("leaky", 0.2),
        lambda: core.Tanh("tanh"),
        lambda: core.UpSampling2D("up", 2),
        lambda: core.UpSampling2D("up", 3),
        lambda: core.UpSampling2D("up", 2, "bilinear"),
        lambda: core.Reshape("reshape", (6, 5)),
        lambda: core.Flatten("flatten"),
    ],
    ids=["relu", "leaky_relu", "tanh", "upsample2", "upsample3", "bilinear", "reshape", "flatten"],
)
def test_parameter_free_layer_gradients(make):
    rng = np.random.default_rng(5)
    check_layer(make(), rng.standard_normal((2, 3, 10, 1)).reshape(2, 3, 5, 2), rng)


def test_dropout_gradients_with_the_mask_replayed():
    rng = np.random.default_rng(6)
    layer = core.Dropout("dropout", 0.3, np.random.default_rng(0))

    def reseed():
        layer.rng = np.random.default_rng(42)

    check_layer(layer, rng.standard_normal((3, 4, 4, 2)), rng, reseed=reseed)


def test_dropout_keeps_the_expectation_and_is_seeded():
    x = np.ones((200, 50), np.float32)
    first = core.Dropout("d", 0.2, np.random.default_rng(1)).forward(x)
    second = core.Dropout("d", 0.2, np.random.default_rng(1)).forward(x)
    np.testing.assert_array_equal(first, second)
    assert set(np.unique(first)) == {np.float32(0), np.float32(1 / 0.8)}
    assert abs((first == 0).mean() - 0.2) < 0.02
    assert core.Dropout("d", 0.2, np.random.default_rng(1)).forward(x, training=False) is x


def test_upsampling_is_nearest():
    x = np.arange(4.0).reshape(1, 2, 2, 1)
    np.testing.assert_array_equal(
        core.UpSampling2D("up", 2).forward(x)[0, :, :, 0],
        [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]],
    )


def test_bilinear_upsampling_weighs_the_nearest_source_three_quarters_and_clamps_the_edges():
    x = np.array([0.0, 4.0, 8.0]).reshape(1, 3, 1, 1)
    rows = core.UpSampling2D("up", 2, "bilinear").forward(x)[0, :, 0, 0]
    np.testing.assert_array_equal(rows, [0, 1, 3, 5, 7, 8])
    image = np.arange(6.0).reshape(1, 2, 3, 1)  # rows, then columns: a linear ramp stays a ramp inside
    out = core.UpSampling2D("up", 2, "bilinear").forward(image)[0, :, :, 0]
    np.testing.assert_allclose(out[1:-1, 1:-1], 0.5 * np.arange(1, 5)[None, :] + 1.5 * np.arange(1, 3)[:, None] - 0.25 * 3 - 0.25)
    with pytest.raises(ValueError, match="factor of 2"):
        core.UpSampling2D("up", 3, "bilinear")
    with pytest.raises(ValueError, match="interpolation"):
        core.UpSampling2D("up", 2, "cubic")


@pytest.mark.parametrize("group", [2, 3])
def test_minibatch_std_gradients(group):
    rng = np.random.default_rng(8)
    check_layer(core.MinibatchStd("mbstd", group), rng.standard_normal((2 * group, 3, 4, 5)), rng)


def test_minibatch_std_values_per_group_and_a_clear_error_for_a_ragged_batch():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 2, 3, 2))
    out = core.MinibatchStd("mbstd", 2).forward(x)
    assert out.shape == (4, 2, 3, 3)
    np.testing.assert_array_equal(out[..., :2], x)
    for first in (0, 2):  # each group's value: the mean over features of the std over the group
        want = np.sqrt(x[first : first + 2].var(axis=0) + 1e-8).mean()
        np.testing.assert_allclose(out[first : first + 2, ..., 2], want, rtol=1e-12)
    assert out[0, 0, 0, 2] != out[2, 0, 0, 2]
    with pytest.raises(ValueError, match="groups of 2"):
        core.MinibatchStd("mbstd", 2).forward(x[:3])


def test_noise_injection_gradients_of_its_input_strength_and_map():
    rng = np.random.default_rng(13)
    maps = core.NoiseMaps(1)
    maps.maps[0] = rng.standard_normal((3, 4, 5, 1))
    layer = core.NoiseInjection("noise", 6, 0, maps, np.float64)
    layer.parameters["strength"][:] = rng.standard_normal(6)
    x = rng.standard_normal((3, 4, 5, 6))
    check_layer(layer, x, rng)
    upstream = rng.standard_normal(x.shape)
    layer.forward(x)
    layer.backward(upstream)
    idx = np.arange(maps.maps[0].size)
    numeric = numerical_gradient(lambda: float(np.sum(layer.forward(x) * upstream)), maps.maps[0], idx)
    assert relative_error(maps.gradients[0], numeric) < TOLERANCE


def test_noise_inputs_route_each_map_to_its_layer_and_every_gradient_back():
    """A small G with noise inputs: input vector [latent 3 | map 4x4 | map 8x8 | label 2]; the
    gradient of the whole vector (maps included) and of every parameter, numerically."""
    rng = np.random.default_rng(14)
    maps = core.NoiseMaps(2)
    layers = [
        core.NoiseInputs("noise_inputs", 3, (4, 8), maps),
        core.Dense("dense_0", 5, 2 * 2 * 3, rng, np.float64),
        core.Reshape("reshape_0", (2, 2, 3)),
        core.UpSampleConv2D("conv_1", 3, 4, 4, 2, rng, np.float64),
        core.NoiseInjection("noise_1", 4, 0, maps, np.float64),
        core.BatchNormActivation("bn_1", 4, dtype=np.float64),
        core.UpSampleConv2D("conv_2", 4, 2, 3, 2, rng, np.float64),
        core.NoiseInjection("noise_2", 2, 1, maps, np.float64),
        core.Tanh("tanh_2"),
    ]
    model = core.Sequential(layers, prefix="generator/")
    for name, value in model.parameters().items():
        value[...] = rng.standard_normal(value.shape) * (0.5 if name.endswith("kernel") else 1.0)
    x = rng.standard_normal((3, 3 + 16 + 64 + 2))
    upstream = rng.standard_normal(model.forward(x).shape)

    def loss():
        return float(np.sum(model.forward(x) * upstream))

    loss()
    dx = model.backward(upstream)
    checks = {"input": (x, dx), **{n: (p, model.gradients()[n]) for n, p in model.parameters().items()}}
    assert "generator/noise_2/strength" in checks
    for name, (array, analytic) in checks.items():
        idx = np.arange(array.size) if name == "input" else sample_indices(rng, array.size, SAMPLES)
        numeric = numerical_gradient(loss, array, idx)
        if name == "generator/conv_1/bias":  # a batch norm follows: zero in exact arithmetic
            assert np.abs(analytic).max() < 1e-12 and np.abs(numeric).max() < 1e-8
            continue
        err = relative_error(analytic.reshape(-1)[idx], numeric)
        assert err < TOLERANCE, f"d/d{name}: relative error {err:.2e}"
    # every part of the input reaches the output: latent, both maps and the label
    for part in (slice(0, 3), slice(3, 19), slice(19, 83), slice(83, 85)):
        assert np.abs(dx[:, part]).max() > 0
