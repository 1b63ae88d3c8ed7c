"""Where a TF-backend training step spends its time on the CPU, by kind of op (TensorFlow's
profiler: the ops' own times on TensorFlow's threads, summed per step).

    python bench/profile_tf_step.py                          # default 32x32 and 64x64, thesis 64x64
    python bench/profile_tf_step.py --models default32 --steps 20 --fused

Each model runs a few warm steps, then `--steps` timed plain ones (the `step` figure), then the
same number under the profiler. Kinds, from each op's type and its layer's name:
conv forward / conv gradients (oneDNN convolutions, dense matmuls), upsample-conv kernels (the
phase kernels' contraction, depth_to_space), batch norm, noise inputs, dropout (its random draws
and masks), DiffAugment (the translation's gathers and their gradients), Adam (one fused kernel
per variable), EMA, loss and other element-wise work. `ops` is the summed op time; the step
minus `ops` is what is not compute: the executor's dispatch of each op, Python and the call
into TensorFlow. `--fused` profiles train_step_rebalanced (the margin loop on the device)
instead of train_step.
"""

from __future__ import annotations

import argparse
import collections
import glob
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.tf import TFBackend, runtime  # noqa: E402  (before TensorFlow: its start-up options)

import tensorflow as tf  # noqa: E402

from backends.config import GANConfig  # noqa: E402
from backends.noise import sample_noise  # noqa: E402
from backends.presets import preset_config  # noqa: E402

BATCH = 32
MODELS = {
    "default32": lambda: preset_config("default", image_size=32, batch_size=BATCH, dtype="float32"),
    "default64": lambda: preset_config("default", image_size=64, batch_size=BATCH, dtype="float32"),
    "thesis64": lambda: GANConfig(image_size=64, width=128, max_width=1024, batch_size=BATCH, dtype="float32"),
}
WRAPPERS = ("Run", "Process", "Execute", "Executor", "FunctionRun")
# ops whose events enclose other ops' (the margin loop's While and If, function calls): not summed
CONTROL_FLOW = ("While", "StatelessWhile", "If", "StatelessIf", "PartitionedCall", "StatefulPartitionedCall")


def kind_of(name: str, op_type: str) -> str:
    lower = name.lower()
    if "dropout" in lower:
        return "dropout (draws, masks)"
    if op_type in ("GatherV2", "UnsortedSegmentSum") or "stateful_uniform" in lower:
        return "DiffAugment"
    if "noise_" in lower:
        return "noise inputs"
    if "bn_" in lower or "batch_norm" in lower or "FusedBatchNorm" in op_type:
        return "batch norm"
    if op_type == "ResourceApplyAdam":
        return "Adam"
    if "AssignAdd" in op_type or "ema" in lower:
        return "EMA"
    if op_type in ("DepthToSpace", "SpaceToDepth", "Einsum") or "einsum" in lower:
        return "upsample-conv kernels"
    if "Conv2D" in op_type or "MatMul" in op_type:
        return "conv gradients" if "Backprop" in op_type or "gradient" in lower else "conv forward"
    return "loss, activations, other"


def step_inputs(config: GANConfig):
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (BATCH, config.image_size, config.image_size, config.channels)).astype(np.float32)
    return real, sample_noise(rng, BATCH, config).astype(np.float32)


def op_times(logdir: str) -> tuple[collections.Counter, collections.Counter]:
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0]).read_bytes())
    seconds, counts = collections.Counter(), collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or name.startswith("__") or any(w in name for w in WRAPPERS):
                    continue
                op_name, op_type = name.rsplit(":", 1)
                if op_type in CONTROL_FLOW:
                    continue
                kind = kind_of(op_name, op_type)
                seconds[kind] += event.duration_ps / 1e12
                counts[kind] += 1
    return seconds, counts


def profile(name: str, steps: int, fused: bool) -> str:
    config = MODELS[name]()
    backend = TFBackend(config)
    real, z = step_inputs(config)
    step = (lambda: backend.train_step_rebalanced(real, z)) if fused else (lambda: backend.train_step(real, z))
    for _ in range(3):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    plain = (time.perf_counter() - started) / steps
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            step()
        tf.profiler.experimental.stop()
        seconds, counts = op_times(logdir)
    ops = sum(seconds.values()) / steps
    lines = [f"== {name}{' (fused margin step)' if fused else ''}: step {plain * 1e3:.1f} ms, ops {ops * 1e3:.1f} ms "
             f"({sum(counts.values()) / steps:.0f} ops), not compute {(plain - ops) * 1e3:.1f} ms"]
    for kind, total in seconds.most_common():
        lines.append(f"  {kind:26s} {total / steps * 1e3:8.2f} ms  {100 * total / steps / plain:5.1f}%  "
                     f"({counts[kind] / steps:.0f} ops)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--fused", action="store_true", help="profile train_step_rebalanced")
    args = parser.parse_args(argv)
    print(f"{runtime.device_description()}, threads {runtime.THREADS}, oneDNN {runtime.onednn_enabled()}")
    for name in args.models.split(","):
        if name not in MODELS:
            parser.error(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
        steps = max(2, args.steps // 5) if name == "thesis64" else args.steps
        print(profile(name, steps, args.fused), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
