"""Generation at scale: N images from a run's checkpoint, sharded over Ray, resumable.

Image i is a pure function of (checkpoint, seed, i, class): its noise comes from a
counter-based generator keyed by (seed, i) (Philox with key = [seed, i]), and G runs in
inference mode, so an image depends only on its own noise. The output is therefore
byte-identical for any number of workers, and a killed job can be finished by running it again.
Each worker runs its framework with one thread (per CPU it is given): TensorFlow's float sums,
and so now and then a pixel value, can depend on its thread count and, when multi-threaded, on
the batch size; with one thread per worker neither varies. Workers on different kinds of
device (CPU vs GPU) are not bit-compatible; a job should run on one kind.

Indices are cut into fixed shards (`shard_size`, recorded in the job file). A shard writes its
PNG files atomically (temp file + os.replace), then its manifest part, atomically, last: a part
file marks the shard done. A re-run (or --resume) skips shards with a part, redoes the others
(rewriting identical bytes), and merges the parts into manifest.csv in index order.

Layout of the output folder:
    OUT/img_000000000.png ...      one PNG per index (9 digits)
    OUT/manifest.csv               index,file,class,seed,checkpoint_sha256 (index order)
    OUT/.generation/job.json       what the job is; a re-run must match it
    OUT/.generation/parts/shard_000000.csv   a shard's manifest rows = its done marker

Class of image i on a conditional run: the class named by --class, or else classes cycle by
index (i % num_classes: nevus, melanoma, seborrheic_keratosis, nevus, ...), a balanced set.
"""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from backends.config import CLASS_NAMES, GANConfig
from backends.noise import sample_noise
from service.errors import UserError

MANIFEST_FILE = "manifest.csv"
STATE_DIR = ".generation"
JOB_FILE = "job.json"
PARTS_DIR = "parts"
MANIFEST_COLUMNS = ("index", "file", "class", "seed", "checkpoint_sha256")
DEFAULT_SHARD_SIZE = 250
DEFAULT_BATCH_SIZE = 50
DEFAULT_TASK_RETRIES = 3
# Test-only hook: when this variable names an existing file, the first shard task that sees
# the file deletes it and fails, so tests can check that a failed task is retried.
FAIL_ONCE_ENV = "DCGAN_TEST_FAIL_ONCE_MARKER"
# Fields a re-run must share with the job already in OUT (they decide the bytes and the layout).
_IDENTITY_FIELDS = ("checkpoint_sha256", "count", "seed", "class_name", "backend", "shard_size")


class InjectedFailure(RuntimeError):
    """Raised by a shard task when the test-only FAIL_ONCE_ENV marker is present."""


