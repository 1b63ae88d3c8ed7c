"""Central-difference gradient checks (CS231n style), for float64 tests of the core."""

from __future__ import annotations

import numpy as np


def numerical_gradient(loss_fn, array: np.ndarray, indices, step: float = 1e-6) -> np.ndarray:
    """(f(x + h e_i) - f(x - h e_i)) / 2h at each flat index in `indices`; `array` is
    perturbed in place and restored, so `loss_fn` must read it afresh on each call."""
    flat = array.reshape(-1)
    grads = np.empty(len(indices))
    for slot, index in enumerate(indices):
        original = flat[index]
        flat[index] = original + step
        plus = loss_fn()
        flat[index] = original - step
        minus = loss_fn()
        flat[index] = original
        grads[slot] = (plus - minus) / (2 * step)
    return grads


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """|a - n| / max(|a|, |n|) over the whole vector (0 when both are exactly zero)."""
    analytic, numeric = np.ravel(analytic), np.ravel(numeric)
    scale = max(np.linalg.norm(analytic), np.linalg.norm(numeric))
    return 0.0 if scale == 0 else float(np.linalg.norm(analytic - numeric) / scale)


def sample_indices(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    """All indices when the array is small, else `count` distinct random ones."""
    return np.arange(size) if size <= count else np.sort(rng.choice(size, count, replace=False))
