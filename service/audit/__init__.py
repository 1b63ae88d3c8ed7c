"""The memorization audit at generation scale: every generated image against the training set,
as a streaming, resumable job (in process or on Ray), one row per image.

For each generated image: its aligned-nearest training image (under the 8 flips/rotations and
shifts of up to 3 px; service.validation.memorization), the aligned distance, that training
image's own gap to its nearest other training image, their ratio, and whether it is a likely
copy (ratio < 0.5).

Memory is bounded: the training index is built once (`index`); the generated set is read
shard by shard (`source`), each shard's rows written as a part file (`shard`, `job`); the parts
are merged into audit.csv while summary.json and the pairs panel are tallied in fixed memory
(`summary`). `runners` runs the shards in this process or as Ray tasks sharing one copy of the
index per node; the rows are the same for any number of workers, and a killed audit resumes
where it stopped.
"""

from service.audit.index import TrainingIndex, build_training_index
from service.audit.job import PANEL_FILE, ROW_COLUMNS, ROWS_FILE, SUMMARY_FILE, AuditJob, part_path
from service.audit.runners import AuditResult, describe, run_audit, run_shard_task
from service.audit.source import DEFAULT_SHARD_SIZE, GeneratedSet, Shard, iter_shards, open_generated_set

__all__ = [
    "DEFAULT_SHARD_SIZE", "PANEL_FILE", "ROWS_FILE", "ROW_COLUMNS", "SUMMARY_FILE", "AuditJob", "AuditResult", "GeneratedSet",
    "Shard", "TrainingIndex", "build_training_index", "describe", "iter_shards", "open_generated_set", "part_path",
    "run_audit", "run_shard_task",
]
