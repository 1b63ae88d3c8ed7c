"""The main job (no command): train -> generate -> validate -> report, in one run directory.

    python -m service.run --backend tf                 # embedded stand-in dataset, 64x64
    python -m service.run --data ISIC-2017/ --out runs/isic --time-budget 1800

The stages live in service.main_job; this module only reads the options.
"""

from __future__ import annotations

from service.commands.common import add_data, add_progress, add_training, workers_count
from service.commands.train import training_request
from service.main_job import DEFAULT_COUNT, MainJob, run_main_job, summary_lines


def add_arguments(parser) -> None:
    add_data(parser)
    add_training(parser, main_job=True)
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/main-<date>-<time>)")
    parser.add_argument(
        "--count", type=int, default=DEFAULT_COUNT, metavar="N",
        help=f"images to generate and validate (default: {DEFAULT_COUNT})",
    )
    parser.add_argument(
        "--workers", type=workers_count, default=0, metavar="K",
        help="generate on Ray with K workers (default: 0, one in-process loop; same bytes)",
    )
    parser.add_argument(
        "--utility", action="store_true",
        help="with --conditional, a last stage: train a small classifier on real, synthetic and mixed sets "
        "and report whether the synthetic images help (see the utility command)",
    )
    parser.add_argument("--utility-test", metavar="PATH",
                        help="labelled real images held out from --data, the utility stage's test set "
                        "(the embedded dataset brings its own)")
    add_progress(parser)


def run(args) -> int:
    job = MainJob(training=training_request(args), count=args.count, workers=args.workers,
                  utility=args.utility, utility_test=args.utility_test)
    print("\n".join(summary_lines(run_main_job(job))))
    return 0
