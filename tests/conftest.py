"""Shared fixtures: one `backend_name` fixture parametrized over both backends.

Both backends are required dependencies: a backend that fails to import fails the tests that
use it (an error naming the import), never a skip.
"""

from __future__ import annotations

import importlib
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from backends import BACKENDS  # noqa: E402


@pytest.fixture(params=sorted(BACKENDS), ids=lambda name: f"backend={name}")
def backend_name(request):
    importlib.import_module(f"backends.{request.param}")
    return request.param
