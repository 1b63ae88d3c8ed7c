"""`generate`: N images from a run's latest checkpoint, sharded over Ray (see service.generation)."""

from __future__ import annotations

import os
import sys

from service.commands.common import add_backend, add_progress, show_progress, workers_count
from service.generation.job import OUTPUT_FORMATS


def add_arguments(p):
    p.add_argument("--run", metavar="RUN", required=True, help="run directory (config.json + checkpoints/)")
    p.add_argument("--count", type=int, required=True, metavar="N", help="number of images")
    p.add_argument("--out", metavar="DIR", required=True, help="output folder (PNG files or tar shards, and manifest.csv)")
    p.add_argument("--workers", type=workers_count, metavar="K", help="Ray tasks at a time (default: the CPUs of the machine or cluster); 0: no Ray, one in-process loop")
    p.add_argument("--address", metavar="ADDR", help="join this Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--class", dest="class_name", metavar="NAME", help="class to generate on a conditional run, by name or index (default: cycle the classes by index)")
    p.add_argument("--seed", type=int, default=0, help="base seed: image i's noise is keyed by (seed, i) (default: 0)")
    add_backend(p)
    p.add_argument("--batch-size", type=int, default=50, metavar="B", help="images per forward pass (default: 50)")
    p.add_argument("--shard-size", type=int, default=250, metavar="S", help="images per Ray task and per resume unit (default: 250)")
    p.add_argument("--resume", action="store_true", help="finish the job already in --out (re-running the same command does the same)")
    p.add_argument("--in-process", action="store_true", help="no Ray: one loop in this process (same bytes; = --workers 0)")
    p.add_argument("--format", dest="output_format", choices=OUTPUT_FORMATS, default=OUTPUT_FORMATS[0],
                   help="png: one PNG file per image (default); tar: one WebDataset tar shard per --shard-size "
                        "images, members INDEX.png and INDEX.json")
    p.add_argument("--exclude-copies", metavar="DATA",
                   help="a copy-free release: audit each shard against these training images (as `audit` does) "
                        "and replace every likely copy with an image from a reserved index range; the manifest "
                        "names each replaced index and the training image it copied")
    add_progress(p)


def run(args) -> int:
    from service.generation import describe, generate_in_process, generate_on_ray, plan_job
    from service.generation.release import plan_release

    job = plan_job(
        args.run, args.count, args.out, seed=args.seed, class_name=args.class_name,
        backend=args.backend, batch_size=args.batch_size, shard_size=args.shard_size, output_format=args.output_format,
    )
    copy_index = None
    if args.exclude_copies:  # a bad DATA is one line here, before --out is touched
        job, copy_index = plan_release(job, args.exclude_copies, progress=show_progress(args))
    if args.in_process or args.workers == 0:
        # One framework thread, as in each Ray worker: TF's float sums (and so a few pixel
        # values) can depend on its thread count, and the two paths must give the same bytes.
        os.environ.setdefault("LESIONGAN_TF_THREADS", "1")
        result = generate_in_process(job, resume=args.resume, progress=show_progress(args), copy_index=copy_index)
    else:
        result = generate_on_ray(job, workers=args.workers, address=args.address, resume=args.resume,
                                 progress=show_progress(args), copy_index=copy_index)
    summary = describe(result)
    replaced = "" if summary["replaced"] is None else f"; {summary['replaced']} likely copies replaced"
    print(
        f"{summary['count']} images in {summary['out_dir']} ({summary['shards_run']} shards run, "
        f"{summary['shards_skipped']} already done, {summary['seconds']:.1f} s){replaced}; manifest.csv written",
        file=sys.stdout,
    )
    return 0
