"""The NumPy + Numba backend: the spec's DCGAN on the hand-written `core` engine."""

from backends.numpy.backend import NumpyBackend

__all__ = ["NumpyBackend"]
