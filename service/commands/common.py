"""Options shared by several commands, so each is spelled and documented once."""

from __future__ import annotations

import argparse
import sys

from backends import BACKENDS, DEFAULT_BACKEND
from backends.config import SUPPORTED_IMAGE_SIZES
from service.data import CROP_MODES, DataOptions
from service.labels import UNKNOWN_CHOICES
from service.training import PRIVACY_GROUP, TRAINING_OPTIONS


def add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND, help=f"compute backend (default: {DEFAULT_BACKEND})")


def add_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def add_data(p: argparse.ArgumentParser, required: bool = False) -> None:
    """--data and every option of how it is read and labelled (read back with data_options)."""
    p.add_argument(
        "--data",
        metavar="PATH",
        required=required,
        help="a folder of images (labelled by a label file beside it or by class subfolders), "
        "WebDataset tar shards, or a DermaMNIST-style .npz (default: the embedded stand-in dataset)",
    )
    p.add_argument("--labels", metavar="CSV", help="label file: any ISIC 2016-2020 or HAM10000 ground-truth "
                   "or metadata CSV (default: the one in the data folder or its parent)")
    add_label_choices(p)
    add_crop(p)
    p.add_argument("--strict", action="store_true", help="stop on the first unreadable image instead of skipping it")


def add_label_choices(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label-column", metavar="COLUMN",
                   help="the column that holds the class (e.g. target or diagnosis in ISIC 2020; default: the format's own)")
    p.add_argument("--classes", metavar="A,B,...", help="keep these classes only (the other images are left out)")
    p.add_argument("--binary", metavar="NAME", help="two classes: NAME against the rest (not_NAME, NAME)")
    p.add_argument("--unknown", choices=UNKNOWN_CHOICES, default="drop",
                   help="the UNK / unknown diagnosis: drop its images (default) or keep it as a class")
    p.add_argument("--unlabelled", action="store_true", help="ignore labels and class subfolders")


def label_choices(args) -> dict:
    """The label choices of add_label_choices, as keyword arguments of service.data.load_images."""
    classes = tuple(c.strip() for c in (args.classes or "").split(",") if c.strip())
    if args.classes is not None and not classes:  # --classes '' would otherwise mean every class
        from service.errors import UserError

        raise UserError(f"--classes {args.classes!r} names no class; give class names separated by commas, "
                        "or leave --classes out for every class")
    return {"label_column": args.label_column, "classes": classes, "binary": args.binary,
            "unknown": args.unknown, "unlabelled": args.unlabelled}


def data_options(args) -> DataOptions:
    """The data options of add_data as one object."""
    return DataOptions(path=args.data, labels=args.labels, crop=args.crop, strict=args.strict, **label_choices(args))


def add_crop(p: argparse.ArgumentParser) -> None:
    p.add_argument("--crop", choices=CROP_MODES, default=CROP_MODES[0], help="fit images by center-crop (default) or squash")


def add_image_size(p: argparse.ArgumentParser, what: str = "image side in pixels") -> None:
    """--image-size; None when not given, so the data's own size can decide (service.data.native_image_size)."""
    p.add_argument(
        "--image-size", type=int, choices=SUPPORTED_IMAGE_SIZES, default=None,
        help=f"{what} (default: the images' own size when they are square of a supported side, else 64)",
    )


def add_training(p: argparse.ArgumentParser, main_job: bool = False) -> None:
    """The training options (service.training.TRAINING_OPTIONS; the main job's leave out the
    train-only ones), each into the TrainingRequest field of its name."""
    groups = {PRIVACY_GROUP[0]: p.add_argument_group(*PRIVACY_GROUP)}
    for option in TRAINING_OPTIONS:
        if main_job and option.train_only:
            continue
        target = groups[option.group] if option.group else p
        target.add_argument(option.option, dest=option.field, help=option.help, **option.arguments)


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="progress bars on stderr (default: on when stderr is a terminal)",
    )


def int_list(text: str, option: str, minimum: int = 0) -> tuple[int, ...]:
    """A comma-separated option of integers, each at least `minimum`; UserError otherwise."""
    from service.errors import UserError

    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{option} takes a comma-separated list of integers, got {text!r}") from None
    if not values or min(values) < minimum:
        raise UserError(f"{option} takes integers of at least {minimum}, got {text!r}")
    return values


def show_progress(args) -> bool:
    """--progress / --no-progress as given, else on exactly when stderr is a terminal."""
    return sys.stderr.isatty() if args.progress is None else bool(args.progress)


def workers_count(text: str) -> int:
    """--workers K: a count of Ray tasks at a time, 0 for none (one in-process loop)."""
    from service.errors import UserError

    try:
        value = int(text)
    except ValueError:
        raise UserError(f"--workers takes a whole number of tasks, got {text!r}") from None
    if value < 0:
        raise UserError(f"--workers must be >= 0, got {value}")
    return value
