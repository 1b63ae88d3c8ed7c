"""Runners of an audit: the shards one after another in this process (`workers=0`), or as
Ray tasks on a local Ray or a cluster, at most `workers` at a time. Both write the same rows.

The training index is built once, here in the driver; on Ray it is put in the object store
once and every task reads it from there (one copy per node, shared by the node's workers).
The driver plans shards one at a time and keeps only the window of tasks in flight.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from service.audit.index import TrainingIndex, build_training_index
from service.audit.job import AuditJob, open_out_dir, shard_done
from service.audit.shard import audit_shard
from service.audit.source import GeneratedSet, iter_shards
from service.audit.summary import merge_rows, write_summary
from service.errors import UserError
from service.ray_window import DEFAULT_TASK_RETRIES, peak_rss_bytes, remote_task, run_window


@dataclass
class AuditResult:
    out_dir: Path
    count: int
    copies: int
    shards_run: int
    shards_skipped: int
    seconds: float = 0.0
    index_seconds: float = 0.0
    shard_seconds: float = 0.0  # from the first shard started to the last one's rows written
    summary: dict = field(default_factory=dict)
    worker_peak_rss: dict = field(default_factory=dict)  # worker pid -> peak RSS bytes
    driver_peak_rss: int = 0


def run_shard_task(index: TrainingIndex, job: AuditJob, shard) -> tuple[int, int, int, int, int]:
    """Body of a Ray task: (shard, images, likely copies, worker pid, worker peak RSS bytes)."""
    return (*audit_shard(index, job, shard), peak_rss_bytes())


def run_audit(
    source: GeneratedSet,
    train_uint8: np.ndarray,
    out_dir,
    train_groups=None,
    train_files=(),
    train_name: str = "",
    workers: int | None = 0,
    address: str | None = None,
    progress: bool = False,
    max_retries: int = DEFAULT_TASK_RETRIES,
    shard_task: Callable = run_shard_task,
) -> AuditResult:
    """Audit every image of `source` against the training images; rows, summary and panel in
    out_dir. workers=0: in this process; None or K >= 1: Ray tasks (K at a time; None: every
    CPU of the cluster). A re-run on the same out_dir skips the shards already done."""
    if workers is not None and workers < 0:
        raise UserError(f"--workers must be >= 0, got {workers}")
    started = time.perf_counter()
    index = build_training_index(train_uint8, train_groups, train_files)
    index_seconds = time.perf_counter() - started
    job = AuditJob(source, train_name, index.fingerprint, str(Path(out_dir).resolve()))
    with open_out_dir(job):
        if workers == 0:
            shards_run, skipped, peaks, shard_seconds = _in_process(index, job, progress)
        else:
            shards_run, skipped, peaks, shard_seconds = _on_ray(index, job, workers, address, progress, max_retries, shard_task)
        tally = merge_rows(job, index)
        summary = write_summary(job, index, train_uint8, tally, shards_run + skipped)
    return AuditResult(Path(job.out_dir), tally.count, tally.copies, shards_run, skipped, time.perf_counter() - started,
                       index_seconds, shard_seconds, summary, peaks, peak_rss_bytes())


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="audit", disable=not enabled, file=sys.stderr)


def _in_process(index: TrainingIndex, job: AuditJob, progress: bool):
    shards_run = skipped = 0
    started = time.perf_counter()
    with _progress(job.source.count, progress) as bar:
        for shard in iter_shards(job.source):  # one at a time: never a list of every shard
            if shard_done(job, shard):
                skipped += 1
            else:
                audit_shard(index, job, shard)
                shards_run += 1
            bar.update(len(shard.rows))
    return shards_run, skipped, {os.getpid(): peak_rss_bytes()}, time.perf_counter() - started


def _on_ray(index: TrainingIndex, job: AuditJob, workers, address, progress, max_retries, shard_task):
    from service.ray_cluster import cluster_cpus, ray_session

    local_cpus = workers or os.cpu_count() or 1
    with ray_session(address, num_cpus=None if (address or os.environ.get("RAY_ADDRESS")) else local_cpus) as ray:
        workers = workers or cluster_cpus()
        task = remote_task(ray, shard_task, max_retries)
        index_ref, job_ref = ray.put(index), ray.put(job)
        shards_run = skipped = 0
        started = time.perf_counter()
        with _progress(job.source.count, progress) as bar:

            def todo():  # one shard at a time: never a list of every shard
                nonlocal skipped
                for shard in iter_shards(job.source):
                    if shard_done(job, shard):
                        skipped += 1
                        bar.update(len(shard.rows))
                    else:
                        yield shard

            def finished(shard, result):  # (shard, images, likely copies)
                nonlocal shards_run
                shards_run += 1
                bar.update(result[1])

            # bad input found by a task (a UserError) is one line, as in process
            peaks = run_window(ray, lambda shard: task.remote(index_ref, job_ref, shard), todo(), workers, finished)
        seconds = time.perf_counter() - started
    return shards_run, skipped, peaks, seconds


def describe(result: AuditResult) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items() if k != "summary"}
