"""The training side of the audit, built once per job: the aligned index of the training
images (service.validation.memorization.AlignedIndex), each training image's gap (its aligned
distance to the nearest other training image, of another group when there are groups), and
what a row names a training image by (its file and group).

It is plain arrays and strings, so a Ray job puts it in the object store once and every task
on a node reads the same copy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from service.errors import UserError
from service.validation import memorization

MIN_TRAIN_IMAGES = 2  # a gap needs another image


@dataclass(frozen=True)
class TrainingIndex:
    aligned: memorization.AlignedIndex
    gaps: np.ndarray  # (count,) float: each training image's gap; inf where it has none
    files: tuple[str, ...]  # (count,) or () when the images have no file names (an .npz)
    groups: np.ndarray | None  # (count,) int64 or None
    fingerprint: str  # sha256 of the training pixels and groups: a resumed audit must use the same

    @property
    def count(self) -> int:
        return self.aligned.count

    def file_of(self, index: int) -> str:
        return self.files[index] if self.files else ""

    def group_of(self, index: int) -> str:
        return "" if self.groups is None else str(int(self.groups[index]))


def training_fingerprint(train_uint8: np.ndarray, groups: np.ndarray | None) -> str:
    digest = hashlib.sha256()
    digest.update(repr(train_uint8.shape).encode())
    digest.update(np.ascontiguousarray(train_uint8).data)
    if groups is not None:
        digest.update(np.asarray(groups, np.int64).tobytes())
    return digest.hexdigest()


def build_training_index(train_uint8: np.ndarray, groups=None, files=()) -> TrainingIndex:
    """The index of uint8 NHWC training images; gaps computed once here, not per shard."""
    train_uint8 = np.asarray(train_uint8)
    if train_uint8.ndim != 4 or train_uint8.shape[-1] != 3 or train_uint8.dtype != np.uint8:
        raise UserError(f"training images must be uint8 RGB NHWC, got {train_uint8.dtype} {train_uint8.shape}")
    if len(train_uint8) < MIN_TRAIN_IMAGES:
        raise UserError(f"the training set has {len(train_uint8)} image(s); the audit needs at least {MIN_TRAIN_IMAGES}")
    groups = None if groups is None else np.asarray(groups, np.int64)
    prepared = memorization.prepare(train_uint8)
    aligned = memorization.AlignedIndex(prepared, groups)
    gaps = aligned.nearest(prepared, exclude_self=True)["distance"]
    return TrainingIndex(aligned, gaps, tuple(str(f) for f in files) if len(files) == len(train_uint8) else (),
                         groups, training_fingerprint(train_uint8, groups))
