"""`validate_sets`: every metric, map and panel for a real and a generated set (the metrics
pass); `service.validation.report` then lays the result out as report.html.

Writes into out_dir:
    metrics.json             all numbers (real vs generated, real vs real reference, per class)
    report.html              self-contained page; relative links to the PNGs below
    real_samples.png, generated_samples.png        64 random images of each set
    loss_curve.png           when run_dir has a metrics.jsonl (or a loss_curve.png)
    pca_thumbnails.png, pca_scatter.png, tsne_thumbnails.png, tsne_scatter.png
    memorization_pairs.png, memorization_ratios.png

The reference: the real set is shuffled (seed) and cut into two disjoint halves of equal size,
and each metric is computed between them exactly as between real and generated. It is the
value a generator indistinguishable from the real data would score, at half the sample size
(so for the size-biased numbers, SWD and FD, it sits a little above the ideal full-size value).
When the real images carry groups (source image or patient), the halves split by group: two
patches of one image, one in each half, would make the reference look better than any
generator can be.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from service.errors import UserError
from service.files import claim_output_folder, copy_regular_file, output_lock, refuse_link, write_json
from service.imageio import save_grid, to_uint8
from service.rundir import LOSS_CURVE_FILE, METRICS_FILE
from service.validation import maps, memorization, metrics
from service.validation.report import REPORT_FILE, RESULTS_FILE, write_report
from service.validation.features import FEATURE_SPACE, InceptionFeatures, random_net_features

MIN_REAL_IMAGES = 2 * (metrics.DENSITY_COVERAGE_K + 1)  # two halves, each enough for 5-NN
MIN_FAKE_IMAGES = metrics.DENSITY_COVERAGE_K + 1
MIN_TRAIN_IMAGES = 2
SAMPLE_GRID_IMAGES = 64
VALIDATE_COMMAND = "validate"  # the command named in the report folder's marker (service.files)
PER_CLASS_MAX_IMAGES = 500  # per class and set: per-class values cost at most ~half the main ones

# ----------------------------------------------------------------------------- inputs


def _as_uint8(name: str, images) -> np.ndarray:
    if images is None:
        raise UserError(f"{name} set is missing")
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise UserError(f"{name} images must be NHWC with 1 or 3 channels, got shape {images.shape}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if images.dtype != np.uint8:
        images = to_uint8(images)  # float images in [-1, 1], the project's convention
    return images


def check_sets(real: np.ndarray, fake: np.ndarray, train: np.ndarray | None) -> None:
    """One-line UserError for sets that cannot be compared."""
    sizes = {"real": real, "generated": fake, **({"training": train} if train is not None else {})}
    shapes = {name: images.shape[1:3] for name, images in sizes.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {h}x{w}" for name, (h, w) in shapes.items())
        raise UserError(f"image sizes differ ({listed}); load them at one --image-size")
    height, width = real.shape[1:3]
    if min(height, width) < metrics.SWD_MIN_RESOLUTION:
        raise UserError(f"images of {height}x{width} are too small; validation needs at least {metrics.SWD_MIN_RESOLUTION}x{metrics.SWD_MIN_RESOLUTION}")
    for name, images, minimum in (("real", real, MIN_REAL_IMAGES), ("generated", fake, MIN_FAKE_IMAGES), ("training", train, MIN_TRAIN_IMAGES)):
        if images is not None and len(images) < minimum:
            raise UserError(f"the {name} set has {len(images)} images; the k-NN metrics need at least {minimum}")


def _check_labels(name: str, labels, count: int):
    if labels is None:
        return None
    labels = np.asarray(labels).astype(np.int64)
    if labels.shape != (count,):
        raise UserError(f"{name} labels: {labels.shape[0] if labels.ndim else 0} labels for {count} images")
    return labels


# ----------------------------------------------------------------------------- computing


def _set_metrics(real_u8, fake_u8, real_features, fake_features, seed: int) -> dict:
    swd = metrics.swd(real_u8, fake_u8, seed=seed)
    values = metrics.feature_metrics(real_features, fake_features, seed=seed)
    return {"swd_mean": swd["mean"], "swd_levels": swd["levels"], **values}


def _halves(count: int, seed: int, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of equal size. With groups, each group goes whole to one side (the
    groups in random order, each to the side with fewer images so far), then the larger side
    is cut at random to the smaller one's size."""
    rng = np.random.default_rng([seed, 2])
    if groups is None:
        order = rng.permutation(count)
        half = count // 2
        return np.sort(order[:half]), np.sort(order[half : 2 * half])
    names = np.unique(groups)
    sides: list[list[np.ndarray]] = [[], []]
    filled = [0, 0]
    for name in rng.permutation(names):
        members = np.flatnonzero(groups == name)
        side = int(filled[1] < filled[0])
        sides[side].append(members)
        filled[side] += len(members)
    a, b = (np.concatenate(side) if side else np.zeros(0, np.int64) for side in sides)
    size = min(len(a), len(b))
    return np.sort(rng.choice(a, size, replace=False)), np.sort(rng.choice(b, size, replace=False))


