"""The utility command's work: generate what the arms need, train and score every arm with every
seed, compare each with its baseline, write OUT/utility.json and OUT/utility.png."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from service.utility.arms import BASELINES, MEANING, arm_images, scarce_indices, synthetic_counts
from service.utility.settings import UtilitySettings, check_inputs, conditional_run, positive_class, shared_images
from service.utility.stats import MDE_FACTOR, bootstrap_difference, score
from service.utility.summary import notes, reading, verdict

UTILITY_FILE = "utility.json"  # the arms' scores and the verdict, in utility's folder
CLASSIFIER_NAMES = {"features": "extremely randomised trees on the lesion's colour, shape and texture statistics",
                    "cnn": "a small convolutional network (backends/tf/classifier.py)"}
METRICS = ("positive_auc", "positive_sensitivity_at_specificity", "balanced_accuracy")  # compared, in this order


@dataclass(frozen=True)
class Plan:
    """What every arm is built from, worked out once and checked before anything is generated."""
    positive: int  # the positive class's index
    scarce: np.ndarray  # the scarce arms' real images
    steps: int  # optimiser steps of every classifier: `epochs` passes over the real training set


def plan_arms(real_labels: np.ndarray, class_names, settings: UtilitySettings) -> Plan:
    """The settings checked, the positive class, the scarce images and the classifiers' budget."""
    settings.check()
    positive = positive_class(class_names, real_labels, settings.positive_class)
    scarce = scarce_indices(real_labels, settings.scarce_fraction, settings.split_seed)
    steps = math.ceil(settings.epochs * len(real_labels) / settings.batch_size)
    return Plan(positive, scarce, steps)


def evaluate_arms(real, test, synthetic: dict[int, np.ndarray], class_names, settings: UtilitySettings,
                  progress: bool = False, plan: Plan | None = None) -> dict:
    """Train and score every arm with every seed. `real`/`test` are service.data.Dataset
    objects with labels, `synthetic` maps class index -> float32 images in [-1, 1]; `plan`:
    `plan_arms`'s, when the caller has made it."""
    from tqdm import tqdm

    plan = plan or plan_arms(real.labels, class_names, settings)
    fit_and_score = _feature_classifier(test) if settings.classifier == "features" else _cnn(test, plan, settings)
    num_classes, positive = len(class_names), plan.positive
    compositions = {arm: arm_images(arm, real.images, real.labels, plan.scarce, synthetic, positive)
                    for arm in settings.arms}
    probas, seconds, epochs = {}, {}, {}
    bar = tqdm(total=len(settings.arms) * len(settings.seeds), desc="utility", unit="classifier",
               disable=not progress)
    with bar:
        for arm, (images, labels, augment) in compositions.items():
            probas[arm], epochs[arm] = [], []
            started = time.perf_counter()
            for seed in settings.seeds:
                bar.set_postfix_str(f"{arm}, seed {seed}")
                proba, passes = fit_and_score(images, labels, num_classes, augment, seed)
                epochs[arm].append(passes)
                probas[arm].append(proba)
                bar.update()
            seconds[arm] = time.perf_counter() - started
    scoring = time.perf_counter()
    arms = {arm: arm_entry(arm, test.labels, probas, compositions[arm][1], class_names, positive, settings)
            for arm in settings.arms}
    for arm in arms:
        arms[arm].update(seconds=seconds[arm], epochs=None if None in epochs[arm] else epochs[arm])
    summary = {"arms": arms, "class_names": list(class_names), "positive_class": class_names[positive],
               "specificity": settings.specificity, "mde_factor": MDE_FACTOR,
               "classifier": CLASSIFIER_NAMES[settings.classifier],
               "classifier_steps": plan.steps if settings.classifier == "cnn" else None,
               "test_images_per_class": dict(zip(class_names, np.bincount(test.labels, minlength=num_classes).tolist())),
               "scoring_seconds": time.perf_counter() - scoring,
               "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()}}
    summary["notes"] = notes(summary)
    return summary


def _cnn(test, plan: Plan, settings: UtilitySettings):
    """fit_and_score for the CNN: (test probabilities, epochs it trained)."""
    from backends.tf.classifier import predict_proba, train_classifier

    def fit_and_score(images, labels, num_classes, augment, seed):
        model = train_classifier(images, labels, num_classes, augment, seed, settings, plan.steps)
        return predict_proba(model, test.images), len(model.history.history["loss"])

    return fit_and_score


def _feature_classifier(test):
    """fit_and_score for the trees on lesion statistics (service.validation.fidelity): the test
    set's statistics computed once; an augmented arm adds each image's mirror images."""
    from service.imageio import to_uint8
    from service.validation import fidelity

    test_features = fidelity.lesion_features(to_uint8(test.images))

    def fit_and_score(images, labels, num_classes, augment, seed):
        pixels = to_uint8(images)
        if augment:
            pixels = np.concatenate([pixels, pixels[:, :, ::-1], pixels[:, ::-1]])
            labels = np.concatenate([labels] * 3)
        model = fidelity.trees(seed).fit(fidelity.lesion_features(pixels), labels)
        proba = np.zeros((len(test_features), num_classes))
        proba[:, model.classes_] = model.predict_proba(test_features)
        return proba, None

    return fit_and_score


def _spread(values) -> dict:
    return {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values)),
            "per_seed": [float(v) for v in values]}


