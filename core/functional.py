"""The maths of every layer as small pure functions: forward returns (out, cache), backward
takes (dout, cache) and returns gradients. NHWC tensors, Keras weight shapes.

Convolutions run as im2col (Numba) + one BLAS matmul. Nearest upsampling followed by a
'same' stride-1 convolution is fused: each output phase (pixel parity) of the upsampled
convolution only ever sees a few distinct low-resolution pixels, so the pair equals one
small convolution on the low-resolution input with factor**2 * filters outputs, followed by
depth-to-space. With factor 2 and a 4x4 kernel that is a 3x3 window: 36 taps per 4 output
pixels instead of 64, and the 4x larger upsampled tensor is never built.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from core import kernels

# Multiply-adds done by BLAS since the last reset, x2: the executed FLOPs that benchmarks report.
matmul_flops = [0]


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    matmul_flops[0] += 2 * a.shape[0] * a.shape[1] * b.shape[1]
    return a @ b


def weight_gradient(cols: np.ndarray, dout2d: np.ndarray) -> np.ndarray:
    """cols.T @ dout. OpenBLAS is many times slower on a transposed operand with few
    columns and very many rows (a first conv layer: 48 x 65536), so that case runs as
    (dout.T @ cols).T, which streams the long axis the other way."""
    if cols.shape[1] < dout2d.shape[1]:
        return matmul(dout2d.T, cols).T
    return matmul(cols.T, dout2d)


# --- padding and sizes (Keras conventions) -------------------------------------------------


def conv_output_size(size: int, kernel: int, stride: int, padding: str) -> int:
    if padding == "same":
        return math.ceil(size / stride)
    if padding == "valid":
        if size < kernel:
            raise ValueError(f"'valid' convolution needs an input of at least {kernel} pixels, got {size}")
        return (size - kernel) // stride + 1
    raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras/TF 'same': total = max((ceil(n/s)-1)*s + k - n, 0), the extra pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_padding(size: int, kernel: int, stride: int, padding: str) -> int:
    """Padding before the first pixel (the padding after is implied by the output size)."""
    return same_padding(size, kernel, stride)[0] if padding == "same" else 0


# --- Conv2D --------------------------------------------------------------------------------


def im2col(x, kernel_size, stride, pad_top, pad_left, out_h, out_w):
    cols = np.empty((x.shape[0] * out_h * out_w, kernel_size * kernel_size * x.shape[3]), x.dtype)
    kernels.im2col(x, kernel_size, kernel_size, stride, pad_top, pad_left, out_h, out_w, cols)
    return cols


def col2im(cols, input_shape, kernel_size, stride, pad_top, pad_left, out_h, out_w):
    x = np.empty(input_shape, cols.dtype)
    kernels.col2im(cols, kernel_size, kernel_size, stride, pad_top, pad_left, out_h, out_w, x)
    return x


def conv2d_forward(x, kernel, bias, stride, padding):
    k, _, cin, cout = kernel.shape
    batch, in_h, in_w, channels = x.shape
    if channels != cin:
        raise ValueError(f"conv expects {cin} input channels, got {channels}")
    out_h = conv_output_size(in_h, k, stride, padding)
    out_w = conv_output_size(in_w, k, stride, padding)
    pad_top = conv_padding(in_h, k, stride, padding)
    pad_left = conv_padding(in_w, k, stride, padding)
    cols = im2col(x, k, stride, pad_top, pad_left, out_h, out_w)
    out = matmul(cols, kernel.reshape(-1, cout))
    out += bias
    geometry = (x.shape, k, stride, pad_top, pad_left, out_h, out_w)
    return out.reshape(batch, out_h, out_w, cout), (cols, kernel, geometry)


def conv2d_backward(dout, cache, need_input_grad=True, need_param_grads=True):
    """Returns (dx or None, dkernel or None, dbias or None)."""
    cols, kernel, geometry = cache
    cout = kernel.shape[3]
    dout2d = dout.reshape(-1, cout)
    dkernel = dbias = dx = None
    if need_param_grads:
        dkernel = weight_gradient(cols, dout2d).reshape(kernel.shape)
        dbias = dout2d.sum(axis=0)
    if need_input_grad:
        dcols = matmul(dout2d, kernel.reshape(-1, cout).T)
        dx = col2im(dcols, *geometry)
    return dx, dkernel, dbias


def conv2d_per_example_grads(dout, cache):
    """The weight gradients of each example on its own, (B, k, k, cin, cout) and (B, cout): the
    batch gradient's terms before the sum over the batch (Opacus's grad_sample/conv.py), from the
    same unfolded input: cols as (B, P, K) and dout as (B, P, cout), one product per example."""
    cols, kernel, _ = cache
    batch = dout.shape[0]
    cout = kernel.shape[3]
    cols3 = cols.reshape(batch, -1, cols.shape[1])
    dout3 = dout.reshape(batch, -1, cout)
    dkernel = np.matmul(cols3.transpose(0, 2, 1), dout3)
    return dkernel.reshape((batch,) + kernel.shape), dout3.sum(axis=1)


# --- nearest UpSampling2D, alone and fused with a 'same' stride-1 Conv2D -------------------


def upsample_forward(x, factor):
    return x.repeat(factor, axis=1).repeat(factor, axis=2)


def upsample_backward(dout, factor):
    b, h, w, c = dout.shape
    return dout.reshape(b, h // factor, factor, w // factor, factor, c).sum(axis=(2, 4))


# --- bilinear UpSampling2D by 2 (half-pixel centres, edges clamped; Keras's "bilinear") -------


def _bilinear_double_axis(x, axis):
    """Along `axis`: output 2i = 3/4 x[i] + 1/4 x[i - 1], output 2i + 1 = 3/4 x[i] + 1/4 x[i + 1],
    the neighbour's index clamped to the edge."""
    n = x.shape[axis]
    before = np.take(x, np.maximum(np.arange(n) - 1, 0), axis=axis)
    after = np.take(x, np.minimum(np.arange(n) + 1, n - 1), axis=axis)
    near, far = x.dtype.type(0.75), x.dtype.type(0.25)
    out = np.stack([near * x + far * before, near * x + far * after], axis=axis + 1)
    shape = list(x.shape)
    shape[axis] *= 2
    return out.reshape(shape)


