"""Sequential: layers in order, with parameters, gradients and buffers under unique names.

A weight is called "<prefix><layer name>/<param>", e.g. "generator/conv_1/kernel" with
prefix "generator/"; those are the names `backends.spec` fixes for checkpoints.
"""

from __future__ import annotations

import numpy as np

from core.layers import Layer


class Sequential:
    def __init__(self, layers: list[Layer], prefix: str = ""):
        names = [layer.name for layer in layers]
        if len(set(names)) != len(names):
            raise ValueError(f"layer names must be unique, got {names}")
        self.layers = list(layers)
        self.prefix = prefix

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, dout: np.ndarray, need_input_grad: bool = True, need_param_grads: bool = True):
        """Backpropagate d loss / d output; fills every layer's `gradients` (unless
        need_param_grads is False) and returns d loss / d input (None if not needed)."""
        for index in range(len(self.layers) - 1, -1, -1):
            wants_input = need_input_grad or index > 0
            dout = self.layers[index].backward(dout, wants_input, need_param_grads)
        return dout

    def backward_per_example(self, dout: np.ndarray) -> dict[str, np.ndarray]:
        """Backpropagate d loss / d output, returning every parameter's gradient per example,
        {name: (B, *shape)}, instead of their sums over the batch (`gradients` is left as it
        was). For differentially private training: each example's gradient is clipped alone."""
        per_example = {}
        for index in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[index]
            for key, grads in layer.per_example_gradients(dout).items():
                per_example[f"{self.prefix}{layer.name}/{key}"] = grads
            if index > 0:
                dout = layer.backward(dout, True, need_param_grads=False)
        return {name: per_example[name] for name in self.parameters()}  # layer order

    def _named(self, attribute: str) -> dict[str, np.ndarray]:
        return {
            f"{self.prefix}{layer.name}/{key}": value
            for layer in self.layers
            for key, value in getattr(layer, attribute).items()
        }

    def parameters(self) -> dict[str, np.ndarray]:
        """Trainable weights by name (the live arrays: updating them updates the model)."""
        return self._named("parameters")

    def gradients(self) -> dict[str, np.ndarray]:
        return self._named("gradients")

    def buffers(self) -> dict[str, np.ndarray]:
        return self._named("buffers")

    def weights(self) -> dict[str, np.ndarray]:
        """Every weight in layer order, trainable or not (the checkpoint view)."""
        out = {}
        for layer in self.layers:
            for key, value in {**layer.parameters, **layer.buffers}.items():
                out[f"{self.prefix}{layer.name}/{key}"] = value
        return out
