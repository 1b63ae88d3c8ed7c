"""Numba kernels for the hot loops, written as plain Python and compiled once at module level.

Everything here works on NHWC arrays of any float dtype (float32 for training, float64 for
gradient checks); Numba compiles one specialisation per dtype and caches it on disk.

- `im2col` gathers each output pixel's receptive field into one row, so a convolution
  becomes one BLAS matmul; `col2im` scatters rows back (the adjoint, for the input gradient).
- `leaky_relu` / `leaky_relu_backward`: one parallel pass instead of numpy's several.
- `bn_act_forward` / `_backward`: batch norm and the ReLU or LeakyReLU after it, one pass
  over memory per direction; `leaky_dropout_forward` / `_backward`: LeakyReLU and dropout.
  Their plain NumPy twins are in core.functional (`..._reference`).
- `adam_update` applies one Adam step to a flat weight array in a single pass.

Each kernel has a parallel and a serial build; the wrappers at the end pick by size.
"""

from __future__ import annotations

import os

# Numba's OpenMP threads otherwise spin for a while after every parallel kernel, on the cores
# OpenBLAS's threads need for the next matmul: on 2 cores that made a `default` step 6x slower
# (docs/benchmarks.md). libgomp reads this once, when Numba first loads it, which is after here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402
import numpy as np
from numba import prange  # noqa: E402


def _im2col(x, kernel_h, kernel_w, stride, pad_top, pad_left, out_h, out_w, cols):
    """cols[(b, oy, ox), (ky, kx, c)] = x[b, oy*stride + ky - pad_top, ox*stride + kx - pad_left, c],
    zero where the index falls in the padding."""
    batch, in_h, in_w, channels = x.shape
    for image_row in prange(batch * out_h):
        b = image_row // out_h
        oy = image_row % out_h
        for ox in range(out_w):
            row = image_row * out_w + ox
            for ky in range(kernel_h):
                iy = oy * stride + ky - pad_top
                for kx in range(kernel_w):
                    ix = ox * stride + kx - pad_left
                    base = (ky * kernel_w + kx) * channels
                    if iy >= 0 and iy < in_h and ix >= 0 and ix < in_w:
                        for c in range(channels):
                            cols[row, base + c] = x[b, iy, ix, c]
                    else:
                        for c in range(channels):
                            cols[row, base + c] = 0.0


def _col2im(cols, kernel_h, kernel_w, stride, pad_top, pad_left, out_h, out_w, x):
    """The adjoint of `_im2col`: x (zeroed here) receives the sum of every row entry that
    was gathered from it. One image per thread, so no two threads write the same pixel."""
    batch, in_h, in_w, channels = x.shape
    for b in prange(batch):
        x[b] = 0.0
        for oy in range(out_h):
            for ox in range(out_w):
                row = (b * out_h + oy) * out_w + ox
                for ky in range(kernel_h):
                    iy = oy * stride + ky - pad_top
                    if iy < 0 or iy >= in_h:
                        continue
                    for kx in range(kernel_w):
                        ix = ox * stride + kx - pad_left
                        if ix < 0 or ix >= in_w:
                            continue
                        base = (ky * kernel_w + kx) * channels
                        for c in range(channels):
                            x[b, iy, ix, c] += cols[row, base + c]


def _adam_update(weight, gradient, m, v, step_size, beta_1, beta_2, epsilon):
    """Keras 3 Adam on flat arrays, in place: m, v move towards g, g*g; w -= step_size*m/(sqrt(v)+eps)."""
    one_minus_beta_1 = 1.0 - beta_1
    one_minus_beta_2 = 1.0 - beta_2
    for i in prange(weight.shape[0]):
        g = gradient[i]
        m[i] += (g - m[i]) * one_minus_beta_1
        v[i] += (g * g - v[i]) * one_minus_beta_2
        weight[i] -= step_size * m[i] / (np.sqrt(v[i]) + epsilon)


def _leaky_relu(x, slope, out):
    for i in prange(x.shape[0]):
        out[i] = x[i] if x[i] > 0 else x[i] * slope


