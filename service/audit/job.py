"""An audit job and its output folder: what the job is (job.json), the part file each finished
shard leaves, and the merge of the parts into audit.csv.

    OUT/audit.csv                      one row per generated image (ROW_COLUMNS), index order
    OUT/summary.json                   counts, copy share, ratio quantiles, the closest pairs
    OUT/memorization_pairs.png         the closest pairs, aligned
    OUT/.audit/job.json                what the job is; a re-run must match it
    OUT/.audit/parts/shard_000000.csv  a finished shard's rows = its done marker

A part is written atomically by whoever audits the shard, so a killed job leaves whole parts
or none. Its first line names the job and shard it belongs to and the sha256 of its rows
(PART_TAG key digest); a re-run skips shards whose part is whole, is this job's and lists
exactly their indices, and redoes the others (an edited, damaged or foreign part is redone,
never trusted).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass

from service import sharded
from service.audit.source import GeneratedSet, Shard
from service.errors import UserError
from service.files import claim_output_folder, open_regular, output_lock, refuse_link
from service.validation import memorization

AUDIT_COMMAND = "audit"  # the command named in OUT's marker (service.files)
STATE_DIR = ".audit"
ROWS_FILE = "audit.csv"
SUMMARY_FILE = "summary.json"
PANEL_FILE = "memorization_pairs.png"
PART_TAG = "#lesiongan-audit-part"  # a part's first line: tag, job and shard key, sha256 of the rows
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


def part_path(out_dir, shard: int):
    return sharded.part_path(out_dir, STATE_DIR, shard)


def refuse_nesting(source: GeneratedSet, out_dir) -> None:
    """UserError when OUT and the generated set's folder are one, or one holds the other: the
    audit's files would join the set it reads (a folder `validate` can no longer read), or the
    set would sit in a folder the audit owns."""
    fake, out = os.path.realpath(source.folder), os.path.realpath(out_dir)
    if fake == out or out.startswith(fake.rstrip(os.sep) + os.sep):
        raise UserError(f"--out {out_dir} is inside the generated set's folder {source.folder}; "
                        "give an --out outside it")
    if fake.startswith(out.rstrip(os.sep) + os.sep):
        raise UserError(f"--fake {source.folder} is inside --out {out_dir}; give an --out outside the generated set")


@contextlib.contextmanager
def open_out_dir(job: AuditJob):
    """OUT claimed as `audit`'s folder and locked while the block runs, checked to hold this
    same job (or started there); torn temp files of a killed writer removed."""
    refuse_nesting(job.source, job.out_dir)
    refuse_link(job.out_dir, f"--out {job.out_dir}")
    claim_output_folder(job.out_dir, AUDIT_COMMAND)
    with output_lock(job.out_dir, "an audit"):
        _check_or_start(job)
        yield


def _check_or_start(job: AuditJob) -> None:
    recorded = sharded.read_job(job.out_dir, STATE_DIR, "an audit")
    if recorded is None:
        sharded.start_job(job.out_dir, STATE_DIR, {**job.identity(), "train": job.train})
    else:
        sharded.check_same_job(recorded, job.identity(), job.out_dir, "audit", "repeat the original inputs")
    sharded.sweep_torn(job.out_dir, STATE_DIR)


def part_text(job: AuditJob, shard: Shard, rows: str) -> str:
    """A part's text: its tag line (this job and shard, the sha256 of the rows), then the rows."""
    return f"{PART_TAG} {_part_key(job, shard)} {hashlib.sha256(rows.encode()).hexdigest()}\n{rows}"


def _part_key(job: AuditJob, shard: Shard) -> str:
    identity = json.dumps({**job.identity(), "shard": shard.number}, sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def read_part(job: AuditJob, shard: Shard) -> str | None:
    """The rows of the shard's part (CSV text, no header) when the part is whole, this job's and
    lists exactly the shard's indices and files in order; None otherwise (missing, edited, cut
    short, another job's): the shard is then redone. UserError when something other than a
    regular file sits at its place (never opened through a link, never a FIFO)."""
    path = part_path(job.out_dir, shard.number)
    if not os.path.lexists(path):
        return None
    with os.fdopen(open_regular(path, os.O_RDONLY, what=f"audit part {path}"), "rb") as f:
        data = f.read()
    try:
        tag, _, rows = data.decode("utf-8").partition("\n")
        parsed = list(csv.reader(io.StringIO(rows)))
    except (UnicodeDecodeError, csv.Error):
        return None
    if tag.split(" ") != [PART_TAG, _part_key(job, shard), hashlib.sha256(rows.encode()).hexdigest()]:
        return None
    whole = len(parsed) == len(shard.rows) and all(
        len(row) == len(ROW_COLUMNS) and row[0] == str(index) and row[1] == file
        for row, (index, file) in zip(parsed, shard.rows)
    )
    return rows if whole else None


def shard_done(job: AuditJob, shard: Shard) -> bool:
    """Whether the shard's part is whole and this job's (read_part)."""
    return read_part(job, shard) is not None
