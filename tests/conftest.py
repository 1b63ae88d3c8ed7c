"""Shared fixtures: one `backend_name` fixture parametrized over the installed backends."""

from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BACKEND_MODULES = {"numpy": "numba", "tf": "tensorflow"}


@pytest.fixture(params=sorted(BACKEND_MODULES), ids=lambda name: f"backend={name}")
def backend_name(request):
    name = request.param
    if importlib.util.find_spec(BACKEND_MODULES[name]) is None:
        pytest.skip(f"{BACKEND_MODULES[name]} is not installed")
    try:
        importlib.import_module(f"backends.{name}")
    except ImportError as e:  # the backend has not landed yet
        pytest.skip(f"backend {name} not available: {e}")
    return name
