"""`utility` at the issue's size, with the time of each arm.

Run: `pytest bench/bench_utility.py --benchmark-only -s`

By default 2,000 stand-in training images and 600 fresh stand-in test images at 64x64; on real
lesions:
    BENCH_UTILITY_REAL=/work/data/isic64-train.npz BENCH_UTILITY_TEST=/work/data/isic64-test.npz \\
    BENCH_UTILITY_SEEDS=0 pytest bench/bench_utility.py --benchmark-only -s

Prints the whole time, the generation's, the scoring's (bootstrap included) and each arm's
seconds per classifier with its epochs, and the whole time extrapolated to 5 seeds (target:
<= 20 minutes on 2 cores for 1,600 training and 400 test images, all arms, 5 seeds). The
generator is BENCH_UTILITY_RUN (a trained conditional run directory) or, by default, a
conditional `default` architecture with random weights and the data's classes: the arms'
figures are then meaningless (except the real and scarce arms'), their times are not.
  BENCH_UTILITY_RUN     a conditional run directory (default: random weights, 64x64)
  BENCH_UTILITY_REAL    labelled real training images (default: 2,000 stand-in images)
  BENCH_UTILITY_TEST    labelled real test images (default: 600 stand-in images of another seed)
  BENCH_UTILITY_SEEDS   classifier seeds (default 0,1,2,3,4)
  BENCH_UTILITY_ARMS    arms (default: all)
"""

from __future__ import annotations

import os

from backends.presets import preset_config
from run_fixtures import init_random_run  # tests/run_fixtures.py, on the path by bench/conftest.py
from service.data import default_dataset, load_images
from service.utility import ARMS, UtilitySettings, describe, run_utility

SEEDS = tuple(int(s) for s in os.environ.get("BENCH_UTILITY_SEEDS", "0,1,2,3,4").split(","))
ARMS_RUN = tuple(os.environ.get("BENCH_UTILITY_ARMS", ",".join(ARMS)).split(","))


def datasets():
    if os.environ.get("BENCH_UTILITY_REAL"):
        return (load_images(os.environ["BENCH_UTILITY_REAL"], 64, progress=False),
                load_images(os.environ["BENCH_UTILITY_TEST"], 64, progress=False))
    return default_dataset(64, count=2000, seed=0, progress=False), default_dataset(64, count=600, seed=7, progress=False)


def test_utility_time(benchmark, tmp_path):
    real, test = datasets()
    run = os.environ.get("BENCH_UTILITY_RUN") or init_random_run(
        tmp_path / "run", preset_config("default", image_size=64, num_classes=len(real.class_names)),
        class_names=real.class_names)
    settings = UtilitySettings(seeds=SEEDS, arms=ARMS_RUN)
    summary = benchmark.pedantic(run_utility, args=(run, real, test, tmp_path / "utility", settings),
                                 rounds=1, iterations=1)
    per_classifier = {arm: entry["seconds"] / len(SEEDS) for arm, entry in summary["arms"].items()}
    five_seeds = summary["generation_seconds"] + summary["scoring_seconds"] + 5 * sum(per_classifier.values())
    arms = ", ".join(f"{arm} {per_classifier[arm]:.0f} s ({'/'.join(map(str, entry['epochs']))} epochs)"
                     for arm, entry in summary["arms"].items())
    benchmark.extra_info.update(seconds=summary["seconds"], generation_seconds=summary["generation_seconds"],
                                scoring_seconds=summary["scoring_seconds"], five_seeds_seconds=five_seeds)
    print(f"\n[utility] {len(real.labels)} training and {len(test.labels)} test images at 64x64, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}: {summary['seconds']:.0f} s in all, "
          f"generation {summary['generation_seconds']:.0f} s, scoring and bootstrap {summary['scoring_seconds']:.1f} s; "
          f"per classifier: {arms}; extrapolated to 5 seeds: {five_seeds:.0f} s (target <= 1200)\n"
          + "\n".join(describe(summary)))
