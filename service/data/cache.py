"""The on-disk cache of decoded folders and of the embedded dataset: uint8 .npz files named by a
hash of what they were made from, in $LESIONGAN_CACHE or ~/.cache/lesiongan. Best effort: a
damaged cache is rebuilt, and one that cannot be written costs speed next time, never this run."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from service.errors import UserError, warn
from service.files import atomic_file

CACHE_FORMAT = 1  # bump when the decoding changes, so old caches are not reused


def default_cache_dir() -> Path:
    return Path(os.environ.get("LESIONGAN_CACHE") or Path.home() / ".cache" / "lesiongan")


def hash_json(value) -> str:
    return hashlib.sha256(json.dumps(value, separators=(",", ":")).encode()).hexdigest()[:32]


def _cache_path(cache_dir, kind: str, key: str) -> Path:
    return (Path(cache_dir) if cache_dir else default_cache_dir()) / f"{kind}-{key}.npz"


def read_cache(cache_dir, kind: str, key: str) -> dict | None:
    path = _cache_path(cache_dir, kind, key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError):  # damaged cache: rebuild it
        return None


def write_cache(cache_dir, kind: str, key: str, **arrays) -> None:
    """Best effort: a cache that cannot be written costs speed next time, never this run."""
    path = _cache_path(cache_dir, kind, key)
    try:
        with atomic_file(path) as f:
            np.savez(f, **arrays)
    except (OSError, UserError) as e:
        reason = getattr(e, "strerror", None) or e
        warn(f"could not write the cache {path} ({reason}); the next run will decode again")