def _bilinear_double_axis_backward(dout, axis):
    """The transpose of _bilinear_double_axis: each output's gradient back to its two sources."""
    shape = list(dout.shape)
    shape[axis : axis + 1] = [shape[axis] // 2, 2]
    pairs = dout.reshape(shape)
    even, odd = np.take(pairs, 0, axis=axis + 1), np.take(pairs, 1, axis=axis + 1)
    near, far = dout.dtype.type(0.75), dout.dtype.type(0.25)
    dx = near * (even + odd)
    n = dx.shape[axis]
    index = [slice(None)] * dx.ndim

    def at(s):
        index[axis] = s
        return tuple(index)

    # even output i read x[i - 1] (x[0] at i = 0); odd output i read x[i + 1] (x[n - 1] at the end)
    dx[at(slice(0, n - 1))] += far * even[at(slice(1, n))]
    dx[at(slice(0, 1))] += far * even[at(slice(0, 1))]
    dx[at(slice(1, n))] += far * odd[at(slice(0, n - 1))]
    dx[at(slice(n - 1, n))] += far * odd[at(slice(n - 1, n))]
    return dx


def bilinear_upsample_forward(x):
    """(B, H, W, C) -> (B, 2H, 2W, C): rows then columns (backends.spec, "upsample")."""
    return _bilinear_double_axis(_bilinear_double_axis(x, 1), 2)


def bilinear_upsample_backward(dout):
    return _bilinear_double_axis_backward(_bilinear_double_axis_backward(dout, 2), 1)


def phase_tap_rows(kernel_size: int, factor: int):
    """Where each kernel tap lands on the low-resolution input, per output phase.

    Output row y = factor*a + p of conv('same', stride 1) over the upsampled input reads
    upsampled row y + ky - pad, i.e. low-resolution row a + (p + ky - pad) // factor.
    Returns taps[p, ky, d] = 1 where tap ky of phase p reads offset d - pad_low, the
    low-resolution padding before (pad_low) and the window size.
    """
    pad = (kernel_size - 1) // 2  # 'same', stride 1: total k-1, the extra pixel after
    offsets = [[(p + ky - pad) // factor for ky in range(kernel_size)] for p in range(factor)]
    low = min(min(row) for row in offsets)
    window = max(max(row) for row in offsets) - low + 1
    taps = np.zeros((factor, kernel_size, window))
    for p in range(factor):
        for ky in range(kernel_size):
            taps[p, ky, offsets[p][ky] - low] = 1.0
    return taps, -low, window


def _tap_pairs(kernel_size, factor):
    """(ky, dy, py) for every tap: tap ky of phase py reads window row dy."""
    taps, _, window = phase_tap_rows(kernel_size, factor)
    return [(ky, int(np.argmax(taps[p, ky])), p) for p in range(factor) for ky in range(kernel_size)], window


@functools.lru_cache(maxsize=None)
def _tap_matrix(kernel_size, factor):
    """(window*window*factor*factor, kernel_size**2): row (dy, dx, py, px) has a 1 at each tap
    (ky, kx) that phase (py, px) reads from window pixel (dy, dx); and the window size."""
    taps, _, window = phase_tap_rows(kernel_size, factor)
    matrix = np.einsum("pad,qbe->depqab", taps, taps)
    return matrix.reshape(window * window * factor * factor, kernel_size * kernel_size), window


def phase_kernel(kernel, factor):
    """The (window*window*cin, factor*factor*cout) matrix of the fused convolution: column
    block (py, px) is the kernel folded onto the low-resolution window seen by that phase
    (taps that read the same low-resolution pixel add up): one product with the tap matrix."""
    k, _, cin, cout = kernel.shape
    taps, window = _tap_matrix(k, factor)
    folded = (taps.astype(kernel.dtype) @ kernel.reshape(k * k, cin * cout)).reshape(window, window, factor, factor, cin, cout)
    return folded.transpose(0, 1, 4, 2, 3, 5).reshape(window * window * cin, factor * factor * cout)


def phase_kernel_backward(dphase, kernel_shape, factor):
    """The adjoint of `phase_kernel`: the gradient of the original kernel."""
    k, _, cin, cout = kernel_shape
    pairs, window = _tap_pairs(k, factor)
    dphase = dphase.reshape(window, window, cin, factor, factor, cout)
    dkernel = np.zeros(kernel_shape, dphase.dtype)
    for ky, dy, py in pairs:
        for kx, dx, px in pairs:
            dkernel[ky, kx] += dphase[dy, dx, :, py, px, :]
    return dkernel


def upsample_conv2d_forward(x, kernel, bias, factor):
    """conv2d_forward(upsample_forward(x, factor), kernel, bias, 1, 'same'), computed fused."""
    k, _, cin, cout = kernel.shape
    batch, in_h, in_w, channels = x.shape
    if channels != cin:
        raise ValueError(f"conv expects {cin} input channels, got {channels}")
    _, pad, window = phase_tap_rows(k, factor)
    cols = im2col(x, window, 1, pad, pad, in_h, in_w)
    phases = phase_kernel(kernel, factor)
    out = matmul(cols, phases)  # (b*h*w, py*px*cout)
    out.reshape(-1, factor * factor, cout)[...] += bias
    out = out.reshape(batch, in_h, in_w, factor, factor, cout).transpose(0, 1, 3, 2, 4, 5)
    out = out.reshape(batch, in_h * factor, in_w * factor, cout)
    geometry = (x.shape, window, 1, pad, pad, in_h, in_w)
    return out, (cols, phases, kernel.shape, factor, geometry)


def upsample_conv2d_backward(dout, cache, need_input_grad=True, need_param_grads=True):
    cols, phases, kernel_shape, factor, geometry = cache
    batch, in_h, in_w, _ = geometry[0]
    cout = kernel_shape[3]
    dphased = dout.reshape(batch, in_h, factor, in_w, factor, cout).transpose(0, 1, 3, 2, 4, 5)
    dphased = np.ascontiguousarray(dphased).reshape(-1, factor * factor * cout)
    dx = dkernel = dbias = None
    if need_param_grads:
        dkernel = phase_kernel_backward(weight_gradient(cols, dphased), kernel_shape, factor)
        dbias = dout.reshape(-1, cout).sum(axis=0)
    if need_input_grad:
        dx = col2im(matmul(dphased, phases.T), *geometry)
    return dx, dkernel, dbias


# --- Dense ---------------------------------------------------------------------------------


def dense_forward(x, kernel, bias):
    if x.ndim != 2 or x.shape[1] != kernel.shape[0]:
        raise ValueError(f"dense expects (batch, {kernel.shape[0]}), got {x.shape}")
    out = matmul(x, kernel)
    out += bias
    return out, (x, kernel)


def dense_backward(dout, cache, need_input_grad=True, need_param_grads=True):
    x, kernel = cache
    dx = matmul(dout, kernel.T) if need_input_grad else None
    if need_param_grads:
        return dx, matmul(x.T, dout), dout.sum(axis=0)
    return dx, None, None


def dense_per_example_grads(dout, cache):
    """Each example's dense weight gradients: (B, in, units) outer products and (B, units)."""
    x, _ = cache
    return x[:, :, None] * dout[:, None, :], dout.copy()


# --- Spectral normalisation (Miyato et al. 2018) -----------------------------------------
# A kernel of shape (..., units) is read as the matrix M = kernel.reshape(-1, units); its
# largest singular value is estimated as sigma = |M u| for a unit vector u (units,) that one
# power iteration per D step refines. The layer computes with kernel / sigma, u held constant.
SPECTRAL_EPSILON = 1e-12


def _unit(x):
    return x / (np.sqrt(np.sum(x * x)) + SPECTRAL_EPSILON)


def spectral_power_iteration(kernel, u):
    """One power iteration: v = unit(M u), then the new u = unit(M^T v)."""
    m = kernel.reshape(-1, kernel.shape[-1])
    return _unit(m.T @ _unit(m @ u))


def spectral_norm_forward(kernel, u):
    """kernel / sigma with sigma = |M u|; the cache holds what the backward pass needs."""
    mu = kernel.reshape(-1, kernel.shape[-1]) @ u
    sigma = np.sqrt(np.sum(mu * mu))
    return kernel / sigma, (kernel, u, mu, sigma)


def spectral_norm_backward(dnormalized, cache):
    """d loss / d kernel from d loss / d (kernel / sigma): G / sigma - <G, M> / sigma^3 (M u) u^T."""
    kernel, u, mu, sigma = cache
    coefficient = np.sum(dnormalized * kernel) / sigma**3
    return dnormalized / sigma - coefficient * np.outer(mu, u).reshape(kernel.shape)


def spectral_norm_per_example_backward(dnormalized, cache):
    """spectral_norm_backward for a stack of per-example gradients (B, *kernel shape): the map
    is linear in its argument, so each example's gradient goes through it alone."""
    kernel, u, mu, sigma = cache
    batch = dnormalized.shape[0]
    coefficients = np.einsum("bi,i->b", dnormalized.reshape(batch, -1), kernel.reshape(-1)) / sigma**3
    direction = np.outer(mu, u).reshape(kernel.shape)
    return dnormalized / sigma - coefficients.reshape((batch,) + (1,) * kernel.ndim) * direction


# --- BatchNormalization (last axis is the feature axis, as Keras's axis=-1) -----------------


def batchnorm_train_forward(x, gamma, beta, epsilon):
    """Normalise with the batch's mean and biased variance; returns (out, mean, var, cache)."""
    flat = x.reshape(-1, x.shape[-1])
    mean = flat.mean(axis=0)
    centred = flat - mean
    var = np.einsum("nc,nc->c", centred, centred) / flat.shape[0]
    inv_std = 1.0 / np.sqrt(var + epsilon)
    normalised = centred
    normalised *= inv_std
    out = normalised * gamma
    out += beta
    return out.reshape(x.shape), mean, var, (normalised, gamma, inv_std)


def batchnorm_train_backward(dout, cache, need_input_grad=True):
    normalised, gamma, inv_std = cache
    flat = dout.reshape(-1, dout.shape[-1])
    count = flat.shape[0]
    dbeta = flat.sum(axis=0)
    dgamma = np.einsum("nc,nc->c", flat, normalised)
    dx = None
    if need_input_grad:
        # d/dx of gamma * (x - mean) * inv_std with mean and var taken over the batch
        dx = flat - dbeta / count
        dx -= normalised * (dgamma / count)
        dx *= gamma * inv_std
        dx = dx.reshape(dout.shape)
    return dx, dgamma, dbeta


def batchnorm_inference_forward(x, gamma, beta, moving_mean, moving_variance, epsilon):
    """An affine map with the moving statistics; returns (out, scale), the scale its gradient."""
    scale = gamma / np.sqrt(moving_variance + epsilon)
    return x * scale + (beta - moving_mean * scale), scale


def batchnorm_inference_backward(dout, scale):
    return dout * scale


def moving_average(moving, batch_value, momentum):
    """Keras: moving = moving * momentum + batch * (1 - momentum)."""
    return moving * momentum + batch_value * (1.0 - momentum)


# --- BatchNormalization + ReLU / LeakyReLU, fused ----------------------------------------
# The activation max(z, slope * z): ReLU at slope 0, LeakyReLU at 0 < slope < 1. The Numba
# kernel (kernels.bn_act_forward / _backward) does the pair in one pass each way; the
# `_reference` functions are its plain NumPy twin, the two layers' maths composed.


def batchnorm_act_train_forward(x, gamma, beta, epsilon, slope):
    """act(batchnorm(x)) with batch statistics; returns (out, mean, var, cache) as
    batchnorm_train_forward does."""
    flat = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    channels, dtype = flat.shape[1], flat.dtype
    out, normalised = np.empty_like(flat), np.empty_like(flat)
    mean, var, inv_std = np.empty(channels, dtype), np.empty(channels, dtype), np.empty(channels, dtype)
    kernels.bn_act_forward(flat, gamma, beta, float(epsilon), float(slope), out, normalised, mean, var, inv_std)
    return out.reshape(x.shape), mean, var, (normalised, gamma, beta, inv_std, slope)


def batchnorm_act_train_backward(dout, cache, need_input_grad=True):
    """Returns (dx or None, dgamma, dbeta)."""
    normalised, gamma, beta, inv_std, slope = cache
    flat = np.ascontiguousarray(dout, dtype=normalised.dtype).reshape(normalised.shape)
    channels = flat.shape[1]
    dgamma, dbeta = np.empty(channels, flat.dtype), np.empty(channels, flat.dtype)
    dx = np.empty_like(flat) if need_input_grad else np.empty((0, channels), flat.dtype)
    kernels.bn_act_backward(flat, normalised, gamma, beta, inv_std, float(slope), need_input_grad, dx, dgamma, dbeta)
    return (dx.reshape(dout.shape) if need_input_grad else None), dgamma, dbeta


def activation(z, slope):
    """max(z, slope * z) for 0 <= slope < 1: ReLU at slope 0, else LeakyReLU (plain NumPy)."""
    return np.where(z > 0, z, z * z.dtype.type(slope))


def activation_gradient(dout, z, slope):
    """d loss / d z of `activation` at z, from d loss / d out."""
    return np.where(z > 0, dout, dout * dout.dtype.type(slope))


def batchnorm_act_train_forward_reference(x, gamma, beta, epsilon, slope):
    out, mean, var, cache = batchnorm_train_forward(x, gamma, beta, epsilon)
    return activation(out, slope), mean, var, (cache, out, slope)


def batchnorm_act_train_backward_reference(dout, cache, need_input_grad=True):
    bn_cache, z, slope = cache
    return batchnorm_train_backward(activation_gradient(dout, z, slope), bn_cache, need_input_grad)


# --- per-pixel noise inputs (StyleGAN) ----------------------------------------------------
# A network's input vector holds its noise maps after the first `latent` values: the split
# takes them out (each a (B, side, side, 1) image), an injection adds one, scaled per channel.


def noise_inputs_split(x, latent, sides):
    """[latent | maps | rest] (B, latent + sum(side^2) + R) -> ([latent | rest], [maps])."""
    maps, start = [], latent
    for side in sides:
        maps.append(x[:, start : start + side * side].reshape(-1, side, side, 1))
        start += side * side
    return np.concatenate([x[:, :latent], x[:, start:]], axis=1), maps


def noise_inputs_split_backward(drest, dmaps, latent):
    """The input vector's gradient from those of [latent | rest] and of each map."""
    batch = drest.shape[0]
    return np.concatenate([drest[:, :latent], *(d.reshape(batch, -1) for d in dmaps), drest[:, latent:]], axis=1)


def noise_forward(x, noise, strength):
    """x + noise * strength: noise (B, H, W, 1) one value per pixel, strength (C,) per channel."""
    out = noise * strength
    out += x
    return out, (noise, strength)


def noise_backward(dout, cache, need_param_grads=True):
    """(dx, dnoise, dstrength or None); dx is dout itself (the add's gradient)."""
    noise, strength = cache
    flat = dout.reshape(-1, dout.shape[-1])
    dnoise = (flat @ strength).reshape(noise.shape)
    dstrength = noise.reshape(-1) @ flat if need_param_grads else None
    return dout, dnoise, dstrength


# --- conditioning on the class code --------------------------------------------------------
# c (B, K) is the class code the backends join to each network's input (backends.spec): the
# one-hot label, times the ramp's strength in training. No gradient flows to it.


def class_input_split(x, classes):
    """[rest | c] (B, R + K) -> (rest, c)."""
    return x[:, :-classes], x[:, -classes:]


def class_input_split_backward(drest, classes):
    """The input vector's gradient: the rest's, and zero for the code (it is not trained)."""
    return np.concatenate([drest, np.zeros((drest.shape[0], classes), drest.dtype)], axis=1)


def class_split(x, channels):
    """Image and label planes (B, H, W, C + K) -> (images (B, H, W, C), c (B, K) from pixel 0, 0)."""
    return x[..., :channels], np.ascontiguousarray(x[:, 0, 0, channels:])


def class_split_backward(dimages, classes):
    """The input's gradient: the images', and zero for the label planes."""
    zeros = np.zeros(dimages.shape[:-1] + (classes,), dimages.dtype)
    return np.concatenate([dimages, zeros], axis=-1)


def _per_channel(values, ndim):
    """(B, C) -> broadcastable against (B, ..., C) features of `ndim` dimensions."""
    return values.reshape(values.shape[:1] + (1,) * (ndim - 2) + values.shape[1:])


def class_affine_forward(x, code, gain, bias):
    """x * (1 + c @ gain) + c @ bias, per example and channel, broadcast over H and W."""
    scale = _per_channel(matmul(code, gain), x.ndim)
    out = x * (1 + scale)
    out += _per_channel(matmul(code, bias), x.ndim)
    return out, (x, code, scale)


def class_affine_backward(dout, cache, need_input_grad=True, need_param_grads=True):
    """(dx or None, dgain or None, dbias or None)."""
    x, code, scale = cache
    dx = dout * (1 + scale) if need_input_grad else None
    if not need_param_grads:
        return dx, None, None
    spatial = tuple(range(1, x.ndim - 1))
    per_example_scale = (dout * x).sum(axis=spatial) if spatial else dout * x
    per_example_shift = dout.sum(axis=spatial) if spatial else dout
    return dx, matmul(code.T, per_example_scale), matmul(code.T, per_example_shift)


def projection_forward(h, code, kernel, bias, embedding):
    """h @ kernel + bias, plus sum(h * (c @ embedding)) on the first output (the real/fake logit;
    Miyato & Koyama 2018); further outputs (auxiliary class logits) are the dense part alone."""
    out, dense_cache = dense_forward(h, kernel, bias)
    projected = matmul(code, embedding)
    out[:, :1] += (h * projected).sum(axis=1, keepdims=True)
    return out, (dense_cache, code, projected)


def projection_backward(dout, cache, need_input_grad=True, need_param_grads=True):
    """(dh or None, dkernel, dbias, dembedding; the last three None without need_param_grads)."""
    dense_cache, code, projected = cache
    h = dense_cache[0]
    dh, dkernel, dbias = dense_backward(dout, dense_cache, need_input_grad, need_param_grads)
    if need_input_grad:
        dh += dout[:, :1] * projected
    dembedding = matmul(code.T, dout[:, :1] * h) if need_param_grads else None
    return dh, dkernel, dbias, dembedding


def projection_per_example_grads(dout, cache):
    """Each example's projection weight gradients: kernel (B, in, 1), bias (B, 1), embedding
    (B, classes, in)."""
    dense_cache, code, _ = cache
    h = dense_cache[0]
    dkernel, dbias = dense_per_example_grads(dout, dense_cache)
    return dkernel, dbias, code[:, :, None] * (dout * h)[:, None, :]


# --- minibatch standard deviation (Karras et al. 2018) --------------------------------------

MBSTD_EPSILON = 1e-8


def minibatch_std_forward(x, group):
    """Append one channel: for each group of `group` consecutive images, the standard
    deviation of every feature over the group, averaged over H, W and C, the same value for
    every member and position. Returns (out, cache)."""
    n, h, w, c = x.shape
    if n % group:
        raise ValueError(f"minibatch std: a batch of {n} does not split into groups of {group}")
    y = x.reshape(n // group, group, h, w, c)
    centred = y - y.mean(axis=1, keepdims=True)
    std = np.sqrt((centred * centred).mean(axis=1) + x.dtype.type(MBSTD_EPSILON))  # M, H, W, C
    stat = std.mean(axis=(1, 2, 3))  # M
    plane = np.broadcast_to(np.repeat(stat, group)[:, None, None, None], (n, h, w, 1))
    return np.concatenate([x, plane.astype(x.dtype, copy=False)], axis=3), (centred, std, group)


def minibatch_std_backward(dout, cache):
    centred, std, group = cache
    m, _, h, w, c = centred.shape
    dx = dout[..., :c].copy()
    dstat = dout[..., c].reshape(m, group * h * w).sum(axis=1)  # each stat feeds G*H*W outputs
    dstd = (dstat / (h * w * c))[:, None, None, None]  # M, 1, 1, 1 (broadcast over H, W, C)
    # std = sqrt(mean_g(centred^2) + eps); centred = y - mean_g(y): the mean's term vanishes
    # because centred sums to zero over the group.
    dcentred = centred * (dstd / (group * std))[:, None]
    dx += dcentred.reshape(dx.shape)
    return dx


# --- activations ---------------------------------------------------------------------------


def relu_forward(x):
    """Returns (out, cache): the cache is where x > 0, where the gradient passes."""
    return np.maximum(x, 0), x > 0


def relu_backward(dout, positive):
    return dout * positive


def leaky_relu_forward(x, slope):
    """Returns (out, cache): the cache is the input itself, which decides each slope."""
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape, x.dtype)
    kernels.leaky_relu(x.reshape(-1), x.dtype.type(slope), out.reshape(-1))
    return out, x


def leaky_relu_backward(dout, x, slope):
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    dx = np.empty(x.shape, x.dtype)
    kernels.leaky_relu_backward(dout.reshape(-1), x.reshape(-1), x.dtype.type(slope), dx.reshape(-1))
    return dx


def tanh_forward(x):
    """Returns (out, cache): the cache is the output, which gives the gradient."""
    out = np.tanh(x)
    return out, out


def tanh_backward(dout, out):
    return dout * (1 - out * out)


# --- Dropout (Keras's inverted dropout) ----------------------------------------------------
# The layer draws uniform numbers from its own generator (dropout_uniform); a unit is kept
# where its draw is >= rate, and kept units are scaled by 1 / (1 - rate).


def dropout_uniform(rng: np.random.Generator, shape, dtype):
    """The uniform draws behind a dropout mask (dropout_mask keeps where they are >= rate)."""
    return rng.random(shape, dtype=np.float32 if dtype == np.float32 else np.float64)


def dropout_mask(uniform, rate, dtype):
    """1 / (1 - rate) where uniform >= rate, else 0, in `dtype`."""
    dtype = np.dtype(dtype)
    return (uniform >= rate).astype(dtype) * dtype.type(1.0 / (1.0 - rate))


def dropout_forward(x, uniform, rate):
    """Returns (out, cache): x times dropout_mask(uniform, rate); the cache is the mask."""
    mask = dropout_mask(uniform, rate, x.dtype)
    return x * mask, mask


def dropout_backward(dout, mask):
    return dout * mask


# --- LeakyReLU + Dropout, fused ------------------------------------------------------------
# One pass each way (kernels.leaky_dropout_forward / _backward). The uniform draws are those
# dropout_forward takes, from the same generator call, so the pair gives the same numbers fused
# or not; the `_reference` functions are the NumPy twin, the two layers' maths composed.


def leaky_dropout_forward(x, slope, uniform, rate):
    """Returns (out, cache): dropout(leaky_relu(x)) with the mask uniform >= rate."""
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape, x.dtype)
    scale = x.dtype.type(1.0 / (1.0 - rate))
    slope, rate = x.dtype.type(slope), uniform.dtype.type(rate)
    kernels.leaky_dropout_forward(x.reshape(-1), slope, uniform.reshape(-1), rate, scale, out.reshape(-1))
    return out, (x, slope, uniform, rate, scale)


def leaky_dropout_backward(dout, cache):
    x, slope, uniform, rate, scale = cache
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    dx = np.empty(x.shape, x.dtype)
    kernels.leaky_dropout_backward(dout.reshape(-1), x.reshape(-1), slope, uniform.reshape(-1), rate, scale, dx.reshape(-1))
    return dx


def leaky_dropout_forward_reference(x, slope, uniform, rate):
    mask = dropout_mask(uniform, rate, x.dtype)
    return activation(x, slope) * mask, (x, slope, mask)


def leaky_dropout_backward_reference(dout, cache):
    x, slope, mask = cache
    return activation_gradient(dout, x, slope) * mask


# --- Reshape and Flatten -------------------------------------------------------------------


def reshape_forward(x, shape):
    """Each example reshaped to `shape` (-1 allowed); the cache is the input's shape."""
    return x.reshape((x.shape[0],) + tuple(shape)), x.shape


def reshape_backward(dout, input_shape):
    return dout.reshape(input_shape)


# --- loss ----------------------------------------------------------------------------------


def sigmoid(x):
    """1 / (1 + exp(-x)) without overflow: exp only ever sees -|x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def bce_from_logits(logits, targets):
    """Mean binary cross-entropy of sigmoid(logits) against targets, and d loss / d logits.

    max(x, 0) - x*y + log1p(exp(-|x|)) is exact and finite for any finite x (|x| = 1e4 too).
    """
    logits = np.asarray(logits)
    targets = np.asarray(targets, dtype=logits.dtype)
    per_example = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    count = logits.size
    dlogits = (sigmoid(logits) - targets) / logits.dtype.type(count)
    return float(per_example.mean()), dlogits.astype(logits.dtype, copy=False)


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) (N, K) against integer labels (N,), and d loss /
    d logits; log-softmax with the row maximum taken out, so any finite logits are exact."""
    logits = np.asarray(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    loss = float(-(shifted[rows, labels] - log_sum[:, 0]).mean())
    dlogits = np.exp(shifted - log_sum)
    dlogits[rows, labels] -= 1.0
    return loss, (dlogits / logits.dtype.type(len(labels))).astype(logits.dtype, copy=False)


# --- Adam ----------------------------------------------------------------------------------


def adam_step_size(lr, beta_1, beta_2, step):
    """Keras 3 folds bias correction into the step: lr * sqrt(1 - beta_2^t) / (1 - beta_1^t), t = iterations + 1."""
    return lr * math.sqrt(1.0 - beta_2**step) / (1.0 - beta_1**step)
