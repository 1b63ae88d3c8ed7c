"""The in-training diversity check: is the generator collapsing? Said out loud, while it trains.

Every `every` steps (and once at the end of training) the trainer asks G for a fixed batch of
images and measures how much of a fixed slice of the training images they cover, in the
validation feature space (service.validation.features, the frozen random net). The value goes
to metrics.jsonl as a line {"type": "diversity", "step", "coverage", ...}, into the loss plot
beside the losses, and below `COLLAPSE_THRESHOLD` a one-line warning goes to stderr; the main
job's summary says whether the run collapsed.

What is compared, fixed for the whole run (so the values of one run are comparable, and the
check is a pure function of G's weights):
- the real side: `reference_indices` - up to REFERENCE_COUNT training images, evenly spaced
  through the training set (no random draw: an ordered set, say sorted by class, is sampled
  across its whole length); their features and k-NN radii are computed once;
- the fake side: as many images from `Backend.generate` (inference mode: the averaged generator
  when the run has one, i.e. what `generate` will draw), from noise of its own seeded stream
  (SeedSequence([seed, DIVERSITY_NOISE_STREAM])), never the trainer's RNG, and in a conditional
  run the classes of the real slice, image for image. Generation in inference mode changes no
  weight, moving statistic or random stream, so a run trains the same, bit for bit, with the
  check or without it, and resumes exactly.

Why coverage at k = 3 (Naeem et al. 2020, "Reliable fidelity and diversity metrics for
generative models"): coverage is the share of real points whose k-NN ball (radius: the distance
to the k-th nearest other real point) holds at least one generated point.
- It uses the real points' balls only. Recall (Kynkaanniemi et al. 2019) uses balls around the
  generated points, and a few outlying fakes - common in a collapsing G, whose outputs are one
  mode plus some garbage - blow those balls up so that recall reads high; coverage cannot be
  inflated by the fakes' spread, only by fakes landing near many distinct real images.
- Its real balls are fixed for the run: computed once, so every check costs one
  (count x count) distance matrix, and a change between checks is G's alone.
- A collapsed G (all outputs near one image) covers the few real balls around that image:
  coverage about k / count; a G that draws from the data's distribution covers about
  1 - 2^-k of them (Naeem et al.'s expectation for equal set sizes: 0.875 at k = 3).
- Small k: the slice has 256 points, not the report's 1,000+, so its k-NN balls are wider at
  the same k; k = 3 (not the report's 5) keeps them local, so that a G drawing a few kinds of
  image covers few of them, while staying clear of the noise of k = 1 (one neighbour's
  distance). On the calibration runs below k = 1, 3 and 5 all separate healthy from collapsed;
  k = 3 puts the healthy runs (0.55-0.79) nearest the middle of the scale.

When it is judged. A freshly initialised G draws nearly the same image for every z, and a
healthy run climbs out of that over its first thousands of images (on ISIC 2017 at 64x64 the
default recipe's coverage went 0.01, 0.22, 0.12, 0.25 at steps 50, 250, 450, 500 of batch 32,
then stayed at 0.31 or more): the checks before WARMUP_KIMG thousand training images are logged
and plotted but not judged, so a healthy start is not called a collapse. After it, coverage
below COLLAPSE_THRESHOLD is.

Calibration (TF backend, 64x64, bench/diversity_calibration.py and checks every 50 steps; README,
"The diversity check"): the 14 finished runs of the ISIC 2017 screens (default and conditional
variants, 1,500 to 2,835 steps) score 0.55 to 0.79; a fresh default run on the same images 0.31
to 0.64 after the warm-up (0.35 lowest), the default on the embedded stand-in 0.27 to 0.32;
runs made to collapse: D's learning rate 1e-7 (G converges on one image) 0.00 at every check,
G's learning rate 0.02 (a few blotchy lesion shapes) 0.16, 0.09, 0.09 after the warm-up (0.02
to 0.21 before). One real image repeated scores 0.02, another slice of the real images 0.87.
The threshold 0.2 sits under every healthy value after the warm-up and over every collapsed one.
"""

from __future__ import annotations

import numpy as np

from backends.noise import sample_noise

DIVERSITY_EVERY = 250  # steps between checks (0: never); the CLI's --diversity-every
REFERENCE_COUNT = 256  # real images in the slice, and generated images per check
COVERAGE_K = 3
COLLAPSE_THRESHOLD = 0.2  # coverage below this after the warm-up: collapsed (calibration: README)
WARMUP_KIMG = 20.0  # checks before this many thousand training images are logged, not judged
DIVERSITY_NOISE_STREAM = 3  # SeedSequence([seed, 3]): the trainer's streams are 1 and 2


def reference_indices(count: int, wanted: int = REFERENCE_COUNT) -> np.ndarray:
    """The training images the check compares with: min(wanted, count) indices evenly spaced
    over 0..count-1 (all of them when the set is small), the same for a run's whole life."""
    if count <= wanted:
        return np.arange(count, dtype=np.int64)
    return np.floor(np.arange(wanted) * (count / wanted)).astype(np.int64)


