"""The cost of differential privacy per D step: a private D step (per-example gradients, clipped,
noised) against the same D step without privacy, side by side in one process, on both backends.

    pytest bench/bench_privacy.py --benchmark-only -s
    BENCH_PRIVACY_SIZE=32 pytest bench/bench_privacy.py --benchmark-only -s   # a quicker look

Both arms use the `dp` preset's networks (D without batch statistics, minibatch std or pack) at
64x64, batch 32, float32; the only difference is dp_noise (1.0 against 0: the non-private arm
takes the plain D step). Each backend runs a warm-up, then rounds alternating private and
non-private D steps (`d_step`), so load on a shared machine falls on both alike; the figure is
the median of the rounds' time ratios (target: private <= 3x the non-private step). The NumPy
core's per-example gradients are held for the whole batch at once, so its peak memory is also
printed (tracemalloc's peak of one private step). Measures and prints; never asserts time.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.noise import sample_noise  # noqa: E402
from backends.presets import preset_config  # noqa: E402

SIZE = int(os.environ.get("BENCH_PRIVACY_SIZE", "64"))
BATCH = 32
ROUNDS = int(os.environ.get("BENCH_PRIVACY_ROUNDS", "5"))
STEPS = 3  # D steps per arm per round
SETTLE_SECONDS = 0.5
RESULTS: dict[str, dict] = {}


def configs():
    private = preset_config("dp", image_size=SIZE, dtype="float32", batch_size=BATCH)
    return {"private": private, "plain": dataclasses.replace(private, dp_noise=0.0, dp_epsilon=0.0)}


def step_inputs(config):
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)).astype(np.float32)
    return real, sample_noise(rng, BATCH, config)


def make_backend(name: str, config):
    if name == "numpy":
        from backends.numpy import NumpyBackend

        return NumpyBackend(config)
    from backends.tf import TFBackend

    return TFBackend(config)


@pytest.mark.parametrize("backend_name", ["numpy", "tf"])
def test_private_d_step_against_plain(benchmark, backend_name):
    arms = {arm: make_backend(backend_name, config) for arm, config in configs().items()}
    assert arms["private"].config.private and not arms["plain"].config.private
    real, z = step_inputs(arms["plain"].config)
    for backend in arms.values():
        for _ in range(2):
            backend.d_step(real, z)
    times = {arm: [] for arm in arms}

    def alternate():
        for _ in range(ROUNDS):
            for arm, backend in arms.items():
                time.sleep(SETTLE_SECONDS)
                started = time.perf_counter()
                for _ in range(STEPS):
                    backend.d_step(real, z)
                times[arm].append((time.perf_counter() - started) / STEPS)

    benchmark.pedantic(alternate, rounds=1, warmup_rounds=0)
    ratios = [p / q for p, q in zip(times["private"], times["plain"])]
    result = {"private_s": float(np.median(times["private"])), "plain_s": float(np.median(times["plain"])),
              "ratio": float(np.median(ratios)), "round_ratios": [round(r, 3) for r in ratios]}
    if backend_name == "numpy":
        tracemalloc.start()
        arms["private"].d_step(real, z)
        result["private_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.reset_peak()
        arms["plain"].d_step(real, z)
        result["plain_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    RESULTS[backend_name] = result
    benchmark.extra_info.update({k: v for k, v in result.items() if k != "round_ratios"})


def teardown_module(module):
    if not RESULTS:
        return
    print(f"\nprivate D step against the plain one ({SIZE}x{SIZE}, batch {BATCH}, `dp` preset, "
          f"{ROUNDS} alternating rounds of {STEPS} steps; target ratio <= 3):")
    for name, result in RESULTS.items():
        memory = (f", peak memory {result['private_peak_mb']:.0f} MB against {result['plain_peak_mb']:.0f} MB"
                  if "private_peak_mb" in result else "")
        print(f"  {name:5s}: private {result['private_s'] * 1e3:.0f} ms, plain {result['plain_s'] * 1e3:.0f} ms, "
              f"ratio {result['ratio']:.2f} (rounds {result['round_ratios']}){memory}")
