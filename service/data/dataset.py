"""A loaded dataset (Dataset), the fingerprint a run records of it, and its split into kept and
held-out parts: whole groups when it has groups, else stratified by class."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from backends.config import SUPPORTED_IMAGE_SIZES
from service.errors import UserError

CLASS_NAMES = ("nevus", "melanoma", "seborrheic_keratosis")  # ISIC 2017, in the ground truth's terms
DEFAULT_IMAGE_SIZE = 64  # the side to train at when neither the request nor the data says


@dataclass
class Dataset:
    """Images ready for training: float32 NHWC in [-1, 1], with optional int64 class labels."""

    images: np.ndarray
    labels: np.ndarray | None
    class_names: tuple[str, ...]
    files: list[str] = field(default_factory=list)
    source: str = ""
    groups: np.ndarray | None = None  # int64 source image / patient of each image, if known
    labelling: dict = field(default_factory=dict)  # where labels and groups came from (LabelFile.describe)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: np.ndarray) -> "Dataset":
        indices = np.asarray(indices, dtype=np.int64)
        return Dataset(
            images=self.images[indices],
            labels=None if self.labels is None else self.labels[indices],
            class_names=self.class_names,
            files=[self.files[i] for i in indices] if self.files else [],
            # a split names its part, so "data: ..." lines and config.json count what was used
            source=self.source if len(indices) == len(self) else f"{len(indices)} of {self.source}",
            groups=None if self.groups is None else self.groups[indices],
            labelling=self.labelling,
        )

    def fingerprint(self) -> str:
        """The exact images and labels (dataset_fingerprint): a resumed run checks it."""
        return dataset_fingerprint(self.images, self.labels)

    def class_counts(self) -> str:
        """'name count, ...' of the labelled images, for a line to the user."""
        if self.labels is None:
            return "unlabelled"
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return ", ".join(f"{name} {count}" for name, count in zip(self.class_names, counts))


def dataset_fingerprint(images: np.ndarray, labels: np.ndarray | None = None) -> str:
    """sha256 over the training arrays (shape, dtype, bytes): identifies the exact data a run saw."""
    digest = hashlib.sha256()
    for array in (images, labels):
        if array is None:
            digest.update(b"none")
            continue
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def split(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Disjoint (kept, held_out) with `fraction` of the images held out.

    With groups (source images or patients), whole groups are held out, drawn at random until
    they hold `fraction` of the images, so no group has images on both sides. Without them,
    the split is stratified by class: each class gives round(fraction * its size) images (at
    least one where the class has two or more), so a held-out set keeps the class proportions.
    """
    count = len(dataset)
    if not 0.0 < fraction < 1.0:
        raise UserError(f"held-out fraction must be between 0 and 1, got {fraction}")
    if count < 2:
        raise UserError(f"cannot split a dataset of {count} image(s)")
    rng = np.random.default_rng(seed)
    if dataset.groups is not None:
        held_out = group_holdout(dataset.groups, fraction, rng)
    else:
        held_out = _stratified_holdout(dataset.labels, count, fraction, rng)
    kept = np.setdiff1d(np.arange(count), held_out)
    return dataset.subset(kept), dataset.subset(held_out)


def group_holdout(groups: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of whole groups, drawn in random order until they hold at least
    `fraction` of the images; at least one group on each side."""
    names, sizes = np.unique(groups, return_counts=True)
    if len(names) < 2:
        raise UserError(f"cannot split by group: all {len(groups)} images belong to one group")
    order = rng.permutation(len(names))
    taken = np.searchsorted(np.cumsum(sizes[order]), fraction * len(groups)) + 1
    held_names = names[order[: min(max(taken, 1), len(names) - 1)]]
    return np.flatnonzero(np.isin(groups, held_names))


def _stratified_holdout(labels, count: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    classes = [np.arange(count)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    held = []
    for members in classes:
        # Every class of two or more images gives at least one and keeps at least one.
        take = int(round(fraction * len(members)))
        take = min(max(take, 1), len(members) - 1) if len(members) >= 2 else 0
        held.append(rng.permutation(members)[:take])
    held_out = np.sort(np.concatenate(held))
    if len(held_out) == 0:  # only single-image classes: fall back to an unstratified pick
        take = min(max(int(round(fraction * count)), 1), count - 1)
        held_out = np.sort(rng.permutation(count)[:take])
    return held_out


def check_image_size(image_size: int) -> None:
    if image_size not in SUPPORTED_IMAGE_SIZES:
        raise UserError(
            f"image size must be a power of two from {SUPPORTED_IMAGE_SIZES[0]} to "
            f"{SUPPORTED_IMAGE_SIZES[-1]}, got {image_size}"
        )
