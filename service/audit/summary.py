"""The end of an audit: the finished shards' parts merged, in index order, into audit.csv, and
summary.json and the pairs panel computed while they stream past, in memory that does not grow
with the number of images: counts, the copy share, ratio quantiles from a fixed histogram (to
RATIO_BIN), and the PANEL_PAIRS closest pairs (lowest ratio, then lowest index)."""

from __future__ import annotations

import csv
import heapq
import io
from pathlib import Path

import numpy as np

from service.audit.index import TrainingIndex
from service.audit.job import PANEL_FILE, ROW_COLUMNS, ROWS_FILE, SUMMARY_FILE, AuditJob, read_part
from service.audit.source import iter_shards
from service.errors import UserError
from service.files import atomic_file, write_json
from service.validation import memorization

RATIO_BIN = 0.001
RATIO_RANGE = 10.0  # ratios above (and inf) share the last bin
QUANTILES = (0.001, 0.01, 0.05, 0.5)
_COLUMN = {name: k for k, name in enumerate(ROW_COLUMNS)}


class _Tally:
    def __init__(self, train_count: int):
        self.count = 0
        self.copies = 0
        self.min_ratio = np.inf
        self.histogram = np.zeros(int(round(RATIO_RANGE / RATIO_BIN)) + 1, np.int64)
        self.copied = np.zeros(train_count, bool)
        self.closest: list = []  # heap of (-ratio, -index, row): the PANEL_PAIRS lowest

    def add(self, rows: list[list[str]]) -> None:
        ratios = np.array([float(row[_COLUMN["ratio"]]) for row in rows])
        copies = np.array([row[_COLUMN["likely_copy"]] == "1" for row in rows])
        self.count += len(rows)
        self.copies += int(copies.sum())
        self.min_ratio = min(self.min_ratio, float(ratios.min()))
        bins = np.minimum(np.floor(np.minimum(ratios, RATIO_RANGE) / RATIO_BIN), len(self.histogram) - 1).astype(np.int64)
        self.histogram += np.bincount(bins, minlength=len(self.histogram))
        self.copied[np.array([int(row[_COLUMN["train_index"]]) for row, copy in zip(rows, copies) if copy], np.int64)] = True
        for k in np.argsort(ratios, kind="stable")[: memorization.PANEL_PAIRS]:
            key = (-ratios[k], -int(rows[k][0]), rows[k])
            if len(self.closest) < memorization.PANEL_PAIRS:
                heapq.heappush(self.closest, key)
            elif key[:2] > self.closest[0][:2]:
                heapq.heapreplace(self.closest, key)

    def quantile(self, q: float) -> float:
        """The upper edge of the bin holding the q-quantile (exact to RATIO_BIN below RATIO_RANGE)."""
        position = int(np.searchsorted(np.cumsum(self.histogram), max(1, int(np.ceil(q * self.count)))))
        return float("inf") if position >= len(self.histogram) - 1 else round((position + 1) * RATIO_BIN, 6)

    def closest_rows(self) -> list[list[str]]:
        return [row for _, _, row in sorted(self.closest, key=lambda key: (-key[0], -key[1]))]


def merge_rows(job: AuditJob, index: TrainingIndex) -> _Tally:
    """audit.csv from the parts, in shard (= index) order; the tally of every row."""
    tally = _Tally(index.count)
    with atomic_file(Path(job.out_dir) / ROWS_FILE) as out:
        out.write((",".join(ROW_COLUMNS) + "\n").encode())
        for shard in iter_shards(job.source):
            text = read_part(job, shard)
            if text is None:
                raise UserError(f"shard {shard.number}'s part in {job.out_dir} changed while the audit ran; run it again")
            tally.add(list(csv.reader(io.StringIO(text))))
            out.write(text.encode())
    return tally


def write_summary(job: AuditJob, index: TrainingIndex, train_uint8: np.ndarray, tally: _Tally, shards: int) -> dict:
    """summary.json and the pairs panel; returns the summary."""
    from service.data import load_generated_images

    closest = tally.closest_rows()
    listing = []
    if closest:
        fake = load_generated_images(job.source.folder, [row[_COLUMN["file"]] for row in closest])
        pairs = {
            "ratio": np.array([float(row[_COLUMN["ratio"]]) for row in closest]),
            "nearest_train": np.array([int(row[_COLUMN["train_index"]]) for row in closest]),
            "turn": np.array([int(row[_COLUMN["turn"]]) for row in closest]),
            "shift": np.array([[int(row[_COLUMN["shift_y"]]), int(row[_COLUMN["shift_x"]])] for row in closest]),
        }
        listing = memorization.save_pairs_panel(Path(job.out_dir) / PANEL_FILE, pairs, fake, train_uint8,
                                                pairs=len(closest), fake_ids=[int(row[0]) for row in closest])
        files = {int(row[0]): (row[_COLUMN["file"]], row[_COLUMN["train_file"]]) for row in closest}
        for entry in listing:
            entry["file"], entry["train_file"] = files[entry["generated"]]
    summary = {
        "generated": tally.count,
        "training": index.count,
        "copies": tally.copies,
        "copy_share": tally.copies / tally.count if tally.count else 0.0,
        "threshold": memorization.COPY_RATIO_THRESHOLD,
        "training_images_copied": int(tally.copied.sum()),
        "min_ratio": None if not np.isfinite(tally.min_ratio) else tally.min_ratio,
        "median_ratio": tally.quantile(0.5),
        "ratio_quantiles": {str(q): tally.quantile(q) for q in QUANTILES},
        "ratio_quantile_resolution": RATIO_BIN,
        "shards": shards,
        "fake": job.source.folder,
        "train": job.train,
        "space": memorization.AUDIT_SPACE,
        "closest_pairs": listing,
        "files": {"rows": ROWS_FILE, "panel": PANEL_FILE if listing else None},
    }
    summary = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in summary.items()}
    summary["ratio_quantiles"] = {k: (None if not np.isfinite(v) else v) for k, v in summary["ratio_quantiles"].items()}
    write_json(Path(job.out_dir) / SUMMARY_FILE, summary)
    return summary
