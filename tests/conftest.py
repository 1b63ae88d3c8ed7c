"""Shared set-up: a private home and cache for the whole run, TensorFlow on one thread, and one
`backend_name` fixture parametrized over both backends.

Both backends are required dependencies: a backend that fails to import fails the tests that
use it (an error naming the import), never a skip.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile

import pytest

# The user's home and the tool's cache (LESIONGAN_CACHE, else ~/.cache/lesiongan) are never
# touched: HOME and the XDG folders point into a temp folder for the whole run, including the
# subprocesses the tests start. Set when pytest configures, not in a fixture, because
# collection imports Keras (which writes ~/.keras) and some modules copy os.environ at import.
# TensorFlow runs with one intra-op thread in the tests and the processes they start, so the
# tests that compare runs bit for bit (stop and resume, replayed dropout) compare like with like:
# multi-threaded sums may differ in the last bits from run to run (README, "train").
TEST_ENVIRONMENT = ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "LESIONGAN_CACHE",
                    "LESIONGAN_TF_THREADS")
_saved_environment: dict[str, str | None] = {}


def pytest_configure(config):
    home = tempfile.mkdtemp(prefix="lesiongan-tests-home-")
    _saved_environment.update({name: os.environ.get(name) for name in TEST_ENVIRONMENT})
    _saved_environment["_home"] = home
    os.environ.update(HOME=home, XDG_CACHE_HOME=os.path.join(home, ".cache"), XDG_CONFIG_HOME=os.path.join(home, ".config"),
                      XDG_DATA_HOME=os.path.join(home, ".local", "share"),
                      LESIONGAN_CACHE=os.path.join(home, ".cache", "lesiongan"), LESIONGAN_TF_THREADS="1")


def pytest_unconfigure(config):
    home = _saved_environment.pop("_home", None)
    for name, value in _saved_environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _saved_environment.clear()
    if home:
        shutil.rmtree(home, ignore_errors=True)


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from backends import BACKENDS  # noqa: E402


@pytest.fixture(params=sorted(BACKENDS), ids=lambda name: f"backend={name}")
def backend_name(request):
    importlib.import_module(f"backends.{request.param}")
    return request.param


@pytest.fixture(scope="session", autouse=True)
def private_home():
    """The run's temp home (set in pytest_configure); fails if anything put the real one back."""
    home = os.environ["HOME"]
    assert os.path.basename(home).startswith("lesiongan-tests-home-"), home
    return home


@pytest.fixture
def single_numba_thread():
    """Tiny tensors on a shared 2-core box: Numba's parallel threads only add wake-up latency.
    A module asks for it with pytestmark = pytest.mark.usefixtures("single_numba_thread")."""
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(previous)
