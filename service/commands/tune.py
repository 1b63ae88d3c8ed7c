"""`tune`: hyperparameter trials on Ray Tune, ranked by SWD on held-out real images (service.tune)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from backends.presets import PRESETS
from service.commands.common import (
    add_backend, add_data, add_image_size, add_progress, add_seed, data_options, int_list, show_progress,
)
from service.data import DEFAULT_DATA_COUNT
from service.errors import UserError
from service.tune import SEARCH_OPTIONS


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
    p.add_argument("--max-images", type=int, metavar="N",
                   help=f"use at most N images (default: all; the stand-in dataset: {DEFAULT_DATA_COUNT})")
    p.add_argument("--holdout", type=float, default=0.2, metavar="FRACTION", help="share of images held out for SWD (default: 0.2)")
    add_seed(p)
    add_progress(p)
    # what each search option is when not given, for _given (dropped before the options are recorded)
    p.set_defaults(search_defaults={name: p.get_default(name) for name in SEARCH_OPTIONS + ("out",)})


def run(args) -> int:
    from service.tune import TuneSettings, print_summary, resumed_arguments, search

    arguments = vars(args).copy()
    defaults = arguments.pop("search_defaults")
    resume = args.resume is not None
    if resume:
        args = argparse.Namespace(**resumed_arguments(args.resume, arguments, _given(args, defaults)))
    elif args.out is None:
        raise UserError("give --out DIR for a new search, or --resume DIR")
    else:
        args = argparse.Namespace(**arguments)
    settings = TuneSettings(
        trials=args.trials, time_budget=args.time_budget, out_dir=Path(args.out), backend=args.backend,
        epochs=args.epochs, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        widths=int_list(args.widths, "--widths", 1), batch_sizes=int_list(args.batch_sizes, "--batch-sizes", 1),
        holdout_fraction=args.holdout, seed=args.seed, address=args.address, progress=show_progress(args),
        # --strict is not recorded in search.json: a search skips unreadable images
        data=replace(data_options(args), strict=False), max_images=args.max_images, preset=args.preset,
        image_size=args.image_size, conditional=args.conditional,
    )
    print_summary(search(settings, vars(args), resume=resume))
    return 0


def _given(args, defaults: dict) -> list[str]:
    """The search options given on the command line (those not at their parser defaults)."""
    return [f"--{name.replace('_', '-')}" for name in SEARCH_OPTIONS + ("out",)
            if getattr(args, name) is not None and getattr(args, name) != defaults.get(name)]
