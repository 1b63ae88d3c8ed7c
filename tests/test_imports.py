"""Importing the service does not start TensorFlow or Ray: a command that fails on bad input
answers at once, and `--help` is quick. Only a backend or a job that needs them imports them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

IMPORT_EVERY_SERVICE_MODULE = r"""
import importlib, pkgutil, sys
import service
for module in pkgutil.walk_packages(service.__path__, "service."):
    importlib.import_module(module.name)
heavy = sorted(name for name in ("tensorflow", "keras", "ray") if name in sys.modules)
print(",".join(heavy))
"""


def test_importing_every_service_module_loads_neither_tensorflow_nor_ray():
    done = subprocess.run([sys.executable, "-c", IMPORT_EVERY_SERVICE_MODULE], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", f"imported at module level: {done.stdout.strip()}"
