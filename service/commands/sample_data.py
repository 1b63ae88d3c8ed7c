"""`sample-data OUT --count N [--seed S]`: write the embedded stand-in dataset in ISIC 2017 layout.

The images are procedural (service.synthetic), not medical data; the layout (JPEGs of several
sizes, superpixel PNGs, ground-truth CSV) lets users and tests exercise the real loader.
"""

from __future__ import annotations

from service.data import CLASS_NAMES, DEFAULT_DATA_COUNT
from service.commands.common import add_progress, add_seed, show_progress
from service.errors import UserError

MAX_COUNT = 100_000


def add_arguments(parser):
    parser.add_argument("out", metavar="OUT", help="folder to write (created if missing)")
    parser.add_argument("--count", type=int, default=DEFAULT_DATA_COUNT,
                        help=f"number of images (default: {DEFAULT_DATA_COUNT}, the ISIC 2017 training set size)")
    add_seed(parser)
    add_progress(parser)


def run(args) -> int:
    from service.synthetic import write_isic_layout

    if not 1 <= args.count <= MAX_COUNT:
        raise UserError(f"--count must be between 1 and {MAX_COUNT}, got {args.count}")
    summary = write_isic_layout(args.out, args.count, seed=args.seed, progress=show_progress(args))
    per_class = ", ".join(f"{n} {name}" for name, n in zip(CLASS_NAMES, summary["class_counts"]))
    print(f"wrote {summary['count']} stand-in images (not medical data; {per_class}) "
          f"in ISIC 2017 layout to {summary['out_dir']}")
    return 0
