"""The GPU path in one short run: training and generation speed, memory and numerics on a GPU.

    python bench/gpu_check.py --out gpu-check.json [--time-limit 280] [--count 10000]

On a machine where TensorFlow sees a GPU it measures, and prints as one table (and writes as
JSON):
  - TF train_step, float32 and mixed precision (bfloat16, no loss scaling needed: bfloat16 has
    float32's exponent range): `default` at 64x64 and 128x128, and the thesis model (`seed`
    architecture, GANConfig() defaults) at 64x64 with the thesis's batch of 100; seconds per
    step and images/s after warm-up, and how many times each step function was traced (1: no
    retracing);
  - the thesis recipe (Keras train_on_batch on a combined model, as the thesis ran it), thesis
    model, 64x64, batch 100: the speed-up of the fused step over it on the same GPU;
  - generation of --count thesis-model 64x64 images through `generate`, in process and on Ray
    (one task per GPU), PNG files and --format tar, images/s with the files written;
  - peak GPU memory of each case (TensorFlow's allocator statistics);
  - one float32 training step's losses and gradients on the GPU against the NumPy core (CPU),
    for the same weights and batch, within stated tolerances.
It stops cleanly at --time-limit seconds (the cases left are listed as skipped). On a machine
without a GPU it says so in one line, writes {"gpu": null}, and exits 0.

Exit status: 1 when a case failed with an error, the numerics check is outside its tolerances
(or not finite), or a step function was traced more than once (`problems`: listed in the JSON
and in the last line printed); 0 otherwise. Cases skipped at the time limit and the speed
targets of the ratios are reported, not failures: speed depends on the machine's other load.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # thesis_recipe, beside this file

import numpy as np  # noqa: E402

# Tolerances of the GPU-vs-NumPy check, float32: relative to each array's largest magnitude.
# GPU kernels sum in other orders (and TF32 matmuls keep 10 mantissa bits): 1e-2 of the scale.
LOSS_TOLERANCE = 1e-3
GRADIENT_TOLERANCE = 1e-2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu-check.json", help="JSON file to write (default: gpu-check.json)")
    parser.add_argument("--time-limit", type=float, default=280.0, help="stop after this many seconds (default 280)")
    parser.add_argument("--count", type=int, default=10_000, help="images per generation case (default 10000)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per case (default 20)")
    parser.add_argument("--on-cpu", action="store_true",
                        help="run every case on the CPU anyway (slowly; with small --count and --steps it checks that "
                             "the script works before a GPU is lent)")
    args = parser.parse_args(argv)

    if not args.on_cpu and not gpu_visible():
        print("no GPU visible to TensorFlow: nothing to check here (run this on a GPU machine)")
        Path(args.out).write_text(json.dumps({"gpu": None}, indent=2) + "\n")
        return 0
    check = GpuCheck(args)
    results = check.run()
    results["problems"] = problems(results)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"written: {args.out}")
    if results["problems"]:
        print(f"gpu check FAILED: {'; '.join(results['problems'])}")
        return 1
    return 0


def gpu_visible() -> bool:
    from backends.tf import runtime

    return runtime.has_gpu()


def within_tolerance(loss_relative_error: float, gradient_error_of_scale: float) -> bool:
    """The numerics check's verdict; a NaN error (a non-finite loss or gradient) is outside."""
    return bool(loss_relative_error <= LOSS_TOLERANCE and gradient_error_of_scale <= GRADIENT_TOLERANCE)


def problems(results: dict) -> list[str]:
    """What fails the check, one phrase each: a case's error, numerics outside tolerance, a
    step function traced more than once."""
    found = []
    for name, figures in results["cases"].items():
        if "error" in figures:
            found.append(f"{name}: {figures['error']}")
        elif "loss_relative_error" in figures and not within_tolerance(figures["loss_relative_error"], figures["gradient_error_of_scale"]):
            found.append(f"{name}: outside tolerance (losses {figures['loss_relative_error']:.2e}, limit {LOSS_TOLERANCE:g}; "
                         f"gradients {figures['gradient_error_of_scale']:.2e} of scale, limit {GRADIENT_TOLERANCE:g})")
        elif figures.get("traces", 1) != 1:
            found.append(f"{name}: the step was traced {figures['traces']} times (retracing)")
    return found


