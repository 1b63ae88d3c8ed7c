"""`utility`: does a conditional run's synthetic set help a lesion classifier? (service.utility)

    python -m service.run utility --run runs/c --real isic-train/ --test isic-test/ [--out DIR]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.commands.common import add_backend, add_crop, add_progress, int_list, show_progress
from service.utility import ARMS, UtilitySettings
from service.utility.settings import CLASSIFIERS

DEFAULTS = UtilitySettings()


def add_arguments(p):
    p.add_argument("--run", metavar="RUN", required=True, help="a conditional run directory (trained with --conditional)")
    p.add_argument("--real", metavar="PATH", required=True, help="the real training images, labelled (the run's training data)")
    p.add_argument("--test", metavar="PATH", required=True,
                   help="held-out real images, labelled, of other patients or source images than --real")
    p.add_argument("--labels", metavar="CSV", help="ground-truth CSV of --real")
    p.add_argument("--test-labels", metavar="CSV", help="ground-truth CSV of --test")
    p.add_argument("--out", metavar="DIR", help="output folder (default: RUN/utility)")
    seeds = ",".join(map(str, DEFAULTS.seeds))
    p.add_argument("--seeds", default=seeds, help=f"classifier seeds, comma-separated (default: {seeds})")
    p.add_argument("--arms", default=",".join(ARMS), help=f"arms to run (default: all: {', '.join(ARMS)})")
    p.add_argument("--positive-class", metavar="NAME",
                   help="the class the AUC and the sensitivity at 80%% specificity are about "
                        "(default: melanoma when the run has it, else the class with the fewest training images)")
    p.add_argument("--classifier", choices=CLASSIFIERS, default=DEFAULTS.classifier,
                   help="the classifier every arm trains: trees on the lesion's colour, shape and texture statistics "
                        "(features, the default: stronger on ISIC 2017 at 64x64) or a small CNN (cnn)")
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs,
                   help="each classifier's budget, in passes over the real training set's size; every arm gets "
                        f"as many optimiser steps (default: {DEFAULTS.epochs})")
    p.add_argument("--bootstrap", type=int, default=DEFAULTS.bootstrap,
                   help=f"test-set resamples for the 95%% intervals (default: {DEFAULTS.bootstrap})")
    add_backend(p)
    add_crop(p)
    add_progress(p)


def run(args) -> int:
    from service.data import load_images
    from service.utility import conditional_run, describe, positive_class, run_utility

    config, class_names = conditional_run(args.run)  # before any image is loaded
    if args.positive_class is not None:
        positive_class(class_names, np.zeros(0, np.int64), args.positive_class)
    progress = show_progress(args)
    settings = UtilitySettings(seeds=int_list(args.seeds, "--seeds"),
                               arms=tuple(a.strip() for a in args.arms.split(",") if a.strip()),
                               positive_class=args.positive_class, epochs=args.epochs, classifier=args.classifier,
                               bootstrap=args.bootstrap, backend=args.backend)
    settings.check()
    real = load_images(args.real, config.image_size, labels_csv=args.labels, crop=args.crop, progress=progress)
    test = load_images(args.test, config.image_size, labels_csv=args.test_labels, crop=args.crop, progress=progress)
    out = Path(args.out) if args.out else Path(args.run) / "utility"
    summary = run_utility(args.run, real, test, out, settings, progress=progress)
    print("\n".join(describe(summary)))
    print(f"{summary['seconds']:.0f} s ({summary['generation_seconds']:.0f} s generating); "
          f"utility: {out / 'utility.json'}; chart: {out / 'utility.png'}")
    return 0
