"""A copy-free release (`generate --exclude-copies DATA`): each shard's images are audited
against the training images as the shard is written, with the detector and threshold of the
`audit` command (service.audit: the aligned index, the copy ratio, likely copy below 0.5), and
every likely copy is replaced before anything of the shard is written.

Replacements come from a reserved index range past every possible --count: the r-th draw for
image i (r = 0, 1, ...) is the image whose noise is keyed by (seed, reserved_index(i, r)) =
(seed, RESERVED_START + i * RESERVED_STRIDE + r), with image i's class, computed in image i's
own plain batch (service.generation.runners.render: the batch shape and row plain generation
gives i, the other rows their plain noise). It is a function of (checkpoint, seed, i, r) and
the job's batch layout alone, never of how many other images are replaced beside it (a
framework's float sums can change with the batch shape), so a replacement does not depend on
how the job is spread over workers or resumed, and no two indices share a reserved one. A draw that is itself
a likely copy is replaced by the next, up to MAX_DRAWS draws; past that the job stops with
one line (a generator that keeps reproducing its training images needs looking at, not more
draws).

Whether an image is a likely copy is decided per shard, against the training index built once
per job (and shared through Ray's object store, one copy per node): the same job gives the same
bytes with any number of workers and resumes like any other job (a shard's part file is still
written last). The manifest gains RELEASE_COLUMNS: the index whose noise made each image, its
copy ratio, and for a replaced image the training image the original copied (index, file,
group, aligned distance, ratio).
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from service.errors import UserError
from service.generation.job import MAX_COUNT, GenerationJob

RESERVED_START = MAX_COUNT  # past every index a job can have
RESERVED_STRIDE = 64  # reserved indices per generated index: draw r of image i is START + i * STRIDE + r
MAX_DRAWS = 16  # draws from the reserved range for one image before the job gives up
RELEASE_COLUMNS = ("noise_index", "ratio", "replaced_train_index", "replaced_train_file", "replaced_train_group",
                   "replaced_distance", "replaced_ratio")


def reserved_index(index: int, draw: int) -> int:
    """The noise index of the `draw`-th replacement of image `index` (draw < RESERVED_STRIDE)."""
    return RESERVED_START + int(index) * RESERVED_STRIDE + int(draw)


def plan_release(job: GenerationJob, data, progress: bool = False):
    """The job as a copy-free release against the training images at `data`, and their index
    (service.audit.TrainingIndex). The images are read as training read them (the run's image
    size and crop; groups from the label file beside them), so a bad DATA is one line before
    anything is written."""
    from service.audit import build_training_index
    from service.data import CROP_MODES, load_images
    from service.imageio import to_uint8
    from service.rundir import load_config

    config, full = load_config(job.run_dir)
    crop = (full.get("data") or {}).get("crop") or CROP_MODES[0]
    try:
        train = load_images(data, config.image_size, crop=crop, progress=progress)
    except UserError as e:
        raise UserError(f"--exclude-copies: {e}") from None
    images = to_uint8(train.images)
    side = config.image_size
    if images.ndim != 4 or images.shape[1:] != (side, side, 3):
        raise UserError(f"--exclude-copies {data}: images read as {images.shape[1:]}, expected ({side}, {side}, 3)")
    try:
        index = build_training_index(images, train.groups, train.files)
    except UserError as e:
        raise UserError(f"--exclude-copies {data}: {e}") from None
    job = dataclasses.replace(job, copy_reference=index.fingerprint, copy_reference_source=str(Path(data).resolve()))
    return job, index


def check_reference(job: GenerationJob, copy_index) -> None:
    """A release job runs with its own training index; a plain job with none."""
    if (job.copy_reference is None) != (copy_index is None):
        raise RuntimeError("a copy-free release needs its training index, and only it does")
    if copy_index is not None and copy_index.fingerprint != job.copy_reference:
        raise RuntimeError("the training index is not the one the job was planned with")


def exclude_copies(render: Callable, copy_index, indices, images: np.ndarray) -> tuple[np.ndarray, list[list]]:
    """A shard's uint8 images with every likely copy replaced, and each image's RELEASE_COLUMNS.

    render(indices, noise_indices) -> uint8 images: images with the noise of `noise_indices`
    and the classes of `indices`, each computed as plain generation computes image `indices[k]`
    (so its bytes do not depend on the others asked for with it)."""
    from service.audit.shard import audit_images, number_text
    from service.validation.memorization import COPY_RATIO_THRESHOLD

    indices = np.asarray(list(indices), np.int64)
    found = audit_images(copy_index, images)
    ratio = np.asarray(found["ratio"], np.float64).copy()
    noise = indices.copy()
    images = images.copy()
    copies = np.flatnonzero(ratio < COPY_RATIO_THRESHOLD)
    replaced = {int(k): (int(found["nearest"][k]), float(found["distance"][k]), float(found["ratio"][k])) for k in copies}
    pending = copies
    for draw in range(MAX_DRAWS):
        if not len(pending):
            break
        wanted = np.array([reserved_index(indices[k], draw) for k in pending], np.int64)
        fresh = render(indices[pending], wanted)
        again = audit_images(copy_index, fresh)
        images[pending], noise[pending], ratio[pending] = fresh, wanted, again["ratio"]
        pending = pending[np.asarray(again["ratio"]) < COPY_RATIO_THRESHOLD]
    if len(pending):
        first = int(pending[0])
        raise UserError(
            f"--exclude-copies: image {indices[first]} and {MAX_DRAWS} replacements of it were all likely copies of "
            f"training images ({len(pending)} such image(s) in this shard); the generator reproduces its training "
            "images too often for a copy-free release: run `audit` on a plain set to see which"
        )
    columns = []
    for k in range(len(indices)):
        row = [int(noise[k]), number_text(ratio[k])]
        if k in replaced:
            train, distance, original = replaced[k]
            row += [train, copy_index.file_of(train), copy_index.group_of(train), number_text(distance), number_text(original)]
        else:
            row += [""] * 5
        columns.append(row)
    return images, columns


def count_replaced(out_dir) -> int:
    """How many images of a finished release were replaced (streamed from manifest.csv)."""
    from service.sharded import MANIFEST_FILE

    with open(Path(out_dir) / MANIFEST_FILE, newline="") as f:
        return sum(1 for row in csv.DictReader(f) if row.get("noise_index") not in (None, "", row["index"]))
