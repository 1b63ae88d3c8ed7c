"""Compare training recipes at a fixed CPU-time budget on the embedded dataset.

    python bench/preset_experiment.py --budget 600 --image-size 64 --backend tf

Each variant trains for --budget seconds (wall clock, whatever the machine), generates
--count images from the last checkpoint and scores them by SWD (x1e3) against --count fresh
embedded images of another seed; the real-vs-real SWD of two disjoint fresh sets of --count
images is printed beside it. Results go to stdout and OUT/results.json. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VARIANTS = {
    "seed": ("seed", {}),
    "default": ("default", {}),
    "default-no-smoothing": ("default", {"label_smoothing": 0.0}),
    "default-no-rebalance": ("default", {"max_rebalance_steps": 0}),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=600.0)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--backend", default="tf")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--out", default="runs/preset-experiment")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()

    from service import data
    from service.commands.train import run_training
    from service.generation import generate_in_process, plan_job
    from service.imageio import read_png, to_uint8
    from service.validation.metrics import swd

    import numpy as np

    reference = to_uint8(data.default_dataset(args.image_size, count=2 * args.count, seed=7, progress=False).images)
    real, other_half = reference[: args.count], reference[args.count :]
    real_vs_real = swd(real, other_half)["mean"]
    results = {"budget_s": args.budget, "image_size": args.image_size, "backend": args.backend,
               "real_vs_real_swd": real_vs_real, "variants": {}}
    out = Path(args.out) / f"{args.image_size}px-{int(args.budget)}s"
    for name in args.variants.split(","):
        preset, overrides = VARIANTS[name]
        run_dir = out / name
        started = time.perf_counter()
        outcome = run_training(out=run_dir, backend=args.backend, preset=preset, image_size=args.image_size,
                               time_budget=args.budget, config_overrides=overrides or None, progress=False)
        job = plan_job(run_dir, args.count, run_dir / "generated", seed=1, backend=args.backend)
        generate_in_process(job)
        fake = np.stack([read_png(p) for p in sorted((run_dir / "generated").glob("img_*.png"))])
        score = swd(real, fake)["mean"]
        results["variants"][name] = {
            "preset": preset, "overrides": overrides, "steps": outcome.result.step,
            "epochs": outcome.result.epoch, "swd": score,
            "rebalance_d": outcome.result.rebalance_d, "rebalance_g": outcome.result.rebalance_g,
            "wall_s": time.perf_counter() - started,
        }
        print(f"{name:24s} steps {outcome.result.step:5d}  SWD {score:7.1f}  (real vs real {real_vs_real:.1f})", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
