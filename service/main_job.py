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
from dataclasses import dataclass, field, replace
from pathlib import Path

from service import data
from service.data import Dataset
from service.errors import UserError
from service.generation import (
    generate_in_process,
    generate_on_ray,
    plan_job,
    read_generated,
    real_class_indices,
)
from service.imageio import to_uint8
from service.rundir import check_run_dir
from service.training import TrainingRequest, run_training
from service.utility import UtilitySettings, describe, run_utility

DEFAULT_TIME_BUDGET = 480.0  # seconds of training when neither epochs nor a time budget is given
DEFAULT_COUNT = 1000
MIN_COUNT = 10
REFERENCE_SEED_OFFSET = 1_000_003  # the embedded reference set: another seed, disjoint images
STAGES = 4


@dataclass
class MainJob:
    """What the main job runs: the training request (as `train` takes it; the main job fills
    in its own defaults, see job_request) and the later stages' options."""

    training: TrainingRequest = field(default_factory=TrainingRequest)
    count: int = DEFAULT_COUNT
    workers: int = 0
    utility: bool = False  # a last stage: does the synthetic set help a classifier? (service.utility)
    utility_test: str | None = None  # its held-out real test set on user data
    utility_settings: object = None  # a service.utility.UtilitySettings; None: its defaults

    def check(self) -> None:
        if self.utility and not self.training.conditional:
            raise UserError("--utility needs --conditional: the classifier arms need generated images of each class")
        if self.utility and self.training.data.path is not None and self.utility_test is None:
            raise UserError("--utility on your data needs --utility-test PATH: labelled real images held out from --data")
        if self.utility_test is not None and not self.utility:
            raise UserError("--utility-test is only used with --utility")
        if self.utility_test is not None and not Path(self.utility_test).exists():
            raise UserError(f"--utility-test: data path not found: {self.utility_test}")  # before training
        if self.count < MIN_COUNT:
            raise UserError(f"--count must be at least {MIN_COUNT} images to validate, got {self.count}")
        if self.workers < 0:
            raise UserError(f"--workers must be >= 0, got {self.workers}")


def job_request(job: MainJob) -> TrainingRequest:
    """The job's training request with the main job's defaults: RUN named by the start time,
    a time budget when neither epochs nor one is given, and the backend, preset and seed
    named, since the later stages use them too."""
    return job.training.resolved(Path("runs") / time.strftime("main-%Y%m%d-%H%M%S"), DEFAULT_TIME_BUDGET)


def stage(number: int, text: str, stages: int = STAGES) -> None:
    print(f"[{number}/{stages}] {text}", file=sys.stderr, flush=True)


def run_main_job(job: MainJob) -> dict:
    """Every stage in order; returns {"run_dir", "generated", "report", "results", "seconds"}."""
    from service.validation import validate_sets  # scikit-learn and matplotlib: loaded when a job runs

    job.check()
    started = time.perf_counter()
    stages = STAGES + job.utility
    request = job_request(job)
    check_run_dir(request.out)  # a folder the tool did not make: one line before any stage starts

    budget = f", {request.time_budget:.0f} s budget" if request.time_budget else ""
    stage(1, f"training ({request.backend} backend, preset {request.preset}{budget})", stages)
    outcome = run_training(request)
    print("\n".join(outcome.lines), flush=True)
    run_dir, config, train = outcome.run_dir, outcome.config, outcome.dataset

    stage(2, f"generating {job.count} images", stages)
    generated_dir = run_dir / "generated"
    generation = plan_job(run_dir, job.count, generated_dir, seed=request.seed, backend=request.backend)
    if job.workers == 0:
        # In the training process TF keeps its training thread count, so a pixel may differ by
        # one level from `generate`'s one-thread workers (see service.generation).
        generate_in_process(generation, progress=request.progress)
    else:
        generate_on_ray(generation, workers=job.workers, progress=request.progress)
    fake, fake_names = read_generated(generated_dir)

    stage(3, "loading the real reference set", stages)
    real = reference_set(request, train, config.image_size, job.count)

    stage(4, "validating and writing the report", stages)
    report_dir = run_dir / "report"
    fake_labels = real_class_indices(fake_names, real)
    real_images = to_uint8(real.images)
    results = validate_sets(
        real_images, fake, train=real_images if train is real else to_uint8(train.images), out_dir=report_dir,
        real_labels=real.labels if fake_labels is not None else None, fake_labels=fake_labels,
        class_names=real.class_names, run_dir=run_dir, progress=request.progress, seed=request.seed,
        real_groups=real.groups, train_groups=train.groups,
    )
    outcome = {"run_dir": run_dir, "generated": generated_dir, "report": report_dir / "report.html",
               "results": results, "diversity": outcome.diversity}
    if job.utility:
        stage(5, "downstream utility: training the classifier arms", stages)
        outcome["utility"] = utility_stage(job, request, run_dir, train, real, config.image_size, report_dir)
    outcome["seconds"] = time.perf_counter() - started
    return outcome


def reference_set(request: TrainingRequest, train: Dataset, image_size: int, count: int) -> Dataset:
    """The real images the generated ones are measured against, per the module docstring: on
    the embedded dataset fresh images of another seed, on user data the training images."""
    if request.data.path is not None:
        return train
    return data.default_dataset(
        image_size, count=max(count, 500), seed=request.seed + REFERENCE_SEED_OFFSET, progress=request.progress
    )


def utility_stage(job: MainJob, request: TrainingRequest, run_dir: Path, train: Dataset, reference: Dataset,
                  image_size: int, report_dir: Path) -> dict:
    """service.utility on the training images against a held-out real test set (on the embedded
    dataset the fresh reference set, never trained on; on user data --utility-test), then the
    result into the report."""
    from service.validation.report import add_utility

    if job.utility_test is None:
        test = reference
    else:
        # the test set labelled the same way as the training data (same choices; its own label file)
        test = replace(request.data, path=job.utility_test, labels=None).load(image_size, progress=request.progress)
    out = run_dir / "utility"
    settings = replace(job.utility_settings or UtilitySettings(), backend=request.backend)
    summary = run_utility(run_dir, train, test, out, settings, progress=request.progress)
    add_utility(report_dir, summary, out / "utility.png")
    return summary


def summary_lines(outcome: dict) -> list[str]:
    """What the command prints at the end: the two SWD numbers a user reads first, whether the
    training collapsed (the diversity checks, service.diversity), and where everything is."""
    lines = []
    try:
        generated = outcome["results"]["real_vs_generated"]["swd_mean"]
        reference = outcome["results"]["real_vs_real"]["swd_mean"]
        lines.append(f"SWD x1e3: real vs generated {generated:.1f}, real vs real {reference:.1f} (lower is closer)")
    except (KeyError, TypeError):
        pass
    lines.append(outcome.get("diversity") or "diversity: not checked during training (--diversity-every 0)")
    if outcome.get("utility"):
        lines += ["downstream utility (classifier arms on held-out real images):", *describe(outcome["utility"])]
    lines += [
        f"done in {outcome['seconds']:.0f} s",
        f"run directory: {outcome['run_dir']}",
        f"generated images: {outcome['generated']}",
        f"report: {outcome['report']}",
    ]
    return lines
