"""The TensorFlow (Keras 3) backend. Importing it starts TensorFlow with thread pools sized to this machine."""

from backends.tf.backend import TFBackend

__all__ = ["TFBackend"]
