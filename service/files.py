"""Atomic file writes: a file appears whole at its path, or not at all.

Every writer of the project's outputs (checkpoints, config.json, PNG images and grids, plots,
manifests, metrics, reports) goes through `atomic_file`: it writes a temp file beside the
target, named `.tmp-*` (so listings of finished files never match it, and a folder's torn
leftovers are easy to sweep), then moves it into place with os.replace. On any error the
temp file is removed and the target is untouched. With `durable=True` the data and the
folder entry are also flushed to disk (fsync) before the call returns, for state a crash
must not lose (checkpoints, config).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

from service.errors import UserError

TEMP_PREFIX = ".tmp-"
# Read once at import: os.umask can only be read by setting it, which would race with threads.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, durable: bool = False):
    """Open a binary file that appears at `path` only when the block succeeds, whole.

    Creates the folder if needed. Raises OSError as open() would.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, temp_path = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(temp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; use the usual mode
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_path)
        raise
    if durable:
        _fsync_folder(folder)


def write_bytes(path: str | os.PathLike, data: bytes, durable: bool = False) -> None:
    """`data` at `path`, atomically; an OSError becomes a one-line UserError naming the file."""
    try:
        with atomic_file(path, durable) as f:
            f.write(data)
    except OSError as e:
        raise UserError(f"cannot write {os.fspath(path)}: {e.strerror or e}") from None


def write_text(path: str | os.PathLike, text: str, durable: bool = False) -> None:
    write_bytes(path, text.encode("utf-8"), durable)


def write_json(path: str | os.PathLike, payload, durable: bool = False) -> None:
    write_text(path, json.dumps(payload, indent=2) + "\n", durable)


def _fsync_folder(folder: str) -> None:
    """Make a rename in `folder` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
