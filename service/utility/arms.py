"""The arms: which training images each arm's classifier gets, and which arm it is compared with.

    real                     the real training images: the reference
    synthetic                generated images only, as many per class as the real set has (TSTR)
    real+synthetic-R         the real images plus R x as many generated ones (R = 0.5, 1, 2:
                             synthetic:real), each class in the real set's proportions: does
                             more synthetic data help, and how much of it
    real+synthetic-minority  minority oversampling: the real images plus generated images of
                             the positive class only, up to the largest class's count
    scarce                   a fixed 25% of the real images (stratified by class)
    scarce+synthetic         those, each class topped up with generated ones to their largest
                             class's count
    real+augment             the real images with classic photometric augmentation (brightness
                             and contrast jitter; backends/tf/classifier.py) on top of the flips
                             and quarter turns every arm's classifier applies
    real+augment+synthetic   the real images plus as many generated ones (synthetic:real 1), all
                             with the classic augmentation: synthesis on top of augmentation

The arms share one generated set: each takes the first images of each class it needs.
"""

from __future__ import annotations

import numpy as np

RATIOS = {"real+synthetic-0.5": 0.5, "real+synthetic-1": 1.0, "real+synthetic-2": 2.0, "real+augment+synthetic": 1.0}
ARMS = ("real", "synthetic", "real+synthetic-0.5", "real+synthetic-1", "real+synthetic-2",
        "real+synthetic-minority", "scarce", "scarce+synthetic", "real+augment", "real+augment+synthetic")
BASELINES = {"synthetic": "real", "real+synthetic-0.5": "real", "real+synthetic-1": "real",
             "real+synthetic-2": "real", "real+synthetic-minority": "real", "scarce+synthetic": "scarce",
             "real+augment": "real", "real+augment+synthetic": "real+augment"}
AUGMENTED = ("real+augment", "real+augment+synthetic")
MEANING = {
    "real": "the classifier trained on the real training images alone: the reference",
    "synthetic": "trained on generated images only: how much of the real task the synthetic set teaches",
    "real+synthetic-0.5": "real images plus half as many generated ones, in the real set's class proportions",
    "real+synthetic-1": "real images plus as many generated ones, in the real set's class proportions",
    "real+synthetic-2": "real images plus twice as many generated ones, in the real set's class proportions",
    "real+synthetic-minority": "minority oversampling: real images plus generated images of the positive class "
                               "only, up to the largest class's count",
    "scarce": "a quarter of the real training images: the regime where more images should matter most",
    "scarce+synthetic": "that quarter topped up with generated images: does synthesis help when real images are few",
    "real+augment": "real images with mild brightness and contrast jitter (every arm flips and turns its "
                    "images): the classic baseline synthesis must beat",
    "real+augment+synthetic": "real images plus as many generated ones, all with the classic augmentation: "
                              "does synthesis add anything on top of augmentation",
}


def scarce_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A fixed share of each class (at least one image of each), in index order."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        chosen.append(rng.choice(members, size=max(1, round(fraction * len(members))), replace=False))
    return np.sort(np.concatenate(chosen))


def top_up(counts: np.ndarray) -> np.ndarray:
    """Generated images per class that bring every class to the largest class's count."""
    return counts.max() - counts


def in_proportion(counts: np.ndarray, ratio: float) -> np.ndarray:
    """`ratio` x each class's count, rounded: generated images that keep the class proportions."""
    return np.round(ratio * counts).astype(np.int64)


def real_part(arm: str, labels: np.ndarray, scarce: np.ndarray) -> np.ndarray:
    """Indices of the real training images an arm uses."""
    if arm == "synthetic":
        return np.zeros(0, np.int64)
    return scarce if arm.startswith("scarce") else np.arange(len(labels))


def synthetic_part(arm: str, labels: np.ndarray, scarce: np.ndarray, num_classes: int, positive: int) -> np.ndarray:
    """Generated images per class an arm adds to its real part."""
    counts = np.bincount(labels, minlength=num_classes)
    if arm == "synthetic":
        return counts
    if arm in RATIOS:
        return in_proportion(counts, RATIOS[arm])
    if arm == "real+synthetic-minority":
        extra = np.zeros(num_classes, np.int64)
        extra[positive] = counts.max() - counts[positive]
        return extra
    if arm == "scarce+synthetic":
        return top_up(np.bincount(labels[scarce], minlength=num_classes))
    return np.zeros(num_classes, np.int64)


def synthetic_counts(labels: np.ndarray, scarce: np.ndarray, num_classes: int, arms, positive: int) -> np.ndarray:
    """Generated images needed per class by the arms together."""
    needs = [synthetic_part(arm, labels, scarce, num_classes, positive) for arm in arms]
    return np.max([np.zeros(num_classes, np.int64), *needs], axis=0)


def arm_images(arm: str, real_images, real_labels, scarce, synthetic: dict[int, np.ndarray], positive: int):
    """(images, labels, augment) an arm trains on: its real images first, then its generated ones."""
    num_classes = len(synthetic) if synthetic else int(real_labels.max()) + 1
    base = real_part(arm, real_labels, scarce)
    extra = synthetic_part(arm, real_labels, scarce, num_classes, positive)
    images, labels = [real_images[base]], [real_labels[base]]
    for c in range(num_classes):
        if extra[c]:
            images.append(synthetic[c][: extra[c]])
            labels.append(np.full(extra[c], c, np.int64))
    return np.concatenate(images), np.concatenate(labels).astype(np.int64), arm in AUGMENTED
