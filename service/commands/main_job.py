"""The main job (no command): train -> generate -> validate -> report, in one run directory.

    python -m service.run --backend tf                 # embedded stand-in dataset, 64x64
    python -m service.run --data ISIC-2017/ --out runs/isic --time-budget 1800

Layout: RUN/ as `train` writes it, plus RUN/generated/ (PNG files + manifest.csv, as
`generate` writes them) and RUN/report/ (metrics.json, report.html, plots, as `validate`).
Reference set for the metrics: on the embedded dataset, fresh images of the same generator
(another seed, so disjoint from the training images); on user data, the training images
themselves (say so in the report; hold data out with `validate --real` for a strict test).
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import numpy as np

from service.commands.common import add_backend, add_data, add_progress, add_seed, add_training, show_progress
from service.errors import UserError

DEFAULT_TIME_BUDGET = 480.0  # seconds of training when neither --epochs nor --time-budget is given
DEFAULT_COUNT = 1000
REFERENCE_SEED_OFFSET = 1_000_003  # the embedded reference set: another seed, disjoint images


def add_arguments(parser) -> None:
    add_data(parser)
    add_backend(parser)
    add_training(parser)
    add_seed(parser)
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/main-<date>-<time>)")
    parser.add_argument(
        "--count", type=int, default=DEFAULT_COUNT, metavar="N",
        help=f"images to generate and validate (default: {DEFAULT_COUNT})",
    )
    parser.add_argument(
        "--workers", type=int, default=0, metavar="K",
        help="generate on Ray with K workers (default: 0, one in-process loop; same bytes)",
    )
    add_progress(parser)


def _stage(number: int, text: str) -> None:
    print(f"[{number}/4] {text}", file=sys.stderr, flush=True)


def run(args) -> int:
    from service.commands.train import print_outcome
    from service.training import run_training

    if args.count < 10:
        raise UserError(f"--count must be at least 10 images to validate, got {args.count}")
    if args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    out = Path(args.out) if args.out else Path("runs") / time.strftime("main-%Y%m%d-%H%M%S")
    time_budget = args.time_budget
    if args.epochs is None and time_budget is None:
        time_budget = DEFAULT_TIME_BUDGET
    progress = show_progress(args)
    started = time.perf_counter()

    _stage(1, f"training ({args.backend} backend, preset {args.preset}"
              + (f", {time_budget:.0f} s budget" if time_budget else "") + ")")
    outcome = run_training(
        out=out, data=args.data, labels=args.labels, crop=args.crop, strict=args.strict,
        backend=args.backend, preset=args.preset, epochs=args.epochs, image_size=args.image_size,
        batch_size=args.batch_size, time_budget=time_budget, seed=args.seed,
        conditional=args.conditional, progress=progress,
    )
    print_outcome(outcome)
    run_dir, config = outcome.run_dir, outcome.config

    _stage(2, f"generating {args.count} images")
    generated_dir = run_dir / "generated"
    fake, fake_labels = _generate(run_dir, generated_dir, args, progress)

    _stage(3, "loading the real reference set")
    real, real_labels, train, class_names = _reference_sets(args, config.image_size, progress)

    _stage(4, "validating and writing the report")
    from service.validation.report import validate_sets

    report_dir = run_dir / "report"
    results = validate_sets(
        real, fake, train=train, out_dir=report_dir,
        real_labels=real_labels if fake_labels is not None else None,
        fake_labels=fake_labels, class_names=class_names, run_dir=run_dir,
        progress=progress, seed=args.seed,
    )
    _print_summary(results)
    print(f"done in {time.perf_counter() - started:.0f} s")
    print(f"run directory: {run_dir}")
    print(f"generated images: {generated_dir}")
    print(f"report: {report_dir / 'report.html'}")
    return 0


def _generate(run_dir: Path, out_dir: Path, args, progress: bool):
    from service.generation import generate_in_process, generate_on_ray, plan_job

    job = plan_job(run_dir, args.count, out_dir, seed=args.seed, backend=args.backend)
    if args.workers == 0:
        # In the training process TF keeps its training thread count, so a pixel may differ by
        # one level from `generate`'s one-thread workers (see service.generation).
        generate_in_process(job, progress=progress)
    else:
        generate_on_ray(job, workers=args.workers, progress=progress)
    return _read_generated(out_dir)


def _read_generated(out_dir: Path):
    """The generated images in index order, with class indices when the run is conditional."""
    from backends.config import CLASS_NAMES
    from service.imageio import read_png

    with open(out_dir / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    images = np.stack([read_png(out_dir / row["file"]) for row in rows])
    classes = [row["class"] for row in rows]
    if all(classes):
        return images, np.array([CLASS_NAMES.index(c) for c in classes], dtype=np.int64)
    return images, None


def _reference_sets(args, image_size: int, progress: bool):
    """(real, real_labels, train, class_names) as uint8, per the module docstring."""
    from service import data
    from service.imageio import to_uint8

    if args.data is None:
        from service.training import DEFAULT_DATA_COUNT

        train = data.default_dataset(image_size, count=DEFAULT_DATA_COUNT, progress=progress)
        real = data.default_dataset(
            image_size, count=max(args.count, 500), seed=args.seed + REFERENCE_SEED_OFFSET, progress=progress
        )
    else:
        train = data.load_images(args.data, image_size, labels_csv=args.labels, crop=args.crop,
                                 strict=args.strict, progress=progress)
        real = train
    return to_uint8(real.images), real.labels, to_uint8(train.images), real.class_names


def _print_summary(results: dict) -> None:
    """The two SWD numbers a user reads first, side by side."""
    try:
        generated = results["real_vs_generated"]["swd_mean"]
        reference = results["real_vs_real"]["swd_mean"]
    except (KeyError, TypeError):
        return
    print(f"SWD x1e3: real vs generated {generated:.1f}, real vs real {reference:.1f} (lower is closer)")
