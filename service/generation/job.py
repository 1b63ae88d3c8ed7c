"""A generation job: what image i is, how its indices are cut into shards, and the output
folder's contract (images, manifest.csv, the resume state in .generation/); see the package
docstring. The runners (service.generation.runners) execute it in process or on Ray.
"""

from __future__ import annotations

import contextlib
import csv
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backends import BACKENDS, DEFAULT_BACKEND
from backends.config import GANConfig
from backends.noise import sample_noise
from service.errors import UserError
from service.files import atomic_file, claim_output_folder, output_lock, refuse_link, remove_file
from service.sharded import JOB_FILE, MANIFEST_FILE, check_same_job, read_job, start_job, sweep_torn
from service.sharded import parts_dir as sharded_parts_dir
from service.sharded import part_path as sharded_part_path

STATE_DIR = ".generation"
# device: the kind of device that computed the image ("cpu" or "gpu"): bytes are identical
# for any number of workers on one kind of device, not across kinds
MANIFEST_COLUMNS = ("index", "file", "class", "seed", "checkpoint_sha256", "device")
PRIVACY_COLUMNS = ("dp_epsilon", "dp_delta")  # a private run's guarantee, on every row of what it made
DEFAULT_SHARD_SIZE = 250
DEFAULT_BATCH_SIZE = 50
MAX_COUNT = 10**9  # images in one job: file names and manifest indices have 9 digits
GENERATE_COMMAND = "generate"  # the command named in OUT's marker (service.files)
# Fields a re-run must share with the job already in OUT (they decide the bytes and the layout).
# copy_reference: the training pixels' fingerprint of --exclude-copies (None without it).
_IDENTITY_FIELDS = ("checkpoint_sha256", "count", "seed", "class_name", "backend", "shard_size", "output_format",
                    "copy_reference")
OUTPUT_FORMATS = ("png", "tar")  # a PNG file per image, or a WebDataset tar shard per shard


