"""Joining or starting Ray, shared by generation, the audit and tuning.

Local Ray starts by itself (quiet, no dashboard); `address` or RAY_ADDRESS joins an existing
cluster. An address that does not answer is a UserError within a few seconds instead of
Ray's long reconnect loop.

Local Ray keeps its session (and its AF_UNIX sockets) under RAY_TMPDIR, else TMPDIR, else
/tmp; a socket path there may not pass 107 bytes, so when that folder is too long for a
session's sockets the session goes under a short folder of /tmp instead (`local_temp_dir`),
and when /tmp cannot be used either, one line says to set RAY_TMPDIR.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys

from service.errors import UserError

PROBE_TIMEOUT_S = 5.0
SOCKET_PATH_LIMIT = 103 if sys.platform == "darwin" else 107  # bytes of an AF_UNIX path, as Ray checks it
# What Ray adds to its root temp folder for a socket, at most: ray/session_<date>_<time>_<us>_<pid>/sockets/<name>.<n>
SOCKET_TAIL = len("/ray/session_2000-01-01_00-00-00_000000_4194304/sockets/plasma_store.999")
SHORT_TEMP_ROOT = "/tmp"
# Worker processes: keep framework logs quiet and their thread pools within the task's CPUs.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}


def thread_env(cpus: float) -> dict[str, str]:
    """Environment for a task given `cpus` cores: TF and Numba pools sized to it, not to the machine."""
    threads = str(max(1, int(cpus)))
    return {
        **QUIET_ENV,
        "LESIONGAN_TF_THREADS": threads,  # read by backends.tf.runtime
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": "1",
        "NUMBA_NUM_THREADS": threads,
        "OMP_NUM_THREADS": threads,
    }


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a 'host:port' or 'ray://host:port' address; None for 'auto'/'local'."""
    if address in ("auto", "local"):
        return None
    bare = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = bare.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UserError(f"--address {address!r} is not of the form host:port (or ray://host:port, auto)")
    return host.strip("[]"), int(port)


def probe_address(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """UserError unless something listens at `address` (bounded by `timeout` seconds)."""
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as e:
        raise UserError(f"Ray cluster at {address} is unreachable ({e.strerror or type(e).__name__})") from None


def local_temp_dir(environ=None) -> str | None:
    """The root temp folder for a local Ray session (ray.init's _temp_dir): None, Ray's own
    choice (RAY_TMPDIR, TMPDIR, /tmp, then "ray"), when its sockets fit SOCKET_PATH_LIMIT;
    else a folder of this user's under /tmp; UserError (one line) when that is too long or not
    writable either."""
    environ = os.environ if environ is None else environ
    system = environ.get("RAY_TMPDIR") or (environ.get("TMPDIR") if sys.platform.startswith("linux") else None) or "/tmp"
    if len(os.fsencode(system.rstrip("/"))) + SOCKET_TAIL <= SOCKET_PATH_LIMIT:
        return None
    short = os.path.join(SHORT_TEMP_ROOT, f"lesiongan-ray-{os.getuid()}")
    usable = os.path.isdir(SHORT_TEMP_ROOT) and os.access(SHORT_TEMP_ROOT, os.W_OK | os.X_OK)
    if not usable or len(os.fsencode(short)) + SOCKET_TAIL - len("/ray") > SOCKET_PATH_LIMIT:
        raise UserError(f"the temp folder {system} is too long for Ray's socket paths ({SOCKET_PATH_LIMIT} bytes at "
                        f"most) and {SHORT_TEMP_ROOT} is not writable; set RAY_TMPDIR to a short folder")
    return short


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None):
    """Yield with Ray connected; shut down on exit only what this call started.

    If Ray is already initialised in this process (a test fixture, a notebook) it is reused.
    """
    import ray

    if address:
        probe_address(address)  # even when Ray is up here: a wrong --address is still an error
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    options = dict(logging_level=logging.ERROR, include_dashboard=False, log_to_driver=True)
    if address:
        probe_address(address)  # RAY_ADDRESS too
        try:
            ray.init(address=address, **options)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
            raise UserError(f"cannot join the Ray cluster at {address}: {' '.join(str(e).split())[:200]}") from None
    else:
        # Local Ray: don't let RAY_ADDRESS="" or a stale variable redirect us, nor a cluster
        # another program started on this machine (plain ray.init() joins one; "local" never does).
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(address="local", num_cpus=num_cpus, object_store_memory=200 * 1024**2, _temp_dir=local_temp_dir(),
                 **options)
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1))
