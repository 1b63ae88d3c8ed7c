"""A copy-free release (`generate --exclude-copies DATA`): the training data holds images the
generator makes at some indices (as made, mirrored, shifted); the release has exactly --count
images, none a likely copy by the `audit` command, the manifest names each replaced index, the
reserved index used and the training image it copied; the bytes are the same in process and on
1 or 2 Ray workers, and a job killed mid-way and resumed equals an uninterrupted one.

A tiny model (32x32, width 8) with random weights, its kernels scaled up so that its images
differ from one another as much as a trained generator's do (at the fixture's scale they are
nearly flat and all alike, and every image would be a likely copy of any other).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from run_fixtures import init_random_run
from test_generation import assert_complete, image_digests, kill_after_two_shards, ray_cluster  # noqa: F401 - its local Ray

from backends.config import GANConfig
from service import generation
from service.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, weights_only
from service.data import load_generated_images
from service.errors import UserError
from service.generation import release
from service.imageio import save_png
from service.run import main

BACKEND = "numpy"
COUNT, SHARD, BATCH = 120, 30, 16
TINY = {"image_size": 32, "width": 8, "max_width": 32, "latent_dim": 16}
PLANTED = {5: "exact", 57: "mirrored", 111: "shifted"}  # generated index -> how its copy sits in DATA


def manifest(folder: Path) -> list[dict]:
    with open(folder / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = init_random_run(tmp_path_factory.mktemp("release") / "run", GANConfig(**TINY), seed=3)
    weights = weights_only(load_checkpoint(latest_checkpoint(run)))
    save_checkpoint(run, 1, {k: v * 4 if k.endswith("kernel") else v for k, v in weights.items()})
    return run


def generate_args(run_dir, out, *extra) -> list[str]:
    return ["generate", "--run", str(run_dir), "--count", str(COUNT), "--out", str(out), "--seed", "7",
            "--backend", BACKEND, "--shard-size", str(SHARD), "--batch-size", str(BATCH), "--no-progress", *extra]


@pytest.fixture(scope="module")
def data(run_dir, tmp_path_factory):
    """A plain run's images at PLANTED's indices (one as made, one mirrored, one shifted 2 px)
    among stand-in lesions, as a folder of training images."""
    from service.data import default_dataset
    from service.imageio import to_uint8

    root = tmp_path_factory.mktemp("release-data")
    assert main(generate_args(run_dir, root / "plain", "--workers", "0")) == 0
    folder = root / "train"
    folder.mkdir()
    for index, how in PLANTED.items():
        image = load_generated_images(root / "plain", [generation.image_file_name(index)])[0]
        if how == "mirrored":
            image = np.ascontiguousarray(image[:, ::-1])
        elif how == "shifted":
            image = cv2.warpAffine(image, np.float32([[1, 0, 2], [0, 1, 0]]), (32, 32), borderMode=cv2.BORDER_REPLICATE)
        save_png(folder / f"copy_{index}.png", image)
    for k, image in enumerate(to_uint8(default_dataset(32, 12, seed=1, progress=False).images)):
        save_png(folder / f"lesion_{k:02d}.png", image)
    return folder, root / "plain"


@pytest.fixture(scope="module")
def released(run_dir, data, tmp_path_factory):
    """The release made in process: what every other way of making it must reproduce."""
    out = tmp_path_factory.mktemp("released") / "out"
    assert main(generate_args(run_dir, out, "--workers", "0", "--exclude-copies", str(data[0]))) == 0
    return out


@pytest.mark.slow
def test_release_has_count_images_none_a_copy_and_names_each_replacement(released, data, tmp_path):
    folder, plain = data
    assert_complete(released, COUNT)
    rows = manifest(released)
    replaced = {int(r["index"]): r for r in rows if r["noise_index"] != r["index"]}
    assert sorted(replaced) == sorted(PLANTED)
    for index, row in replaced.items():
        assert int(row["noise_index"]) == 10**9 + 64 * index  # draw 0 of the documented 10^9 + 64 i + r
        assert int(row["noise_index"]) >= generation.job.MAX_COUNT
        assert row["replaced_train_file"].endswith(f"copy_{index}.png")
        assert float(row["replaced_ratio"]) < 0.5 and float(row["ratio"]) >= 0.5
    # every other image is the plain job's, byte for byte; the replaced ones are new
    same = {name for name, digest in image_digests(released).items() if image_digests(plain)[name] == digest}
    assert same == {generation.image_file_name(i) for i in range(COUNT)} - {generation.image_file_name(i) for i in PLANTED}
    assert all(float(r["ratio"]) >= 0.5 for r in rows)
    # the `audit` command finds no likely copy in the release, and finds the plain run's
    for fake, copies in ((released, 0), (plain, len(PLANTED))):
        out = tmp_path / f"audit-{fake.name}"
        assert main(["audit", "--fake", str(fake), "--train", str(folder), "--out", str(out), "--workers", "0",
                     "--no-progress"]) == 0
        assert json.loads((out / "summary.json").read_text())["copies"] == copies
    recorded = json.loads((released / generation.STATE_DIR / "job.json").read_text())
    assert recorded["copy_reference_source"] == str(folder.resolve()) and recorded["copy_reference"]


def noting_the_index(seen: Path):
    """The shard task, noting where the training index it got lives (defined in a function so
    Ray ships it by value)."""

    def task(job, shard, copy_index=None):
        import os

        windows = copy_index.aligned.windows
        (seen / f"{shard}").write_text(f"{os.getpid()} {windows.ctypes.data} {int(windows.flags.writeable)}")
        return generation.run_shard_task(job, shard, copy_index)

    return task


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_ray_workers_give_the_in_process_bytes(ray_cluster, run_dir, data, released, tmp_path, workers):  # noqa: F811
    job = generation.plan_job(run_dir, COUNT, tmp_path / "out", seed=7, backend=BACKEND, batch_size=5, shard_size=SHARD)
    job, index = release.plan_release(job, data[0])
    (tmp_path / "seen").mkdir()
    result = generation.generate_on_ray(job, workers=workers, progress=False, copy_index=index,
                                        shard_task=noting_the_index(tmp_path / "seen"))
    assert result.replaced == len(PLANTED)
    # every task read the one copy in the node's object store (read-only shared memory, the
    # same buffer for all of a worker's tasks), not a copy of its own
    notes = [p.read_text().split() for p in (tmp_path / "seen").iterdir()]
    assert len(notes) == COUNT // SHARD and all(writeable == "0" for _, _, writeable in notes)
    assert all(len({address for pid, address, _ in notes if pid == worker}) == 1 for worker, _, _ in notes)
    assert image_digests(tmp_path / "out") == image_digests(released)
    assert (tmp_path / "out" / "manifest.csv").read_bytes() == (released / "manifest.csv").read_bytes()


# A release driver whose shards from 2 on wait for a gate file the test writes only after the
# kill: with one worker, exactly shards 0 and 1 are done when it dies (see test_generation).
GATED_DRIVER = r"""
import pathlib, sys, time
from service import generation
from service.generation import release
run_dir, out, address, gate, data, count, shard_size = sys.argv[1:8]

