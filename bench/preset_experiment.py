"""Compare training recipes at a fixed CPU-time budget on the embedded dataset.

    python bench/preset_experiment.py --budget 600 --image-size 64 --backend tf

Each variant trains for --budget seconds (wall clock, whatever the machine), generates
--count images from the last checkpoint and scores them by SWD (x1e3) against --count fresh
embedded images of another seed; the real-vs-real SWD of two disjoint fresh sets of --count
images is printed beside it, and a memorization audit counts likely copies of the 2,000
training images (fresh real images give the reference count). Results go to stdout and
OUT/results.json. Not collected by pytest.

    --variants default,seed+batch_size=50     names from VARIANTS or PRESET+field=value+...
    --seeds 0,1                               each variant once per seed, then its mean and range
    --eval-every 50                           also score every 50 s of step time (a curve)
    --calibrate                               SWD of real sets altered by blur, noise, averaging

docs/presets.md records the runs behind the `default` preset.
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


def parse_variant(spec: str) -> tuple[str, dict]:
    """A name from VARIANTS, or "PRESET+field=value+...", e.g. "default+width=16+batch_size=32"."""
    if spec in VARIANTS:
        return VARIANTS[spec]
    preset, *pairs = spec.split("+")
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"bad variant {spec!r}: expected field=value after '+'")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return preset, overrides


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=600.0)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--backend", default="tf")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--out", default="runs/preset-experiment")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma list of VARIANTS names or PRESET+field=value+... specs; separate them "
                             "with ';' instead when a value holds commas")
    parser.add_argument("--seeds", default="",
                        help="comma list of seeds: run each variant once per seed (as +seed=N) and print "
                             "each variant's mean SWD and range; one 600 s run is not enough to rank recipes")
    parser.add_argument("--eval-every", type=float, default=0.0,
                        help="also score SWD at the first epoch end after every this many seconds "
                             "of training steps (the budget then counts step time only)")
    parser.add_argument("--calibrate", action="store_true",
                        help="only print reference SWDs of altered real sets (blur, noise, mean image)")
    args = parser.parse_args()
    if args.calibrate:
        calibrate(args.image_size, args.count)
        return

    from service import data
    from service.commands.train import DEFAULT_DATA_COUNT, run_training
    from service.generation import generate_in_process, plan_job
    from service.imageio import read_png, to_uint8
    from service.validation.memorization import audit_summary, memorization_audit
    from service.validation.metrics import swd

    import numpy as np

    reference = to_uint8(data.default_dataset(args.image_size, count=2 * args.count, seed=7, progress=False).images)
    real, other_half = reference[: args.count], reference[args.count :]
    real_vs_real_scores = swd(real, other_half)
    real_vs_real = real_vs_real_scores["mean"]
    # the training set run_training uses without --data, for the memorization audit
    train = to_uint8(data.default_dataset(args.image_size, count=DEFAULT_DATA_COUNT, progress=False).images)
    real_audit = audit_summary(memorization_audit(train, real))
    results = {"budget_s": args.budget, "image_size": args.image_size, "backend": args.backend,
               "real_vs_real_swd": real_vs_real,
               "real_vs_real_levels": {str(k): v for k, v in real_vs_real_scores["levels"].items()},
               "real_memorization": real_audit, "variants": {}}
    out = Path(args.out) / f"{args.image_size}px-{int(args.budget)}s"
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seeds takes a comma list of integers, got {args.seeds!r}") from None
    variants = args.variants.split(";" if ";" in args.variants else ",")
    if seeds and any("seed" in parse_variant(v)[1] for v in variants):
        raise SystemExit("--seeds sets each run's seed; drop seed= from --variants")
    runs = [(v, f"{v}+seed={s}" if seeds else v) for v in variants for s in (seeds or [None])]
    for variant, name in runs:
        preset, overrides = parse_variant(name)
        run_dir = out / name
        started = time.perf_counter()
        curve, hook = [], None
        if args.eval_every > 0:
            hook = _curve_hook(args, real, curve, name)
        outcome = run_training(out=run_dir, backend=args.backend, preset=preset, image_size=args.image_size,
                               time_budget=None if hook else args.budget, epochs=10**6 if hook else None,
                               config_overrides=overrides or None, progress=False, on_epoch_end=hook)
        if outcome.result.status.startswith("stopped:SIG"):  # Ctrl-C or kill: end the experiment
            raise SystemExit(f"{name}: {outcome.result.status} at step {outcome.result.step}; "
                             f"its checkpoint is in {run_dir}")
        job = plan_job(run_dir, args.count, run_dir / "generated", seed=1, backend=args.backend)
        generate_in_process(job)
        fake = np.stack([read_png(p) for p in sorted((run_dir / "generated").glob("img_*.png"))])
        scores = swd(real, fake)
        score = scores["mean"]
        audit = audit_summary(memorization_audit(train, fake))
        results["variants"][name] = {
            "preset": preset, "overrides": overrides, "steps": outcome.result.step,
            "variant": variant, "epochs": outcome.result.epoch, "swd": score,
            "swd_levels": {str(k): v for k, v in scores["levels"].items()},
            "rebalance_d": outcome.result.rebalance_d, "rebalance_g": outcome.result.rebalance_g,
            "memorization": audit, "wall_s": time.perf_counter() - started, "curve": curve,
        }
        print(f"{name:24s} steps {outcome.result.step:5d}  SWD {score:7.1f}  (real vs real {real_vs_real:.1f})  "
              f"likely copies {audit['copies']} (fresh real images: {real_audit['copies']})  levels "
              + ", ".join(f"{k}: {v:.1f}" for k, v in scores["levels"].items()), flush=True)
    if seeds:
        results["means"] = {}
        for variant in variants:
            values = [r["swd"] for r in results["variants"].values() if r["variant"] == variant]
            results["means"][variant] = {"swd_mean": float(np.mean(values)), "swd_min": min(values),
                                         "swd_max": max(values), "seeds": seeds}
            print(f"{variant:24s} mean SWD over seeds {','.join(map(str, seeds))}: {np.mean(values):.1f} "
                  f"(range {min(values):.1f} to {max(values):.1f})", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


def calibrate(image_size: int, count: int) -> None:
    """SWD of fresh real images against fresh real images altered in known ways: a scale for
    reading the experiment's numbers."""
    import cv2
    import numpy as np

    from service import data
    from service.imageio import to_uint8
    from service.validation.metrics import swd

    real = to_uint8(data.default_dataset(image_size, count=count, seed=7, progress=False).images)
    other = to_uint8(data.default_dataset(image_size, count=count, seed=11, progress=False).images)
    noisy = other.astype(np.float64) + np.random.default_rng(0).normal(0.0, 8.0, other.shape)
    altered = {
        "unaltered (real vs real)": other,
        "3x3 Gaussian blur": np.stack([cv2.GaussianBlur(x, (3, 3), 0) for x in other]),
        "5x5 Gaussian blur": np.stack([cv2.GaussianBlur(x, (5, 5), 0) for x in other]),
        "Gaussian pixel noise, sigma 8": np.clip(np.rint(noisy), 0, 255).astype(np.uint8),
        "the set's mean image": np.repeat(np.rint(other.mean(axis=0, keepdims=True)).astype(np.uint8), count, 0),
    }
    for name, images in altered.items():
        print(f"{image_size}x{image_size} {count} vs {count}  {name:32s} SWD {swd(real, images)['mean']:7.1f}", flush=True)


