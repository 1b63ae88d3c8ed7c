"""The main job: train -> generate -> validate -> report, in one run directory.

Layout: RUN/ as `train` writes it, plus RUN/generated/ (PNG files + manifest.csv, as
`generate` writes them) and RUN/report/ (metrics.json, report.html, plots, as `validate`);
with `utility` (conditional runs), RUN/utility/ as the `utility` command writes it, and a
section in the report.
Reference set for the metrics: on the embedded dataset, fresh images of the same generator
(another seed, so disjoint from the training images); on user data, the training images
themselves (the report says so; hold data out with `validate --real` for a strict test), with
the real-vs-real reference split by group when the data names one.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.errors import UserError

DEFAULT_TIME_BUDGET = 480.0  # seconds of training when neither epochs nor a time budget is given
DEFAULT_COUNT = 1000
MIN_COUNT = 10
REFERENCE_SEED_OFFSET = 1_000_003  # the embedded reference set: another seed, disjoint images
STAGES = 4


@dataclass
class MainJob:
    """What the main job runs; the training fields are run_training's."""

    out: Path | None = None
    data: object = None  # a service.data.DataOptions, or a path; None: the embedded dataset
    backend: str = "tf"
    preset: str = "default"
    epochs: int | None = None
    image_size: int | None = None
    batch_size: int | None = None
    time_budget: float | None = None
    seed: int = 0
    conditional: bool = False
    count: int = DEFAULT_COUNT
    workers: int = 0
    progress: bool = True
    utility: bool = False  # a last stage: does the synthetic set help a classifier? (service.utility)
    utility_test: str | None = None  # its held-out real test set on user data
    utility_settings: object = None  # a service.utility.UtilitySettings; None: its defaults

    def __post_init__(self) -> None:
        from service.data import DataOptions

        self.data = DataOptions.of(self.data)

    def check(self) -> None:
        if self.utility and not self.conditional:
            raise UserError("--utility needs --conditional: the classifier arms need generated images of each class")
        if self.utility and self.data.path is not None and self.utility_test is None:
            raise UserError("--utility on your data needs --utility-test PATH: labelled real images held out from --data")
        if self.utility_test is not None and not self.utility:
            raise UserError("--utility-test is only used with --utility")
        if self.utility_test is not None and not Path(self.utility_test).exists():
            raise UserError(f"--utility-test: data path not found: {self.utility_test}")  # before training
        if self.count < MIN_COUNT:
            raise UserError(f"--count must be at least {MIN_COUNT} images to validate, got {self.count}")
        if self.workers < 0:
            raise UserError(f"--workers must be >= 0, got {self.workers}")


def stage(number: int, text: str, stages: int = STAGES) -> None:
    print(f"[{number}/{stages}] {text}", file=sys.stderr, flush=True)


def run_main_job(job: MainJob) -> dict:
    """Every stage in order; returns {"run_dir", "generated", "report", "results", "seconds"}."""
    from service.generation import class_indices, generate_in_process, generate_on_ray, plan_job, read_generated
    from service.training import outcome_lines, run_training
    from service.validation import validate_sets

    from service.rundir import check_run_dir

    job.check()
    started = time.perf_counter()
    stages = STAGES + job.utility
    out = job.out or Path("runs") / time.strftime("main-%Y%m%d-%H%M%S")
    check_run_dir(out)  # a folder the tool did not make: one line before any stage starts
    time_budget = job.time_budget
    if job.epochs is None and time_budget is None:
        time_budget = DEFAULT_TIME_BUDGET

    stage(1, f"training ({job.backend} backend, preset {job.preset}" + (f", {time_budget:.0f} s budget" if time_budget else "") + ")", stages)
    outcome = run_training(
        out=out, data=job.data, backend=job.backend,
        preset=job.preset, epochs=job.epochs, image_size=job.image_size, batch_size=job.batch_size,
        time_budget=time_budget, seed=job.seed, conditional=job.conditional, progress=job.progress,
    )
    print("\n".join(outcome_lines(outcome)), flush=True)
    run_dir, config = outcome.run_dir, outcome.config

    stage(2, f"generating {job.count} images", stages)
    generated_dir = run_dir / "generated"
    generation = plan_job(run_dir, job.count, generated_dir, seed=job.seed, backend=job.backend)
    if job.workers == 0:
        # In the training process TF keeps its training thread count, so a pixel may differ by
        # one level from `generate`'s one-thread workers (see service.generation).
        generate_in_process(generation, progress=job.progress)
    else:
        generate_on_ray(generation, workers=job.workers, progress=job.progress)
    fake, fake_names = read_generated(generated_dir)

    stage(3, "loading the real reference set", stages)
    real, train = reference_sets(job, config.image_size)

    stage(4, "validating and writing the report", stages)
    report_dir = run_dir / "report"
    fake_labels = class_indices(fake_names, real.class_names) if real.labels is not None else None
    results = validate_sets(
        real.images, fake, train=train.images, out_dir=report_dir,
        real_labels=real.labels if fake_labels is not None else None, fake_labels=fake_labels,
        class_names=real.class_names, run_dir=run_dir, progress=job.progress, seed=job.seed,
        real_groups=real.groups, train_groups=train.groups,
    )
    outcome = {"run_dir": run_dir, "generated": generated_dir, "report": report_dir / "report.html",
               "results": results}
    if job.utility:
        stage(5, "downstream utility: training the classifier arms", stages)
        outcome["utility"] = utility_stage(job, run_dir, train, real, config.image_size, report_dir)
    outcome["seconds"] = time.perf_counter() - started
    return outcome