def _per_class(real, fake, real_features, fake_features, real_labels, fake_labels, class_names, seed, real_groups=None) -> dict:
    """Every metric within each class; a class's sets are capped at PER_CLASS_MAX_IMAGES each."""
    rng = np.random.default_rng([seed, 4])
    results = {}
    for cls in sorted(set(real_labels.tolist()) | set(fake_labels.tolist())):
        name = class_names[cls] if class_names is not None and 0 <= cls < len(class_names) else str(cls)
        in_real, in_fake = np.flatnonzero(real_labels == cls), np.flatnonzero(fake_labels == cls)
        entry = {"real": int(len(in_real)), "generated": int(len(in_fake))}
        if len(in_real) < MIN_REAL_IMAGES or len(in_fake) < MIN_FAKE_IMAGES:
            entry["skipped"] = f"needs at least {MIN_REAL_IMAGES} real and {MIN_FAKE_IMAGES} generated images"
            results[name] = entry
            continue
        if len(in_real) > PER_CLASS_MAX_IMAGES:
            in_real = np.sort(rng.choice(in_real, PER_CLASS_MAX_IMAGES, replace=False))
        if len(in_fake) > PER_CLASS_MAX_IMAGES:
            in_fake = np.sort(rng.choice(in_fake, PER_CLASS_MAX_IMAGES, replace=False))
        entry["used"] = {"real": int(len(in_real)), "generated": int(len(in_fake))}
        entry["real_vs_generated"] = _set_metrics(real[in_real], fake[in_fake], real_features[in_real], fake_features[in_fake], seed)
        half_a, half_b = _halves(len(in_real), seed, None if real_groups is None else real_groups[in_real])
        a, b = in_real[half_a], in_real[half_b]
        entry["real_vs_real"] = _set_metrics(real[a], real[b], real_features[a], real_features[b], seed)
        results[name] = entry
    return results


@dataclass
class ValidationSets:
    """The sets of one validation, checked: uint8 NHWC images, int64 labels and groups (or None).
    train is None when no training set was given (the audit then uses the real set)."""

    real: np.ndarray
    fake: np.ndarray
    train: np.ndarray | None = None
    real_labels: np.ndarray | None = None
    fake_labels: np.ndarray | None = None
    train_labels: np.ndarray | None = None
    class_names: list | None = None
    real_groups: np.ndarray | None = None
    train_groups: np.ndarray | None = None  # the real set's groups when train is None

    @property
    def audit_train(self) -> np.ndarray:
        return self.train if self.train is not None else self.real

    @property
    def labelled(self) -> bool:
        return self.real_labels is not None and self.fake_labels is not None


@dataclass
class ValidationOptions:
    out_dir: Path
    run_dir: object = None
    progress: bool = True
    inception: InceptionFeatures | None = None
    seed: int = 0