@dataclass(frozen=True)
class GenerationJob:
    run_dir: str
    checkpoint: str
    checkpoint_sha256: str
    count: int
    seed: int
    class_name: str | None  # fixed class, or None: cycle classes (conditional) / none
    class_names: tuple[str, ...]  # the run's classes, in label order; () for an unconditional run
    backend: str
    out_dir: str
    batch_size: int = DEFAULT_BATCH_SIZE
    shard_size: int = DEFAULT_SHARD_SIZE
    output_format: str = "png"
    copy_reference: str | None = None  # --exclude-copies: fingerprint of the training images (service.generation.release)
    copy_reference_source: str | None = None  # where those images came from, for the record
    # a private run's spent privacy at this checkpoint (epsilon, delta): every manifest row says it
    privacy: tuple[float, float] | None = None

    @property
    def num_shards(self) -> int:
        return -(-self.count // self.shard_size)

    def shard_range(self, shard: int) -> range:
        start = shard * self.shard_size
        return range(start, min(start + self.shard_size, self.count))

    def identity(self) -> dict:
        return {name: getattr(self, name) for name in _IDENTITY_FIELDS}


# --- pure pieces: what image i is ---------------------------------------------------------


def image_file_name(index: int) -> str:
    return f"img_{index:09d}.png"


def tar_shard_name(shard: int) -> str:
    return f"shard-{shard:06d}.tar"


def tar_member_key(index: int) -> str:
    """A sample's key in a tar shard: its members are KEY.png and KEY.json (WebDataset style)."""
    return f"{index:09d}"


def manifest_file(job: "GenerationJob", index: int) -> str:
    """The manifest's `file` of image `index`: its PNG, or SHARD.tar:KEY.png inside its shard."""
    if job.output_format == "tar":
        return f"{tar_shard_name(index // job.shard_size)}:{tar_member_key(index)}.png"
    return image_file_name(index)


def noise_for_indices(seed: int, indices, config: GANConfig) -> np.ndarray:
    """(len(indices), latent_dim) noise; row k depends only on (seed, indices[k])."""
    rows = [
        sample_noise(np.random.Generator(np.random.Philox(key=[seed, int(i)])), 1, config)[0]
        for i in indices
    ]
    return np.stack(rows) if rows else np.zeros((0, config.latent_dim), config.dtype)


def class_index_for(index: int, job: GenerationJob) -> int | None:
    if not job.class_names:
        return None
    if job.class_name is not None:
        return job.class_names.index(job.class_name)
    return index % len(job.class_names)


def run_class_names(config: GANConfig, full_config: dict) -> tuple[str, ...]:
    """A conditional run's class names in label order: those of the data it was trained on
    (config.json data.class_names), else the ISIC 2017 names; () when unconditional."""
    if config.num_classes == 0:
        return ()
    from service.data import CLASS_NAMES

    names = tuple(full_config.get("data", {}).get("class_names") or ())
    if len(names) < config.num_classes:
        names = CLASS_NAMES if config.num_classes <= len(CLASS_NAMES) else tuple(f"class_{i}" for i in range(config.num_classes))
    return names[: config.num_classes]


def resolve_class(given: str | None, class_names: tuple[str, ...]) -> str | None:
    """--class as one of the run's class names: a name (exact, else without regard to case) or
    an index; a one-line UserError listing the run's classes otherwise."""
    if given is None:
        return None
    if not class_names:
        raise UserError(f"--class {given}: this run is unconditional (trained without classes)")
    from service.labels import class_index

    return class_names[class_index(str(given), class_names, "--class")]


# --- the output folder ---------------------------------------------------------------------


def part_path(out_dir, shard: int) -> Path:
    return sharded_part_path(out_dir, STATE_DIR, shard)


def plan_job(
    run_dir,
    count: int,
    out_dir,
    seed: int = 0,
    class_name: str | None = None,
    backend: str = DEFAULT_BACKEND,
    batch_size: int = DEFAULT_BATCH_SIZE,
    shard_size: int = DEFAULT_SHARD_SIZE,
    output_format: str = "png",
) -> GenerationJob:
    """Check the inputs and pin the job to the run's latest checkpoint."""
    from service.checkpoint import file_sha256, latest_checkpoint, load_verified
    from service.rundir import load_config

    if not 1 <= count <= MAX_COUNT:
        raise UserError(f"--count must be a positive number of images, at most {MAX_COUNT:,}; got {count}")
    if not 0 <= seed < 2**64:
        raise UserError(f"--seed must be in [0, 2^64), got {seed}")
    if batch_size < 1 or shard_size < 1:
        raise UserError("--batch-size and --shard-size must be positive")
    if output_format not in OUTPUT_FORMATS:
        raise UserError(f"--format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    refuse_link(out_dir, f"--out {out_dir}")
    config, full = load_config(run_dir)
    class_names = run_class_names(config, full)
    class_name = resolve_class(class_name, class_names)
    checkpoint = latest_checkpoint(run_dir)
    arrays = load_verified(checkpoint, config)  # damaged, misshapen or non-finite: one line, before OUT is touched
    return GenerationJob(
        privacy=_spent_privacy(config, arrays),
        run_dir=str(Path(run_dir).resolve()),
        checkpoint=str(checkpoint.resolve()),
        checkpoint_sha256=file_sha256(checkpoint),
        count=int(count),
        seed=int(seed),
        class_name=class_name,
        class_names=class_names,
        backend=backend,
        out_dir=str(Path(out_dir).resolve()),
        batch_size=int(batch_size),
        shard_size=int(shard_size),
        output_format=output_format,
    )


def _spent_privacy(config, arrays) -> tuple[float, float] | None:
    """(epsilon, delta) a private run's checkpoint has spent (service.privacy), else None."""
    if not config.private:
        return None
    from service.privacy import checkpoint_privacy

    spent = checkpoint_privacy(config, arrays)
    return float(spent["epsilon"]), float(spent["delta"])


def is_old_generation_folder(folder) -> bool:
    """A folder `generate` wrote before output folders carried a marker: it holds .generation/job.json."""
    return (Path(folder) / STATE_DIR / JOB_FILE).is_file()


@contextlib.contextmanager
def open_out_dir(job: GenerationJob, resume: bool = False):
    """OUT claimed as `generate`'s folder (service.files) and locked while the block runs,
    then checked to hold this same job (prepare_out_dir); yields the shards already done.
    A second job on the same OUT fails at once, naming the process that holds it."""
    if resume and not is_old_generation_folder(job.out_dir):
        raise UserError(f"--resume: {job.out_dir} holds no generation job to resume")
    claim_output_folder(job.out_dir, GENERATE_COMMAND, ours_if=is_old_generation_folder)
    with output_lock(job.out_dir, "a generation job"):
        yield prepare_out_dir(job, resume)


def prepare_out_dir(job: GenerationJob, resume: bool = False) -> set[int]:
    """Check OUT (claimed by open_out_dir) holds this same job or start it there; clear torn
    temp files; return done shards."""
    out_dir = Path(job.out_dir)
    recorded = read_job(out_dir, STATE_DIR, "a generation job")
    if recorded is not None:
        recorded.setdefault("output_format", "png")  # jobs written before tar output existed
        check_same_job(recorded, job.identity(), out_dir, "generation job", "repeat the original options")
    else:
        if resume:
            raise UserError(f"--resume: {out_dir} holds no generation job to resume")
        if any(out_dir.glob("img_*.png")) or any(out_dir.glob("shard-*.tar")):
            raise UserError(f"{out_dir} already holds images from elsewhere; choose an empty --out")
        record = {**job.identity(), "run_dir": job.run_dir, "checkpoint": job.checkpoint}
        if job.copy_reference is not None:
            from service.validation.memorization import AUDIT_SPACE

            record.update(copy_reference_source=job.copy_reference_source, audit_space=AUDIT_SPACE)
        if job.privacy is not None:
            record.update(dp_epsilon=job.privacy[0], dp_delta=job.privacy[1])
        start_job(out_dir, STATE_DIR, record)
    sweep_torn(out_dir, STATE_DIR)  # left by a killed writer of this job (the folder is ours)
    done, damaged = set(), []
    for part in sharded_parts_dir(out_dir, STATE_DIR).glob("shard_*.csv"):
        try:
            shard = int(part.stem.split("_")[1])
        except ValueError:
            continue  # not a part this job wrote
        if shard >= job.num_shards:
            continue
        if shard_outputs_intact(job, shard):
            done.add(shard)
        else:  # its images went missing or its tar was cut short: the shard is done again
            remove_file(part)
            damaged.append(shard)
    if damaged:
        print(f"warning: {len(damaged)} finished shard(s) in {out_dir} lost or damaged their output "
              f"(first: shard {min(damaged)}); they are generated again", file=sys.stderr)
    return done


def shard_outputs_intact(job: GenerationJob, shard: int) -> bool:
    """Whether a finished shard's files are all there: its manifest part whole, and its PNG
    files or its tar shard whole (every member's header and data readable)."""
    out_dir = Path(job.out_dir)
    indices = job.shard_range(shard)
    if not _part_lists(job, shard):
        return False
    if job.output_format == "png":
        return all((out_dir / image_file_name(i)).is_file() for i in indices)
    try:
        with tarfile.open(out_dir / tar_shard_name(shard)) as archive:
            names = [member.name for member in archive]  # reads every header: a cut-short tar fails here
    except (OSError, tarfile.TarError):
        return False
    expected = {f"{tar_member_key(i)}.{ext}" for i in indices for ext in ("png", "json")}
    return set(names) == expected


def _part_lists(job: GenerationJob, shard: int) -> bool:
    """Whether a shard's manifest part lists exactly its indices, in order, with their files."""
    try:
        lines = part_path(job.out_dir, shard).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    expected = [f"{i},{manifest_file(job, i)}," for i in job.shard_range(shard)]
    return len(lines) == len(expected) and all(line.startswith(start) for line, start in zip(lines, expected))


def manifest_columns(job: GenerationJob) -> tuple[str, ...]:
    """The manifest's columns: MANIFEST_COLUMNS, then a copy-free release's own (release.py), then
    a private run's PRIVACY_COLUMNS."""
    columns = MANIFEST_COLUMNS
    if job.copy_reference is not None:
        from service.generation.release import RELEASE_COLUMNS

        columns += RELEASE_COLUMNS
    return columns + (PRIVACY_COLUMNS if job.privacy is not None else ())


def merge_manifest(job: GenerationJob) -> Path:
    """Concatenate the shard parts, in shard (= index) order, into manifest.csv; check no gaps."""
    out_dir = Path(job.out_dir)
    final = out_dir / MANIFEST_FILE
    expected = 0
    with atomic_file(final) as manifest:
        manifest.write((",".join(manifest_columns(job)) + "\n").encode())
        for shard in range(job.num_shards):
            part = part_path(out_dir, shard)
            if not part.is_file():
                raise RuntimeError(f"shard {shard} has no manifest part; the job is incomplete")
            text = part.read_text()
            for line in text.splitlines():
                index_text, file_name = line.split(",", 2)[:2]
                if int(index_text) != expected:
                    raise RuntimeError(f"manifest part {part.name}: index {index_text}, expected {expected}")
                if not (out_dir / file_name.split(":", 1)[0]).is_file():  # SHARD.tar:KEY.png names its shard
                    raise RuntimeError(f"{file_name} is listed in {part.name} but missing; re-run to redo it")
                expected += 1
            manifest.write(text.encode())
        if expected != job.count:
            raise RuntimeError(f"manifest holds {expected} rows, expected {job.count}")
    return final


def read_manifest(out_dir) -> list[dict]:
    """manifest.csv's rows (index order), as dicts of MANIFEST_COLUMNS."""
    path = Path(out_dir) / MANIFEST_FILE
    if not path.is_file():
        raise UserError(f"{out_dir} has no {MANIFEST_FILE}; is it a folder `generate` wrote?")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def manifest_classes(rows: list[dict]) -> list[str] | None:
    """The class name of each row, or None when a row has none (an unconditional run)."""
    names = [row.get("class", "") for row in rows]
    return names if all(names) else None


def class_indices(names: list[str] | None, class_names) -> np.ndarray | None:
    """Generated images' class names as indices into another set's `class_names` (a real
    set's, for per-class metrics); None when there are none or one is not among them."""
    if names is None or not class_names or not set(names) <= set(class_names):
        return None
    return np.array([list(class_names).index(name) for name in names], dtype=np.int64)


def real_class_indices(names: list[str] | None, real) -> np.ndarray | None:
    """Generated images' class names as indices into a real set's classes (a service.data.Dataset),
    for per-class metrics; None when the real set is unlabelled or as class_indices."""
    return class_indices(names, real.class_names) if real.labels is not None else None


def read_generated(out_dir) -> tuple[np.ndarray, list[str] | None]:
    """A finished job's images (uint8 NHWC, index order) and their class names, if conditional."""
    from service.data import load_generated_images

    rows = read_manifest(out_dir)
    return load_generated_images(out_dir, [row["file"] for row in rows]), manifest_classes(rows)
