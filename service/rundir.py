"""The run directory: the artifact contract every later stage reads.

    RUN/config.json      {"model": GANConfig.to_dict(), "backend", "data", "seeds", "training", "created"}
    RUN/checkpoints/     ckpt-<step>.npz (service.checkpoint)
    RUN/samples/         epoch_XXXX.png, a fixed-noise grid per epoch
    RUN/metrics.jsonl    one JSON line per step and per epoch
    RUN/loss_curve.png   D and G losses against the step
    RUN/report/          validation output (written by the validation stage)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path

import numpy as np

from backends.config import ConfigError, GANConfig
from service.errors import UserError
from service.files import write_json

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
SAMPLES_DIR = "samples"
METRICS_FILE = "metrics.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"
REPORT_DIR = "report"


def dataset_fingerprint(images: np.ndarray, labels: np.ndarray | None = None) -> str:
    """sha256 over the training arrays (shape, dtype, bytes): identifies the exact data a run saw."""
    digest = hashlib.sha256()
    for array in (images, labels):
        if array is None:
            digest.update(b"none")
            continue
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def create_run_dir(
    out,
    config: GANConfig,
    backend_name: str,
    data_info: dict,
    seeds: dict,
    training: dict | None = None,
) -> Path:
    """Make RUN = `out` and write RUN/config.json; refuses a directory that already holds a run."""
    run_dir = Path(out)
    if (run_dir / CONFIG_FILE).exists():
        raise UserError(f"{run_dir} already holds a run (config.json); use --resume {run_dir} or another --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} exists and is not a directory")
    try:
        for sub in (CHECKPOINT_DIR, SAMPLES_DIR):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create run directory {run_dir}: {e.strerror or e}") from e
    payload = {
        "model": config.to_dict(),
        "backend": backend_name,
        "data": dict(data_info),
        "seeds": dict(seeds),
        "training": dict(training or {}),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(run_dir / CONFIG_FILE, payload, durable=True)
    return run_dir


def load_config(run_dir) -> tuple[GANConfig, dict]:
    """(GANConfig, the whole config.json) of a run; UserError if it is not a run directory."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    try:
        full = json.loads(path.read_text())
        config = GANConfig.from_dict(full["model"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a valid run config: {e}") from e
    except ConfigError as e:
        raise UserError(f"{path}: {e}") from e
    return config, full


def update_config(run_dir, **sections) -> dict:
    """Replace top-level sections of RUN/config.json (e.g. training targets on resume)."""
    _, full = load_config(run_dir)
    full.update(sections)
    write_json(Path(run_dir) / CONFIG_FILE, full, durable=True)
    return full