def _interval(entry: dict, c: int | None = None) -> dict:
    pick = (lambda v: float(np.asarray(v)[c])) if c is not None else float
    return {k: pick(entry[k]) for k in ("difference", "low", "high", "se", "mde")}


def arm_entry(arm: str, test_labels, probas: dict, train_labels, class_names, positive: int,
              settings: UtilitySettings) -> dict:
    """An arm's scores (mean and range over seeds) and, when its baseline ran, its differences
    from it with intervals, detectable differences and verdicts."""
    per_seed = [score(test_labels, p, positive, settings.specificity) for p in probas[arm]]
    entry = {"training_images_per_class": dict(zip(class_names, np.bincount(train_labels, minlength=len(class_names))
                                                    .tolist())), "meaning": MEANING[arm]}
    for key in (*METRICS, "macro_auc"):
        entry[key] = _spread([s[key] for s in per_seed])
    for key in ("sensitivity", "auc"):
        values = np.array([s[key] for s in per_seed])
        entry[key] = {name: _spread(values[:, c]) for c, name in enumerate(class_names)}
    base = BASELINES.get(arm)
    if base in probas:
        diff = bootstrap_difference(test_labels, probas[arm], probas[base], settings.bootstrap, positive,
                                    settings.specificity)
        entry["against"] = base
        entry["difference"] = {key: _interval(diff[key]) for key in (*METRICS, "macro_auc")}
        entry["difference"]["sensitivity"] = {name: _interval(diff["sensitivity"], c)
                                              for c, name in enumerate(class_names)}
        entry["verdict"] = {key: verdict(entry["difference"][key]) for key in METRICS}
    entry["reading"] = reading(arm, entry, class_names[positive])
    return entry


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
        generate_in_process(job, progress=progress)  # a re-run finishes the same job in its folder
        files = sorted((out_dir / name).glob("img_*.png"))[:count]
        images[c] = from_uint8(np.stack([read_png(p) for p in files]))
        provenance = {"checkpoint": job.checkpoint, "checkpoint_sha256": job.checkpoint_sha256,
                      "generation_seed": job.seed}
    return images, provenance


def run_utility(run_dir, real, test, out_dir, settings: UtilitySettings | None = None, progress: bool = False) -> dict:
    """The whole command: check, generate what the arms need, train and score the arms, write
    OUT/utility.json and OUT/utility.png. Returns the summary."""
    from service.files import claim_output_folder, output_lock, write_json
    from service.utility.plot import plot_utility

    settings = settings or UtilitySettings()
    config, class_names = conditional_run(run_dir)
    check_inputs(class_names, real, test, config.image_size)
    plan = plan_arms(real.labels, class_names, settings)
    overlap = shared_images(real, test)
    if overlap:
        print(f"warning: {overlap} of the {len(test)} test images are also training images (the same pixels): "
              "their scores measure memory, not generalisation; test on held-out images", file=sys.stderr)
    # OUT made by this command (or by it before folders carried a marker), else refused
    out_dir = claim_output_folder(out_dir, "utility", ours_if=lambda folder: (folder / UTILITY_FILE).is_file())
    with output_lock(out_dir, "a utility run"):
        counts = synthetic_counts(real.labels, plan.scarce, len(class_names), settings.arms, plan.positive)
        started = time.perf_counter()
        synthetic, provenance = generate_synthetic(run_dir, class_names, counts, out_dir / "generated", settings, progress)
        generated = time.perf_counter()
        summary = evaluate_arms(real, test, synthetic, class_names, settings, progress, plan)
        summary.update(run=str(run_dir), generated=str(out_dir / "generated"), **provenance,
                       generation_seconds=generated - started, seconds=time.perf_counter() - started)
        write_json(out_dir / UTILITY_FILE, summary)
        plot_utility(summary, out_dir / "utility.png")
    return summary
