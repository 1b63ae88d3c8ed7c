"""Backends: one DCGAN, two implementations. `get(name, config)` imports a framework only when asked."""

from __future__ import annotations

from backends.base import Backend
from backends.config import GANConfig

BACKENDS = ("numpy", "tf")
DEFAULT_BACKEND = "tf"  # what every command and request uses unless told


def get(name: str, config: GANConfig) -> Backend:
    if name == "numpy":
        from backends.numpy import NumpyBackend

        return NumpyBackend(config)
    if name == "tf":
        from backends.tf import TFBackend

        return TFBackend(config)
    raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


__all__ = ["Backend", "BACKENDS", "DEFAULT_BACKEND", "GANConfig", "get"]
