"""TensorFlow backend benchmarks on the thesis architecture (GANConfig() defaults) at 64x64.

Run once, side by side:  pytest bench/bench_tf.py --benchmark-only -s
(DCGAN_BENCH_QUICK=1 shrinks the model for a smoke run.)

Figures printed at the end:
(a) the fused train_step vs the thesis's recipe (ThesisRecipe below: predict + two
    train_on_batch per step), batch 100: images/s and their ratio (target >= 1.6);
(b) achieved GFLOP/s of the fused step as a ratio to matmul GFLOP/s measured in the same run
    (target >= 0.8). FLOPs are counted from the spec: 2 x multiply-adds of the dense and
    conv layers (BN, activations, upsampling and Adam are left out: they are memory-bound and
    small in FLOPs); a backward pass counts 2 x its forward (input and weight gradients), or
    1 x where only input gradients are needed. One fused step = G forward + backward on B
    (3 G), D forward + backward on 2B (its update: 6 D), D forward + input-gradient backward on
    B (G's update through D: 2 D): 3 G(B) + 8 D(B) forward-equivalents. The thesis recipe does
    the same plus one more G forward (predict), a floor on the ratio in (a) of about 1.2;
(c) generation images/s (batch 256) and peak memory (VmHWM, the peak resident set, of a fresh
    subprocess; ru_maxrss would report the parent's size, inherited at fork) of training and
    of generation;
(d) the fused step with jit_compile (XLA) on vs off (on a mid-size model: see XLA_CONFIG).
They measure and print; they never assert wall time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("backends.tf")  # before TensorFlow itself: it sets TF start-up options

import tensorflow as tf  # noqa: E402

from backends import spec  # noqa: E402
from backends.config import GANConfig  # noqa: E402
from backends.tf import TFBackend, runtime  # noqa: E402
from backends.tf.networks import (  # noqa: E402
    COMBINED_BELOW_FILTERS, COMBINED_MAX_WORK, combined_window_taps, upsample_conv_taps_per_block,
)
from thesis_recipe import ThesisRecipe  # noqa: E402


QUICK = bool(os.environ.get("DCGAN_BENCH_QUICK"))
CONFIG = GANConfig(image_size=64, batch_size=100) if not QUICK else GANConfig(image_size=64, width=16, max_width=128, batch_size=20)
BATCH = CONFIG.batch_size
# XLA on CPU measured ~10x slower than the plain graph even on a small model; at thesis scale a
# single XLA step would take many minutes on 2 cores, so (d) compares jit on/off side by side
# on this mid-size model instead (same 64x64 architecture, narrower).
XLA_CONFIG = GANConfig(image_size=64, width=32, max_width=256, batch_size=25) if not QUICK else CONFIG
GENERATE_BATCH = 256
ROUNDS = 3  # each round of the train step is many seconds on 2 cores
MATMUL_SIDE = 2048
RESULTS: dict[str, float] = {}


# --- FLOPs from the spec (pure functions) ---
def layer_macs(layer: spec.Layer, side: int) -> tuple[int, int]:
    """(multiply-adds for one image, side of the layer's output)."""
    a = layer.args
    if layer.kind == "dense":
        return a["in"] * a["units"], side
    if layer.kind == "conv":
        out = -(-side // a["stride"])
        return out * out * a["kernel"] ** 2 * a["in"] * a["filters"], out
    if layer.kind == "upsample":
        return 0, side * a["factor"]
    if layer.kind == "reshape":
        return 0, a["shape"][0]
    return 0, side


def forward_macs(config: GANConfig, net: str, phase_convs: bool = False) -> int:
    """Multiply-adds of one image's forward pass. With `phase_convs`, an upsampling + conv pair
    counts what UpSampleConv2D executes: taps per 2x2 output block on the small input."""
    side = config.image_size if net == "discriminator" else 1
    total, upsampled = 0, False
    for layer in spec.net_spec(config, net):
        if phase_convs and upsampled and layer.kind == "conv":
            a = layer.args
            small = (side // 2) ** 2 * a["in"] * a["filters"]
            combined = a["filters"] < COMBINED_BELOW_FILTERS or small <= COMBINED_MAX_WORK  # UpSampleConv2D's choice
            taps = combined_window_taps(a["kernel"]) if combined else upsample_conv_taps_per_block(a["kernel"])
            total += small * taps
        else:
            macs, side = layer_macs(layer, side)
            total += macs
            upsampled = layer.kind == "upsample"
            continue
        upsampled = False
    return total


def fused_step_flops(config: GANConfig, batch: int, phase_convs: bool = False) -> float:
    g = 2 * forward_macs(config, "generator", phase_convs)
    d = 2 * forward_macs(config, "discriminator")
    return batch * (3 * g + 8 * d)


# --- the baseline: the thesis's recipe ---
# --- data and helpers ---
def make_batch(config: GANConfig):
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (config.batch_size, config.image_size, config.image_size, 3)).astype(np.float32)
    z = rng.uniform(-1, 1, (config.batch_size, config.latent_dim)).astype(np.float32)
    return real, z


@pytest.fixture(scope="module")
def batch_data():
    return make_batch(CONFIG)


def median_seconds(benchmark) -> float:
    return float(benchmark.stats.stats.median)


def run_train_benchmark(benchmark, step, real, z, key):
    step(real, z)  # trace / compile outside the timing
    benchmark.pedantic(step, args=(real, z), rounds=ROUNDS, iterations=1, warmup_rounds=0)
    RESULTS[key] = median_seconds(benchmark)
    print(f"\n{key}: {RESULTS[key]:.2f} s/step, {len(real) / RESULTS[key]:.1f} images/s")


# --- (a) and (d): training ---
def test_train_fused_step(benchmark, batch_data):
    backend = TFBackend(CONFIG.replace(extra={"jit_compile": False}))
    run_train_benchmark(benchmark, backend.train_step, *batch_data, "fused")


def test_train_fused_step_stock_layers(benchmark, batch_data):
    """The fused step alone, on UpSampling2D + Conv2D: what fusing the step buys by itself."""
    backend = TFBackend(CONFIG.replace(extra={"jit_compile": False, "fuse_upsample_conv": False}))
    run_train_benchmark(benchmark, backend.train_step, *batch_data, "fused_stock")


def test_train_thesis_recipe(benchmark, batch_data):
    recipe = ThesisRecipe(CONFIG)
    run_train_benchmark(benchmark, recipe.train_step, *batch_data, "thesis")


def test_train_xla_off_mid_model(benchmark):
    backend = TFBackend(XLA_CONFIG.replace(extra={"jit_compile": False}))
    run_train_benchmark(benchmark, backend.train_step, *make_batch(XLA_CONFIG), "xla_off")


def test_train_xla_on_mid_model(benchmark):
    backend = TFBackend(XLA_CONFIG.replace(extra={"jit_compile": True}))
    run_train_benchmark(benchmark, backend.train_step, *make_batch(XLA_CONFIG), "xla_on")


# --- (b): the machine's matmul rate, same run ---
def test_matmul_tf(benchmark):
    a = tf.random.uniform((MATMUL_SIDE, MATMUL_SIDE))
    b = tf.random.uniform((MATMUL_SIDE, MATMUL_SIDE))
    product = tf.function(lambda: tf.matmul(a, b))
    product().numpy()
    benchmark.pedantic(lambda: product().numpy(), rounds=5, iterations=1, warmup_rounds=1)
    RESULTS["matmul_tf"] = median_seconds(benchmark)


def test_matmul_numpy(benchmark):
    rng = np.random.default_rng(0)
    a, b = rng.random((MATMUL_SIDE, MATMUL_SIDE), np.float32), rng.random((MATMUL_SIDE, MATMUL_SIDE), np.float32)
    benchmark.pedantic(np.matmul, args=(a, b), rounds=5, iterations=1, warmup_rounds=1)
    RESULTS["matmul_np"] = median_seconds(benchmark)


# --- (c): generation and peak memory ---
def test_generate_256(benchmark):
    backend = TFBackend(CONFIG)
    z = np.random.default_rng(1).uniform(-1, 1, (GENERATE_BATCH, CONFIG.latent_dim)).astype(np.float32)
    backend.generate(z)
    benchmark.pedantic(backend.generate, args=(z,), rounds=2, iterations=1, warmup_rounds=0)
    RESULTS["generate"] = median_seconds(benchmark)


PEAK_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from backends.config import GANConfig
    from backends.tf import TFBackend
    def peak_kib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    mode, config = sys.argv[1], GANConfig.from_dict(json.loads(sys.argv[2]))
    backend = TFBackend(config)
    built = peak_kib()
    rng = np.random.default_rng(0)
    if mode == "train":
        real = rng.uniform(-1, 1, (config.batch_size, config.image_size, config.image_size, 3)).astype(np.float32)
        z = rng.uniform(-1, 1, (config.batch_size, config.latent_dim)).astype(np.float32)
        backend.train_step(real, z)
    else:
        z = rng.uniform(-1, 1, (int(sys.argv[3]), config.latent_dim)).astype(np.float32)
        backend.generate(z)
    peak = peak_kib()
    print(json.dumps({"built_mib": built / 1024, "peak_mib": peak / 1024}))
    """
)


def peak_memory(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY_SCRIPT, mode, json.dumps(CONFIG.to_dict()), str(GENERATE_BATCH)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_peak_memory(benchmark):
    memory = benchmark.pedantic(lambda: {m: peak_memory(m) for m in ("train", "generate")}, rounds=1, iterations=1)
    for mode, figures in memory.items():
        RESULTS[f"rss_{mode}_built"] = figures["built_mib"]
        RESULTS[f"rss_{mode}_peak"] = figures["peak_mib"]


# --- the figures side by side ---
@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    r = RESULTS
    lines = [f"\n=== TF backend, {runtime.device_description()}, threads {runtime.THREADS} ==="]
    lines.append(
        f"model: {CONFIG.image_size}x{CONFIG.image_size}, width {CONFIG.width}..{CONFIG.max_width}, batch {BATCH}"
        f" ({'QUICK smoke config' if QUICK else 'thesis architecture'})"
    )
    if "fused" in r and "thesis" in r:
        lines.append(
            f"(a) fused train_step {BATCH / r['fused']:.1f} img/s vs thesis recipe {BATCH / r['thesis']:.1f} img/s:"
            f" ratio {r['thesis'] / r['fused']:.2f} (target >= 1.6)"
        )
    if "fused_stock" in r and "thesis" in r:
        lines.append(
            f"    of which the fused step alone (stock UpSampling2D + Conv2D layers) {BATCH / r['fused_stock']:.1f} img/s:"
            f" ratio {r['thesis'] / r['fused_stock']:.2f}; UpSampleConv2D {r['fused_stock'] / r['fused']:.2f}x on top"
        )
    if "fused" in r and "matmul_tf" in r:
        flops = fused_step_flops(CONFIG, BATCH, phase_convs=True)
        achieved = flops / r["fused"] / 1e9
        tf_rate = 2 * MATMUL_SIDE**3 / r["matmul_tf"] / 1e9
        np_rate = 2 * MATMUL_SIDE**3 / r["matmul_np"] / 1e9 if "matmul_np" in r else float("nan")
        lines.append(
            f"(b) fused step executes {flops / 1e9:.0f} GFLOP -> {achieved:.1f} GFLOP/s; matmul {MATMUL_SIDE}^2 tf {tf_rate:.1f},"
            f" numpy {np_rate:.1f} GFLOP/s; ratio to tf {achieved / tf_rate:.2f}, to numpy {achieved / np_rate:.2f}"
            " (target >= 0.8)"
        )
        spec_flops = fused_step_flops(CONFIG, BATCH)
        lines.append(f"    (the spec's direct count is {spec_flops / 1e9:.0f} GFLOP: {spec_flops / 1e9 / r['fused']:.1f} GFLOP/s effective)")
        if "fused_stock" in r:
            stock = spec_flops / r["fused_stock"] / 1e9
            lines.append(f"    stock layers: {spec_flops / 1e9:.0f} GFLOP -> {stock:.1f} GFLOP/s, ratio to tf matmul {stock / tf_rate:.2f}")
    if "generate" in r:
        lines.append(f"(c) generate {GENERATE_BATCH} at 64x64: {GENERATE_BATCH / r['generate']:.1f} img/s")
    if "rss_train_peak" in r:
        lines.append(
            f"    peak RSS: train {r['rss_train_peak']:.0f} MiB (after build {r['rss_train_built']:.0f}),"
            f" generate {r['rss_generate_peak']:.0f} MiB (after build {r['rss_generate_built']:.0f})"
        )
    if "xla_on" in r and "xla_off" in r:
        mid = XLA_CONFIG
        lines.append(
            f"(d) jit_compile on {mid.batch_size / r['xla_on']:.1f} img/s vs off {mid.batch_size / r['xla_off']:.1f} img/s"
            f" (64x64, width {mid.width}..{mid.max_width}, batch {mid.batch_size}): XLA speed-up {r['xla_off'] / r['xla_on']:.2f}x"
        )
    print("\n".join(lines))