def _leaky_relu_backward(dout, x, slope, dx):
    for i in prange(x.shape[0]):
        dx[i] = dout[i] if x[i] > 0 else dout[i] * slope


# --- fused element-wise pairs ---------------------------------------------------------------
# A layer pair the networks always use together runs as one pass over memory instead of
# NumPy's several. Each kernel's plain NumPy twin is the composition of the two layers'
# functions in core.functional; tests/test_core_fused.py checks that the two agree.
#
# Batch statistics are sums over rows; they are taken in fixed blocks of rows, each block's
# partial sums combined in block order, so the result is the same with any number of threads.
REDUCTION_BLOCK = 1024


def _bn_act_forward(x, gamma, beta, epsilon, slope, out, normalised, mean, var, inv_std):
    """Batch norm over the rows of x (rows, channels) with the batch's mean and biased variance,
    then the activation max(z, slope * z) (ReLU at slope 0, else LeakyReLU). Fills out,
    normalised ((x - mean) * inv_std, for the backward pass), mean, var and inv_std =
    1 / sqrt(var + epsilon). Sums run in float64."""
    rows, channels = x.shape
    blocks = (rows + REDUCTION_BLOCK - 1) // REDUCTION_BLOCK
    sums = np.zeros((blocks, channels))
    for block in prange(blocks):
        for row in range(block * REDUCTION_BLOCK, min(rows, (block + 1) * REDUCTION_BLOCK)):
            for c in range(channels):
                sums[block, c] += x[row, c]
    mean64 = sums.sum(axis=0) / rows
    squares = np.zeros((blocks, channels))
    for block in prange(blocks):
        for row in range(block * REDUCTION_BLOCK, min(rows, (block + 1) * REDUCTION_BLOCK)):
            for c in range(channels):
                d = x[row, c] - mean64[c]
                squares[block, c] += d * d
    var64 = squares.sum(axis=0) / rows
    inv_std64 = 1.0 / np.sqrt(var64 + epsilon)
    for c in range(channels):
        mean[c] = mean64[c]
        var[c] = var64[c]
        inv_std[c] = inv_std64[c]
    for row in prange(rows):
        for c in range(channels):
            n = (x[row, c] - mean64[c]) * inv_std64[c]
            normalised[row, c] = n
            z = n * gamma[c] + beta[c]
            out[row, c] = z if z > 0 else z * slope


def _bn_act_backward(dout, normalised, gamma, beta, inv_std, slope, need_input_grad, dx, dgamma, dbeta):
    """The adjoint of _bn_act_forward: the activation's slope at z = normalised * gamma + beta,
    then batch norm's backward (mean and variance taken over the batch). Fills dgamma, dbeta
    and, when need_input_grad, dx."""
    rows, channels = dout.shape
    blocks = (rows + REDUCTION_BLOCK - 1) // REDUCTION_BLOCK
    partial = np.zeros((blocks, 2, channels))
    for block in prange(blocks):
        for row in range(block * REDUCTION_BLOCK, min(rows, (block + 1) * REDUCTION_BLOCK)):
            for c in range(channels):
                n = normalised[row, c]
                dz = dout[row, c] if n * gamma[c] + beta[c] > 0 else dout[row, c] * slope
                partial[block, 0, c] += dz
                partial[block, 1, c] += np.float64(dz) * n
    total = partial.sum(axis=0)
    for c in range(channels):
        dbeta[c] = total[0, c]
        dgamma[c] = total[1, c]
    if not need_input_grad:
        return
    for row in prange(rows):
        for c in range(channels):
            n = normalised[row, c]
            dz = dout[row, c] if n * gamma[c] + beta[c] > 0 else dout[row, c] * slope
            dx[row, c] = (dz - total[0, c] / rows - n * (total[1, c] / rows)) * (gamma[c] * inv_std[c])


def _leaky_dropout_forward(x, slope, uniform, rate, scale, out):
    """LeakyReLU then inverted dropout: out = max(x, slope*x) * scale where uniform >= rate, else 0."""
    for i in prange(x.shape[0]):
        if uniform[i] >= rate:
            out[i] = (x[i] if x[i] > 0 else x[i] * slope) * scale
        else:
            out[i] = 0.0


