"""Where a NumPy-core train_step spends its time, per layer and per kind of work.

    python bench/profile_step.py                      # default 32x32 and 64x64, thesis 64x64
    python bench/profile_step.py --models default32 --steps 20

Each model runs a few warm steps, then `--steps` timed ones with every layer's forward and
backward wrapped in a timer, and inside them the calls that do the heavy work:

- BLAS: every matmul of `core.functional` (convolutions, dense layers);
- im2col / col2im: the Numba gathers and scatters around those matmuls;
- fused: the Numba element-wise kernels (batch norm + activation, activation + dropout);
- other in layers: what is left inside the layers: NumPy element-wise work, temporaries,
  reshapes and Python dispatch;
- Adam + EMA: the optimizer updates and the averaged generator;
- outside layers: the rest of the step (augmentation, loss, concatenation, packing, RNG draws
  outside layers, Python in the backend).

Allocation is reported as the step's fresh memory: minor page faults per step (each a 4 KiB
page the kernel zeroes on first touch) and the bytes numpy allocates per step (tracemalloc),
with the cost of a page fault measured on this machine next to it. The wrappers cost a few
microseconds per call (a few hundred calls per step), inside the "outside layers" share.
Untimed steps (the `plain` column) give the step time without the wrappers.
"""

from __future__ import annotations

import argparse
import collections
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.config import GANConfig  # noqa: E402
from backends.noise import sample_noise  # noqa: E402
from backends.presets import preset_config  # noqa: E402

BATCH = 32
MODELS = {
    "default32": lambda: preset_config("default", image_size=32, dtype="float32"),
    "default64": lambda: preset_config("default", image_size=64, dtype="float32"),
    "thesis64": lambda: GANConfig(image_size=64, width=128, max_width=1024, batch_size=BATCH, dtype="float32"),
}


class Timers:
    def __init__(self):
        self.seconds = collections.Counter()
        self.stack: list[str] = []  # the layer call currently running, for per-layer kinds

    def wrap(self, owner, attribute: str, kind: str):
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[kind] += time.perf_counter() - started

        setattr(owner, attribute, timed)
        return original

    def wrap_layer(self, layer, prefix: str):
        for direction in ("forward", "backward"):
            self.wrap(layer, direction, f"layer {prefix}{layer.name} {direction}")


def step_inputs(config: GANConfig):
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (BATCH, config.image_size, config.image_size, config.channels)).astype(np.float32)
    return real, sample_noise(rng, BATCH, config).astype(np.float32)


def page_fault_seconds(pages: int = 1 << 15) -> float:
    """Seconds per minor page fault here: fresh buffers touched once, best of a few."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        buffer = np.empty(pages * 4096, np.uint8)
        buffer[::4096] = 1
        best = min(best, time.perf_counter() - started)
        del buffer
    return best / pages


def profile(name: str, steps: int) -> dict:
    from backends.numpy import NumpyBackend
    from core import functional, kernels
    from core import optim

    config = MODELS[name]()
    backend = NumpyBackend(config)
    real, z = step_inputs(config)
    for _ in range(3):
        backend.train_step(real, z)
    started = time.perf_counter()
    for _ in range(steps):
        backend.train_step(real, z)
    plain = (time.perf_counter() - started) / steps

    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tracemalloc.start()
    backend.train_step(real, z)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults

    timers = Timers()
    originals = [
        (functional, "matmul", timers.wrap(functional, "matmul", "BLAS")),
        (kernels, "im2col", timers.wrap(kernels, "im2col", "im2col/col2im")),
        (kernels, "col2im", timers.wrap(kernels, "col2im", "im2col/col2im")),
        (optim.Adam, "step", timers.wrap(optim.Adam, "step", "Adam + EMA")),
        (backend, "_update_average", timers.wrap(backend, "_update_average", "Adam + EMA")),
    ]
    for fused in kernels.FUSED:
        originals.append((kernels, fused, timers.wrap(kernels, fused, "fused")))
    for network, prefix in ((backend.generator, "G "), (backend.discriminator, "D ")):
        for layer in network.layers:
            timers.wrap_layer(layer, prefix)
    try:
        started = time.perf_counter()
        for _ in range(steps):
            backend.train_step(real, z)
        total = (time.perf_counter() - started) / steps
    finally:
        for owner, attribute, original in originals:
            setattr(owner, attribute, original)
        for network in (backend.generator, backend.discriminator):
            for layer in network.layers:
                vars(layer).pop("forward", None)
                vars(layer).pop("backward", None)
    per_step = {key: value / steps for key, value in timers.seconds.items()}
    layers = {key[6:]: value for key, value in per_step.items() if key.startswith("layer ")}
    in_layers = sum(layers.values())
    kinds = {kind: per_step.get(kind, 0.0) for kind in ("BLAS", "im2col/col2im", "fused")}
    kinds["other in layers"] = in_layers - sum(kinds.values())
    kinds["Adam + EMA"] = per_step.get("Adam + EMA", 0.0)
    kinds["outside layers"] = total - in_layers - kinds["Adam + EMA"]
    return {"name": name, "plain": plain, "total": total, "kinds": kinds, "layers": layers,
            "faults": faults, "alloc_peak": peak}


def report(result: dict, fault_seconds: float) -> str:
    total = result["total"]
    lines = [f"== {result['name']}: step {result['plain'] * 1e3:.1f} ms plain, {total * 1e3:.1f} ms with timers"]
    for kind, seconds in result["kinds"].items():
        lines.append(f"  {kind:16s} {seconds * 1e3:8.1f} ms  {100 * seconds / total:5.1f}%")
    faults = result["faults"]
    lines.append(
        f"  fresh memory: {faults} page faults per step (~{faults * fault_seconds * 1e3:.1f} ms at"
        f" {fault_seconds * 1e6:.2f} us each), numpy peak {result['alloc_peak'] / 2**20:.1f} MiB"
    )
    lines.append("  per layer (forward + backward, ms):")
    merged = collections.Counter()
    for key, seconds in result["layers"].items():
        merged[key.rsplit(" ", 1)[0]] += seconds
    for key, seconds in sorted(merged.items(), key=lambda item: -item[1])[:12]:
        fwd = result["layers"].get(f"{key} forward", 0.0) * 1e3
        bwd = result["layers"].get(f"{key} backward", 0.0) * 1e3
        lines.append(f"    {key:24s} {seconds * 1e3:7.1f}  (fwd {fwd:.1f}, bwd {bwd:.1f})")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    fault_seconds = page_fault_seconds()
    for name in args.models.split(","):
        if name not in MODELS:
            parser.error(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
        steps = max(1, args.steps // 5) if name == "thesis64" else args.steps
        print(report(profile(name, steps), fault_seconds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
