"""The privacy accountant of DP-SGD on D's gradients from real images.

Each D step that reads real images is one Poisson-sampled Gaussian mechanism: every training
image joins the step's real batch with probability q = batch_size / N (the trainer samples so),
each real example's gradient is clipped to L2 norm C, and Gaussian noise of standard deviation
sigma * C is added to their sum (the backends). T such steps compose; dp_accounting's RDP
accountant (Mironov 2017; Mironov, Talwar and Zhang 2019) turns the composition into epsilon at
a given delta, under the add-or-remove-one neighbouring relation. G never reads real images: its
steps, the averaged generator and everything made from the weights are post-processing.

The accountant's state is three numbers (steps, q, sigma), so a run carries it in its
checkpoints (`to_arrays` / `from_arrays`) and resumes it exactly. dp_accounting is imported on
first use, so importing this module stays cheap.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np

from service.errors import UserError

ARRAY_PREFIX = "meta/privacy/"  # checkpoint entries: meta/privacy/steps, .../sampling_rate, .../noise_multiplier


def check_delta(delta: float, dataset_size: int) -> None:
    """delta must be below 1/N: a delta of 1/N allows a mechanism that publishes one of N
    records outright. UserError otherwise."""
    if not 0.0 < delta < 1.0 / dataset_size:
        raise UserError(
            f"dp_delta must be in (0, 1/N) = (0, {1.0 / dataset_size:.3g}) for {dataset_size} training images, got {delta}"
        )


def dp_event(sampling_rate: float, noise_multiplier: float, steps: int):
    """T Poisson-sampled Gaussian mechanisms with rate q and noise multiplier sigma."""
    import dp_accounting

    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), int(steps)
    )


def _rdp_accountant():
    from dp_accounting import rdp

    return rdp.RdpAccountant()


@functools.lru_cache(maxsize=4096)
def epsilon(sampling_rate: float, noise_multiplier: float, steps: int, delta: float) -> float:
    """Epsilon at `delta` after `steps` private D steps (0 after none)."""
    if steps <= 0:
        return 0.0
    accountant = _rdp_accountant()
    accountant.compose(dp_event(sampling_rate, noise_multiplier, steps))
    return float(accountant.get_epsilon(delta))


def calibrate_noise(sampling_rate: float, steps: int, target_epsilon: float, delta: float) -> float:
    """The smallest noise multiplier sigma whose `steps` steps spend at most `target_epsilon`
    (dp_accounting.calibrate_dp_mechanism over the RDP accountant)."""
    import dp_accounting

    if not target_epsilon > 0 or steps < 1:
        raise ValueError("calibrate_noise needs a target epsilon > 0 and at least one step")
    # the search tries small sigmas whose RDP terms do not converge at some orders; the accountant
    # drops those orders (a looser epsilon, never a smaller one) and says so on absl's log: quiet it
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        return float(
            dp_accounting.calibrate_dp_mechanism(
                _rdp_accountant, lambda sigma: dp_event(sampling_rate, sigma, steps), target_epsilon, delta
            )
        )
    finally:
        absl.setLevel(level)


@functools.lru_cache(maxsize=256)
def max_steps(sampling_rate: float, noise_multiplier: float, target_epsilon: float, delta: float) -> int:
    """The most steps whose epsilon stays within `target_epsilon` (epsilon grows with the steps:
    a doubling search, then bisection)."""
    if epsilon(sampling_rate, noise_multiplier, 1, delta) > target_epsilon:
        return 0
    low, high = 1, 2
    while epsilon(sampling_rate, noise_multiplier, high, delta) <= target_epsilon:
        low, high = high, high * 2
        if high > 2**40:
            return high  # a budget no run reaches
    while high - low > 1:  # epsilon(low) <= target < epsilon(high)
        middle = (low + high) // 2
        if epsilon(sampling_rate, noise_multiplier, middle, delta) <= target_epsilon:
            low = middle
        else:
            high = middle
    return low


def checkpoint_privacy(config, arrays: dict) -> dict | None:
    """What a private run's checkpoint has spent (PrivacyAccountant.summary), for the artefacts
    made from it (export, generation); None for a run trained without privacy."""
    if not config.private:
        return None
    accountant = PrivacyAccountant(
        float(arrays[ARRAY_PREFIX + "sampling_rate"]), float(arrays[ARRAY_PREFIX + "noise_multiplier"]),
        config.dp_delta, config.dp_epsilon,
    )
    accountant.restore(arrays)
    return accountant.summary()


@dataclass
class PrivacyAccountant:
    """A run's spent privacy: `steps` mechanisms of rate q and noise multiplier sigma so far,
    and the budget (`target_epsilon`, 0 for none) at `delta`."""

    sampling_rate: float
    noise_multiplier: float
    delta: float
    target_epsilon: float = 0.0
    steps: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.sampling_rate <= 1.0:
            raise ValueError(f"sampling rate must be in (0, 1], got {self.sampling_rate}")
        if not self.noise_multiplier > 0:
            raise ValueError(f"noise multiplier must be > 0, got {self.noise_multiplier}")

    def epsilon(self, steps: int | None = None) -> float:
        return epsilon(self.sampling_rate, self.noise_multiplier, self.steps if steps is None else int(steps), self.delta)

    @property
    def max_steps(self) -> int | None:
        """The steps the budget allows in all (None without a budget)."""
        if not self.target_epsilon:
            return None
        return max_steps(self.sampling_rate, self.noise_multiplier, self.target_epsilon, self.delta)

    def can_step(self) -> bool:
        """Whether one more private step stays within the budget."""
        limit = self.max_steps
        return limit is None or self.steps + 1 <= limit

    def record_step(self) -> None:
        self.steps += 1

    def summary(self) -> dict:
        """What a run's artefacts record: epsilon spent at delta, and the mechanism."""
        return {
            "epsilon": self.epsilon(),
            "delta": self.delta,
            "steps": self.steps,
            "sampling_rate": self.sampling_rate,
            "noise_multiplier": self.noise_multiplier,
            "target_epsilon": self.target_epsilon or None,
            "accountant": "RDP, Poisson-sampled Gaussian (dp_accounting)",
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            ARRAY_PREFIX + "steps": np.array(self.steps, dtype=np.int64),
            ARRAY_PREFIX + "sampling_rate": np.array(self.sampling_rate, dtype=np.float64),
            ARRAY_PREFIX + "noise_multiplier": np.array(self.noise_multiplier, dtype=np.float64),
        }

    def restore(self, arrays: dict) -> None:
        """Take the steps from a checkpoint; its q and sigma must be this run's (UserError)."""
        missing = [ARRAY_PREFIX + n for n in ("steps", "sampling_rate", "noise_multiplier") if ARRAY_PREFIX + n not in arrays]
        if missing:
            raise UserError(f"cannot resume a private run: the checkpoint has no {missing[0]!r} (it was not trained privately)")
        for name, mine in (("sampling_rate", self.sampling_rate), ("noise_multiplier", self.noise_multiplier)):
            theirs = float(arrays[ARRAY_PREFIX + name])
            if not math.isclose(theirs, mine, rel_tol=1e-12):
                raise UserError(f"cannot resume: the checkpoint's privacy {name} is {theirs}, this run's is {mine}")
        self.steps = int(arrays[ARRAY_PREFIX + "steps"])
