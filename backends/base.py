"""The Backend interface: what the trainer and the generator need, and no more.

Arrays cross the seam as NumPy: images float32 NHWC in [-1, 1], z float (B, latent_dim),
labels int (B,) class indices or None. Weights and optimizer state are flat dicts of NumPy
arrays with the names of `backends.spec`, identical in every backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from backends.config import GANConfig


class Backend(ABC):
    name: str = "?"

    def __init__(self, config: GANConfig):
        self.config = config

    # --- training ---
    @abstractmethod
    def d_step(self, real: np.ndarray, z: np.ndarray, labels: np.ndarray | None = None) -> float:
        """One Adam update of D on [real; G(z)] with targets [1 - smoothing; 0]; returns D's loss."""

    @abstractmethod
    def g_step(self, z: np.ndarray, labels: np.ndarray | None = None) -> float:
        """One Adam update of G so that D calls G(z) real; returns G's loss."""

    @abstractmethod
    def train_step(
        self, real: np.ndarray, z: np.ndarray, labels: np.ndarray | None = None
    ) -> tuple[float, float]:
        """A D step then a G step on the same batch and noise (fused where the backend can,
        with G's forward pass shared); returns (d_loss, g_loss)."""

    def set_learning_rate_scale(self, scale: float) -> None:
        """Multiply both configured learning rates by `scale` (in [0, 1]) for the steps that
        follow, until the next call. Not part of the checkpointed state: the trainer sets it
        from its progress before each batch."""
        raise NotImplementedError(f"the {self.name} backend has no learning-rate schedule")

    # --- inference ---
    @abstractmethod
    def generate(self, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """G in inference mode: float32 NHWC images in [-1, 1]."""

    @abstractmethod
    def discriminate(self, images: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """D's logits in inference mode (no dropout), shape (B,)."""

    # --- inspection (parity tests) ---
    @abstractmethod
    def compute_gradients(
        self, real: np.ndarray, z: np.ndarray, labels: np.ndarray | None = None
    ) -> dict:
        """Losses and gradients at the current weights, changing nothing.

        Returns {"d_loss": float, "g_loss": float, "grads": {weight name: array}}: D's
        gradients of d_loss on [real; G(z)], G's gradients of g_loss on D(G(z)), for every
        trainable weight, both evaluated at the same (current) weights, G in training mode.
        """

    # --- state ---
    @abstractmethod
    def get_weights(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def set_weights(self, weights: dict[str, np.ndarray]) -> None: ...

    @abstractmethod
    def get_optimizer_state(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None: ...

    @abstractmethod
    def get_rng_state(self) -> dict[str, np.ndarray]:
        """The backend's own random state (dropout, augmentation) as named arrays."""

    @abstractmethod
    def set_rng_state(self, state: dict[str, np.ndarray]) -> None: ...


def check_labels(labels, count: int, num_classes: int) -> np.ndarray | None:
    """Validated int class indices for a batch of `count`, or None for an unconditional model
    (labels carry no information for it). ValueError names what is wrong."""
    if num_classes == 0:
        return None
    if labels is None:
        raise ValueError(f"this model is conditional on {num_classes} classes: labels are required")
    labels = np.asarray(labels)
    if labels.shape != (count,) or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be {count} integer class indices, got shape {labels.shape} {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    return labels


def check_groups(count: int, config: GANConfig) -> None:
    """A batch D sees must split into whole groups (GANConfig.d_group_size); checked before any
    state changes."""
    size = config.d_group_size
    if count % size:
        raise ValueError(
            f"D judges groups of {size} images (pack {config.pack}, minibatch_std {config.minibatch_std}); "
            f"got a batch of {count}, not a multiple"
        )


def whole_groups_chunk(limit: int, group: int) -> int:
    """A chunk size for D's inference that never splits a group: the largest multiple of
    `group` not above `limit`, and at least one group."""
    return max(limit // group, 1) * group


def check_weights(expected: dict[str, tuple], given: dict[str, np.ndarray], what: str = "weights") -> None:
    """Raise ValueError naming the first missing, unexpected or misshapen entry."""
    missing = [n for n in expected if n not in given]
    if missing:
        raise ValueError(f"{what}: {len(missing)} missing, e.g. {missing[0]!r}")
    extra = [n for n in given if n not in expected]
    if extra:
        raise ValueError(f"{what}: {len(extra)} unexpected, e.g. {extra[0]!r}")
    for name, shape in expected.items():
        if tuple(np.shape(given[name])) != tuple(shape):
            raise ValueError(f"{what}: {name!r} has shape {np.shape(given[name])}, expected {tuple(shape)}")
