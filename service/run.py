"""Command line: `python -m service.run [COMMAND] [options]`.

With no command it runs the main job (train -> generate -> validate -> report). Each command
lives in `service/commands/<name>.py` with `add_arguments(parser)` and `run(args) -> int`;
modules are imported lazily where they pull in heavy frameworks.

Exit codes: 0 success; 2 bad input or usage (one line on stderr, no traceback); 1 internal error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from service.errors import UserError

COMMANDS = {
    "train": ("service.commands.train", "train a DCGAN on a dataset; writes a run directory"),
    "generate": ("service.commands.generate", "generate images from a run's checkpoint, on Ray"),
    "validate": ("service.commands.validate", "compare real and generated images; writes a report"),
    "audit": ("service.commands.audit", "every generated image against the training set: likely copies, on Ray"),
    "tune": ("service.commands.tune", "hyperparameter trials on Ray Tune"),
    "sample-data": ("service.commands.sample_data", "write the embedded stand-in dataset in ISIC 2017 layout"),
    "export": ("service.commands.export", "write a run's generator as a standard Keras 3 model"),
    "utility": ("service.commands.utility", "does a conditional run's synthetic set help a lesion classifier?"),
}
MAIN_JOB = "service.commands.main_job"


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors stay one line."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose", action="store_true", default=argparse.SUPPRESS,
        help="show the frameworks' own start-up logs (TensorFlow's; also LESIONGAN_TF_LOGS=1)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m service.run",
        description="Train margin-balanced DCGANs on dermoscopic images and generate validated "
        "synthetic sets. With no command: train -> generate -> validate -> report.",
    )
    importlib.import_module(MAIN_JOB).add_arguments(parser)
    _add_verbose(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(p)
        _add_verbose(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "verbose", False):
            os.environ["LESIONGAN_TF_LOGS"] = "1"  # read when the tf backend first loads
        module = COMMANDS[args.command][0] if args.command else MAIN_JOB
        return int(importlib.import_module(module).run(args) or 0)
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
