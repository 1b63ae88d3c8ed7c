"""`audit`: every generated image against the training set, shard by shard (see service.audit).

    python -m service.run audit --fake synth/ --train DATA --out audit/ [--workers K] [--address ADDR]
"""

from __future__ import annotations

import os
import sys

from service.commands.common import add_crop, add_image_size, add_progress, show_progress, workers_count


def add_arguments(p):
    p.add_argument("--fake", metavar="PATH", required=True,
                   help="generated images: a folder `generate` wrote (manifest.csv; PNG files or tar shards), "
                        "or a .tar shard or folder of them")
    p.add_argument("--train", metavar="PATH", required=True, help="the training images: folder, tar shards or .npz")
    p.add_argument("--labels", metavar="CSV", help="label or metadata file of the training images (their groups: "
                   "source image or patient; default: the one beside them)")
    p.add_argument("--out", metavar="DIR", required=True, help="output folder: audit.csv, summary.json, memorization_pairs.png")
    p.add_argument("--workers", type=workers_count, metavar="K",
                   help="Ray tasks at a time (default: the CPUs of the machine or cluster); 0: no Ray, one in-process loop")
    p.add_argument("--address", metavar="ADDR", help="join this Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--shard-size", type=int, default=None, metavar="S",
                   help="PNG images per task and per resume unit (default: 1000; a tar shard is always one unit)")
    add_image_size(p, "load the training images at this side (default: the generated images' side)")
    add_crop(p)
    add_progress(p)


def run(args) -> int:
    from service.audit import DEFAULT_SHARD_SIZE, describe, open_generated_set, run_audit
    from service.audit.job import AUDIT_COMMAND, refuse_nesting
    from service.audit.source import first_image_side
    from service.data import load_images
    from service.files import check_output_folder
    from service.imageio import to_uint8

    source = open_generated_set(args.fake, DEFAULT_SHARD_SIZE if args.shard_size is None else args.shard_size)
    refuse_nesting(source, args.out)
    check_output_folder(args.out, AUDIT_COMMAND)  # a folder we may not write: one line before the long steps
    image_size = args.image_size or first_image_side(source)
    train = load_images(args.train, image_size, labels_csv=args.labels, crop=args.crop, progress=show_progress(args))
    train_uint8 = to_uint8(train.images)
    train.images = None  # the float copy: 4x the uint8 one
    result = run_audit(
        source, train_uint8, args.out, train_groups=train.groups, train_files=train.files,
        train_name=str(os.path.abspath(args.train)), workers=args.workers, address=args.address,
        progress=show_progress(args),
    )
    summary = describe(result)
    print(
        f"{summary['count']} generated images audited against {len(train_uint8)} training images: "
        f"{summary['copies']} likely copies; {summary['shards_run']} shards run, {summary['shards_skipped']} already done "
        f"({summary['seconds']:.1f} s); {os.path.join(args.out, 'audit.csv')} written",
        file=sys.stdout,
    )
    return 0
