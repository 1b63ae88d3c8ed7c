"""Trainer overhead over the bare backend step.

    pytest bench/bench_trainer.py --benchmark-only -s

Same backend, same config (32x32, width 16, batch 32), same number of steps (one epoch of 31
batches), side by side, alternating rounds:
  bare     `backend.train_step(real, z)` on premade batches and noise, nothing else;
  trainer  `service.trainer.Trainer` for one epoch: shuffling and batch gathering, noise,
           progress bar, metrics.jsonl line per step, the epoch's sample grid and checkpoint.
Rebalancing is off (max_rebalance_steps=0) so both run exactly the same number of backend
steps: extra steps are the algorithm, not overhead. The end-of-run loss-curve plot, a fixed
cost per run rather than per step, is timed on its own. The target is < 5% overhead.
"""

from __future__ import annotations

import importlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from backends.config import GANConfig

STEPS = 31
BATCH = 32
ROUNDS = 3


def bench_config() -> GANConfig:
    return GANConfig(image_size=32, width=16, max_width=128, batch_size=BATCH, max_rebalance_steps=0, seed=0)


def available(name: str) -> bool:
    try:
        importlib.import_module(f"backends.{name}")
        return True
    except ImportError:
        return False


@pytest.mark.parametrize("backend_name", ["numpy", "tf"])
def test_trainer_overhead(benchmark, backend_name):
    if not available(backend_name):
        pytest.skip(f"backend {backend_name} not available")
    import backends
    from backends.noise import sample_noise
    from service.plots import plot_loss_curve
    from service.rundir import METRICS_FILE
    from service.trainer import Trainer

    config = bench_config()
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(STEPS * BATCH, 32, 32, 3)).astype(np.float32)
    batches = [images[i * BATCH : (i + 1) * BATCH] for i in range(STEPS)]
    noises = [sample_noise(rng, BATCH, config) for _ in range(STEPS)]
    backend = backends.get(backend_name, config)
    for _ in range(3):  # warm up: JIT compilation / graph tracing, sample-grid generate
        backend.train_step(batches[0], noises[0])
    backend.generate(noises[0])

    bare_seconds, trainer_seconds, inside_backend = [], [], []
    workdir = Path(tempfile.mkdtemp(prefix="bench_trainer_"))

    def bare_then_trainer():
        started = time.perf_counter()
        for real, z in zip(batches, noises):
            backend.train_step(real, z)
        bare_seconds.append(time.perf_counter() - started)

        trainer = Trainer(
            TimedBackend(backend), images, run_dir=workdir / f"run{len(trainer_seconds)}", epochs=1,
            progress=True, loss_curve=False, handle_signals=False,
        )
        started = time.perf_counter()
        result = trainer.run()
        trainer_seconds.append(time.perf_counter() - started)
        inside_backend.append(trainer.backend.step_seconds)
        assert result.step == STEPS

    benchmark.pedantic(bare_then_trainer, rounds=ROUNDS, iterations=1)

    started = time.perf_counter()
    plot_loss_curve(workdir / "run0" / METRICS_FILE, workdir / "loss_curve.png")
    plot_seconds = time.perf_counter() - started

    bare, train = statistics.median(bare_seconds), statistics.median(trainer_seconds)
    overhead = train / bare - 1.0
    # Within each trainer run: wall time outside the backend's train_step, over time inside it.
    # Immune to load drift between the bare and trainer rounds on a shared machine.
    in_run = statistics.median((t - b) / b for t, b in zip(trainer_seconds, inside_backend))
    benchmark.extra_info.update(
        bare_s=bare, trainer_s=train, overhead=overhead, in_run_overhead=in_run, loss_plot_s=plot_seconds
    )
    print(
        f"\n[{backend_name}] {STEPS} steps of 32x32 width 16 batch {BATCH}, median of {ROUNDS} rounds: "
        f"bare {bare:.3f} s ({bare / STEPS * 1e3:.1f} ms/step), trainer {train:.3f} s "
        f"-> trainer/bare {train / bare:.3f} (overhead {overhead * 100:+.1f}%, target < 5%); "
        f"in-run overhead (outside train_step / inside) {in_run * 100:.2f}%; rounds bare "
        f"{[round(s, 3) for s in bare_seconds]} trainer {[round(s, 3) for s in trainer_seconds]}; "
        f"loss-curve plot once per run: {plot_seconds:.2f} s"
    )


class TimedBackend:
    """Delegates to a backend, adding up the seconds spent inside its training steps."""

    def __init__(self, backend):
        self._backend = backend
        self.step_seconds = 0.0

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def train_step(self, real, z, labels=None):
        started = time.perf_counter()
        try:
            return self._backend.train_step(real, z, labels)
        finally:
            self.step_seconds += time.perf_counter() - started

    def __getattribute__(self, name):
        # the fused margin step (the tf backend's train_step_rebalanced), timed like train_step;
        # absent on a backend without one, so the trainer falls back to train_step
        if name == "train_step_rebalanced":
            fused = getattr(object.__getattribute__(self, "_backend"), name, None)
            if fused is None:
                raise AttributeError(name)

            def timed(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return fused(*args, **kwargs)
                finally:
                    self.step_seconds += time.perf_counter() - started

            return timed
        return object.__getattribute__(self, name)
