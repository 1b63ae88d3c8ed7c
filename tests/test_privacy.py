"""The DP-SGD accountant (service.privacy) against known values and its definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service import privacy
from service.errors import UserError

DELTA = 1e-5


def pld_epsilon(q, sigma, steps, delta):
    """The same composition through dp_accounting's other accountant (privacy loss
    distributions, Meiser and Mohammadi 2018; Koskela et al. 2020): tighter than RDP."""
    from dp_accounting import pld

    accountant = pld.PLDAccountant()
    accountant.compose(privacy.dp_event(q, sigma, steps))
    return accountant.get_epsilon(delta)


def test_abadi_mnist_medium_noise():
    """Abadi et al. 2016 (DP-SGD), MNIST with q = 0.01, sigma = 4 over 10,000 steps (100 epochs):
    the moments accountant there gave epsilon 1.26 at delta 1e-5 with fewer orders; RDP with
    the library's orders is at most that, and at least the tighter PLD accountant's value,
    within 15 % of it."""
    eps = privacy.epsilon(0.01, 4.0, 10_000, DELTA)
    tight = pld_epsilon(0.01, 4.0, 10_000, DELTA)
    assert tight <= eps <= 1.26
    assert eps <= 1.15 * tight
    assert eps == pytest.approx(1.035, abs=0.01)


def test_unsampled_gaussian_against_its_closed_form_rdp():
    """q = 1: the Gaussian mechanism's RDP is alpha / (2 sigma^2) per step (Mironov 2017);
    the classic conversion eps = min_alpha T alpha / (2 sigma^2) + log(1/delta) / (alpha - 1)
    is an upper bound that the library's (tighter) conversion must not exceed, and the exact
    epsilon of a Gaussian (the library's analytic Gaussian, Balle and Wang 2018) a lower bound."""
    import dp_accounting

    sigma, steps = 5.0, 10
    eps = privacy.epsilon(1.0, sigma, steps, DELTA)
    alphas = np.linspace(1.01, 200, 200_000)
    classic = np.min(steps * alphas / (2 * sigma**2) + math.log(1 / DELTA) / (alphas - 1))
    # T Gaussians of noise sigma are one Gaussian of noise sigma / sqrt(T)
    exact = dp_accounting.get_epsilon_gaussian(sigma / math.sqrt(steps), DELTA)
    assert exact <= eps <= classic
    assert eps == pytest.approx(exact, rel=0.15)


@pytest.mark.parametrize("q, sigma", [(0.02, 1.1), (0.05, 2.0)])
def test_rdp_bounds_pld(q, sigma):
    eps = privacy.epsilon(q, sigma, 500, DELTA)
    tight = pld_epsilon(q, sigma, 500, DELTA)
    assert tight * 0.98 <= eps <= tight * 1.5


def test_monotone_in_steps_noise_rate_and_delta():
    base = privacy.epsilon(0.02, 1.5, 200, DELTA)
    assert privacy.epsilon(0.02, 1.5, 0, DELTA) == 0.0
    assert privacy.epsilon(0.02, 1.5, 400, DELTA) > base  # more steps spend more
    assert privacy.epsilon(0.02, 3.0, 200, DELTA) < base  # more noise spends less
    assert privacy.epsilon(0.04, 1.5, 200, DELTA) > base  # a higher sampling rate spends more
    assert privacy.epsilon(0.02, 1.5, 200, 1e-7) > base  # a smaller delta costs epsilon


def test_calibrate_noise_finds_the_sigma_of_a_known_epsilon():
    eps = privacy.epsilon(0.01, 4.0, 10_000, DELTA)
    assert privacy.calibrate_noise(0.01, 10_000, eps, DELTA) == pytest.approx(4.0, rel=1e-4)
    sigma = privacy.calibrate_noise(0.05, 300, 2.0, DELTA)
    assert privacy.epsilon(0.05, sigma, 300, DELTA) <= 2.0 + 1e-6
    assert privacy.epsilon(0.05, sigma * 0.99, 300, DELTA) > 2.0


def test_max_steps_is_the_last_step_within_budget():
    limit = privacy.max_steps(0.05, 1.5, 1.0, DELTA)
    assert limit > 0
    assert privacy.epsilon(0.05, 1.5, limit, DELTA) <= 1.0 < privacy.epsilon(0.05, 1.5, limit + 1, DELTA)
    assert privacy.max_steps(0.5, 0.3, 0.01, DELTA) == 0


@pytest.mark.parametrize("delta", [0.0, 1e-2, 1 / 1000])
def test_delta_must_be_below_one_over_n(delta):
    with pytest.raises(UserError, match="dp_delta"):
        privacy.check_delta(delta, 1000)
    privacy.check_delta(0.999 / 1000, 1000)


def test_accountant_state_round_trips_and_refuses_another_mechanism():
    accountant = privacy.PrivacyAccountant(0.05, 1.5, DELTA, target_epsilon=1.0)
    for _ in range(7):
        accountant.record_step()
    again = privacy.PrivacyAccountant(0.05, 1.5, DELTA, target_epsilon=1.0)
    again.restore(accountant.to_arrays())
    assert again.steps == 7 and again.epsilon() == accountant.epsilon()
    assert again.summary()["epsilon"] == pytest.approx(privacy.epsilon(0.05, 1.5, 7, DELTA))
    other = privacy.PrivacyAccountant(0.05, 2.0, DELTA)
    with pytest.raises(UserError, match="noise_multiplier"):
        other.restore(accountant.to_arrays())
    with pytest.raises(UserError, match="not trained privately"):
        other.restore({})


def test_budget_allows_exactly_max_steps():
    accountant = privacy.PrivacyAccountant(0.05, 1.5, DELTA, target_epsilon=1.0)
    taken = 0
    while accountant.can_step():
        accountant.record_step()
        taken += 1
    assert taken == privacy.max_steps(0.05, 1.5, 1.0, DELTA)
    assert accountant.epsilon() <= 1.0


# --------------------------------------------------------------------------- config and preset

from backends.config import ConfigError, GANConfig  # noqa: E402
from backends.presets import preset_config  # noqa: E402


def test_privacy_fields_round_trip_and_older_configs_load_without_privacy():
    cfg = GANConfig(image_size=32, dp_noise=1.3, dp_clip=0.5, dp_delta=1e-6, dp_epsilon=4.0)
    assert cfg.private
    assert GANConfig.from_dict(cfg.to_dict()) == cfg
    older = {k: v for k, v in GANConfig(image_size=32).to_dict().items() if not k.startswith("dp_")}
    loaded = GANConfig.from_dict(older)
    assert not loaded.private and loaded.dp_noise == 0.0 and loaded.dp_clip == 1.0 and loaded.dp_delta == 1e-5


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(dp_noise=-1.0), "dp_noise"),
        (dict(dp_noise=1.0, dp_clip=0.0), "dp_clip"),
        (dict(dp_noise=1.0, dp_delta=0.0), "dp_delta"),
        (dict(dp_noise=1.0, dp_delta=1.0), "dp_delta"),
        (dict(dp_noise=1.0, dp_epsilon=-1.0), "dp_epsilon"),
        (dict(dp_epsilon=3.0), "dp_epsilon needs dp_noise"),
        (dict(dp_noise=1.0, minibatch_std=4, batch_size=8), "minibatch_std"),
        (dict(dp_noise=1.0, pack=2, batch_size=8), "pack"),
        (dict(dp_noise=1.0, num_classes=2, class_balanced=True), "class_balanced"),
    ],
)
def test_bad_privacy_settings_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        GANConfig(image_size=32, **changes)


@pytest.mark.parametrize("size", [32, 64])
def test_dp_preset_is_default_with_a_private_discriminator(size):
    private, default = preset_config("dp", image_size=size), preset_config("default", image_size=size)
    assert private.private and private.dp_epsilon > 0 and private.minibatch_std == 0 and private.pack == 1
    different = {k for k, v in private.to_dict().items() if default.to_dict()[k] != v}
    assert different == {"preset", "minibatch_std", "dp_noise", "dp_epsilon"}
