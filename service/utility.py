"""Downstream utility: does a run's synthetic set help a lesion classifier?

One fixed small classifier (`build_classifier`) is trained in several arms that differ only in
their training images, and scored on the same held-out real test set:

    real              the real training images (train real, test real)
    synthetic         generated images only, as many per class as the real set has (TSTR)
    real+synthetic    the real images, each class topped up with generated ones to the
                      largest class's count
    scarce            a fixed 25% of the real training images (stratified by class)
    scarce+synthetic  those, topped up the same way to their largest class's count
    real+augment      the real images with classic augmentation, drawn anew for each image in
                      each epoch (`augmentation_layers`): one of the square's 8 flips and
                      quarter turns, a brightness shift of up to +-10% of the value range and
                      a contrast factor in [0.8, 1.2] (in training only: the validation
                      split is not augmented): what synthetic images must beat

Every arm runs once per classifier seed (the seed fixes the classifier's initial weights,
its validation split, its batch order and its augmentation) with the same budget. The
classifier holds out a stratified 15% of its arm's training images for early stopping (on
validation loss, best weights kept, after 6 epochs and at least 150 optimiser steps without a
better one) and weights its loss by class ("balanced": n / (classes x n_class)), on the
validation split too, so a rare class counts as much as a common one. Scores on the test set: balanced accuracy (the mean of
the per-class sensitivities), per-class sensitivity and one-vs-rest ROC AUC, mean and range
over seeds. Each arm is compared with its real-only counterpart (`BASELINES`): the difference
of the seed-mean scores with a 95% interval from resampling the test images (bootstrap;
the seeds' predictions are kept fixed, so the interval is over the test set; all resamples are
scored at once, the AUC by its Mann-Whitney form, equal to sklearn's roc_auc_score on each).
utility.json also holds each classifier's epochs and each arm's seconds.

The generated images come from the run's deterministic generator (`generate --class`), with
a generation seed of its own (`GENERATION_SEED`, not a training seed), written as PNGs under
OUT/generated/<class>/; utility.json names the checkpoint (sha256) and the seeds.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from service.errors import UserError

ARMS = ("real", "synthetic", "real+synthetic", "scarce", "scarce+synthetic", "real+augment")
BASELINES = {"synthetic": "real", "real+synthetic": "real", "real+augment": "real", "scarce+synthetic": "scarce"}
GENERATION_SEED = 9_001  # the generated images' seed: any value other than the run's own seeds
MEANING = {
    "real": "the classifier trained on the real training images alone: the reference",
    "synthetic": "trained on generated images only: how much of the real task the synthetic set teaches",
    "real+synthetic": "real images with every class topped up by generated ones: does adding synthetic images help",
    "scarce": "a quarter of the real training images: the regime where more images should matter most",
    "scarce+synthetic": "that quarter topped up with generated images: does synthesis help when real images are few",
    "real+augment": "real images with random flips, quarter turns and mild brightness and contrast jitter: "
                    "the classic baseline synthesis must beat",
}


@dataclass
class UtilitySettings:
    seeds: tuple[int, ...] = (0, 1, 2)
    arms: tuple[str, ...] = ARMS
    max_epochs: int = 30
    patience: int = 6  # epochs without a better validation loss before the classifier stops,
    patience_steps: int = 150  # and at least this many optimiser steps (see train_classifier)
    batch_size: int = 64
    learning_rate: float = 1e-3
    validation_fraction: float = 0.15
    scarce_fraction: float = 0.25
    split_seed: int = 0  # which real images make the scarce quarter
    bootstrap: int = 1000
    generation_seed: int = GENERATION_SEED
    backend: str = "tf"  # the generator's backend
    widths: tuple[int, ...] = field(default=(16, 32, 64, 128))

    def check(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise UserError(f"unknown arm {unknown[0]!r}; arms are {', '.join(ARMS)}")
        if not self.seeds:
            raise UserError("give at least one classifier seed")
        if self.bootstrap < 1 or self.max_epochs < 1:
            raise UserError("--bootstrap and --max-epochs must be positive")
        if not 0 < self.scarce_fraction <= 1:
            raise UserError(f"the scarce fraction must be in (0, 1], got {self.scarce_fraction}")


def conditional_run(run_dir) -> tuple:
    """(GANConfig, class names) of a conditional run; UserError for an unconditional one."""
    from service.generation.job import run_class_names
    from service.rundir import load_config

    config, full_config = load_config(run_dir)
    class_names = run_class_names(config, full_config)
    if not class_names:
        raise UserError(f"utility needs a conditional run (train with --conditional): {run_dir} generates no classes")
    return config, class_names


def check_inputs(class_names: tuple[str, ...], real, test) -> None:
    """Exit-2 errors for what the arms cannot use: unlabelled sets, a class of the run with no
    training or no test images, other class names."""
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


def synthetic_counts(labels: np.ndarray, scarce: np.ndarray, num_classes: int, arms) -> np.ndarray:
    """Generated images needed per class by the arms (the arms share one generated set: each
    takes the first images of each class it needs)."""
    counts = np.bincount(labels, minlength=num_classes)
    needs = [np.zeros(num_classes, np.int64)]
    if "synthetic" in arms:
        needs.append(counts)
    if "real+synthetic" in arms:
        needs.append(top_up(counts))
    if "scarce+synthetic" in arms:
        needs.append(top_up(np.bincount(labels[scarce], minlength=num_classes)))
    return np.max(needs, axis=0)


def arm_images(arm: str, real_images, real_labels, scarce, synthetic: dict[int, np.ndarray]):
    """(images, labels, augment) an arm trains on."""
    num_classes = len(synthetic) if synthetic else int(real_labels.max()) + 1

    def synthetic_part(per_class):
        parts = [(synthetic[c][: per_class[c]], np.full(per_class[c], c)) for c in range(num_classes) if per_class[c]]
        if not parts:
            return np.zeros((0, *real_images.shape[1:]), np.float32), np.zeros(0, np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]).astype(np.int64)

    if arm in ("real", "real+augment"):
        return real_images, real_labels, arm == "real+augment"
    if arm == "scarce":
        return real_images[scarce], real_labels[scarce], False
    if arm == "synthetic":
        images, labels = synthetic_part(np.bincount(real_labels, minlength=num_classes))
        return images, labels, False
    base = scarce if arm == "scarce+synthetic" else np.arange(len(real_labels))
    extra_images, extra_labels = synthetic_part(top_up(np.bincount(real_labels[base], minlength=num_classes)))
    return (np.concatenate([real_images[base], extra_images]),
            np.concatenate([real_labels[base], extra_labels]), False)


# Classic augmentation of the real+augment arm. Images are in [-1, 1]: the colour layers are
# told so (Keras' default value_range is (0, 255), and RandomContrast clips to it: every
# negative value became 0, which made this arm near chance).
BRIGHTNESS = 0.1  # per-image shift of all channels by up to +-0.1 of the value range (+-0.2 in [-1, 1])
CONTRAST = 0.2  # per-image contrast factor in [0.8, 1.2], about each channel's image mean


def augmentation_layers() -> list:
    """The real+augment arm's Keras layers, in order; each acts in training only (in inference,
    validation included, it passes images through unchanged): one of the square's 8 flips and
    quarter turns (`square_symmetry_layer`: exact, pixels are moved, not interpolated), then a
    brightness shift of up to +-`BRIGHTNESS` of the value range and a contrast factor in
    [1 - `CONTRAST`, 1 + `CONTRAST`] about each channel's mean, both drawn per image and
    clipped to [-1, 1]."""
    from keras import layers

    return [square_symmetry_layer(), layers.RandomBrightness(BRIGHTNESS, value_range=(-1.0, 1.0)),
            layers.RandomContrast(CONTRAST, value_range=(-1.0, 1.0))]


def square_symmetry_layer():
    """A Keras layer that moves each square image's pixels by one of the 8 symmetries of the
    square (a turn by 0, 90, 180 or 270 degrees, mirrored or not), drawn uniformly per image, in
    training only: every flip both ways and every quarter turn. One gather per batch. (Keras 3's
    RandomFlip("horizontal_and_vertical") draws one coin for both axes, so it gives a half turn
    or nothing, never a mirror; RandomRotation turns by any angle and interpolates.)"""
    import keras
    from keras import ops

    class RandomSquareSymmetry(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.generator = keras.random.SeedGenerator()  # its seed from the global one (set_random_seed)

        def call(self, images, training=None):
            if not training:
                return images
            size = images.shape[1]
            grid = np.arange(size * size).reshape(size, size)
            symmetries = np.stack([np.rot90(g, k).ravel() for g in (grid, grid.T) for k in range(4)]).astype(np.int32)
            shape = ops.shape(images)
            count = shape[0]
            which = keras.random.randint((count,), 0, 8, seed=self.generator, dtype="int32")
            source = ops.take(ops.convert_to_tensor(symmetries), which, axis=0)
            source = source + ops.expand_dims(ops.arange(count, dtype="int32") * (size * size), 1)
            pixels = ops.take(ops.reshape(images, (-1, shape[3])), ops.reshape(source, (-1,)), axis=0)
            return ops.reshape(pixels, shape)

        def compute_output_shape(self, input_shape):
            return input_shape

    return RandomSquareSymmetry()


def batch_norm_layer(momentum: float):
    """Keras' BatchNormalization computed by TensorFlow's fused kernel: the same arithmetic
    (batch mean and biased variance in training, moving statistics updated with them, moving
    statistics in inference; outputs equal to ~1e-6), about a quarter less time per training
    step on a CPU (Keras' own layer spends ~40% of this classifier's step in separate moment
    and normalisation ops). Keras' layer itself on a backend other than TensorFlow."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return keras.layers.BatchNormalization(momentum=momentum)
    import tensorflow as tf

    class FusedBatchNormalization(keras.layers.BatchNormalization):
        def call(self, inputs, training=None, mask=None):
            if training and self.trainable:
                outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                    inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)
                # the kernel returns the unbiased variance; Keras' layer keeps the biased one
                count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), variance.dtype)
                variance = variance * (count - 1) / tf.maximum(count, 2)
                self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1 - self.momentum))
                self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1 - self.momentum))
                return outputs
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, self.gamma, self.beta, mean=self.moving_mean, variance=self.moving_variance,
                epsilon=self.epsilon, is_training=False)
            return outputs

    return FusedBatchNormalization(momentum=momentum)


