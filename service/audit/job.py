"""An audit job and its output folder: what the job is (job.json), the part file each finished
shard leaves, and the merge of the parts into audit.csv.

    OUT/audit.csv                      one row per generated image (ROW_COLUMNS), index order
    OUT/summary.json                   counts, copy share, ratio quantiles, the closest pairs
    OUT/memorization_pairs.png         the closest pairs, aligned
    OUT/.audit/job.json                what the job is; a re-run must match it
    OUT/.audit/parts/shard_000000.csv  a finished shard's rows = its done marker

A part is written atomically by whoever audits the shard, so a killed job leaves whole parts
or none; a re-run skips shards whose part lists exactly their indices and redoes the others.
"""

from __future__ import annotations

import contextlib
import csv
import json
from dataclasses import dataclass
from pathlib import Path

from service.audit.source import GeneratedSet, Shard
from service.errors import UserError
from service.files import TEMP_PREFIX, claim_output_folder, make_folder, output_lock, refuse_link, remove_file, write_json
from service.validation import memorization

AUDIT_COMMAND = "audit"  # the command named in OUT's marker (service.files)
STATE_DIR = ".audit"
PARTS_DIR = "parts"
JOB_FILE = "job.json"
ROWS_FILE = "audit.csv"
SUMMARY_FILE = "summary.json"
PANEL_FILE = "memorization_pairs.png"
ROW_COLUMNS = ("index", "file", "train_index", "train_file", "train_group", "turn", "shift_y", "shift_x",
               "distance", "train_gap", "ratio", "likely_copy")


@dataclass(frozen=True)
class AuditJob:
    source: GeneratedSet
    train: str  # the training data as given (resolved), for the record
    train_fingerprint: str
    out_dir: str

    def identity(self) -> dict:
        return {**self.source.identity(), "train_fingerprint": self.train_fingerprint,
                "audit_space": memorization.AUDIT_SPACE}


def parts_dir(out_dir) -> Path:
    return Path(out_dir) / STATE_DIR / PARTS_DIR


def part_path(out_dir, shard: int) -> Path:
    return parts_dir(out_dir) / f"shard_{shard:06d}.csv"


@contextlib.contextmanager
def open_out_dir(job: AuditJob):
    """OUT claimed as `audit`'s folder and locked while the block runs, checked to hold this
    same job (or started there); torn temp files of a killed writer removed."""
    refuse_link(job.out_dir, f"--out {job.out_dir}")
    claim_output_folder(job.out_dir, AUDIT_COMMAND)
    with output_lock(job.out_dir, "an audit"):
        _check_or_start(job)
        yield


def _check_or_start(job: AuditJob) -> None:
    out_dir = Path(job.out_dir)
    job_file = out_dir / STATE_DIR / JOB_FILE
    mine = json.loads(json.dumps(job.identity()))  # as JSON would give it back
    if job_file.is_file():
        try:
            recorded = json.loads(job_file.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{job_file} is unreadable ({e}); choose another --out") from None
        differing = [k for k in mine if not isinstance(recorded, dict) or recorded.get(k) != mine[k]]
        if differing:
            raise UserError(f"{out_dir} holds a different audit ({', '.join(differing)} differ); "
                            "choose another --out or repeat the original inputs")
    else:
        make_folder(parts_dir(out_dir))
        write_json(job_file, {**mine, "train": job.train})
    make_folder(parts_dir(out_dir))
    for torn in list(out_dir.glob(TEMP_PREFIX + "*")) + list(parts_dir(out_dir).glob(TEMP_PREFIX + "*")):
        remove_file(torn)


def shard_done(out_dir, shard: Shard) -> bool:
    """Whether the shard's part lists exactly its indices and files, in order, each row whole."""
    try:
        with open(part_path(out_dir, shard.number), newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return len(rows) == len(shard.rows) and all(
        len(row) == len(ROW_COLUMNS) and row[0] == str(index) and row[1] == file
        for row, (index, file) in zip(rows, shard.rows)
    )
