"""A run directory whose one checkpoint holds random weights: for tests and benchmarks of the
generation machinery, where what G has learnt does not matter. Not a test module."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backends.config import GANConfig
from backends.spec import weight_shapes
from service.checkpoint import save_checkpoint
from service.rundir import create_run_dir


def init_random_run(out, config: GANConfig, backend: str = "numpy", seed: int = 0, class_names=()) -> Path:
    """Kernels ~ N(0, 0.05), BN at identity (gamma 1, moving variance 1), other weights 0.
    `class_names`: a conditional run's classes as its data would name them."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in weight_shapes(config).items():
        param = name.rsplit("/", 1)[-1]
        if param in ("gamma", "moving_variance"):
            weights[name] = np.ones(shape, np.float32)
        elif param == "kernel":
            weights[name] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
        else:
            weights[name] = np.zeros(shape, np.float32)
    data_info = {"source": "random initialisation", **({"class_names": list(class_names)} if class_names else {})}
    run_dir = create_run_dir(out, config, backend, data_info, {"init": seed})
    save_checkpoint(run_dir, 0, weights)
    return run_dir