class GpuCheck:
    def __init__(self, args):
        self.args = args
        self.deadline = time.monotonic() + args.time_limit
        self.results = {"gpu": None, "cases": {}, "skipped": []}

    def run(self) -> dict:
        from backends.presets import preset_config
        from backends.tf import runtime

        self.results["gpu"] = runtime.device_description()
        thesis = preset_config("seed", image_size=64)
        cases = [
            ("numerics float32 vs NumPy core", lambda: self.numerics(preset_config("default", image_size=64, batch_size=16))),
            ("train thesis 64 float32", lambda: self.train(thesis)),
            ("train thesis 64 mixed", lambda: self.train(thesis.replace(mixed_precision=True))),
            ("thesis recipe 64", lambda: self.thesis_recipe(thesis)),
            ("train default 64 float32", lambda: self.train(preset_config("default", image_size=64))),
            ("train default 64 mixed", lambda: self.train(preset_config("default", image_size=64, mixed_precision=True))),
            ("train default 128 float32", lambda: self.train(preset_config("default", image_size=128))),
            ("train default 128 mixed", lambda: self.train(preset_config("default", image_size=128, mixed_precision=True))),
            ("generate png in process", lambda: self.generate(thesis, "png", workers=0)),
            ("generate tar in process", lambda: self.generate(thesis, "tar", workers=0)),
            ("generate png on Ray", lambda: self.generate(thesis, "png", workers=None)),
        ]
        for name, case in cases:
            if time.monotonic() >= self.deadline:
                self.results["skipped"].append(name)
                continue
            print(f"... {name}", flush=True)
            try:
                self.results["cases"][name] = case()
            except Exception as e:  # noqa: BLE001 - one failed case must not hide the others
                self.results["cases"][name] = {"error": f"{type(e).__name__}: {e}"[:300]}
        self.results["ratios"] = ratios(self.results["cases"])
        return self.results

    # --- cases ---
    def train(self, config) -> dict:
        from backends.tf import TFBackend

        backend = TFBackend(config)
        real, z = batch(config)
        reset_peak_memory()
        for _ in range(3):  # trace and warm up
            backend.train_step(real, z)
        seconds = timed(lambda: backend.train_step(real, z), self.args.steps, self.deadline)
        return {"s_per_step": seconds, "images_per_s": config.batch_size / seconds,
                "traces": backend.trace_counts()["train_step"], "peak_gpu_mib": peak_memory_mib(),
                "batch": config.batch_size}

    def thesis_recipe(self, config) -> dict:
        from thesis_recipe import ThesisRecipe

        recipe = ThesisRecipe(config)
        real, z = batch(config)
        reset_peak_memory()
        recipe.train_step(real, z)
        seconds = timed(lambda: recipe.train_step(real, z), max(3, self.args.steps // 4), self.deadline)
        return {"s_per_step": seconds, "images_per_s": config.batch_size / seconds, "peak_gpu_mib": peak_memory_mib()}

    def generate(self, config, output_format: str, workers) -> dict:
        from run_fixtures import init_random_run
        from service.generation import generate_in_process, generate_on_ray, plan_job

        with tempfile.TemporaryDirectory() as folder:
            run = init_random_run(Path(folder) / "run", config, backend="tf")
            job = plan_job(run, self.args.count, Path(folder) / "out", backend="tf", batch_size=250,
                           shard_size=1000, output_format=output_format)
            reset_peak_memory()
            started = time.perf_counter()
            if workers == 0:
                generate_in_process(job)
            else:
                generate_on_ray(job, workers=workers, progress=False)
            seconds = time.perf_counter() - started
        return {"images": self.args.count, "seconds": seconds, "images_per_s": self.args.count / seconds,
                "peak_gpu_mib": peak_memory_mib(), "format": output_format}

    def numerics(self, config) -> dict:
        """One float32 step's losses and gradients, GPU (TF) against the NumPy core (CPU)."""
        import backends

        config = config.replace(dropout=0.0, diffaugment="")  # no random draws: the two backends' RNGs differ
        gpu, cpu = backends.get("tf", config), backends.get("numpy", config)
        cpu.set_weights(gpu.get_weights())
        real, z = batch(config)
        on_gpu, on_cpu = gpu.compute_gradients(real, z), cpu.compute_gradients(real, z)
        # each array against the largest gradient of its kind in its network (as tests/test_parity.py):
        # a conv bias before a batch norm has a gradient that is 0 in exact arithmetic, rounding noise here
        scales: dict[str, float] = {}
        for name, expected in on_cpu["grads"].items():
            kind = name.split("/")[0] + "/" + name.split("/")[-1]
            scales[kind] = max(scales.get(kind, 0.0), float(np.max(np.abs(expected))))
        worst = 0.0
        for name, expected in on_cpu["grads"].items():
            scale = scales[name.split("/")[0] + "/" + name.split("/")[-1]] or 1.0
            worst = max(worst, float(np.max(np.abs(on_gpu["grads"][name] - expected))) / scale)
        loss_error = max(abs(on_gpu[k] - on_cpu[k]) / abs(on_cpu[k]) for k in ("d_loss", "g_loss"))
        return {"loss_relative_error": loss_error, "gradient_error_of_scale": worst,
                "within_tolerance": within_tolerance(loss_error, worst),
                "tolerances": {"loss": LOSS_TOLERANCE, "gradient": GRADIENT_TOLERANCE}}


def batch(config):
    from backends.noise import sample_noise

    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (config.batch_size, config.image_size, config.image_size, 3)).astype(np.float32)
    return real, sample_noise(rng, config.batch_size, config)


def timed(step, count: int, deadline: float) -> float:
    """Median seconds of `count` calls (fewer if the deadline comes first; at least one)."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
        if time.monotonic() >= deadline:
            break
    return float(np.median(times))


def reset_peak_memory() -> None:
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        tf.config.experimental.reset_memory_stats("GPU:0")


def peak_memory_mib() -> float | None:
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return None
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20


def ratios(cases: dict) -> dict:
    """The targets' ratios, where both sides were measured."""

    def rate(name):
        return cases.get(name, {}).get("images_per_s")

    out = {}
    if rate("train thesis 64 float32") and rate("thesis recipe 64"):
        out["fused / thesis recipe (target >= 2)"] = rate("train thesis 64 float32") / rate("thesis recipe 64")
    if rate("train thesis 64 mixed") and rate("train thesis 64 float32"):
        out["mixed / float32, thesis model (target >= 1.5)"] = rate("train thesis 64 mixed") / rate("train thesis 64 float32")
    if rate("generate png in process"):
        out["generation images/s, PNG, in process (target >= 2000)"] = rate("generate png in process")
    return out


def print_table(results: dict) -> None:
    print(f"\nGPU: {results['gpu']}")
    print(f"{'case':36s} {'s/step':>9s} {'images/s':>10s} {'peak MiB':>9s}  notes")
    for name, figures in results["cases"].items():
        if "error" in figures:
            print(f"{name:36s} error: {figures['error']}")
            continue
        if "loss_relative_error" in figures:
            print(f"{name:36s} losses {figures['loss_relative_error']:.2e}, gradients {figures['gradient_error_of_scale']:.2e} "
                  f"of scale: {'within' if within_tolerance(figures['loss_relative_error'], figures['gradient_error_of_scale']) else 'OUTSIDE'} tolerance")
            continue
        step = f"{figures['s_per_step']:.4f}" if "s_per_step" in figures else "-"
        peak = f"{figures['peak_gpu_mib']:.0f}" if figures.get("peak_gpu_mib") is not None else "-"
        notes = f"traces {figures['traces']}" if "traces" in figures else figures.get("format", "")
        print(f"{name:36s} {step:>9s} {figures['images_per_s']:>10.1f} {peak:>9s}  {notes}")
    for name, value in results.get("ratios", {}).items():
        print(f"{name}: {value:.2f}")
    if results["skipped"]:
        print(f"skipped at the time limit: {', '.join(results['skipped'])}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # run_fixtures
    sys.exit(main())