def validate_sets(
    real,
    fake,
    train=None,
    out_dir=None,
    real_labels=None,
    fake_labels=None,
    class_names=None,
    run_dir=None,
    progress: bool = True,
    inception_weights=None,
    seed: int = 0,
    real_groups=None,
    train_groups=None,
    train_labels=None,
) -> dict:
    """Compare `fake` with `real` (and audit it against `train`, default: `real`); write the report.

    Images: uint8 NHWC, or float NHWC in [-1, 1]. Labels: int class indices into `class_names`.
    real_groups, train_groups: the source image or patient of each real (training) image, or
    None; the real-vs-real reference then splits by group, and the memorization audit does not
    count an overlapping patch of the same source as another training image. Returns the dict written to out_dir/metrics.json.
    """
    if out_dir is None:
        raise UserError("validate_sets needs an out_dir")
    refuse_link(out_dir, f"--out {out_dir}")
    # One OpenMP thread for scikit-learn's k-NN and t-SNE: their many short parallel regions
    # spin and contend on shared cores (measured 10-50x slower under load); BLAS keeps its threads.
    with threadpool_limits(limits=1, user_api="openmp"):
        started = time.perf_counter()
        sets = checked_sets(real, fake, train, real_labels, fake_labels, train_labels, class_names, real_groups,
                            train_groups)
        halves = _reference_halves(sets, seed)
        inception = InceptionFeatures(inception_weights) if inception_weights else None  # fail before the long steps
        out_dir = claim_output_folder(out_dir, VALIDATE_COMMAND, ours_if=is_old_report_folder)
        options = ValidationOptions(out_dir, run_dir, progress, inception, seed)
        with output_lock(out_dir, "a report"):
            return _write_validation(sets, options, halves, started)


def checked_sets(real, fake, train=None, real_labels=None, fake_labels=None, train_labels=None, class_names=None,
                 real_groups=None, train_groups=None) -> ValidationSets:
    """The sets as uint8 with their labels and groups checked; one-line UserError otherwise."""
    real = _as_uint8("real", real)
    fake = _as_uint8("generated", fake)
    train = None if train is None else _as_uint8("training", train)
    check_sets(real, fake, train)
    real_labels = _check_labels("real", real_labels, len(real))
    fake_labels = _check_labels("generated", fake_labels, len(fake))
    train_labels = _check_labels("training", train_labels, len(train)) if train is not None else None
    real_groups = _check_labels("real group", real_groups, len(real))
    train_groups = _check_labels("training group", train_groups, len(train)) if train is not None else real_groups
    return ValidationSets(real, fake, train, real_labels, fake_labels, train_labels, class_names, real_groups,
                          train_groups)


