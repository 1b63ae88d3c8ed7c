"""`utility` at the issue's size: 2,000 real training images at 64x64 (the embedded stand-in),
a fresh labelled test set of another seed, every arm with 3 classifier seeds.

Run: `pytest bench/bench_utility.py --benchmark-only -s`

Prints the whole time, the generation's, the scoring's (bootstrap included) and each arm's with
its classifiers' epochs (target: the whole <= 10 minutes on 2 cores). The generator is BENCH_UTILITY_RUN (a trained conditional run directory) or, by
default, a conditional `default` architecture with random weights: the arms' figures are then
meaningless, their times are not (the classifier's budget does not depend on the images).
  BENCH_UTILITY_RUN     a conditional run directory (default: random weights, 64x64)
  BENCH_UTILITY_COUNT   real training images (default 2000)
  BENCH_UTILITY_TEST    real test images (default 600)
"""

from __future__ import annotations

import os

from backends.presets import preset_config
from run_fixtures import init_random_run  # tests/run_fixtures.py, on the path by bench/conftest.py
from service.data import default_dataset
from service.utility import UtilitySettings, describe, run_utility

COUNT = int(os.environ.get("BENCH_UTILITY_COUNT", "2000"))
TEST = int(os.environ.get("BENCH_UTILITY_TEST", "600"))


def test_utility_time(benchmark, tmp_path):
    run = os.environ.get("BENCH_UTILITY_RUN") or init_random_run(
        tmp_path / "run", preset_config("default", image_size=64, num_classes=3))
    real = default_dataset(64, count=COUNT, seed=0, progress=False)
    test = default_dataset(64, count=TEST, seed=7, progress=False)
    summary = benchmark.pedantic(run_utility, args=(run, real, test, tmp_path / "utility", UtilitySettings()),
                                 rounds=1, iterations=1)
    arms = ", ".join(f"{arm} {entry['seconds']:.0f} s ({'/'.join(map(str, entry['epochs']))} epochs)"
                     for arm, entry in summary["arms"].items())
    benchmark.extra_info.update(seconds=summary["seconds"], generation_seconds=summary["generation_seconds"],
                                scoring_seconds=summary["scoring_seconds"])
    print(f"\n[utility] {COUNT} training and {TEST} test images at 64x64, {os.cpu_count()} CPUs: "
          f"{summary['seconds']:.0f} s in all (target <= 600), generation {summary['generation_seconds']:.0f} s, "
          f"scoring and bootstrap {summary['scoring_seconds']:.1f} s; arms (3 seeds each): {arms}\n"
          + "\n".join(describe(summary)))