def _leaky_dropout_backward(dout, x, slope, uniform, rate, scale, dx):
    for i in prange(x.shape[0]):
        if uniform[i] >= rate:
            dx[i] = (dout[i] if x[i] > 0 else dout[i] * slope) * scale
        else:
            dx[i] = 0.0


# The element-wise kernels (bench/profile_step.py times them as one kind).
FUSED = ("leaky_relu", "leaky_relu_backward", "bn_act_forward", "bn_act_backward", "leaky_dropout_forward",
         "leaky_dropout_backward")

# Waking worker threads costs more than small arrays take (and much more on a busy machine),
# so each kernel also has a serial build that the wrappers below pick for small work.
PARALLEL_MIN_ELEMENTS = 1 << 18


def _builds(function):
    """(parallel build, serial build) of a kernel, compiled on first use and cached on disk."""
    return numba.njit(parallel=True, cache=True)(function), numba.njit(cache=True)(function)


def _by_size(builds, elements: int):
    return builds[0] if elements >= PARALLEL_MIN_ELEMENTS else builds[1]


_IM2COL = _builds(_im2col)
_COL2IM = _builds(_col2im)
_LEAKY_RELU = _builds(_leaky_relu)
_LEAKY_RELU_BACKWARD = _builds(_leaky_relu_backward)
_ADAM_UPDATE = _builds(_adam_update)
_BN_ACT_FORWARD = _builds(_bn_act_forward)
_BN_ACT_BACKWARD = _builds(_bn_act_backward)
_LEAKY_DROPOUT_FORWARD = _builds(_leaky_dropout_forward)
_LEAKY_DROPOUT_BACKWARD = _builds(_leaky_dropout_backward)


def im2col(x, kernel_h, kernel_w, stride, pad_top, pad_left, out_h, out_w, cols):
    kernel = _by_size(_IM2COL, cols.size)
    kernel(x, kernel_h, kernel_w, stride, pad_top, pad_left, out_h, out_w, cols)


def col2im(cols, kernel_h, kernel_w, stride, pad_top, pad_left, out_h, out_w, x):
    kernel = _by_size(_COL2IM, cols.size)
    kernel(cols, kernel_h, kernel_w, stride, pad_top, pad_left, out_h, out_w, x)


def adam_update(weight, gradient, m, v, step_size, beta_1, beta_2, epsilon):
    kernel = _by_size(_ADAM_UPDATE, weight.size)
    kernel(weight, gradient, m, v, step_size, beta_1, beta_2, epsilon)


def leaky_relu(x, slope, out):
    kernel = _by_size(_LEAKY_RELU, x.size)
    kernel(x, slope, out)


def leaky_relu_backward(dout, x, slope, dx):
    kernel = _by_size(_LEAKY_RELU_BACKWARD, x.size)
    kernel(dout, x, slope, dx)


def bn_act_forward(x, gamma, beta, epsilon, slope, out, normalised, mean, var, inv_std):
    kernel = _by_size(_BN_ACT_FORWARD, x.size)
    kernel(x, gamma, beta, epsilon, slope, out, normalised, mean, var, inv_std)


def bn_act_backward(dout, normalised, gamma, beta, inv_std, slope, need_input_grad, dx, dgamma, dbeta):
    kernel = _by_size(_BN_ACT_BACKWARD, dout.size)
    kernel(dout, normalised, gamma, beta, inv_std, slope, need_input_grad, dx, dgamma, dbeta)


def leaky_dropout_forward(x, slope, uniform, rate, scale, out):
    kernel = _by_size(_LEAKY_DROPOUT_FORWARD, x.size)
    kernel(x, slope, uniform, rate, scale, out)


def leaky_dropout_backward(dout, x, slope, uniform, rate, scale, dx):
    kernel = _by_size(_LEAKY_DROPOUT_BACKWARD, x.size)
    kernel(dout, x, slope, uniform, rate, scale, dx)
