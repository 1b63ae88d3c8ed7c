"""Numba kernels for the hot loops, written as plain Python and compiled once at module level.

Everything here works on NHWC arrays of any float dtype (float32 for training, float64 for
gradient checks); Numba compiles one specialisation per dtype and caches it on disk.

- `im2col` gathers each output pixel's receptive field into one row, so a convolution
  becomes one BLAS matmul; `col2im` scatters rows back (the adjoint, for the input gradient).
- `leaky_relu` / `leaky_relu_backward`: one parallel pass instead of numpy's several.
- `adam_update` applies one Adam step to a flat weight array in a single pass.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange


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


# Waking worker threads costs more than small arrays take (and much more on a busy machine),
# so each kernel also has a serial build that the wrappers below pick for small work.
PARALLEL_MIN_ELEMENTS = 1 << 18

_im2col_parallel = numba.njit(parallel=True, cache=True)(_im2col)
_im2col_serial = numba.njit(cache=True)(_im2col)
_col2im_parallel = numba.njit(parallel=True, cache=True)(_col2im)
_col2im_serial = numba.njit(cache=True)(_col2im)
_leaky_relu_parallel = numba.njit(parallel=True, cache=True)(_leaky_relu)
_leaky_relu_serial = numba.njit(cache=True)(_leaky_relu)
_leaky_relu_backward_parallel = numba.njit(parallel=True, cache=True)(_leaky_relu_backward)
_leaky_relu_backward_serial = numba.njit(cache=True)(_leaky_relu_backward)
_adam_update_parallel = numba.njit(parallel=True, cache=True)(_adam_update)
_adam_update_serial = numba.njit(cache=True)(_adam_update)


def im2col(x, kernel_h, kernel_w, stride, pad_top, pad_left, out_h, out_w, cols):
    kernel = _im2col_parallel if cols.size >= PARALLEL_MIN_ELEMENTS else _im2col_serial
    kernel(x, kernel_h, kernel_w, stride, pad_top, pad_left, out_h, out_w, cols)


def col2im(cols, kernel_h, kernel_w, stride, pad_top, pad_left, out_h, out_w, x):
    kernel = _col2im_parallel if cols.size >= PARALLEL_MIN_ELEMENTS else _col2im_serial
    kernel(cols, kernel_h, kernel_w, stride, pad_top, pad_left, out_h, out_w, x)


def adam_update(weight, gradient, m, v, step_size, beta_1, beta_2, epsilon):
    kernel = _adam_update_parallel if weight.size >= PARALLEL_MIN_ELEMENTS else _adam_update_serial
    kernel(weight, gradient, m, v, step_size, beta_1, beta_2, epsilon)


def leaky_relu(x, slope, out):
    kernel = _leaky_relu_parallel if x.size >= PARALLEL_MIN_ELEMENTS else _leaky_relu_serial
    kernel(x, slope, out)


def leaky_relu_backward(dout, x, slope, dx):
    kernel = _leaky_relu_backward_parallel if x.size >= PARALLEL_MIN_ELEMENTS else _leaky_relu_backward_serial
    kernel(dout, x, slope, dx)
