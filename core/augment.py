"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN
Training"): random augmentations applied to every image D sees, real and fake, with
gradients flowing through them to G.

Policies, as in the authors' code (NHWC here):
  color:       brightness x + U(-0.5, 0.5); saturation (x - mean_c) * U(0, 2) + mean_c with
               mean_c the per-pixel channel mean; contrast (x - mean) * U(0.5, 1.5) + mean
               with mean over the whole image.
  translation: shift by up to 1/8 of the side (integers in [-s, s], s = int(side/8 + 0.5)),
               zero fill.
  cutout:      zero a square of half the side (int(side/2 + 0.5)) centred at a random pixel,
               clipped at the border.

Every augmentation is linear in the image once its random parameters are drawn, so
`draw_augmentations` draws them (from the caller's Generator), `augment_forward` applies
them and `augment_backward` applies the adjoint.
"""

from __future__ import annotations

import numpy as np

POLICIES = ("color", "translation", "cutout")


def draw_augmentations(rng: np.random.Generator, policy, batch: int, height: int, width: int) -> list:
    """The random parameters of one pass, one draw per image: [(operation, params), ...]."""
    ops = []
    for name in policy:
        if name == "color":
            ops.append(("brightness", rng.uniform(-0.5, 0.5, batch)))
            ops.append(("saturation", rng.uniform(0.0, 2.0, batch)))
            ops.append(("contrast", rng.uniform(0.5, 1.5, batch)))
        elif name == "translation":
            shift_y, shift_x = int(height * 0.125 + 0.5), int(width * 0.125 + 0.5)
            ops.append(
                ("translation", (rng.integers(-shift_y, shift_y + 1, batch), rng.integers(-shift_x, shift_x + 1, batch)))
            )
        elif name == "cutout":
            ops.append(("cutout", cutout_mask(rng, batch, height, width)))
        else:
            raise ValueError(f"unknown DiffAugment policy {name!r}; choose from {', '.join(POLICIES)}")
    return ops


def cutout_mask(rng: np.random.Generator, batch: int, height: int, width: int) -> np.ndarray:
    """(batch, height, width, 1) of ones with a zeroed square of half the side per image."""
    size_y, size_x = int(height * 0.5 + 0.5), int(width * 0.5 + 0.5)
    centre_y = rng.integers(0, height + (1 - size_y % 2), batch)
    centre_x = rng.integers(0, width + (1 - size_x % 2), batch)
    mask = np.ones((batch, height, width, 1))
    for b in range(batch):
        top, left = max(centre_y[b] - size_y // 2, 0), max(centre_x[b] - size_x // 2, 0)
        bottom = min(centre_y[b] - size_y // 2 + size_y, height)
        right = min(centre_x[b] - size_x // 2 + size_x, width)
        mask[b, top:bottom, left:right] = 0.0
    return mask


def _per_image(values: np.ndarray, dtype) -> np.ndarray:
    return np.asarray(values, dtype=dtype)[:, None, None, None]


def _shift_windows(offset: int, size: int):
    """Output slice and source slice along one axis for out[i] = in[i + offset], zero fill."""
    start, stop = max(0, -offset), min(size, size - offset)
    return slice(start, max(stop, start)), slice(start + offset, max(stop, start) + offset)


def translate(x: np.ndarray, shifts, inverse: bool = False) -> np.ndarray:
    """out[b, i, j] = x[b, i + ty, j + tx] (0 outside); inverse=True is the adjoint."""
    out = np.zeros_like(x)
    for b, (ty, tx) in enumerate(zip(*shifts)):
        rows_out, rows_in = _shift_windows(int(ty), x.shape[1])
        cols_out, cols_in = _shift_windows(int(tx), x.shape[2])
        if inverse:
            out[b, rows_in, cols_in] = x[b, rows_out, cols_out]
        else:
            out[b, rows_out, cols_out] = x[b, rows_in, cols_in]
    return out


def _mix_with_mean(x, factor, axes):
    """(x - mean) * factor + mean = factor * x + (1 - factor) * mean, mean over `axes`."""
    return factor * x + (1 - factor) * x.mean(axis=axes, keepdims=True)


def augment_forward(x: np.ndarray, ops: list) -> np.ndarray:
    for name, params in ops:
        if name == "brightness":
            x = x + _per_image(params, x.dtype)
        elif name == "saturation":
            x = _mix_with_mean(x, _per_image(params, x.dtype), (3,))
        elif name == "contrast":
            x = _mix_with_mean(x, _per_image(params, x.dtype), (1, 2, 3))
        elif name == "translation":
            x = translate(x, params)
        elif name == "cutout":
            x = x * params.astype(x.dtype)
    return x


def augment_backward(dout: np.ndarray, ops: list) -> np.ndarray:
    """The adjoint of `augment_forward` with the same parameters (each map is linear;
    mixing with a mean is self-adjoint, the shift's adjoint is the opposite shift)."""
    for name, params in reversed(ops):
        if name == "saturation":
            dout = _mix_with_mean(dout, _per_image(params, dout.dtype), (3,))
        elif name == "contrast":
            dout = _mix_with_mean(dout, _per_image(params, dout.dtype), (1, 2, 3))
        elif name == "translation":
            dout = translate(dout, params, inverse=True)
        elif name == "cutout":
            dout = dout * params.astype(dout.dtype)
        # brightness adds a constant: its adjoint is the identity
    return dout
