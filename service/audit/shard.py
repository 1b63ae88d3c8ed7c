"""One shard of an audit: read its generated images, find each one's aligned-nearest training
image in the shared index, and write its rows as the shard's part file (atomically, last: the
part marks the shard done). The rows depend only on the shard's images and the index, so the
same job gives the same rows with any number of workers, in any order.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from service.audit.index import TrainingIndex
from service.audit.job import AuditJob, part_path, part_text
from service.audit.source import Shard, read_shard_images
from service.files import write_bytes
from service.validation import memorization


def audit_images(index: TrainingIndex, images_uint8: np.ndarray) -> dict:
    """Per image: nearest training image, its turn and shift, distance, the image's gap, ratio."""
    found = index.aligned.nearest(memorization.prepare(images_uint8))
    gap = index.gaps[found["nearest"]]
    return {**found, "train_gap": gap, "ratio": memorization.copy_ratios(found["distance"], gap)}


def number_text(value: float) -> str:
    """A float as a row holds it: 6 significant digits, inf spelt out."""
    return "inf" if np.isinf(value) else f"{float(value):.6g}"


def shard_rows(index: TrainingIndex, shard: Shard, found: dict) -> str:
    """The shard's rows (ROW_COLUMNS, no header) as CSV text."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    for k, (image_index, file) in enumerate(shard.rows):
        nearest = int(found["nearest"][k])
        ratio = float(found["ratio"][k])
        shift_y, shift_x = (int(v) for v in found["shift"][k])
        writer.writerow([
            image_index, file, nearest, index.file_of(nearest), index.group_of(nearest), int(found["turn"][k]),
            shift_y, shift_x, number_text(found["distance"][k]), number_text(found["train_gap"][k]), number_text(ratio),
            int(ratio < memorization.COPY_RATIO_THRESHOLD),
        ])
    return text.getvalue()


def audit_shard(index: TrainingIndex, job: AuditJob, shard: Shard) -> tuple[int, int, int, int]:
    """Audit one shard and write its part: (shard number, images, likely copies, worker pid)."""
    found = audit_images(index, read_shard_images(job.source, shard))
    write_bytes(part_path(job.out_dir, shard.number), part_text(job, shard, shard_rows(index, shard, found)).encode())
    copies = int(np.sum(found["ratio"] < memorization.COPY_RATIO_THRESHOLD))
    return shard.number, len(shard.rows), copies, os.getpid()
