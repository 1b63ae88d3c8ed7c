"""The utility command's settings and the checks on its inputs: which run, which images, which
class is the positive one."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from backends import DEFAULT_BACKEND
from service.errors import UserError
from service.utility.arms import ARMS

GENERATION_SEED = 9_001  # the generated images' seed: any value other than the run's own seeds
# The classifier every arm trains: "features", extremely randomised trees on the lesion's colour,
# shape and texture statistics (service.validation.fidelity), or "cnn", the small convolutional
# network of backends/tf/classifier.py. On ISIC 2017 at 64x64 (1,600 / 400, melanoma) the trees
# score AUC 0.69 on real images where the CNN scores 0.65 (docs/benchmarks.md): the default.
CLASSIFIERS = ("features", "cnn")


@dataclass
class UtilitySettings:
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    classifier: str = "features"  # CLASSIFIERS; the rest of the classifier settings are the CNN's
    arms: tuple[str, ...] = ARMS
    positive_class: str | None = None  # None: "melanoma" when the run has it, else the smallest class
    specificity: float = 0.8  # the operating point of the positive class's sensitivity
    # the classifier (backends/tf/classifier.py), chosen on a validation split of real lesions
    # (docs/benchmarks.md): one fixed classifier, the same in every arm
    colour_constancy: bool = True  # shades-of-gray colour constancy on the input
    widths: tuple[int, ...] = (16, 32, 64, 128)
    blocks_per_stage: int = 1
    dropout: float = 0.3
    epochs: int = 20  # the budget: this many passes over the real training set's size, in optimiser
    # steps; every arm's classifier gets as many steps (whole passes over its own images)
    batch_size: int = 64
    learning_rate: float = 3e-3  # the peak of a cosine decay to 0 (AdamW)
    weight_decay: float = 0.004
    scarce_fraction: float = 0.25
    split_seed: int = 0  # which real images make the scarce quarter
    bootstrap: int = 1000
    generation_seed: int = GENERATION_SEED
    backend: str = DEFAULT_BACKEND  # the generator's backend

    def check(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise UserError(f"unknown arm {unknown[0]!r}; arms are {', '.join(ARMS)}")
        if not self.arms:
            raise UserError("give at least one arm")
        if self.classifier not in CLASSIFIERS:
            raise UserError(f"--classifier must be one of {', '.join(CLASSIFIERS)}, got {self.classifier!r}")
        if not self.seeds:
            raise UserError("give at least one classifier seed")
        if self.bootstrap < 2 or self.epochs < 1:
            raise UserError("--bootstrap must be at least 2 and --epochs positive")
        if not 0 < self.scarce_fraction <= 1:
            raise UserError(f"the scarce fraction must be in (0, 1], got {self.scarce_fraction}")
        if not 0 < self.specificity < 1:
            raise UserError(f"the specificity must be in (0, 1), got {self.specificity}")


def conditional_run(run_dir) -> tuple:
    """(GANConfig, class names) of a conditional run; UserError for an unconditional one."""
    from service.generation.job import run_class_names
    from service.rundir import load_config

    config, full_config = load_config(run_dir)
    class_names = run_class_names(config, full_config)
    if not class_names:
        raise UserError(f"utility needs a conditional run (train with --conditional): {run_dir} generates no classes")
    return config, class_names


def check_inputs(class_names: tuple[str, ...], real, test, image_size: int | None = None) -> None:
    """Exit-2 errors for what the arms cannot use: unlabelled sets, a class of the run with no
    training or no test images, other class names, images of another size than the run's."""
    for name, dataset in (("training", real), ("test", test)):
        if dataset.labels is None:
            raise UserError(f"the {name} set has no class labels; the classifier needs labelled real images")
        if dataset.class_names and tuple(dataset.class_names) != tuple(class_names):
            raise UserError(f"the {name} set's classes ({', '.join(dataset.class_names)}) are not the run's "
                            f"({', '.join(class_names)})")
        counts = np.bincount(dataset.labels, minlength=len(class_names))
        if len(counts) > len(class_names):
            raise UserError(f"the {name} set has class index {len(counts) - 1}; the run has {len(class_names)} classes")
        missing = [class_names[c] for c in range(len(class_names)) if counts[c] == 0]
        if missing:
            raise UserError(f"the {name} set has no images of class {missing[0]}; every class of the run needs some")
        size = dataset.images.shape[1]
        if image_size is not None and size != image_size:
            raise UserError(f"the {name} images are {size}x{size}; the run makes {image_size}x{image_size}")


def shared_images(real, test) -> int:
    """How many test images are also training images, pixel for pixel (by a content hash of the
    images as loaded): scores on them measure recall of the training set, not generalisation."""
    def digest(image: np.ndarray) -> bytes:
        return hashlib.sha256(np.ascontiguousarray(image).tobytes()).digest()

    training = {digest(image) for image in real.images}
    return sum(digest(image) in training for image in test.images)


def positive_class(class_names, labels: np.ndarray, requested: str | None = None) -> int:
    """The index of the class the positive-class metrics (ROC AUC, sensitivity at the set
    specificity) are about: `requested` by name, else "melanoma" when the run has it, else the
    class with the fewest training images (the first of those on a tie)."""
    names = list(class_names)
    if requested is not None:
        if requested not in names:
            raise UserError(f"--positive-class {requested!r} is not a class of the run ({', '.join(names)})")
        return names.index(requested)
    if "melanoma" in names:
        return names.index("melanoma")
    return int(np.argmin(np.bincount(labels, minlength=len(names))))
