"""TensorFlow process set-up: thread pools sized to the cores this process may use, GPU memory growth.

TensorFlow fixes its thread pools when its runtime starts, so this runs once, on import of
the tf backend, before any tensor is made. A GPU needs no flag: Keras places ops on it
whenever TensorFlow sees one.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import warnings

# TensorFlow's C++ start-up chatter (no CUDA driver, oneDNN notices, "oneDNN supports DT_INT32
# only on platforms with AVX-512") is not for users of a CLI; real failures still raise in Python.
# LESIONGAN_TF_LOGS=1 (the CLI's --verbose) keeps all of it.
SHOW_TF_LOGS = os.environ.get("LESIONGAN_TF_LOGS", "") not in ("", "0")
if not SHOW_TF_LOGS:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN kernels: TensorFlow turns them on by default only on CPUs with AVX-512-class features,
# yet on AVX2 CPUs they run the conv gradients 2-10x faster than the default kernels (measured
# here: Conv2DBackpropFilter 64x64x32->3 at 0.8 vs 8.6 GFLOP/s per core). Only effective when
# this module is imported before TensorFlow; TF_ENABLE_ONEDNN_OPTS=0 turns them off.
# TensorFlow reads the variable once, on its own import: if it came first, the setting below
# cannot take effect (warned about at the end of this module).
_ONEDNN_TOO_LATE = "tensorflow" in sys.modules and "TF_ENABLE_ONEDNN_OPTS" not in os.environ
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")



def _import_tensorflow():
    """Import TensorFlow with the process's stderr (file descriptor 2) held aside unless
    SHOW_TF_LOGS: its absl log lines at load time ignore TF_CPP_MIN_LOG_LEVEL. What it wrote
    is shown if the import fails."""
    if SHOW_TF_LOGS:
        import tensorflow

        return tensorflow
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tensorflow


tf = _import_tensorflow()


def available_cores() -> int:
    """Cores this process may run on: the CPU affinity mask, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


THREADS_VARIABLE = "LESIONGAN_TF_THREADS"  # TensorFlow's intra-op threads, when set
INTER_THREADS_VARIABLE = "LESIONGAN_TF_INTER_THREADS"  # TensorFlow's inter-op threads, when set
OLD_THREADS_VARIABLE = "DCGAN_TF_THREADS"  # deprecated name of THREADS_VARIABLE, still read


def configure_threads(cores: int | None = None) -> dict:
    """One intra-op thread per core; the inter-op pool small, so the two pools do not
    oversubscribe the cores (a GAN step is a chain of large ops, with little to run side by side).
    `LESIONGAN_TF_THREADS` overrides the core count (`DCGAN_TF_THREADS`, its old name, is still
    read, deprecated); `LESIONGAN_TF_INTER_THREADS` the inter-op pool. On 2 busy cores,
    LESIONGAN_TF_THREADS=1 LESIONGAN_TF_INTER_THREADS=2 (ops side by side, each on one thread)
    made the `default` model's step 1.1-1.2x faster and the thesis model's 1.1x slower
    (docs/benchmarks.md); the pools are fixed before the model is known, so the default stays.
    Silently keeps TF's pools if its runtime already started (they cannot change then)."""
    cores = int(os.environ.get(THREADS_VARIABLE) or os.environ.get(OLD_THREADS_VARIABLE) or 0) or cores or available_cores()
    inter = int(os.environ.get(INTER_THREADS_VARIABLE) or 0) or (1 if cores <= 4 else 2)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cores)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        pass
    return {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def enable_gpu_memory_growth() -> list[str]:
    """Let TensorFlow take GPU memory as needed instead of all of it at start."""
    names = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # runtime already started
            pass
        names.append(gpu.name)
    return names


def device_description() -> str:
    """The card's name when TensorFlow sees a GPU, else the CPU and its thread count."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU {details.get('device_name', gpus[0].name)}"
    model = "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {available_cores()} cores"


def onednn_enabled() -> bool:
    """Whether this process asked TensorFlow for oneDNN kernels before TensorFlow started."""
    return not _ONEDNN_TOO_LATE and os.environ.get("TF_ENABLE_ONEDNN_OPTS", "") not in ("0", "false", "False")


def native_bfloat16() -> bool:
    """Whether bfloat16 maths runs in hardware: a GPU, or a CPU with AVX512-BF16 or AMX-BF16."""
    if has_gpu():
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


# Each backend owns its compiled steps, so TensorFlow's "N calls triggered retracing" heuristic
# (which counts across instances of the same method) misfires when several backends are built;
# real retracing is caught by TFBackend.trace_counts() and its test.
tf.get_logger().setLevel("ERROR")
THREADS = configure_threads()
GPUS = enable_gpu_memory_growth()
if _ONEDNN_TOO_LATE and not GPUS:
    warnings.warn("tensorflow was imported before the tf backend, so its oneDNN CPU kernels stay off and "
                  "training steps run slower (about 1.4x at 64x64 here); import backends before tensorflow, "
                  "or set TF_ENABLE_ONEDNN_OPTS=1 in the environment", stacklevel=2)
