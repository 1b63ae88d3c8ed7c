"""Runners of a generation job (service.generation.job): one loop in this process, or shards
as Ray tasks on a local Ray or a cluster. Both write the same bytes.

Each worker runs its framework with one thread (per CPU it is given): TensorFlow's float sums,
and so now and then a pixel value, can depend on its thread count and, when multi-threaded, on
the batch size; with one thread per worker neither varies. Workers on different kinds of
device (CPU vs GPU) are not bit-compatible; a job should run on one kind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from service.errors import UserError
from service.files import write_bytes
from service.generation import release
from service.generation.job import (
    GenerationJob, class_index_for, image_file_name, manifest_file, merge_manifest, noise_for_indices, open_out_dir,
    part_path, tar_member_key, tar_shard_name,
)
from service.ray_window import DEFAULT_TASK_RETRIES, peak_rss_bytes, remote_task, run_window



@dataclass
class GenerationResult:
    out_dir: Path
    count: int
    shards_run: int
    shards_skipped: int
    seconds: float = 0.0
    worker_peak_rss: dict = field(default_factory=dict)  # worker pid -> peak RSS bytes
    driver_peak_rss: int = 0
    replaced: int | None = None  # a copy-free release: images replaced (likely copies)


def write_shard(backend, job: GenerationJob, shard: int, copy_index=None) -> int:
    """Generate and write shard `shard`'s images (PNG files, or one tar shard), then its
    manifest part (last, atomically: it marks the shard done). A copy-free release
    (job.copy_reference; copy_index its training index) audits the shard's images first and
    replaces its likely copies (service.generation.release)."""
    from service.imageio import encode_png

    release.check_reference(job, copy_index)
    out_dir = Path(job.out_dir)
    indices = job.shard_range(shard)
    if copy_index is None:  # batch by batch: a shard's images are never all in memory
        images = ((i, image) for batch, rendered in _batches(backend, job, indices) for i, image in zip(batch, rendered))
        release_columns = None
    else:  # the whole shard, audited as one: its copy decisions do not depend on the batch size
        rendered = np.concatenate([images for _, images in _batches(backend, job, indices)])
        rendered, release_columns = release.exclude_copies(
            lambda wanted, noise: render(backend, job, wanted, noise), copy_index, indices, rendered)
        images = zip(indices, rendered)
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    encoded = []
    for k, (i, image) in enumerate(images):
        cls = class_index_for(i, job)
        class_name = "" if cls is None else job.class_names[cls]
        noise_index = None if release_columns is None else release_columns[k][0]
        png = encode_png(image)
        if job.output_format == "tar":
            encoded.append((i, png, class_name, noise_index))
        else:
            write_bytes(out_dir / image_file_name(i), png)
        extra = [] if release_columns is None else list(release_columns[k])
        extra += [] if job.privacy is None else [f"{job.privacy[0]:.6g}", f"{job.privacy[1]:.6g}"]
        writer.writerow([i, manifest_file(job, i), class_name, job.seed, job.checkpoint_sha256, backend.device_kind, *extra])
    if job.output_format == "tar":
        write_bytes(out_dir / tar_shard_name(shard), tar_shard_bytes(job, encoded, backend.device_kind))
    write_bytes(part_path(out_dir, shard), rows.getvalue().encode())
    return len(indices)


def plain_batch(job: GenerationJob, index: int) -> range:
    """The batch plain generation computes image `index` in: job.batch_size images from the
    start of its shard (the shard's last batch shorter)."""
    shard = job.shard_range(int(index) // job.shard_size)
    start = shard.start + (int(index) - shard.start) // job.batch_size * job.batch_size
    return range(start, min(start + job.batch_size, shard.stop))


def render(backend, job: GenerationJob, indices, noise_indices=None) -> np.ndarray:
    """uint8 images of `indices` (distinct; their classes), from the noise of `noise_indices`
    (default: their own). Each is computed in its plain batch (plain_batch: the same batch
    shape, the same row), the batch's other rows with their own noise, so an image's bytes never
    depend on which or how many other images were asked for with it: a framework's float sums
    can change with the batch shape (TensorFlow on AVX2 without AVX-512, by a grey level), and a
    copy-free release's replacements must be the same bytes in any worker, resumed or not."""
    from service.imageio import to_uint8

    indices = [int(i) for i in indices]
    noise_indices = indices if noise_indices is None else [int(n) for n in noise_indices]
    if len(set(indices)) != len(indices) or len(noise_indices) != len(indices):
        raise ValueError("render takes distinct indices, one noise index each")
    side = backend.config.image_size
    images = np.zeros((len(indices), side, side, 3), np.uint8)
    by_batch: dict[int, list[int]] = {}  # plain batch start -> positions in `indices`
    for k, i in enumerate(indices):
        by_batch.setdefault(plain_batch(job, i).start, []).append(k)
    for positions in by_batch.values():
        batch = plain_batch(job, indices[positions[0]])
        noise = list(batch)
        for k in positions:
            noise[indices[k] - batch.start] = noise_indices[k]
        z = noise_for_indices(job.seed, noise, backend.config)
        labels = None if not job.class_names else np.asarray([class_index_for(i, job) for i in batch], np.int64)
        rendered = to_uint8(backend.generate(z, labels))
        for k in positions:
            images[k] = rendered[indices[k] - batch.start]
    return images


def _batches(backend, job: GenerationJob, indices: range):
    """(indices, uint8 images) of a range, one plain batch at a time."""
    for start in range(indices.start, indices.stop, job.batch_size):
        batch = range(start, min(start + job.batch_size, indices.stop))
        yield batch, render(backend, job, batch)


def tar_shard_bytes(job: GenerationJob, samples: list[tuple[int, bytes, str, int | None]], device: str) -> bytes:
    """A WebDataset-style tar: KEY.png then KEY.json per sample, in index order. Headers carry
    no time or owner, so a shard is the same bytes whoever writes it, whenever. In a copy-free
    release the JSON also names the index whose noise made the image (noise_index)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for index, png, class_name, noise_index in samples:
            meta = {"index": index, "class": class_name or None, "seed": job.seed,
                    "checkpoint_sha256": job.checkpoint_sha256, "device": device}
            if noise_index is not None:
                meta["noise_index"] = noise_index
            for suffix, data in (("png", png), ("json", json.dumps(meta, sort_keys=True).encode())):
                member = tarfile.TarInfo(f"{tar_member_key(index)}.{suffix}")
                member.size, member.mode, member.mtime = len(data), 0o644, 0
                archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def load_generator(run_dir, checkpoint, backend_name: str):
    """A backend with the weights of one specific checkpoint (not 'the latest', which may move)."""
    import backends
    from service.checkpoint import load_checkpoint, weights_only
    from service.rundir import load_config

    config, _ = load_config(run_dir)
    backend = backends.get(backend_name, config)
    try:
        backend.set_weights(weights_only(load_checkpoint(checkpoint)))
    except ValueError as e:
        raise UserError(f"checkpoint {checkpoint} does not match its run's config: {e}") from e
    return backend


# The model is loaded once per worker process and reused by every shard it runs.
_worker_generator: dict = {}


def run_shard_task(job: GenerationJob, shard: int, copy_index=None) -> tuple[int, int, int, int]:
    """Body of a Ray task: (shard, images written, worker pid, worker peak RSS bytes).
    copy_index: a copy-free release's training index (from the node's object store)."""
    key = (job.run_dir, job.checkpoint_sha256, job.backend)
    if key not in _worker_generator:
        _worker_generator.clear()
        _worker_generator[key] = load_generator(job.run_dir, job.checkpoint, job.backend)
    written = write_shard(_worker_generator[key], job, shard, copy_index)
    return shard, written, os.getpid(), peak_rss_bytes()


def generate_in_process(job: GenerationJob, resume: bool = False, progress: bool = False, copy_index=None) -> GenerationResult:
    """The same job in one process, one shard after another: the reference for the Ray path.
    copy_index: the training index of a copy-free release (release.plan_release).

    Byte-identical to the Ray output when this process runs the framework with one thread as
    the workers do (the generate command sets LESIONGAN_TF_THREADS=1 for it; the numpy backend
    does not depend on the thread count).
    """
    release.check_reference(job, copy_index)
    started = time.perf_counter()
    shards_run = 0
    with open_out_dir(job, resume) as done:
        backend = load_generator(job.run_dir, job.checkpoint, job.backend)
        with _progress(job, done, progress) as bar:
            for shard in range(job.num_shards):  # one at a time: never a list of every shard
                if shard not in done:
                    bar.update(write_shard(backend, job, shard, copy_index))
                    shards_run += 1
        merge_manifest(job)
    return GenerationResult(
        Path(job.out_dir), job.count, shards_run, len(done), time.perf_counter() - started,
        {os.getpid(): peak_rss_bytes()}, peak_rss_bytes(), _replaced(job),
    )


def _progress(job: GenerationJob, done: set[int], enabled: bool):
    from tqdm import tqdm

    already = sum(len(job.shard_range(s)) for s in done)
    return tqdm(total=job.count, initial=already, unit="img", desc="generate", disable=not enabled, file=sys.stderr)


def generate_on_ray(
    job: GenerationJob,
    workers: int | None = None,
    address: str | None = None,
    resume: bool = False,
    progress: bool = True,
    max_retries: int = DEFAULT_TASK_RETRIES,
    shard_task: Callable = run_shard_task,
    copy_index=None,
) -> GenerationResult:
    """Run the job's missing shards as Ray tasks, at most `workers` at a time.

    The driver keeps only that window of task references (ray.wait), never a list of N of
    anything, so its memory does not grow with the count. `shard_task(job, shard)` is the
    task's body (run_shard_task; tests wrap it to inject failures); a copy-free release's
    training index (copy_index) is put in the object store once and passed to it as a third
    argument, so every task on a node reads the node's one copy.
    """
    from service.ray_cluster import cluster_cpus, cluster_gpus, probe_address, ray_session

    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    release.check_reference(job, copy_index)
    if address:
        probe_address(address)  # an unreachable cluster: one line before OUT is made
    started = time.perf_counter()
    with open_out_dir(job, resume) as done:
        local_cpus = workers or os.cpu_count() or 1
        with ray_session(address, num_cpus=None if (address or os.environ.get("RAY_ADDRESS")) else local_cpus) as ray:
            workers = workers or cluster_cpus()
            gpus = cluster_gpus()
            task = remote_task(ray, shard_task, max_retries, gpus=1 if gpus >= 1 else 0)
            # one task per GPU where there are GPUs (each task takes a whole one)
            max_in_flight = min(workers, int(gpus)) if gpus >= 1 else workers
            job_ref = ray.put(job)
            extra = () if copy_index is None else (ray.put(copy_index),)
            todo = (s for s in range(job.num_shards) if s not in done)
            shards_run = 0
            with _progress(job, done, progress) as bar:

                def finished(shard, result):  # (shard, images written)
                    nonlocal shards_run
                    shards_run += 1
                    bar.update(result[1])

                # a UserError in a task (e.g. a release that cannot replace a copy) is one line
                peaks = run_window(ray, lambda shard: task.remote(job_ref, shard, *extra), todo, max_in_flight, finished)
        merge_manifest(job)
    return GenerationResult(
        Path(job.out_dir), job.count, shards_run, len(done), time.perf_counter() - started,
        peaks, peak_rss_bytes(), _replaced(job),
    )


def _replaced(job: GenerationJob) -> int | None:
    """Images a copy-free release replaced; None for a plain job."""
    return None if job.copy_reference is None else release.count_replaced(job.out_dir)


def describe(result: GenerationResult) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
