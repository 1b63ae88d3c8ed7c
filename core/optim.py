"""Adam with Keras 3 semantics, its state keyed by parameter name."""

from __future__ import annotations

import numpy as np

from core import functional as F
from core import kernels


class Adam:
    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        self.learning_rate, self.beta_1, self.beta_2, self.epsilon = learning_rate, beta_1, beta_2, epsilon
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}
        self.iterations = 0

    def build(self, parameters: dict[str, np.ndarray]) -> None:
        """Zero moments for every parameter (Keras creates them on the first step too)."""
        for name, weight in parameters.items():
            if name not in self.m:
                self.m[name] = np.zeros_like(weight)
                self.v[name] = np.zeros_like(weight)

    def step(self, parameters: dict[str, np.ndarray], gradients: dict[str, np.ndarray]) -> None:
        """One update of every parameter in place:
        t = iterations + 1; lr_t = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t);
        m += (g - m)(1 - beta_1); v += (g^2 - v)(1 - beta_2); w -= lr_t * m / (sqrt(v) + epsilon)."""
        self.build(parameters)
        step_size = F.adam_step_size(self.learning_rate, self.beta_1, self.beta_2, self.iterations + 1)
        for name, weight in parameters.items():
            gradient = gradients[name]
            if gradient.shape != weight.shape:
                raise ValueError(f"gradient of {name!r} has shape {gradient.shape}, expected {weight.shape}")
            scalar = weight.dtype.type
            kernels.adam_update(
                weight.reshape(-1),
                np.ascontiguousarray(gradient, dtype=weight.dtype).reshape(-1),
                self.m[name].reshape(-1),
                self.v[name].reshape(-1),
                scalar(step_size),
                scalar(self.beta_1),
                scalar(self.beta_2),
                scalar(self.epsilon),
            )
        self.iterations += 1