def task(job, shard, copy_index=None):
    if shard >= 2:
        deadline = time.monotonic() + 300
        while not pathlib.Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return generation.run_shard_task(job, shard, copy_index)

job = generation.plan_job(run_dir, int(count), out, seed=7, backend="numpy", batch_size=16, shard_size=int(shard_size))
job, index = release.plan_release(job, data)
generation.generate_on_ray(job, workers=1, address=address, progress=False, shard_task=task, copy_index=index)
"""


@pytest.mark.slow
def test_killed_release_resumed_equals_an_uninterrupted_one(ray_cluster, run_dir, data, released, tmp_path):  # noqa: F811
    out, gate = tmp_path / "out", tmp_path / "gate"
    driver = subprocess.Popen([sys.executable, "-c", GATED_DRIVER, str(run_dir), str(out), ray_cluster, str(gate),
                               str(data[0]), str(COUNT), str(SHARD)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    parts = kill_after_two_shards(driver, out, gate)
    assert len(list(parts.glob("shard_*.csv"))) == 2 and not (out / "manifest.csv").exists()

    # the plain options alone do not resume a release: the job in OUT differs
    assert main(generate_args(run_dir, out, "--workers", "0", "--resume")) == 2
    assert main(generate_args(run_dir, out, "--workers", "0", "--resume", "--exclude-copies", str(data[0]))) == 0
    assert image_digests(out) == image_digests(released)
    assert (out / "manifest.csv").read_bytes() == (released / "manifest.csv").read_bytes()


@pytest.mark.slow
def test_tar_release_names_the_noise_index_of_each_image(run_dir, data, released, tmp_path):
    assert main(generate_args(run_dir, tmp_path / "out", "--workers", "0", "--format", "tar",
                              "--exclude-copies", str(data[0]))) == 0
    with tarfile.open(tmp_path / "out" / "shard-000000.tar") as archive:
        meta = json.loads(archive.extractfile(f"{5:09d}.json").read())
        png = archive.extractfile(f"{5:09d}.png").read()
    assert meta["noise_index"] == 1_000_000_320  # 10^9 + 64 * 5 + 0
    assert png == (released / generation.image_file_name(5)).read_bytes()


def test_a_copy_that_keeps_coming_back_stops_the_job_with_one_line(run_dir, data, tmp_path, monkeypatch):
    monkeypatch.setattr(release, "MAX_DRAWS", 0)  # no draw allowed: the first copy cannot be replaced
    job = generation.plan_job(run_dir, COUNT, tmp_path / "out", seed=7, backend=BACKEND, shard_size=SHARD)
    job, index = release.plan_release(job, data[0])
    with pytest.raises(UserError, match="image 5 and 0 replacements of it were all likely copies"):
        generation.generate_in_process(job, copy_index=index)
    assert not (tmp_path / "out" / "manifest.csv").exists()


def _empty_folder(root: Path) -> Path:
    (root / "empty").mkdir()
    return root / "empty"


def _one_image(root: Path) -> Path:
    np.savez(root / "one.npz", train_images=np.zeros((1, 32, 32, 3), np.uint8))
    return root / "one.npz"


def _not_images(root: Path) -> Path:
    (root / "notes.txt").write_text("not images")
    return root / "notes.txt"


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "missing", "data path not found"),
    (_empty_folder, "no JPEG/PNG/BMP images"),
    (_one_image, "needs at least 2"),
    (_not_images, "not a .npz"),
])
def test_bad_data_is_exit_2_with_one_line_and_nothing_written(run_dir, tmp_path, capsys, make, message):
    code = main(generate_args(run_dir, tmp_path / "o", "--workers", "0", "--exclude-copies", str(make(tmp_path))))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--exclude-copies" in err and message in err, err
    assert not (tmp_path / "o").exists()


class BatchShapeSensitive:
    """A stand-in generator whose pixels shift by a grey level with the batch size and the row,
    as TensorFlow's float sums do between batch shapes on AVX2 CPUs without AVX-512."""

    device_kind = "cpu"

    def __init__(self, config: GANConfig):
        self.config = config

    def generate(self, z, labels=None):
        side = self.config.image_size
        level = np.tanh(np.asarray(z, np.float64)[:, :3] / 2) * 0.8  # (n, 3) from each row's noise
        level = level + (len(z) % 5) / 127.5 + (np.arange(len(z)) % 3)[:, None] / 127.5
        return np.broadcast_to(level[:, None, None, :], (len(z), side, side, 3)).astype(np.float32)