def utility_stage(job: MainJob, run_dir: Path, train: "ImageSet", reference: "ImageSet", image_size: int,
                  report_dir: Path) -> dict:
    """service.utility on the training images against a held-out real test set (on the embedded
    dataset the fresh reference set, never trained on; on user data --utility-test), then the
    result into the report."""
    import dataclasses

    from service import data
    from service.imageio import from_uint8
    from service.utility import UtilitySettings, run_utility
    from service.validation.report import add_utility

    def as_dataset(image_set: ImageSet) -> data.Dataset:
        return data.Dataset(from_uint8(image_set.images), image_set.labels, image_set.class_names)

    if job.utility_test is None:
        test = as_dataset(reference)
    else:
        # the test set labelled the same way as the training data (same choices; its own label file)
        options = job.data
        test = data.DataOptions(**{**vars(options), "path": job.utility_test, "labels": None}).load(
            image_size, progress=job.progress)
    out = run_dir / "utility"
    settings = dataclasses.replace(job.utility_settings or UtilitySettings(), backend=job.backend)
    summary = run_utility(run_dir, as_dataset(train), test, out, settings, progress=job.progress)
    add_utility(report_dir, summary, out / "utility.png")
    return summary


@dataclass
class ImageSet:
    images: np.ndarray  # uint8 NHWC
    labels: np.ndarray | None
    class_names: tuple[str, ...]
    groups: np.ndarray | None


def reference_sets(job: MainJob, image_size: int) -> tuple[ImageSet, ImageSet]:
    """(real reference, training set) as uint8, per the module docstring."""
    from service import data
    from service.imageio import to_uint8
    from service.training import DEFAULT_DATA_COUNT

    if job.data.path is None:
        train = data.default_dataset(image_size, count=DEFAULT_DATA_COUNT, progress=job.progress)
        real = data.default_dataset(
            image_size, count=max(job.count, 500), seed=job.seed + REFERENCE_SEED_OFFSET, progress=job.progress
        )
    else:
        train = job.data.load(image_size, progress=job.progress)
        real = train

    def as_set(dataset) -> ImageSet:
        return ImageSet(to_uint8(dataset.images), dataset.labels, tuple(dataset.class_names), dataset.groups)

    return as_set(real), as_set(train)


def summary_lines(outcome: dict) -> list[str]:
    """What the command prints at the end: the two SWD numbers a user reads first, and where
    everything is."""
    lines = []
    try:
        generated = outcome["results"]["real_vs_generated"]["swd_mean"]
        reference = outcome["results"]["real_vs_real"]["swd_mean"]
        lines.append(f"SWD x1e3: real vs generated {generated:.1f}, real vs real {reference:.1f} (lower is closer)")
    except (KeyError, TypeError):
        pass
    if outcome.get("utility"):
        from service.utility import describe

        lines += ["downstream utility (balanced accuracy on held-out real images):", *describe(outcome["utility"])]
    lines += [
        f"done in {outcome['seconds']:.0f} s",
        f"run directory: {outcome['run_dir']}",
        f"generated images: {outcome['generated']}",
        f"report: {outcome['report']}",
    ]
    return lines
