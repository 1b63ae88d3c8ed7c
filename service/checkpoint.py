"""Checkpoints: backend-neutral .npz files, written atomically, checksummed, last few kept.

A checkpoint is a flat dict of NumPy arrays:
  weights               "<net>/<layer>/<param>"   (backends.spec names, same in every backend)
  optimizer state       "opt/..."                 (backends.spec names)
  backend RNG           "rng/<backend>/..."       (skipped when resuming in another backend)
  trainer RNG           "rng/trainer/..."
  counters              "meta/step", "meta/epoch", "meta/batch_in_epoch", ...
  checksum              "meta/sha256"             (32 bytes, over every other array)

It is written through service.files.atomic_file (a temp file, fsynced, moved into place), so a
reader sees either the old set of checkpoints or the new one, never half a file. A file torn some other
way (disk full, copied halfway) fails its checksum and `load_latest_valid` falls back to the
previous one with a warning.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np

from service.errors import UserError
from service.files import atomic_file, make_folder, remove_file
from service.rundir import CHECKPOINT_DIR

CHECKSUM_KEY = "meta/sha256"
_NAME = re.compile(r"^ckpt-(\d{9,})\.npz$")
_NOT_WEIGHTS = ("opt/", "rng/", "meta/")


class CorruptCheckpoint(UserError):
    """A checkpoint file that cannot be read or whose checksum does not match."""


class CheckpointWarning(UserWarning):
    pass


def arrays_sha256(arrays: dict[str, np.ndarray]) -> bytes:
    """Digest of named arrays, independent of dict order: name, dtype, shape and bytes of each."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        if name == CHECKSUM_KEY:
            continue
        array = np.ascontiguousarray(arrays[name])
        digest.update(name.encode())
        digest.update(f"|{array.dtype.str}|{array.shape}|".encode())
        digest.update(memoryview(array).cast("B") if array.size else b"")
    return digest.digest()