def build_classifier(image_size: int, num_classes: int, augment: bool, settings: UtilitySettings):
    """The fixed classifier: strided 3x3 convolutions (16, 32, 64, 128 filters, one per halving
    down to 4x4 or fewer), batch normalisation (momentum 0.9, `batch_norm_layer`) and ReLU, global
    average pooling, dropout 0.3, a linear layer to class logits. With `augment`,
    `augmentation_layers` first (training only)."""
    import backends.tf.runtime  # noqa: F401 - TensorFlow's start-up settings, before Keras
    import keras
    from keras import layers

    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    if augment:
        for layer in augmentation_layers():
            x = layer(x)
    blocks = max(1, int(math.log2(image_size // 4)))
    for i in range(blocks):
        x = layers.Conv2D(settings.widths[min(i, len(settings.widths) - 1)], 3, strides=2, padding="same", use_bias=False)(x)
        x = batch_norm_layer(momentum=0.9)(x)  # moving statistics settle within a short training
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs)


def train_classifier(images, labels, num_classes: int, augment: bool, seed: int, settings: UtilitySettings):
    """The classifier trained on (images, labels): early stopping on a stratified validation
    split, class-balanced loss (on the validation split too). Returns the Keras model (best
    validation weights; its .history holds the epochs run).

    Early stopping waits `patience` epochs and at least `patience_steps` optimiser steps
    without a better validation loss: a small arm's epoch is a few steps, and the validation
    loss (batch normalisation in inference mode) rises for the first few dozen steps while the
    moving statistics settle. Measured on the stand-in's scarce arm (500 images, 7 steps an
    epoch): with 6 epochs of patience one seed in three stopped at epoch 7 and kept its
    first-epoch weights, which predict one class (balanced accuracy 1/3); its validation loss
    fell below that epoch's at epoch 8."""
    import backends.tf.runtime  # noqa: F401
    import keras
    from sklearn.model_selection import train_test_split

    keras.utils.set_random_seed(seed)
    counts = np.bincount(labels, minlength=num_classes)
    present = np.count_nonzero(counts)
    held = max(round(settings.validation_fraction * len(labels)), present, 1)
    if len(labels) - held < present:
        raise UserError(f"{len(labels)} training images are too few for a classifier with a validation split")
    # stratified where every class can give an image to each side, else a plain random split
    stratify = labels if counts[counts > 0].min() >= 2 else None
    fit_x, val_x, fit_y, val_y = train_test_split(images, labels, test_size=held, random_state=seed, stratify=stratify)
    fit_counts = np.bincount(fit_y, minlength=num_classes)
    weights = {c: len(fit_y) / (np.count_nonzero(fit_counts) * n) for c, n in enumerate(fit_counts) if n}
    # The validation loss is weighted the same way: unweighted, it would favour the weights that
    # predict the common class, and early stopping would keep those.
    val_weights = np.array([weights.get(int(c), 1.0) for c in val_y], np.float32)
    model = build_classifier(images.shape[1], num_classes, augment, settings)
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    steps_per_epoch = math.ceil(len(fit_y) / settings.batch_size)
    patience = max(settings.patience, math.ceil(settings.patience_steps / steps_per_epoch))
    stop = keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)
    model.fit(fit_x, fit_y, validation_data=(val_x, val_y, val_weights), epochs=settings.max_epochs,
              batch_size=settings.batch_size, class_weight=weights, callbacks=[stop], verbose=0, shuffle=True)
    return model


def predict_proba(model, images: np.ndarray) -> np.ndarray:
    from scipy.special import softmax

    return softmax(np.asarray(model.predict(images, batch_size=256, verbose=0), np.float64), axis=1)


def score(labels: np.ndarray, proba: np.ndarray) -> dict:
    """Balanced accuracy, per-class sensitivity and one-vs-rest AUC (nan for a class the
    labels lack, which a bootstrap resample can)."""
    from sklearn.metrics import roc_auc_score

    num_classes = proba.shape[1]
    predicted = proba.argmax(axis=1)
    sensitivity = np.array([np.mean(predicted[labels == c] == c) if np.any(labels == c) else np.nan
                            for c in range(num_classes)])
    auc = np.array([roc_auc_score(labels == c, proba[:, c]) if 0 < np.sum(labels == c) < len(labels) else np.nan
                    for c in range(num_classes)])
    return {"balanced_accuracy": float(np.nanmean(sensitivity)), "sensitivity": sensitivity, "auc": auc,
            "macro_auc": float(np.nanmean(auc))}


def _seed_mean(labels, probas: list[np.ndarray]) -> dict:
    scores = [score(labels, p) for p in probas]
    return {k: np.mean([s[k] for s in scores], axis=0) for k in scores[0]}


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One-vs-rest ROC AUC of `scores` (n,) for the `positive` (n,) images, once per row of
    `weights` (rows, n): image i counted weights[r, i] times (a bootstrap resample's
    multiplicities). The Mann-Whitney statistic, ties counting one half: equal to sklearn's
    roc_auc_score on the resampled arrays. nan for a row without positives or negatives."""
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    # for each image in score order, the first and one-past-last positions of its tie group
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    group = np.cumsum(np.r_[True, ranked[1:] != ranked[:-1]]) - 1
    ends = np.r_[starts[1:], len(ranked)]
    w = np.asarray(weights, np.float64)[:, order]
    pos = positive[order].astype(bool)
    negatives = np.zeros((len(w), len(ranked) + 1))
    np.cumsum(np.where(pos, 0.0, w), axis=1, out=negatives[:, 1:])  # negatives[:, k]: those before position k
    # negatives below an image's score, plus half of those tied with it
    below = 0.5 * (negatives[:, starts[group]] + negatives[:, ends[group]])
    pairs = np.sum(w[:, pos], axis=1) * negatives[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, np.sum(w[:, pos] * below[:, pos], axis=1) / pairs, np.nan)


def _resampled_scores(labels, probas: list[np.ndarray], counts: np.ndarray) -> dict:
    """`score`'s seed-mean values for every bootstrap resample at once: `counts` (rows, n) is
    how often each test image is drawn in each resample. Each value has a leading axis of rows."""
    num_classes = probas[0].shape[1]
    counts = np.asarray(counts, np.float64)
    members = np.stack([labels == c for c in range(num_classes)], axis=1).astype(np.float64)  # (n, classes)
    present = counts @ members  # images of each class per resample
    per_seed = []
    for proba in probas:
        hits = members * (proba.argmax(axis=1)[:, None] == np.arange(num_classes))
        with np.errstate(invalid="ignore", divide="ignore"):
            sensitivity = np.where(present > 0, (counts @ hits) / present, np.nan)
        auc = np.stack([weighted_auc(proba[:, c], labels == c, counts) for c in range(num_classes)], axis=1)
        per_seed.append({"balanced_accuracy": _nanmean(sensitivity), "sensitivity": sensitivity, "auc": auc,
                         "macro_auc": _nanmean(auc)})
    return {k: np.mean([s[k] for s in per_seed], axis=0) for k in per_seed[0]}


def _nanmean(values: np.ndarray) -> np.ndarray:
    """np.nanmean over the last axis, nan (without a warning) where every value is nan."""
    known = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(known.any(axis=-1), np.where(known, values, 0).sum(axis=-1) / known.sum(axis=-1), np.nan)


def bootstrap_difference(labels, arm_probas, base_probas, resamples: int, seed: int = 0) -> dict:
    """The difference arm - baseline of the seed-mean scores on the test set, and its 95%
    interval from `resamples` bootstrap resamples of the test images (the same resamples for
    both; all resamples scored at once, as `score` would score each)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    point = {k: np.asarray(a) - np.asarray(b)
             for (k, a), b in zip(_seed_mean(labels, arm_probas).items(), _seed_mean(labels, base_probas).values())}
    draws = {k: [] for k in point}
    chunk = max(1, 2_000_000 // n)  # resamples scored together: bounds the memory to a few (chunk, n) arrays
    for first in range(0, resamples, chunk):
        rows = min(chunk, resamples - first)
        idx = rng.integers(0, n, (rows, n))  # the same draws as one rng.integers(0, n, n) per resample
        counts = np.bincount((idx + n * np.arange(rows)[:, None]).ravel(), minlength=rows * n).reshape(rows, n)
        arm = _resampled_scores(labels, arm_probas, counts)
        base = _resampled_scores(labels, base_probas, counts)
        for k in draws:
            draws[k].append(arm[k] - base[k])
    draws = {k: np.concatenate(v) for k, v in draws.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from every resample: nan
        return {k: {"difference": point[k], "low": np.nanpercentile(draws[k], 2.5, axis=0),
                    "high": np.nanpercentile(draws[k], 97.5, axis=0)} for k in point}


def evaluate_arms(real, test, synthetic: dict[int, np.ndarray], class_names, settings: UtilitySettings,
                  progress: bool = False) -> dict:
    """Train and score every arm with every seed. `real`/`test` are service.data.Dataset
    objects with labels, `synthetic` maps class index -> float32 images in [-1, 1]."""
    from tqdm import tqdm

    settings.check()
    num_classes = len(class_names)
    scarce = scarce_indices(real.labels, settings.scarce_fraction, settings.split_seed)
    probas, sizes, seconds, epochs = {}, {}, {}, {}
    bar = tqdm(total=len(settings.arms) * len(settings.seeds), desc="utility", unit="classifier",
               disable=not progress)
    with bar:
        for arm in settings.arms:
            images, labels, augment = arm_images(arm, real.images, real.labels, scarce, synthetic)
            sizes[arm] = np.bincount(labels, minlength=num_classes).tolist()
            probas[arm], epochs[arm] = [], []
            started = time.perf_counter()
            for seed in settings.seeds:
                bar.set_postfix_str(f"{arm}, seed {seed}")
                model = train_classifier(images, labels, num_classes, augment, seed, settings)
                epochs[arm].append(len(model.history.history["loss"]))
                probas[arm].append(predict_proba(model, test.images))
                bar.update()
            seconds[arm] = time.perf_counter() - started
    scoring = time.perf_counter()
    arms = {}
    for arm in settings.arms:
        per_seed = [score(test.labels, p) for p in probas[arm]]
        entry = {"training_images_per_class": dict(zip(class_names, sizes[arm])), "meaning": MEANING[arm],
                 "seconds": seconds[arm], "epochs": epochs[arm]}
        for key in ("balanced_accuracy", "macro_auc"):
            values = [s[key] for s in per_seed]
            entry[key] = {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values)),
                          "per_seed": [float(v) for v in values]}
        for key in ("sensitivity", "auc"):
            values = np.array([s[key] for s in per_seed])
            entry[key] = {name: {"mean": float(np.mean(values[:, c])), "min": float(np.min(values[:, c])),
                                 "max": float(np.max(values[:, c]))} for c, name in enumerate(class_names)}
        base = BASELINES.get(arm)
        if base in probas:
            diff = bootstrap_difference(test.labels, probas[arm], probas[base], settings.bootstrap)
            entry["against"] = base
            entry["difference"] = {
                "balanced_accuracy": _interval(diff["balanced_accuracy"]),
                "macro_auc": _interval(diff["macro_auc"]),
                "sensitivity": {name: _interval(diff["sensitivity"], c) for c, name in enumerate(class_names)},
            }
        entry["reading"] = reading(arm, entry)
        arms[arm] = entry
    return {"arms": arms, "class_names": list(class_names), "test_images_per_class":
            dict(zip(class_names, np.bincount(test.labels, minlength=num_classes).tolist())),
            "scoring_seconds": time.perf_counter() - scoring,
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()}}


