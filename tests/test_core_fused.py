"""The fused Numba kernels against their plain NumPy twins (core.functional's `_reference`
functions), their gradients, and the fused network against the unfused one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from test_core_layers import check_layer

import core
from backends.config import GANConfig
from backends.numpy import NumpyBackend, networks
from core import functional as F
from core import kernels
from core.gradcheck import numerical_gradient, relative_error

# (rows, channels): one block, several blocks with a ragged last one, and one big enough for the
# parallel build (kernels.PARALLEL_MIN_ELEMENTS)
SHAPES = [(5, 3), (2 * kernels.REDUCTION_BLOCK + 17, 8), (kernels.PARALLEL_MIN_ELEMENTS // 32, 32)]
TOLERANCE = {np.float32: 2e-5, np.float64: 1e-12}


def bn_inputs(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, shape[1]).astype(dtype)
    beta = rng.normal(0, 0.5, shape[1]).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    return x, gamma, beta, dout


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [0.0, 0.2])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batchnorm_activation_kernel_matches_its_numpy_twin(shape, slope, dtype):
    x, gamma, beta, dout = bn_inputs(shape, dtype, seed=shape[0] + int(slope * 10))
    out, mean, var, cache = F.batchnorm_act_train_forward(x, gamma, beta, 1e-3, slope)
    twin_out, twin_mean, twin_var, twin_cache = F.batchnorm_act_train_forward_reference(x, gamma, beta, 1e-3, slope)
    tolerance = TOLERANCE[dtype]
    for fused, twin in ((out, twin_out), (mean, twin_mean), (var, twin_var)):
        assert fused.dtype == dtype
        np.testing.assert_allclose(fused, twin, rtol=tolerance, atol=tolerance * 10)
    for need_input_grad in (True, False):
        dx, dgamma, dbeta = F.batchnorm_act_train_backward(dout, cache, need_input_grad)
        twin_dx, twin_dgamma, twin_dbeta = F.batchnorm_act_train_backward_reference(dout, twin_cache, need_input_grad)
        # sums over rows: within the tolerance of the sum of the terms' sizes (in float32 a unit
        # whose z sits at the kink can round to the other side in one of the two)
        normalised = twin_cache[0][0].reshape(shape)
        np.testing.assert_allclose(dgamma, twin_dgamma, rtol=0, atol=tolerance * np.abs(dout * normalised).sum() / 10)
        np.testing.assert_allclose(dbeta, twin_dbeta, rtol=0, atol=tolerance * np.abs(dout).sum() / 10)
        if need_input_grad:
            # units at the kink (|z| within rounding of 0) may take the other slope in one of the two
            z = twin_cache[1].reshape(shape)
            away = np.abs(z) > tolerance
            assert away.mean() > 0.999
            np.testing.assert_allclose(dx[away], twin_dx[away], rtol=0, atol=tolerance * np.abs(twin_dx).max() * 10)
        else:
            assert dx is None and twin_dx is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 5, 5, 4), (16, 32, 32, 16)], ids=str)  # serial and parallel builds
def test_leaky_relu_dropout_kernel_gives_the_numpy_twins_numbers(shape, dtype):
    rng = np.random.default_rng(shape[0])
    x = rng.standard_normal(shape).astype(dtype)
    uniform = F.dropout_uniform(rng, shape, np.dtype(dtype))
    out, cache = F.leaky_dropout_forward(x, 0.2, uniform, 0.3)
    twin_out, twin_cache = F.leaky_dropout_forward_reference(x, 0.2, uniform, 0.3)
    np.testing.assert_array_equal(out, twin_out)
    dout = rng.standard_normal(shape).astype(dtype)
    np.testing.assert_array_equal(F.leaky_dropout_backward(dout, cache), F.leaky_dropout_backward_reference(dout, twin_cache))
    assert 0.25 < np.mean(out == 0) < 0.35  # about `rate` of the units dropped


@pytest.mark.parametrize("slope", [0.0, 0.2])
@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 5, 2)], ids=str)
def test_fused_batchnorm_activation_layer_gradients(shape, slope):
    rng = np.random.default_rng(len(shape) + int(slope * 10))
    layer = core.BatchNormActivation("bn", shape[-1], slope=slope, dtype=np.float64)
    layer.parameters["gamma"][:] = rng.uniform(0.5, 1.5, shape[-1])
    layer.parameters["beta"][:] = rng.standard_normal(shape[-1])
    check_layer(layer, rng.standard_normal(shape) * 2 + 1, rng)
    # inference: an affine map with the moving statistics, then the activation (input gradient only)
    layer.buffers["moving_mean"][:] = rng.standard_normal(shape[-1])
    layer.buffers["moving_variance"][:] = rng.uniform(0.5, 2, shape[-1])
    x, upstream = rng.standard_normal(shape), rng.standard_normal(shape)
    layer.forward(x, training=False)
    dx = layer.backward(upstream)
    numeric = numerical_gradient(lambda: float(np.sum(layer.forward(x, training=False) * upstream)), x, np.arange(x.size))
    assert relative_error(dx, numeric) < 1e-6


def test_fused_leaky_relu_dropout_layer_gradients_with_the_mask_replayed():
    rng = np.random.default_rng(4)
    layer = core.LeakyReLUDropout("leaky", 0.2, 0.4, np.random.default_rng(0))

    def reseed():
        layer.rng = np.random.default_rng(9)

    check_layer(layer, rng.standard_normal((3, 4, 4, 2)), rng, reseed=reseed)
    check_layer(layer, rng.standard_normal((3, 4, 4, 2)), rng, training=False)


def test_batch_statistics_do_not_depend_on_the_number_of_threads():
    x, gamma, beta, dout = bn_inputs(SHAPES[-1], np.float32, seed=1)
    results = []
    previous = numba.get_num_threads()
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            out, mean, var, cache = F.batchnorm_act_train_forward(x, gamma, beta, 1e-3, 0.0)
            results.append((out, mean, var) + F.batchnorm_act_train_backward(dout, cache))
    finally:
        numba.set_num_threads(previous)
    for one, many in zip(*results):
        np.testing.assert_array_equal(one, many)


@pytest.mark.parametrize("preset_fields", [
    dict(width=4, max_width=8, dropout=0.3, minibatch_std=2),
    dict(width=4, max_width=8, dropout=0.0, num_classes=2, diffaugment="translation"),
], ids=["dropout", "conditional"])
def test_the_fused_network_trains_as_the_unfused_one(monkeypatch, preset_fields):
    """Two float64 train steps with the fused layers and with the spec's layers one by one:
    the same losses, weights and RNG draws."""
    config = GANConfig(image_size=32, batch_size=4, dtype="float64", seed=5, **preset_fields)
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (4, 32, 32, 3))
    z = rng.standard_normal((4, config.latent_dim))
    labels = np.array([0, 1, 1, 0]) if config.num_classes else None

    def train(fuse: bool):
        if not fuse:
            monkeypatch.setattr(networks, "fused_element_wise", lambda *args: None)
        backend = NumpyBackend(config)
        monkeypatch.undo()
        kinds = {type(layer) for net in (backend.generator, backend.discriminator) for layer in net.layers}
        losses = [backend.train_step(real, z, labels) for _ in range(2)]
        return kinds, losses, backend.get_weights(), backend.rng.random()

    fused_kinds, fused_losses, fused_weights, fused_draw = train(True)
    plain_kinds, plain_losses, plain_weights, plain_draw = train(False)
    assert core.BatchNormActivation in fused_kinds and core.BatchNormActivation not in plain_kinds
    assert (core.LeakyReLUDropout in fused_kinds) == (config.dropout > 0)
    np.testing.assert_allclose(fused_losses, plain_losses, rtol=1e-10)
    assert fused_weights.keys() == plain_weights.keys()
    for name in fused_weights:
        np.testing.assert_allclose(fused_weights[name], plain_weights[name], rtol=1e-9, atol=1e-12, err_msg=name)
    assert fused_draw == plain_draw


@pytest.mark.slow
def test_openmp_threads_wait_passively_when_the_cli_loads_the_core():
    """OpenMP's spinning threads fight OpenBLAS's for the cores; core.kernels asks libgomp to
    wait passively, which only works if nothing loaded Numba's libgomp before it."""
    script = (
        "import os, re, service.run, backends.numpy, numpy as np\n"
        "def gomp(): return re.findall(r'/libgomp\\.so\\S*', open('/proc/self/maps').read())\n"
        "before = gomp()\n"
        "from core import kernels\n"
        "x = np.ones(kernels.PARALLEL_MIN_ELEMENTS, np.float32); kernels.leaky_relu(x, np.float32(0.2), x.copy())\n"
        "print(os.environ['OMP_WAIT_POLICY'], len(before))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["PASSIVE", "0"]