@dataclass(frozen=True)
class GenerationJob:
    run_dir: str
    checkpoint: str
    checkpoint_sha256: str
    count: int
    seed: int
    class_name: str | None  # fixed class, or None: cycle classes (conditional) / none
    num_classes: int
    backend: str
    out_dir: str
    batch_size: int = DEFAULT_BATCH_SIZE
    shard_size: int = DEFAULT_SHARD_SIZE
    fail_once_marker: str | None = field(default=None, compare=False)

    @property
    def num_shards(self) -> int:
        return -(-self.count // self.shard_size)

    def shard_range(self, shard: int) -> range:
        start = shard * self.shard_size
        return range(start, min(start + self.shard_size, self.count))

    def identity(self) -> dict:
        return {name: getattr(self, name) for name in _IDENTITY_FIELDS}


@dataclass
class GenerationResult:
    out_dir: Path
    count: int
    shards_run: int
    shards_skipped: int
    seconds: float = 0.0
    worker_peak_rss: dict = field(default_factory=dict)  # worker pid -> peak RSS bytes
    driver_peak_rss: int = 0


# --- pure pieces: what image i is ---------------------------------------------------------


def image_file_name(index: int) -> str:
    return f"img_{index:09d}.png"


def noise_for_indices(seed: int, indices, config: GANConfig) -> np.ndarray:
    """(len(indices), latent_dim) noise; row k depends only on (seed, indices[k])."""
    rows = [
        sample_noise(np.random.Generator(np.random.Philox(key=[seed, int(i)])), 1, config)[0]
        for i in indices
    ]
    return np.stack(rows) if rows else np.zeros((0, config.latent_dim), config.dtype)


def class_index_for(index: int, job: GenerationJob) -> int | None:
    if job.num_classes == 0:
        return None
    if job.class_name is not None:
        return CLASS_NAMES.index(job.class_name)
    return index % job.num_classes


def check_class(class_name: str | None, config: GANConfig) -> None:
    if class_name is None:
        return
    if config.num_classes == 0:
        raise UserError(f"--class {class_name}: this run is unconditional (trained without classes)")
    known = CLASS_NAMES[: config.num_classes]
    if class_name not in known:
        raise UserError(f"unknown class {class_name!r}; this run knows {', '.join(known)}")


# --- one shard ------------------------------------------------------------------------------


def _parts_dir(out_dir) -> Path:
    return Path(out_dir) / STATE_DIR / PARTS_DIR


def part_path(out_dir, shard: int) -> Path:
    return _parts_dir(out_dir) / f"shard_{shard:06d}.csv"


def write_shard(backend, job: GenerationJob, shard: int) -> int:
    """Generate and write shard `shard`'s images, then its manifest part (last, atomically)."""
    from service.imageio import _write_atomically, save_png, to_uint8

    out_dir = Path(job.out_dir)
    indices = job.shard_range(shard)
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    for start in range(indices.start, indices.stop, job.batch_size):
        batch = range(start, min(start + job.batch_size, indices.stop))
        z = noise_for_indices(job.seed, batch, backend.config)
        classes = [class_index_for(i, job) for i in batch]
        labels = None if job.num_classes == 0 else np.asarray(classes, dtype=np.int64)
        images = to_uint8(backend.generate(z, labels))
        for i, image, cls in zip(batch, images, classes):
            name = image_file_name(i)
            save_png(out_dir / name, image)
            writer.writerow([i, name, "" if cls is None else CLASS_NAMES[cls], job.seed, job.checkpoint_sha256])
    _write_atomically(part_path(out_dir, shard), rows.getvalue().encode())
    return len(indices)


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


def _maybe_fail_once(marker: str | None) -> None:
    if not marker:
        return
    try:
        os.remove(marker)  # only one task can win the removal
    except FileNotFoundError:
        return
    raise InjectedFailure(f"injected failure (test hook {FAIL_ONCE_ENV})")


def _peak_rss_bytes() -> int:
    """Peak resident memory of this process. Linux: VmHWM, because ru_maxrss carries over the
    parent's peak across fork + exec (a driver started from a big process would look big)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# The model is loaded once per worker process and reused by every shard it runs.
_worker_generator: dict = {}


def run_shard_task(job: GenerationJob, shard: int) -> tuple[int, int, int, int]:
    """Body of a Ray task: (shard, images written, worker pid, worker peak RSS bytes)."""
    _maybe_fail_once(job.fail_once_marker)
    key = (job.run_dir, job.checkpoint_sha256, job.backend)
    if key not in _worker_generator:
        _worker_generator.clear()
        _worker_generator[key] = load_generator(job.run_dir, job.checkpoint, job.backend)
    written = write_shard(_worker_generator[key], job, shard)
    return shard, written, os.getpid(), _peak_rss_bytes()


# --- the job ----------------------------------------------------------------------------------


def plan_job(
    run_dir,
    count: int,
    out_dir,
    seed: int = 0,
    class_name: str | None = None,
    backend: str = "tf",
    batch_size: int = DEFAULT_BATCH_SIZE,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> GenerationJob:
    """Check the inputs and pin the job to the run's latest checkpoint."""
    from service.checkpoint import file_sha256, latest_checkpoint
    from service.rundir import load_config

    if count < 1:
        raise UserError(f"--count must be a positive number of images, got {count}")
    if not 0 <= seed < 2**64:
        raise UserError(f"--seed must be in [0, 2^64), got {seed}")
    if batch_size < 1 or shard_size < 1:
        raise UserError("--batch-size and --shard-size must be positive")
    if backend not in ("tf", "numpy"):
        raise UserError(f"unknown backend {backend!r}; choose tf or numpy")
    config, _ = load_config(run_dir)
    check_class(class_name, config)
    checkpoint = latest_checkpoint(run_dir)
    return GenerationJob(
        run_dir=str(Path(run_dir).resolve()),
        checkpoint=str(checkpoint.resolve()),
        checkpoint_sha256=file_sha256(checkpoint),
        count=int(count),
        seed=int(seed),
        class_name=class_name,
        num_classes=config.num_classes,
        backend=backend,
        out_dir=str(Path(out_dir).resolve()),
        batch_size=int(batch_size),
        shard_size=int(shard_size),
        fail_once_marker=os.environ.get(FAIL_ONCE_ENV) or None,
    )


def prepare_out_dir(job: GenerationJob, resume: bool = False) -> set[int]:
    """Create OUT or check it holds this same job; clear torn temp files; return done shards."""
    out_dir = Path(job.out_dir)
    job_file = out_dir / STATE_DIR / JOB_FILE
    if job_file.is_file():
        try:
            recorded = json.loads(job_file.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{job_file} is unreadable ({e}); remove it or choose another --out") from None
        mine = job.identity()
        differing = [k for k in mine if recorded.get(k) != mine[k]]
        if differing:
            raise UserError(
                f"{out_dir} holds a different generation job ({', '.join(differing)} differ); "
                "choose another --out or repeat the original options"
            )
    else:
        if resume:
            raise UserError(f"--resume: {out_dir} holds no generation job to resume")
        if out_dir.exists() and any(out_dir.glob("img_*.png")):
            raise UserError(f"{out_dir} already holds images from elsewhere; choose an empty --out")
        try:
            _parts_dir(out_dir).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create {out_dir}: {e.strerror or e}") from None
        from service.rundir import write_json_atomic

        write_json_atomic(job_file, {**job.identity(), "run_dir": job.run_dir, "checkpoint": job.checkpoint})
    _parts_dir(out_dir).mkdir(parents=True, exist_ok=True)
    for torn in list(out_dir.glob(".tmp-*")) + list(_parts_dir(out_dir).glob(".tmp-*")):
        torn.unlink(missing_ok=True)  # left by a killed writer; never a finished file
    done = set()
    for part in _parts_dir(out_dir).glob("shard_*.csv"):
        shard = int(part.stem.split("_")[1])
        if shard < job.num_shards:
            done.add(shard)
    return done


def merge_manifest(job: GenerationJob) -> Path:
    """Concatenate the shard parts, in shard (= index) order, into manifest.csv; check no gaps."""
    out_dir = Path(job.out_dir)
    final = out_dir / MANIFEST_FILE
    tmp = out_dir / f".tmp-manifest.{os.getpid()}.csv"
    expected = 0
    with open(tmp, "w", newline="") as manifest:
        manifest.write(",".join(MANIFEST_COLUMNS) + "\n")
        for shard in range(job.num_shards):
            part = part_path(out_dir, shard)
            if not part.is_file():
                raise RuntimeError(f"shard {shard} has no manifest part; the job is incomplete")
            text = part.read_text()
            for line in text.splitlines():
                index_text, file_name = line.split(",", 2)[:2]
                if int(index_text) != expected:
                    raise RuntimeError(f"manifest part {part.name}: index {index_text}, expected {expected}")
                if not (out_dir / file_name).is_file():
                    raise RuntimeError(f"{file_name} is listed in {part.name} but missing; re-run to redo it")
                expected += 1
            manifest.write(text)
    if expected != job.count:
        raise RuntimeError(f"manifest holds {expected} rows, expected {job.count}")
    os.replace(tmp, final)
    return final


def generate_in_process(job: GenerationJob, resume: bool = False, progress: bool = False) -> GenerationResult:
    """The same job in one process, one shard after another: the reference for the Ray path.

    Byte-identical to the Ray output when this process runs the framework with one thread as
    the workers do (the generate command sets DCGAN_TF_THREADS=1 for it; the numpy backend
    does not depend on the thread count).
    """
    import time

    started = time.perf_counter()
    done = prepare_out_dir(job, resume)
    backend = load_generator(job.run_dir, job.checkpoint, job.backend)
    todo = [s for s in range(job.num_shards) if s not in done]
    with _progress(job, done, progress) as bar:
        for shard in todo:
            bar.update(write_shard(backend, job, shard))
    merge_manifest(job)
    return GenerationResult(
        Path(job.out_dir), job.count, len(todo), len(done), time.perf_counter() - started,
        {os.getpid(): _peak_rss_bytes()}, _peak_rss_bytes(),
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
) -> GenerationResult:
    """Run the job's missing shards as Ray tasks, at most `workers` at a time.

    The driver keeps only that window of task references (ray.wait), never a list of N of
    anything, so its memory does not grow with the count.
    """
    import time

    from service.ray_cluster import cluster_cpus, cluster_gpus, ray_session, thread_env

    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    started = time.perf_counter()
    done = prepare_out_dir(job, resume)
    local_cpus = workers or os.cpu_count() or 1
    with ray_session(address, num_cpus=None if (address or os.environ.get("RAY_ADDRESS")) else local_cpus) as ray:
        workers = workers or cluster_cpus()
        gpus = cluster_gpus()
        task = ray.remote(run_shard_task).options(
            num_cpus=1,
            num_gpus=1 if gpus >= 1 else 0,
            max_retries=max_retries,
            retry_exceptions=True,
            runtime_env={"env_vars": thread_env(1)},
        )
        # With GPUs, Ray's num_gpus=1 also caps concurrency at the GPU count.
        max_in_flight = workers
        job_ref = ray.put(job)
        todo = (s for s in range(job.num_shards) if s not in done)
        pending: dict = {}
        peaks: dict[int, int] = {}
        shards_run = 0
        with _progress(job, done, progress) as bar:
            while True:
                while len(pending) < max_in_flight:
                    shard = next(todo, None)
                    if shard is None:
                        break
                    pending[task.remote(job_ref, shard)] = shard
                if not pending:
                    break
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    shard = pending.pop(ref)
                    _, written, pid, peak = ray.get(ref)
                    peaks[pid] = max(peaks.get(pid, 0), peak)
                    shards_run += 1
                    bar.update(written)
    merge_manifest(job)
    return GenerationResult(
        Path(job.out_dir), job.count, shards_run, len(done), time.perf_counter() - started,
        peaks, _peak_rss_bytes(),
    )


def init_random_run(out, config: GANConfig, backend: str = "numpy", seed: int = 0) -> Path:
    """A run directory whose one checkpoint holds randomly initialised weights.

    For throughput benchmarks and tests of the generation machinery, where what G has learnt
    does not matter: kernels ~ N(0, 0.05), BN at identity (gamma 1, moving variance 1).
    """
    from backends.spec import weight_shapes
    from service.checkpoint import save_checkpoint
    from service.rundir import create_run_dir

    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in weight_shapes(config).items():
        param = name.rsplit("/", 1)[-1]
        if param in ("gamma", "moving_variance"):
            weights[name] = np.ones(shape, np.float32)
        elif param == "kernel":
            weights[name] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
        else:
            weights[name] = np.zeros(shape, np.float32)
    run_dir = create_run_dir(out, config, backend, {"source": "random initialisation"}, {"init": seed})
    save_checkpoint(run_dir, 0, weights)
    return run_dir


def describe(result: GenerationResult) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
