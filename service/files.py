"""Every write the tool makes, in one place: atomic files, output folders, locks, safe copies.

Atomic files. Every writer of the project's outputs (checkpoints, config.json, PNG images and
grids, plots, manifests, metrics, reports, exported models) goes through `atomic_file` (or
`temp_path_beside` where a library must write the file itself): it writes a temp file beside
the target, named `.tmp-*` (so listings of finished files never match it, and a folder's torn
leftovers are easy to sweep), then moves it into place with os.replace. On any error the temp
file is removed and the target is untouched. With `durable=True` the data and the folder entry
are also flushed to disk (fsync) before the call returns, for state a crash must not lose
(checkpoints, config).

Output folders. A command writes only into a folder it made: `claim_output_folder` creates
the folder with a marker file (MARKER_FILE: which command made it), or accepts one whose marker
names the same command, or an empty folder; any other existing folder is refused with one line,
nothing touched. A folder made before markers existed is accepted where the caller recognises
its own layout (`ours_if`).

Symbolic links. Nothing is written through a link: an output path, a claimed folder or a
subfolder that is a symbolic link is refused (lstat, O_NOFOLLOW), and `copy_regular_file` copies
only a regular file inside the folder the caller expects.

Locks. `output_lock` makes a second writer on the same folder fail fast, naming the process
that holds it. It is an flock on LOCK_FILE, which the kernel drops when its holder dies, so a
lock left by a killed process is taken over without a race; the file records the holder's pid
for the message. The lock file is opened by its own name in the folder, never resolved
(no realpath): a link, a FIFO, a folder or a file with another hard link in its place is a
one-line error that touches nothing, and release deletes only the file the lock opened.

Opening. Every file the tool opens by name for writing or for its own bookkeeping goes through
`open_regular`: no link followed (O_NOFOLLOW), no wait on a FIFO (O_NONBLOCK), and anything but
a regular file refused.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import stat
import sys
import tempfile
import threading
from pathlib import Path

from service.errors import UserError

TEMP_PREFIX = ".tmp-"
_NO_FOLLOW_NO_WAIT = os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
MARKER_FILE = ".lesiongan.json"  # {"tool": "lesiongan", "command": ..., "created": ...}
LOCK_FILE = ".lesiongan.lock"
TOOL = "lesiongan"
# Read once at import: os.umask can only be read by setting it, which would race with threads.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


# --------------------------------------------------------------------------- atomic files


def refuse_link(path: str | os.PathLike, what: str | None = None) -> None:
    """UserError if `path` is a symbolic link (live or dangling): the tool never writes through one."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise UserError(f"cannot write {os.fspath(path)}: {e.strerror or e}") from None  # e.g. a file as its folder
    if stat.S_ISLNK(mode):
        raise UserError(f"{what or os.fspath(path)} is a symbolic link; give a path that is not a link "
                        "(the tool never writes through one)")


def open_regular(path: str | os.PathLike, flags: int, mode: int = 0o666, what: str | None = None,
                 single_link: bool = False) -> int:
    """A descriptor of the regular file at `path`, opened with `flags` plus O_NOFOLLOW and
    O_NONBLOCK (a FIFO never blocks the open); UserError for a link, a FIFO, a folder, a device
    or, with `single_link`, a file that has another hard link (its data belongs elsewhere too).

    Nothing is truncated before the checks: O_TRUNC in `flags` is applied after them.
    """
    shown = what or os.fspath(path)
    try:
        fd = os.open(path, (flags & ~os.O_TRUNC) | _NO_FOLLOW_NO_WAIT, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"{shown} is a symbolic link; remove it (the tool never opens a link "
                            "in its place)") from None
        if e.errno in (errno.ENXIO, errno.EISDIR):
            raise UserError(f"{shown} is not a regular file; remove it") from None
        raise UserError(f"cannot open {shown}: {e.strerror or e}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{shown} is not a regular file; remove it")
        if single_link and info.st_nlink > 1:
            raise UserError(f"{shown} has another hard link (its data is also elsewhere); remove it")
        os.set_blocking(fd, True)
        if flags & os.O_TRUNC:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, durable: bool = False):
    """Open a binary file that appears at `path` only when the block succeeds, whole.

    Creates the folder if needed. Refuses (UserError) a `path` that is a symbolic link.
    Raises OSError as open() would.
    """
    with temp_path_beside(path, durable) as temp_path:
        fd = os.open(temp_path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "wb") as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())


