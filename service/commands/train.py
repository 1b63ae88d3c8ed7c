"""`train`: train a margin-balanced DCGAN and write a run directory (see service.rundir).

    python -m service.run train --out runs/a [--data PATH] [--backend tf|numpy] [--preset default]
    python -m service.run train --resume runs/a [--epochs N]

Config precedence: preset < --config JSON (GANConfig fields, e.g. a tune result) < explicit
flags (--image-size, --batch-size, --seed, --conditional). With --resume the model, data and
seeds come from RUN/config.json; only --epochs, --time-budget and --backend may change.
Epochs: --epochs N is the total to reach; with only --time-budget, training runs epochs until
the budget is spent; with neither, 10 epochs.
A diverged run (NaN/inf loss) exits 2 with one line: it is a property of the recipe and the
data, not an internal error. SIGINT/SIGTERM save a checkpoint and exit 0.
"""

from __future__ import annotations

from dataclasses import fields

from service.commands.common import add_data, add_progress, add_training, data_options, show_progress
from service.training import TrainingRequest, run_training


def add_arguments(parser) -> None:
    add_data(parser)
    parser.add_argument("--out", metavar="DIR", help="run directory to create (required unless --resume)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last valid checkpoint")
    add_training(parser)
    add_progress(parser)


def training_request(args) -> TrainingRequest:
    """The parsed options as one TrainingRequest: each option into the request's field of the
    same name, the data options as one DataOptions. The main job's command reads its training
    options with it too, so a new training option is a line of service.training.TRAINING_OPTIONS
    and a request field."""
    options = {f.name: getattr(args, f.name) for f in fields(TrainingRequest) if hasattr(args, f.name)}
    return TrainingRequest(**{**options, "data": data_options(args), "progress": show_progress(args)})


def run(args) -> int:
    print("\n".join(run_training(training_request(args)).lines))
    return 0
