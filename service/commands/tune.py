"""`tune`: hyperparameter trials on Ray Tune, ranked by SWD on held-out real images (service.tune)."""

from __future__ import annotations

from pathlib import Path

from backends.presets import PRESETS
from service.commands.common import add_backend, add_data, add_image_size, add_progress, add_seed, show_progress
from service.errors import UserError


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"expected a comma-separated list of integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"expected positive integers, got {text!r}")
    return values


def add_arguments(p):
    add_data(p)
    p.add_argument("--trials", type=int, default=8, metavar="N", help="number of trials (default: 8)")
    p.add_argument("--time-budget", type=float, default=1800.0, metavar="SECONDS", help="wall-clock bound on the whole search (default: 1800)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per trial at most; ASHA stops weak trials sooner (default: 10)")
    p.add_argument("--out", metavar="DIR", required=True, help="output folder: trials.csv, best_config.json, tune/")
    p.add_argument("--address", metavar="ADDR", help="join this Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    add_backend(p)
    p.add_argument("--preset", choices=tuple(PRESETS), default="default", help="base recipe for the fields not searched (default: default)")
    add_image_size(p)
    p.add_argument("--conditional", action="store_true", help="condition G and D on the three ISIC classes")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="C", help="CPUs reserved per trial (default: 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="G", help="GPUs reserved per trial (default: 0)")
    p.add_argument("--widths", default="16,32,64", metavar="LIST", help="base widths to try (default: 16,32,64)")
    p.add_argument("--batch-sizes", default="32,64", metavar="LIST", help="batch sizes to try (default: 32,64)")
    p.add_argument("--max-images", type=int, metavar="N", help="use at most N images (default: all; the stand-in dataset: 2000)")
    p.add_argument("--holdout", type=float, default=0.2, metavar="FRACTION", help="share of images held out for SWD (default: 0.2)")
    add_seed(p)
    add_progress(p)


def run(args) -> int:
    from backends.presets import preset_config
    from service.tune import TuneSettings, load_dataset, print_summary, run_tune

    if args.max_images is not None and args.max_images < 2:
        raise UserError(f"--max-images must be >= 2, got {args.max_images}")
    from service.training import default_image_size

    image_size = args.image_size or default_image_size(args.data)
    settings = TuneSettings(
        trials=args.trials, time_budget=args.time_budget, out_dir=Path(args.out), backend=args.backend,
        epochs=args.epochs, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        widths=_int_list(args.widths), batch_sizes=_int_list(args.batch_sizes),
        holdout_fraction=args.holdout, seed=args.seed, address=args.address, progress=show_progress(args),
    )
    settings.check()  # before loading data
    if args.address:
        from service.ray_cluster import probe_address

        probe_address(args.address)  # fail fast, before loading data
    dataset = load_dataset(args.data, image_size, labels_csv=args.labels, crop=args.crop,
                           max_images=args.max_images, seed=args.seed)
    if args.conditional and dataset.labels is None:
        raise UserError("--conditional needs class labels, and this dataset has none")
    num_classes = (len(dataset.class_names) or int(dataset.labels.max()) + 1) if args.conditional else 0
    settings.base = preset_config(args.preset, image_size=image_size, num_classes=num_classes, seed=args.seed).to_dict()
    print_summary(run_tune(settings, dataset))
    return 0