def checkpoint_dir(run_dir) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def checkpoint_path(run_dir, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"ckpt-{int(step):09d}.npz"


def list_checkpoints(run_dir) -> list[Path]:
    """Checkpoints of a run, oldest first (by step)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found, odd = [], []
    for entry in os.scandir(folder):
        if m := _NAME.match(entry.name):
            if entry.is_file(follow_symlinks=False):
                found.append((int(m.group(1)), Path(entry.path)))
            else:
                odd.append(entry.name)
    if odd:
        print(f"warning: {folder}: {', '.join(sorted(odd))} is not a regular file; ignored", file=sys.stderr)
    return [p for _, p in sorted(found)]


def step_of(path) -> int:
    m = _NAME.match(Path(path).name)
    if not m:
        raise ValueError(f"not a checkpoint file name: {path}")
    return int(m.group(1))


def save_checkpoint(run_dir, step: int, arrays: dict[str, np.ndarray], keep: int = 3) -> Path:
    """Write RUN/checkpoints/ckpt-<step>.npz atomically with an embedded checksum; keep the last `keep`."""
    make_folder(checkpoint_dir(run_dir))
    payload = {name: np.asarray(value) for name, value in arrays.items() if name != CHECKSUM_KEY}
    for name, value in payload.items():
        if value.dtype == object:
            raise TypeError(f"checkpoint array {name!r} has dtype object; only plain arrays are stored")
    payload[CHECKSUM_KEY] = np.frombuffer(arrays_sha256(payload), dtype=np.uint8)
    final = checkpoint_path(run_dir, step)
    try:
        with atomic_file(final, durable=True) as f:
            np.savez(f, **payload)
    except OSError as e:  # e.g. a full disk: the temp file is gone, the older checkpoints stay whole
        raise UserError(f"cannot write checkpoint {final}: {e.strerror or e}; the checkpoints before it are kept") from None
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            remove_file(old)
    return final


def load_checkpoint(path) -> dict[str, np.ndarray]:
    """Read and verify one checkpoint; CorruptCheckpoint if it is unreadable or fails its checksum."""
    path = Path(path)
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CorruptCheckpoint(f"checkpoint {path} is unreadable ({type(e).__name__}: {e})") from e
    stored = arrays.pop(CHECKSUM_KEY, None)
    if stored is None:
        raise CorruptCheckpoint(f"checkpoint {path} has no checksum ({CHECKSUM_KEY})")
    if bytes(np.asarray(stored, dtype=np.uint8)) != arrays_sha256(arrays):
        raise CorruptCheckpoint(f"checkpoint {path} fails its checksum (torn or modified)")
    return arrays


# what `Trainer.restore` reads besides the weights: a checkpoint without them cannot resume
RESUME_KEYS = ("meta/step", "meta/epoch", "meta/batch_in_epoch", "rng/trainer/permutation",
               "rng/trainer/state", "rng/trainer/inc", "rng/trainer/has_uint32", "rng/trainer/uinteger")


def check_arrays(arrays: dict[str, np.ndarray], config, path, resume: bool = False) -> None:
    """UserError (one line) unless the checkpoint holds every weight of `config`'s model with
    its shape (config None: the backend checks them as it loads), only finite weights and
    optimizer moments, and, to resume, the counters and RNG state; checked before any work
    starts, so a broken file never gives black images or a traceback mid-way."""
    from backends.spec import weight_shapes

    for name, shape in (weight_shapes(config) if config is not None else {}).items():
        if name not in arrays:
            raise UserError(f"checkpoint {path} lacks {name}; it was not written for this run's model")
        if tuple(arrays[name].shape) != tuple(shape):
            raise UserError(f"checkpoint {path}: {name} has shape {tuple(arrays[name].shape)}, the model needs {tuple(shape)}")
    for name, value in arrays.items():
        if not name.startswith(("rng/", "meta/")) and value.dtype.kind == "f" and not np.isfinite(value).all():
            raise UserError(f"checkpoint {path} holds non-finite values in {name} (the run diverged); "
                            "use an earlier checkpoint or train again")
    if resume:
        missing = [name for name in RESUME_KEYS if name not in arrays]
        if missing:
            raise UserError(f"checkpoint {path} lacks {missing[0]}, so it cannot be resumed "
                            "(the trainer writes it; was the file changed?)")


def load_verified(path, config) -> dict[str, np.ndarray]:
    """A checkpoint read (load_checkpoint) and checked against the model (check_arrays)."""
    arrays = load_checkpoint(path)
    check_arrays(arrays, config, path)
    return arrays


def latest_checkpoint(run_dir) -> Path:
    found = list_checkpoints(run_dir)
    if not found:
        raise UserError(f"no checkpoint in {checkpoint_dir(run_dir)}")
    return found[-1]


def load_latest_valid(run_dir) -> tuple[Path, dict[str, np.ndarray]]:
    """The newest checkpoint that verifies; warns about each newer one that does not."""
    found = list_checkpoints(run_dir)
    if not found:
        raise UserError(f"no checkpoint in {checkpoint_dir(run_dir)}")
    for path in reversed(found):
        try:
            return path, load_checkpoint(path)
        except CorruptCheckpoint as e:
            warnings.warn(f"{e}; falling back to the previous checkpoint", CheckpointWarning, stacklevel=2)
    raise CorruptCheckpoint(f"every checkpoint in {checkpoint_dir(run_dir)} is corrupt ({len(found)} tried)")


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_arrays(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """{"weights", "opt", "rng", "meta"} parts of a checkpoint (rng and meta keep full names)."""
    parts = {"weights": {}, "opt": {}, "rng": {}, "meta": {}}
    for name, value in arrays.items():
        if name.startswith("opt/"):
            parts["opt"][name] = value
        elif name.startswith("rng/"):
            parts["rng"][name] = value
        elif name.startswith("meta/"):
            parts["meta"][name] = value
        else:
            parts["weights"][name] = value
    return parts


def weights_only(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {n: v for n, v in arrays.items() if not n.startswith(_NOT_WEIGHTS)}


def backend_rng_state(arrays: dict[str, np.ndarray], backend_name: str) -> dict[str, np.ndarray]:
    """This backend's own RNG arrays, full names "rng/<backend>/..."; other backends' are left out."""
    prefix = f"rng/{backend_name}/"
    return {n: v for n, v in arrays.items() if n.startswith(prefix)}