def diversity_noise(config, count: int) -> np.ndarray:
    """The fixed noise of the check's generated images: its own stream of the run's seed."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(config.seed), DIVERSITY_NOISE_STREAM])))
    return sample_noise(rng, count, config)


def real_radii(real_features: np.ndarray, k: int = COVERAGE_K) -> np.ndarray:
    """Each real point's distance to its k-th nearest other real point (the report's k-NN radii,
    service.validation.metrics.knn_radii)."""
    from service.validation.metrics import knn_radii

    real_features = np.asarray(real_features)
    if len(real_features) <= k:
        raise ValueError(f"coverage at k={k} needs more than {k} real points, got {len(real_features)}")
    return knn_radii(real_features, k)


def coverage(real_features: np.ndarray, fake_features: np.ndarray, k: int = COVERAGE_K,
             radii: np.ndarray | None = None) -> float:
    """Share of real points whose k-NN ball (radius: the k-th nearest other real point)
    holds at least one fake point (Naeem et al. 2020; the report's coverage, at this k).
    `radii`: real_radii(real, k), if known."""
    from service.validation.metrics import coverage_in_balls

    if radii is None:
        radii = real_radii(real_features, k)
    return coverage_in_balls(np.asarray(real_features), np.asarray(fake_features), radii)


class DiversityCheck:
    """The check of one run: the real slice's features and radii (computed at the first
    measure), the fixed noise and labels; `measure(backend)` -> the metrics line's fields."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, config, *, count: int = REFERENCE_COUNT,
                 k: int = COVERAGE_K, threshold: float = COLLAPSE_THRESHOLD, warmup_images: float = WARMUP_KIMG * 1000):
        self.index = reference_indices(len(images), count)
        if len(self.index) <= k:
            raise ValueError(f"the diversity check needs more than {k} training images")
        self._images = images
        self.labels = None if labels is None or config.num_classes == 0 else np.asarray(labels)[self.index]
        self.z = diversity_noise(config, len(self.index))
        self.k = k
        self.threshold = threshold
        self.warmup_images = warmup_images
        self._real = None
        self._radii = None

    def _reference(self):
        if self._real is None:
            from service.imageio import to_uint8
            from service.validation.features import random_net_features

            self._real = random_net_features(to_uint8(self._images[self.index]))
            self._radii = real_radii(self._real, self.k)
            self._images = None  # the slice's features are all the check keeps
        return self._real, self._radii

    def features_of(self, backend) -> np.ndarray:
        from service.imageio import to_uint8
        from service.validation.features import random_net_features

        return random_net_features(to_uint8(backend.generate(self.z, self.labels)))

    def measure(self, backend, images_seen: int | None = None) -> dict:
        """{"coverage", "k", "images", "judged", "collapsed"}: judged once
        `images_seen` (training images so far; None: judge now) is past the warm-up; collapsed
        when judged and coverage is below the threshold."""
        real, radii = self._reference()
        value = coverage(real, self.features_of(backend), self.k, radii)
        judged = images_seen is None or images_seen >= self.warmup_images
        return {"coverage": value, "k": self.k, "images": len(self.index),
                "judged": judged, "collapsed": bool(judged and value < self.threshold)}

    def warning(self, step: int, record: dict) -> str:
        return (
            f"warning: step {step}: the generator may have collapsed: its images cover "
            f"{record['coverage']:.2f} of {record['images']} training images (coverage at k={record['k']}, "
            f"below {self.threshold:.2f}); see loss_curve.png"
        )


def read_diversity(metrics_path) -> list[dict]:
    """The "diversity" lines of a metrics.jsonl, in order (torn lines skipped)."""
    from service.rundir import metrics_records

    return metrics_records(metrics_path, "diversity")


def diversity_verdict(metrics_path) -> str | None:
    """One line on a run's diversity checks: the last value and whether the run collapsed (its
    last judged check was), collapsed and recovered, or is too young to judge; None without
    checks. Each line's own "collapsed" is the verdict, so a line keeps the threshold it was
    judged by."""
    records = read_diversity(metrics_path)
    if not records:
        return None
    last = records[-1]
    judged = [r for r in records if r.get("judged", True)]
    head = (f"diversity: coverage {last['coverage']:.2f} of {last.get('images', '?')} training images "
            f"at step {last['step']}")
    if not judged:
        return f"{head}: too early to judge (the checks start judging after {WARMUP_KIMG:g}k training images)"
    low = [r for r in judged if r.get("collapsed")]
    if judged[-1].get("collapsed"):
        return f"{head}: COLLAPSED (the generator draws few distinct images; threshold {COLLAPSE_THRESHOLD:.2f})"
    if low:
        return (f"{head}: not collapsed now, but was at {len(low)} of {len(judged)} judged checks "
                f"(lowest {min(r['coverage'] for r in low):.2f})")
    return (f"{head}: not collapsed (lowest {min(r['coverage'] for r in judged):.2f} over {len(judged)} judged "
            f"checks; threshold {COLLAPSE_THRESHOLD:.2f})")