@contextlib.contextmanager
def temp_path_beside(path: str | os.PathLike, durable: bool = False, folder: bool = False):
    """A fresh temp path in `path`'s folder for a library that writes a file (or, with
    `folder=True`, a folder) itself; moved to `path` when the block succeeds, removed otherwise.

    The temp file exists, empty, with mode 0600 (mkstemp); a library may replace it. A folder
    target must not exist: the move is a rename, which never merges into an existing folder.
    """
    path = os.fspath(path)
    refuse_link(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    if folder:
        temp_path = tempfile.mkdtemp(dir=parent, prefix=TEMP_PREFIX, suffix=suffix)
    else:
        fd, temp_path = tempfile.mkstemp(dir=parent, prefix=TEMP_PREFIX, suffix=suffix)
        os.close(fd)
    try:
        yield temp_path
        if folder:
            os.chmod(temp_path, 0o777 & ~_UMASK)
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, "already exists", path)
            os.rename(temp_path, path)
        else:
            os.chmod(temp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; use the usual mode
            refuse_link(path)  # a link made while we wrote is not replaced either
            os.replace(temp_path, path)
    except BaseException:
        _remove_tree(temp_path)
        raise
    if durable:
        _fsync_folder(parent)


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


@contextlib.contextmanager
def append_lines(path: str | os.PathLike):
    """A text file opened for appending (metrics.jsonl): never through a link (O_NOFOLLOW)."""
    fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        yield f


def make_folder(path: str | os.PathLike) -> Path:
    """A subfolder of an output folder (checkpoints/, samples/...): created if missing; a link
    or a file in its place is refused."""
    path = Path(path)
    refuse_link(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{path} exists and is not a folder") from None
    except OSError as e:
        raise UserError(f"cannot create {path}: {e.strerror or e}") from None
    return path


def remove_file(path: str | os.PathLike) -> None:
    """Delete a file the caller wrote (an old checkpoint, a torn temp file, a stale part);
    a link or a missing file is left alone."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return
        os.unlink(path)


def copy_regular_file(source: str | os.PathLike, target: str | os.PathLike, inside: str | os.PathLike) -> bool:
    """Copy `source` to `target` (atomically) only if it is a regular file, not a link, whose
    real path lies inside the folder `inside`; else warn on stderr and return False."""
    source = Path(source)
    try:
        fd = os.open(source, os.O_RDONLY | _NO_FOLLOW_NO_WAIT)
    except OSError as e:
        reason = "a symbolic link" if e.errno == errno.ELOOP else (e.strerror or str(e))
        print(f"warning: {source} not copied: {reason}", file=sys.stderr)
        return False
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            print(f"warning: {source} not copied: not a regular file", file=sys.stderr)
            return False
        real, folder = os.path.realpath(source), os.path.realpath(inside)
        if os.path.commonpath([real, folder]) != folder:
            print(f"warning: {source} not copied: it lies outside {inside}", file=sys.stderr)
            return False
        data = f.read()
    write_bytes(target, data)
    return True


# --------------------------------------------------------------------------- output folders


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The marker of a folder the tool made (a regular file, read without following a link), or None."""
    try:
        fd = open_regular(Path(folder) / MARKER_FILE, os.O_RDONLY)
    except UserError:  # missing, a link, a FIFO...: not a marker of ours
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            marker = json.loads(f.read(1 << 16))
        except ValueError:
            return None
    return marker if isinstance(marker, dict) and marker.get("tool") == TOOL else None


def write_marker(folder: str | os.PathLike, command: str) -> None:
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    write_json(Path(folder) / MARKER_FILE, {"tool": TOOL, "command": command, "created": created})


def claim_output_folder(path: str | os.PathLike, command: str, option: str = "--out", ours_if=None) -> Path:
    """The output folder of `command` at `path`, made or recognised; UserError for any other.

    Creates `path` (and its parents) with a marker if it does not exist; accepts a folder
    whose marker names `command`, an empty folder (marked now), or a folder for which
    `ours_if(path)` is true (a layout this command wrote before markers existed; marked now).
    Refuses a link, a file, a folder made by another command and any other non-empty folder.
    """
    folder = Path(path)
    shown = f"{option} {folder}"
    if check_output_folder(folder, command, option, ours_if):
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(folder)
    except FileExistsError:  # made meanwhile by someone else: check it again
        if check_output_folder(folder, command, option, ours_if):
            return folder
    except OSError as e:
        raise UserError(f"cannot create {shown}: {e.strerror or e}") from None
    write_marker(folder, command)
    return folder


def check_output_folder(path: str | os.PathLike, command: str, option: str = "--out", ours_if=None) -> bool:
    """claim_output_folder's checks, writing nothing: True if `path` is `command`'s folder
    already (its marker), False if it may be claimed (missing, empty, or `ours_if`), else UserError."""
    folder = Path(path)
    shown = f"{option} {folder}"
    refuse_link(folder, shown)
    if not os.path.lexists(folder):
        return False
    if not folder.is_dir():
        raise UserError(f"{shown} exists and is not a folder")
    marker = read_marker(folder)
    if marker is not None:
        if marker.get("command") != command:
            raise UserError(f"{shown} is the output folder of `{marker.get('command')}`, not of `{command}`; "
                            "choose another folder")
        return True
    try:
        empty = not any(os.scandir(folder))
    except OSError as e:
        raise UserError(f"cannot read {shown}: {e.strerror or e}") from None
    if empty or (ours_if is not None and ours_if(folder)):
        return False
    raise UserError(f"{shown} is a folder the tool did not make (it holds other files); "
                    "choose a new or empty folder")


# --------------------------------------------------------------------------- locks

_held: dict[tuple, list] = {}  # (device, inode) of a locked folder -> [fd, depth]; a process re-enters its own lock
_held_guard = threading.Lock()


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, what: str = "this output"):
    """Hold the folder's lock for the block; UserError at once if another process holds it, or
    if the lock's place holds anything but a regular file of its own (then nothing is touched).

    Re-entrant within one process (a run's config write, then its training)."""
    try:
        info = os.stat(folder)
    except OSError as e:
        raise UserError(f"cannot lock {folder}: {e.strerror or e}") from None
    key = (info.st_dev, info.st_ino)  # the folder, however it is named; the lock file is never resolved
    path = os.path.join(os.path.abspath(folder), LOCK_FILE)
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
        else:
            _held[key] = [_acquire(path, folder, what), 1]
    try:
        yield
    finally:
        with _held_guard:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                fd, _ = _held.pop(key)
                _release(path, fd)


def _acquire(path: str, folder, what: str) -> int:
    while True:
        fd = open_regular(path, os.O_RDWR | os.O_CREAT, 0o644, what=f"the lock file {path}", single_link=True)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").split()
            os.close(fd)
            pid = f" (pid {holder[0]})" if holder else ""
            raise UserError(f"{folder} is in use by another process{pid} writing {what}; "
                            "wait for it to finish or choose another folder") from None
        # the file we locked may have been released and unlinked meanwhile: lock the one at the path
        if _still_at(path, fd):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)


def _still_at(path: str, fd: int) -> bool:
    """Whether `path` names, without following a link, the file open as `fd`."""
    try:
        return os.path.samestat(os.fstat(fd), os.lstat(path))
    except FileNotFoundError:
        return False


def _release(path: str, fd: int) -> None:
    if _still_at(path, fd):  # never a file put in its place meanwhile
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still locked, so no one locks the old file after we go
    os.close(fd)


# --------------------------------------------------------------------------- helpers


def _remove_tree(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


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