def reading(arm: str, entry: dict) -> str:
    """One sentence: what the arm measures and, for a compared arm, what its interval says."""
    text = MEANING[arm][0].upper() + MEANING[arm][1:] + "."
    if "difference" not in entry:
        return text
    d = entry["difference"]["balanced_accuracy"]
    change = f"{d['difference']:+.3f} balanced accuracy against {entry['against']} (95% interval {d['low']:+.3f} to {d['high']:+.3f})"
    if d["low"] > 0:
        return f"{text} It helps: {change}."
    if d["high"] < 0:
        return f"{text} It hurts: {change}."
    return f"{text} No clear difference: {change}."


def _interval(entry: dict, c: int | None = None) -> dict:
    pick = (lambda v: float(np.asarray(v)[c])) if c is not None else float
    return {"difference": pick(entry["difference"]), "low": pick(entry["low"]), "high": pick(entry["high"])}


def generate_synthetic(run_dir, class_names, counts: np.ndarray, out_dir: Path, settings: UtilitySettings,
                       progress: bool = False) -> tuple[dict[int, np.ndarray], dict]:
    """`counts[c]` images of each class c from the run's generator (one `generate --class`
    job per class, in process), read back as float32 in [-1, 1]."""
    from service.generation import generate_in_process, plan_job
    from service.imageio import from_uint8, read_png

    images, provenance = {}, {}
    for c, name in enumerate(class_names):
        count = int(counts[c])
        if count == 0:
            images[c] = np.zeros((0,), np.float32)
            continue
        job = plan_job(run_dir, count, out_dir / name, seed=settings.generation_seed, class_name=name,
                       backend=settings.backend)
        generate_in_process(job, resume=(out_dir / name).exists(), progress=progress)
        files = sorted((out_dir / name).glob("img_*.png"))
        images[c] = from_uint8(np.stack([read_png(p) for p in files]))
        provenance = {"checkpoint": job.checkpoint, "checkpoint_sha256": job.checkpoint_sha256,
                      "generation_seed": job.seed}
    return images, provenance


