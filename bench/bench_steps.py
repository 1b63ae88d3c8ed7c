"""One training step (batch 32, float32), numpy backend side by side with numpy.matmul and,
when it imports, the tf backend.

    pytest bench/bench_steps.py --benchmark-only -s
    pytest bench/bench_steps.py --benchmark-only -s -k side_by_side      # the three models only

`test_side_by_side` times both backends on three models in one process, in alternating
rounds (numpy, tf, numpy, tf, ...), so load on a shared machine falls on both alike: the
thesis architecture at 64x64 (widths 128..1024) and the `default` preset at 32x32 and 64x64
(what the product trains). The other cases measure the thesis model alone: FLOP rates
against numpy.matmul, and peak memory.

How FLOPs are counted (`nominal_step_flops`): a forward pass costs 2 * multiply-adds of
every Dense and Conv2D layer of the spec, a convolution counted densely at its own input
resolution (an UpSampling2D + Conv2D pair as the conv over the upsampled map, as a
framework computes it). A backward pass costs 2x the forward (input gradient + weight
gradient), so a pass that trains costs 3x its forward. One train_step = G forward+backward
at batch B, D forward+backward at 2B (the D step on [real; fake]) and D forward+backward
at B (the G step through D): 3 * (G(B) + D(2B) + D(B)). Batch norm, activations, dropout,
the loss and Adam are left out (a few % at most).

The numpy core does less than that: it fuses each upsample + conv into a 3x3 convolution
with 4x the filters (36 instead of 64 multiply-adds per 4 output pixels), skips D's weight
gradients in the G step and the input gradient of each network's first layer. So the run
also reports the executed FLOPs (every BLAS matmul counted by core.functional.matmul):
nominal GFLOP/s says how fast the step is against the framework-equivalent work, executed
GFLOP/s how well the core keeps BLAS busy.

The machine may be shared: before each timed round the benchmark measures numpy.matmul
again (untimed), and ratios use round time x the matmul speed next to it.

Peak memory runs in a subprocess (this file's __main__): tracemalloc's peak of one warm step
(numpy reports its buffers to tracemalloc) and the process's ru_maxrss.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from backends import spec
from backends.config import GANConfig
from backends.noise import sample_noise

BATCH = 32
SIDE_BY_SIDE_ROUNDS = int(os.environ.get("BENCH_STEPS_ROUNDS", 5))
# Untimed pause before each round: the other backend's worker threads (TensorFlow's pool,
# OpenBLAS's) spin for a while after their last op and would otherwise take cores from the
# round that follows, which a run of one backend never sees.
SETTLE_SECONDS = 1.0
MATMUL_SHAPE = (4096, 4096, 512)  # D's conv_2 forward at batch 2B: (2B*8*8, 4*4*256) @ (4096, 512)
RESULTS: dict[str, float] = {}


def thesis_config() -> GANConfig:
    return GANConfig(image_size=64, width=128, max_width=1024, batch_size=BATCH, dtype="float32")


def side_by_side_models() -> dict:
    """name -> (config, steps per round, numpy / tf target)."""
    from backends.presets import preset_config

    return {
        "thesis 64x64": (thesis_config(), 2, 1.1),
        "default 32x32": (preset_config("default", image_size=32, batch_size=BATCH, dtype="float32"), 20, 1.5),
        "default 64x64": (preset_config("default", image_size=64, batch_size=BATCH, dtype="float32"), 10, 1.5),
    }


def forward_flops(config: GANConfig, net: str, batch: int) -> int:
    """2 * multiply-adds of one forward pass of `net` on `batch` inputs (see module doc)."""
    side = config.image_size if net == "discriminator" else 0
    total = 0
    for layer in spec.net_spec(config, net):
        a = layer.args
        if layer.kind == "dense":
            total += 2 * batch * a["in"] * a["units"]
        elif layer.kind == "reshape":
            side = a["shape"][0]
        elif layer.kind == "upsample":
            side *= a["factor"]
        elif layer.kind == "conv":
            out_side = -(-side // a["stride"])  # 'same': ceil(side / stride)
            total += 2 * batch * out_side * out_side * a["kernel"] ** 2 * a["in"] * a["filters"]
            side = out_side
    return total


def nominal_step_flops(config: GANConfig, batch: int) -> int:
    g = forward_flops(config, "generator", batch)
    return 3 * (g + forward_flops(config, "discriminator", 2 * batch) + forward_flops(config, "discriminator", batch))


def step_inputs(config: GANConfig):
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (BATCH, config.image_size, config.image_size, config.channels)).astype(np.float32)
    return real, sample_noise(rng, BATCH, config).astype(np.float32)


def median_seconds(benchmark) -> float:
    return benchmark.stats.stats.median


def matmul_operands():
    m, k, n = MATMUL_SHAPE
    rng = np.random.default_rng(0)
    return rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)


def matmul_gflops_now(a, b, repeats: int = 3) -> float:
    """Best of a few matmuls right now: the machine is shared, so each step round is
    compared with the matmul speed measured just before it."""
    best = min(_timed(np.matmul, a, b) for _ in range(repeats))
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / best / 1e9


def _timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def run_rounds(benchmark, step, args, key: str, rounds: int = 3) -> None:
    """Benchmark `step`, measuring matmul GFLOP/s before each round (untimed setup); stores
    the median step time and the median over rounds of step time x matmul speed."""
    a, b = matmul_operands()
    matmul_speeds = []

    def setup():
        matmul_speeds.append(matmul_gflops_now(a, b))
        return args, {}

    benchmark.pedantic(step, setup=setup, rounds=rounds, warmup_rounds=0)
    times = benchmark.stats.stats.data
    RESULTS[key + "_step_s"] = median_seconds(benchmark)
    # seconds x GFLOP/s = GFLOP of matmul work the same time would have bought: comparable across load
    RESULTS[key + "_matmul_equivalent_gflop"] = float(np.median([t * g for t, g in zip(times, matmul_speeds)]))
    RESULTS[key + "_matmul_gflops"] = float(np.median(matmul_speeds))


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    config = thesis_config()
    lines = ["", "=== bench_steps: thesis DCGAN 64x64, batch 32, float32 ==="]
    flops = nominal_step_flops(config, BATCH)
    lines.append(f"nominal step FLOPs: {flops / 1e9:.1f} GFLOP (3 x forward; see module doc)")
    matmul = RESULTS.get("matmul_gflops")
    if matmul:
        lines.append(f"numpy.matmul {MATMUL_SHAPE}: {matmul:.1f} GFLOP/s")
    if "numpy_step_s" in RESULTS:
        step, executed = RESULTS["numpy_step_s"], RESULTS["numpy_executed_flops"]
        # ratio to matmul per round: (FLOPs / step time) / matmul GFLOP/s measured just before it
        equivalent = RESULTS["numpy_matmul_equivalent_gflop"] * 1e9
        lines.append(
            f"numpy train_step: {step:.2f} s (median); matmul just before each round:"
            f" {RESULTS['numpy_matmul_gflops']:.1f} GFLOP/s (median)"
        )
        lines.append(
            f"  nominal  {flops / step / 1e9:.1f} GFLOP/s, ratio to matmul {flops / equivalent:.2f}  (target >= 0.6)"
        )
        lines.append(
            f"  executed {executed / step / 1e9:.1f} GFLOP/s, ratio to matmul {executed / equivalent:.2f}"
            f"  ({executed / 1e9:.1f} GFLOP in BLAS)"
        )
    if "numpy_peak_bytes" in RESULTS:
        lines.append(
            f"numpy step peak memory: tracemalloc {RESULTS['numpy_peak_bytes'] / 2**30:.2f} GiB,"
            f" process ru_maxrss {RESULTS['numpy_maxrss_bytes'] / 2**30:.2f} GiB  (target <= 3 GiB)"
        )
    if "tf_step_s" in RESULTS:
        lines.append(f"tf train_step: {RESULTS['tf_step_s']:.2f} s (median)")
        if "numpy_step_s" in RESULTS:
            ratio = RESULTS["numpy_step_s"] / RESULTS["tf_step_s"]
            # the same, each step time scaled by the matmul speed measured next to it (load-corrected)
            scaled = RESULTS["numpy_matmul_equivalent_gflop"] / RESULTS["tf_matmul_equivalent_gflop"]
            lines.append(
                f"numpy / tf step time: {ratio:.2f} raw, {scaled:.2f} scaled by matmul speed"
                "  (target <= 1.5, stretch <= 1.2)"
            )
    elif "tf_skipped" in RESULTS:
        lines.append(f"tf train_step: skipped ({RESULTS['tf_skipped']})")
    if SIDE_BY_SIDE:
        lines += ["", f"=== numpy and tf side by side, alternating rounds (median of {SIDE_BY_SIDE_ROUNDS}) ==="]
        lines.append(f"{'model':30s} {'numpy':>10s} {'tf':>10s} {'numpy/tf':>9s} {'tf/numpy':>9s}  (each round's numpy/tf)")
        for name, row in SIDE_BY_SIDE.items():
            rounds = ", ".join(f"{r:.2f}" for r in row["round_ratios"])
            lines.append(
                f"{name:30s} {row['numpy_s'] * 1e3:8.1f}ms {row['tf_s'] * 1e3:8.1f}ms {row['ratio']:9.2f}"
                f" {1 / row['ratio']:9.2f}  ({rounds})"
            )
    print("\n".join(lines))


SIDE_BY_SIDE: dict[str, dict] = {}


def trainer_batch(backend):
    """One batch as service.trainer.Trainer runs it: train_step and the margin loop (the
    config's margin and cap), in the backend when it offers the fused call, else in Python."""
    from service.trainer import rebalance

    c = backend.config
    fused = getattr(backend, "train_step_rebalanced", None)
    if fused is not None:
        return lambda real, z: fused(real, z, None, c.margin, c.max_rebalance_steps)

    def batch(real, z):
        d_loss, g_loss = backend.train_step(real, z)
        return rebalance(lambda: backend.d_step(real, z), lambda: backend.g_step(z), d_loss, g_loss, c.margin,
                         c.max_rebalance_steps)

    return batch


@pytest.mark.parametrize("what", ["train_step", "trainer batch"])
@pytest.mark.parametrize("model", ["thesis 64x64", "default 32x32", "default 64x64"])
def test_side_by_side(benchmark, model, what):
    """Both backends on one model: a warm-up, then rounds of `steps` steps alternating numpy,
    tf, numpy, tf, ... (each after SETTLE_SECONDS); per-step medians and the median of the
    rounds' ratios. `train_step`: the bare step; `trainer batch`: the step with the margin loop
    as the trainer runs it (trainer_batch: tf's fused call, numpy's Python loop)."""
    try:
        from backends.tf import TFBackend
    except ImportError as error:
        pytest.skip(f"tf backend not available: {error}")
    from backends.numpy import NumpyBackend

    config, steps, target = side_by_side_models()[model]
    real, z = step_inputs(config)
    backends = {"numpy": NumpyBackend(config), "tf": TFBackend(config)}
    step_of = {name: (b.train_step if what == "train_step" else trainer_batch(b)) for name, b in backends.items()}
    for step in step_of.values():
        for _ in range(2):
            step(real, z)
    times = {"numpy": [], "tf": []}

    def alternate():
        for _ in range(SIDE_BY_SIDE_ROUNDS):
            for name, step in step_of.items():
                time.sleep(SETTLE_SECONDS)
                started = time.perf_counter()
                for _ in range(steps):
                    step(real, z)
                times[name].append((time.perf_counter() - started) / steps)

    benchmark.pedantic(alternate, rounds=1, warmup_rounds=0)
    ratios = [n / t for n, t in zip(times["numpy"], times["tf"])]
    SIDE_BY_SIDE[f"{model} {what}"] = {
        "numpy_s": float(np.median(times["numpy"])), "tf_s": float(np.median(times["tf"])),
        "ratio": float(np.median(ratios)), "round_ratios": ratios, "target": target,
    }
    benchmark.extra_info.update({k: v for k, v in SIDE_BY_SIDE[f"{model} {what}"].items() if k != "round_ratios"})


def test_matmul_float32(benchmark):
    m, k, n = MATMUL_SHAPE
    a, b = matmul_operands()
    benchmark.pedantic(np.matmul, args=(a, b), rounds=7, warmup_rounds=1)
    RESULTS["matmul_gflops"] = 2 * m * k * n / median_seconds(benchmark) / 1e9
    benchmark.extra_info["gflops"] = RESULTS["matmul_gflops"]


def test_numpy_train_step(benchmark):
    from backends.numpy import NumpyBackend
    from core import functional

    config = thesis_config()
    backend = NumpyBackend(config)
    real, z = step_inputs(config)
    backend.train_step(real, z)  # loads the compiled kernels
    functional.matmul_flops[0] = 0
    backend.train_step(real, z)
    RESULTS["numpy_executed_flops"] = functional.matmul_flops[0]
    run_rounds(benchmark, backend.train_step, (real, z), "numpy")
    benchmark.extra_info["nominal_gflops"] = nominal_step_flops(config, BATCH) / RESULTS["numpy_step_s"] / 1e9


def run_peak_memory_subprocess() -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--peak-memory"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_numpy_train_step_peak_memory(benchmark):
    """Runs in a fresh process so nothing else counts towards its peak (timed as a whole:
    build, one warm-up step, one measured step)."""
    measured = benchmark.pedantic(run_peak_memory_subprocess, rounds=1, warmup_rounds=0)
    RESULTS["numpy_peak_bytes"] = measured["tracemalloc_peak"]
    RESULTS["numpy_maxrss_bytes"] = measured["ru_maxrss"]


def test_tf_train_step(benchmark):
    try:
        from backends.tf import TFBackend
    except ImportError as error:
        RESULTS["tf_skipped"] = str(error)
        pytest.skip(f"tf backend not available: {error}")
    config = thesis_config()
    backend = TFBackend(config)
    real, z = step_inputs(config)
    backend.train_step(real, z)  # traces the step
    backend.train_step(real, z)
    run_rounds(benchmark, backend.train_step, (real, z), "tf")


def measure_peak_memory() -> dict:
    import resource
    import tracemalloc

    from backends.numpy import NumpyBackend

    config = thesis_config()
    backend = NumpyBackend(config)
    real, z = step_inputs(config)
    backend.train_step(real, z)
    tracemalloc.start()
    started = time.perf_counter()
    backend.train_step(real, z)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "tracemalloc_peak": peak,
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
        "seconds": time.perf_counter() - started,
    }


if __name__ == "__main__" and "--peak-memory" in sys.argv:
    print(json.dumps(measure_peak_memory()))