def _curve_hook(args, real, curve, name):
    """on_epoch_end hook: SWD of --count fresh samples each --eval-every seconds of step time."""
    import numpy as np

    from service.imageio import to_uint8
    from service.trainer import fixed_sample_noise
    from service.validation.metrics import swd

    state = {"train_s": 0.0, "next": args.eval_every}

    def hook(epoch, backend, run_dir, summary):
        state["train_s"] += summary["seconds"]
        done = state["train_s"] >= args.budget
        if state["train_s"] >= state["next"] or done:
            state["next"] += args.eval_every
            z = fixed_sample_noise(backend.config, len(real))  # as `tune` scores its trials
            fake = to_uint8(np.concatenate([backend.generate(z[i : i + 250]) for i in range(0, len(z), 250)]))
            score = swd(real, fake)["mean"]
            curve.append({"train_s": round(state["train_s"], 1), "step": summary["step"], "swd": score,
                          "d_loss": summary["d_loss"], "g_loss": summary["g_loss"]})
            print(f"  {name}: {state['train_s']:6.0f} s  step {summary['step']:5d}  SWD {score:6.1f}  "
                  f"d {summary['d_loss']:.2f} g {summary['g_loss']:.2f}  "
                  f"extra g {summary['rebalance_g']} d {summary['rebalance_d']}", flush=True)
        return done

    return hook


if __name__ == "__main__":
    main()