def run_utility(run_dir, real, test, out_dir, settings: UtilitySettings | None = None, progress: bool = False) -> dict:
    """The whole command: check, generate what the arms need, train and score the arms, write
    OUT/utility.json and OUT/utility.png. Returns the summary."""
    from service.files import write_json

    settings = settings or UtilitySettings()
    settings.check()
    config, class_names = conditional_run(run_dir)
    check_inputs(class_names, real, test)
    for name, dataset in (("training", real), ("test", test)):
        if dataset.images.shape[1] != config.image_size:
            raise UserError(f"the {name} images are {dataset.images.shape[1]}x{dataset.images.shape[1]}; "
                            f"the run makes {config.image_size}x{config.image_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scarce = scarce_indices(real.labels, settings.scarce_fraction, settings.split_seed)
    counts = synthetic_counts(real.labels, scarce, len(class_names), settings.arms)
    started = time.perf_counter()
    synthetic, provenance = generate_synthetic(run_dir, class_names, counts, out_dir / "generated", settings, progress)
    generated = time.perf_counter()
    summary = evaluate_arms(real, test, synthetic, class_names, settings, progress)
    summary.update(run=str(run_dir), generated=str(out_dir / "generated"), **provenance,
                   generation_seconds=generated - started, seconds=time.perf_counter() - started)
    write_json(out_dir / "utility.json", summary)
    plot_utility(summary, out_dir / "utility.png")
    return summary


def plot_utility(summary: dict, path: Path) -> None:
    """Balanced accuracy per arm (bar: seed mean, whisker: seed range) and each arm's
    difference from its real-only counterpart (whisker: bootstrap 95% interval)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from service.files import atomic_file

    arms = summary["arms"]
    names = list(arms)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    means = [arms[a]["balanced_accuracy"]["mean"] for a in names]
    lows = [m - arms[a]["balanced_accuracy"]["min"] for a, m in zip(names, means)]
    highs = [arms[a]["balanced_accuracy"]["max"] - m for a, m in zip(names, means)]
    left.bar(names, means, yerr=[lows, highs], capsize=4, color="#7a9cc6")
    left.axhline(1 / len(summary["class_names"]), color="grey", linestyle=":", label="chance")
    left.set_ylabel("balanced accuracy")
    left.set_title("on the held-out real test set (whiskers: seed range)", fontsize=10)
    left.set_ylim(0, 1)
    left.legend(loc="lower right")
    left.tick_params(axis="x", rotation=30)
    compared = [a for a in names if "difference" in arms[a]]
    if compared:
        d = [arms[a]["difference"]["balanced_accuracy"] for a in compared]
        values = [x["difference"] for x in d]
        right.bar([f"{a.replace('+', '+' + chr(10))}\nvs {arms[a]['against']}" for a in compared], values,
                  yerr=[[v - x["low"] for v, x in zip(values, d)], [x["high"] - v for v, x in zip(values, d)]],
                  capsize=4, color=["#5aa469" if x["low"] > 0 else "#d35d6e" if x["high"] < 0 else "#bbbbbb" for x in d])
        right.axhline(0, color="black", linewidth=0.8)
        right.set_ylabel("difference (95% interval)")
        right.set_title("balanced accuracy against the real-only arm", fontsize=10)
    else:
        right.axis("off")
    fig.tight_layout()
    with atomic_file(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def describe(summary: dict) -> list[str]:
    """One line per arm for the terminal and the report."""
    lines = []
    mel = "melanoma" if "melanoma" in summary["class_names"] else summary["class_names"][-1]
    for arm, entry in summary["arms"].items():
        ba = entry["balanced_accuracy"]
        line = (f"{arm:17s} balanced accuracy {ba['mean']:.3f} [{ba['min']:.3f}, {ba['max']:.3f}]  "
                f"{mel} sensitivity {entry['sensitivity'][mel]['mean']:.3f}  macro AUC {entry['macro_auc']['mean']:.3f}")
        if "difference" in entry:
            d = entry["difference"]["balanced_accuracy"]
            line += f"  vs {entry['against']}: {d['difference']:+.3f} ({d['low']:+.3f}, {d['high']:+.3f})"
        lines.append(line)
    return lines