def _reference_halves(sets: ValidationSets, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The real set's two halves for the real-vs-real reference; UserError when groups leave too few."""
    if sets.real_groups is not None and len(np.unique(sets.real_groups)) < 2:
        raise UserError("the real images all belong to one group; a real-vs-real reference needs two or more")
    half_a, half_b = _halves(len(sets.real), seed, sets.real_groups)
    if min(len(half_a), len(half_b)) < metrics.DENSITY_COVERAGE_K + 1:
        raise UserError(f"splitting the real images by group leaves halves of {len(half_a)} images; "
                        f"the reference needs at least {metrics.DENSITY_COVERAGE_K + 1} on each side")
    return half_a, half_b


def is_old_report_folder(folder) -> bool:
    """A report folder the tool wrote before output folders carried a marker."""
    return (Path(folder) / RESULTS_FILE).is_file() and (Path(folder) / REPORT_FILE).is_file()


class _Steps:
    """The report's steps as one progress bar, each step's seconds kept for metrics.json."""

    def __init__(self, names: list[str], progress: bool):
        self.timings: dict[str, float] = {}
        self.bar = tqdm(total=len(names), desc="validate", disable=not progress, unit="step")

    def start(self, name: str) -> None:
        self.bar.set_postfix_str(name)
        self.timings[name] = time.perf_counter()

    def done(self, name: str) -> None:
        self.timings[name] = round(time.perf_counter() - self.timings[name], 2)
        self.bar.update(1)


def _step_names(sets: ValidationSets, options: ValidationOptions) -> list[str]:
    steps = ["features", "swd + feature metrics", "reference (real halves)", "memorization audit", "maps", "report"]
    if sets.labelled:
        steps.insert(3, "per-class metrics")
        steps.insert(4, "class fidelity")
    if options.inception is not None:
        steps.insert(-1, "inception")
    return steps


def _write_validation(sets: ValidationSets, options: ValidationOptions, halves, started: float) -> dict:
    real, fake, seed, out_dir = sets.real, sets.fake, options.seed, options.out_dir
    half_a, half_b = halves
    steps = _Steps(_step_names(sets, options), options.progress)

    steps.start("features")
    real_features = random_net_features(real, progress=options.progress, desc="features: real")
    fake_features = random_net_features(fake, progress=options.progress, desc="features: generated")
    steps.done("features")

    steps.start("swd + feature metrics")
    main = _set_metrics(real, fake, real_features, fake_features, seed)
    steps.done("swd + feature metrics")

    steps.start("reference (real halves)")
    reference = _set_metrics(real[half_a], real[half_b], real_features[half_a], real_features[half_b], seed)
    steps.done("reference (real halves)")

    per_class = class_fidelity = None
    if sets.labelled:
        steps.start("per-class metrics")
        per_class = _per_class(real, fake, real_features, fake_features, sets.real_labels, sets.fake_labels,
                               sets.class_names, seed, sets.real_groups)
        steps.done("per-class metrics")
        steps.start("class fidelity")
        class_fidelity = _class_fidelity(real, sets.real_labels, fake, sets.fake_labels, sets.class_names, sets.train,
                                         sets.train_labels, sets.real_groups, seed)
        steps.done("class fidelity")

    steps.start("memorization audit")
    closest_pairs = _memorization(sets, halves, main, reference, out_dir)
    steps.done("memorization audit")

    inception_result = None
    if options.inception is not None:
        steps.start("inception")
        inception_result = _inception(options.inception, real, fake, halves, main, reference, options)
        steps.done("inception")

    steps.start("maps")
    map_info = maps.save_maps(out_dir, real_features, fake_features, real, fake, seed=seed)
    steps.done("maps")

    steps.start("report")
    result = {
        "counts": {"real": len(real), "generated": len(fake), "training": len(sets.audit_train),
                   "reference_half": len(half_a)},
        "image_size": [int(real.shape[1]), int(real.shape[2])],
        "reference_groups": None if sets.real_groups is None else int(len(np.unique(sets.real_groups))),
        "seed": seed,
        "real_vs_generated": main,
        "real_vs_real": reference,
        "per_class": per_class,
        "class_fidelity": class_fidelity,
        "privacy": _run_privacy(options.run_dir),
        "memorization": {
            "space": memorization.AUDIT_SPACE,
            "against": "training set" if sets.train is not None else "real set (no training set given)",
            "closest_pairs": closest_pairs,
        },
        "feature_space": FEATURE_SPACE,
        "inception": inception_result,
        "maps": map_info,
        "settings": _settings(),
        "files": _write_figures(out_dir, real, fake, options.run_dir, seed),
        "timings_s": steps.timings,
    }
    steps.done("report")
    steps.bar.close()
    result["timings_s"]["total"] = round(time.perf_counter() - started, 2)
    result = _jsonable(result)
    write_json(out_dir / RESULTS_FILE, result)
    write_report(out_dir, result)
    return result


def _memorization(sets: ValidationSets, halves, main: dict, reference: dict, out_dir: Path) -> list:
    """The copy audit of the generated set against the training set, and of one real half
    against the other (the reference); their counts join `main` and `reference`; the panels are
    written. Returns the closest pairs."""
    half_a, half_b = halves
    real, fake, audit_train = sets.real, sets.fake, sets.audit_train
    audit = memorization.memorization_audit(audit_train, fake, sets.train_groups)
    reference_audit = memorization.memorization_audit(
        real[half_a], real[half_b], None if sets.real_groups is None else sets.real_groups[half_a]
    )
    main.update(copy_share=audit["copy_share"], copies=audit["copies"], median_copy_ratio=audit["median_ratio"])
    reference.update(copy_share=reference_audit["copy_share"], copies=reference_audit["copies"],
                     median_copy_ratio=reference_audit["median_ratio"])
    closest_pairs = memorization.save_pairs_panel(out_dir / "memorization_pairs.png", audit, fake, audit_train)
    memorization.save_ratio_histogram(out_dir / "memorization_ratios.png", audit["ratio"], reference_audit["ratio"])
    return closest_pairs


def _inception(inception: InceptionFeatures, real, fake, halves, main: dict, reference: dict,
               options: ValidationOptions) -> dict:
    """FD and KID in Inception's space (user-given weights), joined to `main` and `reference`."""
    half_a, half_b = halves
    inception_real = inception(real, progress=options.progress, desc="inception: real")
    inception_fake = inception(fake, progress=options.progress, desc="inception: generated")
    for target, (a, b) in ((main, (inception_real, inception_fake)),
                           (reference, (inception_real[half_a], inception_real[half_b]))):
        kid = metrics.kernel_distance(a, b, seed=options.seed)
        target.update(inception_fd=metrics.frechet_distance(a, b), inception_kid=kid["mean"], inception_kid_std=kid["std"])
    return {"weights": inception.weights_path}


def _settings() -> dict:
    return {
        "swd": {"patch": metrics.SWD_PATCH_SIZE, "patches_per_image": metrics.SWD_PATCHES_PER_IMAGE,
                "directions": f"{metrics.SWD_DIRECTION_REPEATS}x{metrics.SWD_DIRECTIONS_PER_REPEAT}",
                "levels_down_to": metrics.SWD_MIN_RESOLUTION, "scale": metrics.SWD_SCALE},
        "kid": {"subsets": metrics.KID_SUBSETS, "max_subset_size": metrics.KID_MAX_SUBSET_SIZE, "kernel": "(x.y/d + 1)^3"},
        "precision_recall_k": metrics.PRECISION_RECALL_K,
        "density_coverage_k": metrics.DENSITY_COVERAGE_K,
        "per_class_max_images": PER_CLASS_MAX_IMAGES,
        "sample_grid_images": SAMPLE_GRID_IMAGES,
    }


def _run_privacy(run_dir) -> dict | None:
    """A private run's spent privacy as its config.json records it (service.trainer), or None."""
    if run_dir is None:
        return None
    from service.rundir import load_config

    try:
        _, full = load_config(run_dir)
    except UserError:
        return None
    privacy = full.get("privacy")
    if not isinstance(privacy, dict) or privacy.get("epsilon") is None:
        return None
    return {"run": str(run_dir), "epsilon": float(privacy["epsilon"]), "delta": float(privacy["delta"]),
            "steps": int(privacy.get("steps", 0))}


def _class_fidelity(real, real_labels, fake, fake_labels, class_names, train, train_labels, real_groups, seed) -> dict:
    """service.validation.fidelity's section of metrics.json, or why it is missing."""
    from service.validation import fidelity

    try:
        classifier, real_probabilities, how = fidelity.classifier_for_report(
            real, real_labels, train, train_labels, real_groups, seed)
    except UserError as e:
        return {"skipped": str(e)}
    result = fidelity.class_fidelity(classifier, real, real_labels, fake, fake_labels, class_names,
                                     real_probabilities=real_probabilities)
    return {**result, "how": how}


def _write_figures(out_dir: Path, real, fake, run_dir, seed: int) -> dict:
    """Sample grids and the loss curve; returns {role: file name} of what exists."""
    rng = np.random.default_rng([seed, 3])
    files = {}
    for role, images, name in (("real_samples", real, "real_samples.png"), ("generated_samples", fake, "generated_samples.png")):
        pick = np.sort(rng.choice(len(images), min(SAMPLE_GRID_IMAGES, len(images)), replace=False))
        save_grid(out_dir / name, images[pick], columns=8)
        files[role] = name
    if run_dir is not None:
        run_dir = Path(run_dir)
        loss_png = out_dir / LOSS_CURVE_FILE
        if _regular_file(run_dir / METRICS_FILE):
            from service.plots import plot_loss_curve

            if plot_loss_curve(run_dir / METRICS_FILE, loss_png) is not None:
                files["loss_curve"] = loss_png.name
        # the run's own plot, only a regular file inside the run (never a link to elsewhere:
        # the report folder is meant to be shared whole)
        if "loss_curve" not in files and os.path.lexists(run_dir / LOSS_CURVE_FILE):
            if copy_regular_file(run_dir / LOSS_CURVE_FILE, loss_png, inside=run_dir):
                files["loss_curve"] = loss_png.name
    for name in ("pca_thumbnails.png", "pca_scatter.png", "tsne_thumbnails.png", "tsne_scatter.png", "memorization_pairs.png", "memorization_ratios.png"):
        files[name.removesuffix(".png")] = name
    return files


def _regular_file(path: Path) -> bool:
    """A regular file that is not a link (a run's file whose content goes into the report)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        value = float(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None  # JSON has no inf/NaN
    return value