@pytest.mark.parametrize("backend_kind", ["stand-in", BACKEND])
def test_an_image_is_the_same_bytes_whatever_is_computed_beside_it(run_dir, tmp_path, backend_kind):
    """Replacements (reserved noise) and plain images, asked for in batches of different sizes
    and orders, are the bytes plain generation makes for their index: an image never depends on
    how many images were computed with it."""
    from service.generation.runners import load_generator, render

    job = generation.plan_job(run_dir, COUNT, tmp_path / "out", seed=7, backend=BACKEND, batch_size=BATCH,
                              shard_size=SHARD)
    backend = load_generator(run_dir, job.checkpoint, BACKEND)
    if backend_kind == "stand-in":
        backend = BatchShapeSensitive(backend.config)
    wanted = [5, 17, 18, 57, 111, 119]
    noise = [10**9 + 64 * i + 2 for i in wanted]
    alone = np.stack([render(backend, job, [i], [n])[0] for i, n in zip(wanted, noise)])
    together = render(backend, job, wanted, noise)
    reversed_pairs = render(backend, job, wanted[::-1], noise[::-1])[::-1]
    halves = np.concatenate([render(backend, job, wanted[:2], noise[:2]), render(backend, job, wanted[2:], noise[2:])])
    for other in (together, reversed_pairs, halves):
        assert np.array_equal(other, alone)
    plain = {i: image for start in range(0, COUNT, SHARD)
             for batch in [range(b, min(b + BATCH, start + SHARD)) for b in range(start, start + SHARD, BATCH)]
             for i, image in zip(batch, render(backend, job, batch))}
    assert all(np.array_equal(render(backend, job, [i])[0], plain[i]) for i in wanted)
    assert np.array_equal(render(backend, job, [111, 5, 57]), np.stack([plain[111], plain[5], plain[57]]))
