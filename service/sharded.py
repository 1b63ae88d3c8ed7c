"""The sharded job's folder: one contract for `generate` and `audit`.

A sharded job writes its output folder in shards, any number of workers at once, and can be
killed and run again. Its folder holds

    OUT/<state>/job.json               what the job is (its identity); a re-run must match it
    OUT/<state>/parts/shard_000000.csv one finished shard's part: its rows, and its done marker

and, for `generate`, MANIFEST_FILE beside the images: the merged parts, the set's index that
`audit` and `validate` read. A part is written atomically by whoever finishes the shard, so a
killed job leaves whole parts or none; `start_or_check` sweeps the temp files a killed writer
left. What a part holds and how it is checked is each job's own (generation/job.py,
audit/job.py); the folder, the identity check and the sweep are here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from service.errors import UserError
from service.files import TEMP_PREFIX, make_folder, open_regular, remove_file, write_json

MANIFEST_FILE = "manifest.csv"  # a generated set's index: one row per image (generation/job.py)
PARTS_DIR = "parts"
JOB_FILE = "job.json"


def parts_dir(out_dir, state_dir: str) -> Path:
    return Path(out_dir) / state_dir / PARTS_DIR


def part_path(out_dir, state_dir: str, shard: int) -> Path:
    return parts_dir(out_dir, state_dir) / f"shard_{shard:06d}.csv"


def job_file(out_dir, state_dir: str) -> Path:
    return Path(out_dir) / state_dir / JOB_FILE


def read_job(out_dir, state_dir: str, what: str) -> dict | None:
    """The job recorded in OUT (its job.json), or None when none is. UserError when the record is
    unreadable or not a job (never read through a link)."""
    path = job_file(out_dir, state_dir)
    if not os.path.lexists(path):
        return None
    try:
        with os.fdopen(open_regular(path, os.O_RDONLY, what=str(path)), encoding="utf-8") as f:
            recorded = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({e}); remove it or choose another --out") from None
    if not isinstance(recorded, dict):
        raise UserError(f"{path} is not {what}; remove it or choose another --out")
    return recorded


def check_same_job(recorded: dict, identity: dict, out_dir, what: str, hint: str) -> None:
    """UserError naming the fields where OUT's recorded job differs from this one."""
    mine = json.loads(json.dumps(identity))  # as JSON gives it back
    differing = [k for k in mine if recorded.get(k) != mine[k]]
    if differing:
        raise UserError(f"{out_dir} holds a different {what} ({', '.join(differing)} differ); "
                        f"choose another --out or {hint}")


def start_job(out_dir, state_dir: str, record: dict) -> None:
    """Record a new job in OUT (its job.json) and make its parts folder."""
    make_folder(parts_dir(out_dir, state_dir))
    write_json(job_file(out_dir, state_dir), record)


def sweep_torn(out_dir, state_dir: str) -> None:
    """Make sure the parts folder exists and remove the temp files a killed writer left in OUT and
    in it (never a finished file: finished files carry no temp prefix)."""
    out_dir = Path(out_dir)
    make_folder(parts_dir(out_dir, state_dir))
    for torn in list(out_dir.glob(TEMP_PREFIX + "*")) + list(parts_dir(out_dir, state_dir).glob(TEMP_PREFIX + "*")):
        remove_file(torn)
