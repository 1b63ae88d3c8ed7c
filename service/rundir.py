"""The run directory: the artifact contract every later stage reads.

    RUN/config.json      {"model": GANConfig.to_dict(), "backend", "data", "seeds", "training", "created"}
    RUN/checkpoints/     ckpt-<step>.npz (service.checkpoint)
    RUN/samples/         epoch_XXXX.png, a fixed-noise grid per epoch
    RUN/metrics.jsonl    one JSON line per step and per epoch
    RUN/loss_curve.png   D and G losses against the step
    RUN/report/          validation output (written by the validation stage)
    RUN/.lesiongan.json  the marker that says the tool made RUN (service.files)
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

from backends.config import ConfigError, GANConfig
from service.errors import UserError
from service.files import check_output_folder, claim_output_folder, make_folder, output_lock, remove_file, write_json

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
SAMPLES_DIR = "samples"
METRICS_FILE = "metrics.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"
REPORT_DIR = "report"
RUN_COMMAND = "train"  # the command named in a run directory's marker (service.files)


def is_old_run_dir(folder) -> bool:
    """A run directory this tool wrote before output folders carried a marker: a config.json
    of ours (a "model" and a "backend") beside a checkpoints/ folder."""
    folder = Path(folder)
    if not (folder / CHECKPOINT_DIR).is_dir() or (folder / CHECKPOINT_DIR).is_symlink():
        return False
    try:
        full = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(full, dict) and isinstance(full.get("model"), dict) and "backend" in full


def claim_run_dir(run_dir, option: str = "--out") -> Path:
    """RUN as the `train` command's folder (service.files.claim_output_folder): made now, or
    made by `train` before; any other existing folder is refused."""
    return claim_output_folder(run_dir, RUN_COMMAND, option, ours_if=is_old_run_dir)


def check_run_dir(run_dir) -> None:
    """claim_run_dir's checks without writing: for callers that check every option first."""
    check_output_folder(run_dir, RUN_COMMAND, ours_if=is_old_run_dir)


def create_run_dir(
    out,
    config: GANConfig,
    backend_name: str,
    data_info: dict,
    seeds: dict,
    training: dict | None = None,
) -> Path:
    """Make RUN = `out` and write RUN/config.json; refuses a directory that already holds a run
    and any folder the tool did not make. A run of ours that never saved a checkpoint (it
    failed or was stopped before its first) is started afresh, so a failed start never blocks
    its --out."""
    run_dir = claim_run_dir(out)
    with output_lock(run_dir, "a run"):
        if (run_dir / CONFIG_FILE).exists():
            if any((run_dir / CHECKPOINT_DIR).glob("ckpt-*.npz")):
                raise UserError(f"{run_dir} already holds a run (config.json); use --resume {run_dir} or another --out")
            print(f"warning: {run_dir} holds a run that saved no checkpoint; starting it afresh", file=sys.stderr)
            for name in (METRICS_FILE, LOSS_CURVE_FILE):
                remove_file(run_dir / name)
        for sub in (CHECKPOINT_DIR, SAMPLES_DIR):
            make_folder(run_dir / sub)
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
    claim_run_dir(run_dir, "run folder")
    with output_lock(run_dir, "a run"):
        write_json(Path(run_dir) / CONFIG_FILE, full, durable=True)
    return full


def metrics_records(metrics_path, kind: str) -> list[dict]:
    """The lines of one type ("step", "epoch", "diversity") of a metrics.jsonl, in order; torn
    lines are skipped (a killed run may leave one); [] when the file is missing."""
    records = []
    try:
        with open(metrics_path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and record.get("type") == kind:
                    records.append(record)
    except FileNotFoundError:
        return []
    return records
