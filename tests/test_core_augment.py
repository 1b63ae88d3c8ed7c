"""DiffAugment: what each policy does, and its gradients (float64 central differences)."""

from __future__ import annotations

import numpy as np
import pytest

from core import augment
from core.gradcheck import numerical_gradient, relative_error


def test_translation_shifts_with_zero_fill():
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    out = augment.translate(x, (np.array([1]), np.array([-1])))  # out[i, j] = x[i + 1, j - 1]
    expected = np.zeros((4, 4))
    expected[:3, 1:] = x[0, 1:, :3, 0]
    np.testing.assert_array_equal(out[0, :, :, 0], expected)


def test_draws_follow_the_paper_ranges():
    rng = np.random.default_rng(0)
    ops = dict(augment.draw_augmentations(rng, ("color", "translation", "cutout"), 500, 32, 32))
    assert -0.5 <= ops["brightness"].min() and ops["brightness"].max() <= 0.5
    assert 0 <= ops["saturation"].min() and ops["saturation"].max() <= 2
    assert 0.5 <= ops["contrast"].min() and ops["contrast"].max() <= 1.5
    shifts = np.concatenate(ops["translation"])
    assert shifts.min() == -4 and shifts.max() == 4  # 1/8 of 32
    zeroed = (ops["cutout"] == 0).sum(axis=(1, 2, 3))
    assert zeroed.max() == 16 * 16 and zeroed.min() > 0  # a half-side square, clipped at borders


def test_color_keeps_a_grey_image_grey_and_contrast_keeps_the_mean():
    x = np.full((1, 4, 4, 3), 0.25)
    out = augment.augment_forward(x, [("saturation", np.array([1.7]))])
    np.testing.assert_allclose(out, x)  # no colour to saturate
    rng = np.random.default_rng(1)
    y = rng.standard_normal((2, 4, 4, 3))
    out = augment.augment_forward(y, [("contrast", np.array([0.6, 1.4]))])
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), y.mean(axis=(1, 2, 3)))


@pytest.mark.parametrize(
    "policy", [("color",), ("translation",), ("cutout",), ("color", "translation", "cutout")], ids=str
)
def test_augmentation_gradients(policy):
    rng = np.random.default_rng(len(policy))
    x = rng.standard_normal((3, 8, 6, 3))
    ops = augment.draw_augmentations(rng, policy, 3, 8, 6)
    upstream = rng.standard_normal(x.shape)
    analytic = augment.augment_backward(upstream, ops)
    numeric = numerical_gradient(lambda: float(np.sum(augment.augment_forward(x, ops) * upstream)), x, np.arange(x.size))
    assert relative_error(analytic, numeric) < 1e-6
