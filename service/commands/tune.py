"""`tune`: hyperparameter trials on Ray Tune, ranked by SWD on held-out real images (service.tune)."""

from __future__ import annotations

from pathlib import Path

from backends.presets import PRESETS
from service.commands.common import (
    add_backend, add_data, add_image_size, add_progress, add_seed, int_list, label_choices, show_progress,
)
from service.errors import UserError


def add_arguments(p):
    add_data(p)
    p.add_argument("--trials", type=int, default=8, metavar="N", help="number of trials (default: 8)")
    p.add_argument("--time-budget", type=float, default=1800.0, metavar="SECONDS", help="wall-clock bound on the whole search (default: 1800)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per trial at most; ASHA stops weak trials sooner (default: 10)")
    p.add_argument("--out", metavar="DIR", help="output folder: trials.csv, best_config.json, search.json, tune/")
    p.add_argument("--resume", metavar="DIR", help="continue the search in DIR whose driver stopped (killed, lost, "
                   "out of time): finished trials are kept, the others go on from their last checkpoints")
    p.add_argument("--address", metavar="ADDR", help="join this Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    add_backend(p)
    p.add_argument("--preset", choices=tuple(PRESETS), default="default", help="base recipe for the fields not searched (default: default)")
    add_image_size(p)
    p.add_argument("--conditional", action="store_true", help="condition G and D on the data's classes")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="C", help="CPUs reserved per trial (default: 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="G", help="GPUs reserved per trial (default: 0)")
    p.add_argument("--widths", default="16,32,64", metavar="LIST", help="base widths to try (default: 16,32,64)")
    p.add_argument("--batch-sizes", default="32,64", metavar="LIST", help="batch sizes to try (default: 32,64)")
    p.add_argument("--max-images", type=int, metavar="N", help="use at most N images (default: all; the stand-in dataset: 2000)")
    p.add_argument("--holdout", type=float, default=0.2, metavar="FRACTION", help="share of images held out for SWD (default: 0.2)")
    add_seed(p)
    add_progress(p)
    DEFAULTS.update({name: p.get_default(name) for name in SEARCH_OPTIONS + ("out",)})


SEARCH_FILE = "search.json"  # what a search was asked, so --resume can rebuild it
SEARCH_OPTIONS = ("data", "labels", "label_column", "classes", "binary", "unknown", "unlabelled", "crop",
                  "trials", "time_budget", "epochs", "backend", "preset", "image_size",
                  "conditional", "cpus_per_trial", "gpus_per_trial", "widths", "batch_sizes", "max_images",
                  "holdout", "seed")


def run(args) -> int:
    from backends.presets import preset_config
    from service.files import claim_output_folder, write_json
    from service.rundir import dataset_fingerprint
    from service.tune import TUNE_COMMAND
    from service.training import default_image_size
    from service.tune import TuneSettings, load_dataset, print_summary, run_tune

    resume = args.resume is not None
    if resume:
        args = _resumed_arguments(args)
    elif args.out is None:
        raise UserError("give --out DIR for a new search, or --resume DIR")
    if args.max_images is not None and args.max_images < 2:
        raise UserError(f"--max-images must be >= 2, got {args.max_images}")
    image_size = args.image_size or default_image_size(args.data)
    settings = TuneSettings(
        trials=args.trials, time_budget=args.time_budget, out_dir=Path(args.out), backend=args.backend,
        epochs=args.epochs, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        widths=int_list(args.widths, "--widths", 1), batch_sizes=int_list(args.batch_sizes, "--batch-sizes", 1),
        holdout_fraction=args.holdout, seed=args.seed, address=args.address, progress=show_progress(args),
    )
    settings.check()  # before loading data
    if args.address:
        from service.ray_cluster import probe_address

        probe_address(args.address)  # fail fast, before loading data
    dataset = load_dataset(args.data, image_size, labels_csv=args.labels, crop=args.crop, **label_choices(args),
                           max_images=args.max_images, seed=args.seed)
    if args.conditional and dataset.labels is None:
        raise UserError("--conditional needs class labels, and this dataset has none")
    fingerprint = dataset_fingerprint(dataset.images, dataset.labels)
    record = Path(args.out) / SEARCH_FILE
    if resume and args.fingerprint != fingerprint:
        raise UserError(f"cannot resume {args.out}: the data differs from the data the search started on")
    claim_output_folder(args.out, TUNE_COMMAND, ours_if=lambda folder: (folder / SEARCH_FILE).is_file())
    if not resume:
        if (Path(args.out) / "tune").exists():
            raise UserError(f"{args.out} already holds a search; continue it with --resume {args.out}, or choose another --out")
        write_json(record, {**{name: getattr(args, name) for name in SEARCH_OPTIONS}, "fingerprint": fingerprint})
    num_classes = (len(dataset.class_names) or int(dataset.labels.max()) + 1) if args.conditional else 0
    settings.base = preset_config(args.preset, image_size=image_size, num_classes=num_classes, seed=args.seed).to_dict()
    print_summary(run_tune(settings, dataset, resume=resume))
    return 0


def _resumed_arguments(args):
    """The options of the search in --resume DIR (its search.json); only --address and
    --progress may be given again."""
    import argparse
    import json

    folder = Path(args.resume)
    given = [f"--{name.replace('_', '-')}" for name in SEARCH_OPTIONS + ("out",)
             if getattr(args, name) is not None and getattr(args, name) != DEFAULTS.get(name)]
    if given:
        raise UserError(f"--resume takes the search's options from {folder / SEARCH_FILE}; drop {', '.join(given)}")
    try:
        stored = json.loads((folder / SEARCH_FILE).read_text())
    except FileNotFoundError:
        raise UserError(f"--resume {folder}: no search to resume there (no {SEARCH_FILE})") from None
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"--resume {folder}: {SEARCH_FILE} is unreadable ({e})") from None
    if not (folder / "tune").is_dir():
        raise UserError(f"--resume {folder}: the search never started there (no tune/ folder)")
    return argparse.Namespace(**{**vars(args), **stored, "out": str(folder)})


DEFAULTS: dict = {}  # filled from the parser in add_arguments: an option at its default was not given
