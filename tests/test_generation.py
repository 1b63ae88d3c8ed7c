"""Generation at scale on a local Ray (2 CPUs, started once for the module).

Tiny model (32x32, width 8) with random weights: what G learnt does not matter here, only
that the machinery gives the same bytes however the work is split, resumes without gaps or
duplicates, and retries failed tasks.
"""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ray  # noqa: E402

from backends.config import GANConfig  # noqa: E402
from service import generation  # noqa: E402
from run_fixtures import init_random_run  # noqa: E402
from service.run import main  # noqa: E402

BACKEND = "numpy"  # lighter worker start-up than TF on the shared 2-core machine
COUNT = 200
SHARD = 20
TINY = dict(image_size=32, width=8, max_width=32, latent_dim=16)


@pytest.fixture(scope="module")
def ray_cluster():
    import logging

    # log_to_driver off: Ray's log monitor prints workers' output to this process's stderr when
    # it gets to it, which can be during a later test that checks stderr is one line
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, object_store_memory=100 * 1024**2,
             log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return init_random_run(tmp_path_factory.mktemp("gen") / "run", GANConfig(**TINY), seed=3)


@pytest.fixture(scope="module")
def reference(run_dir, tmp_path_factory):
    """The in-process job: what every Ray run must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("reference") / "out"
    job = generation.plan_job(run_dir, COUNT, out, seed=7, backend=BACKEND, batch_size=8, shard_size=SHARD)
    generation.generate_in_process(job)
    return out


def image_digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("img_*.png"))}


def read_manifest(folder: Path) -> list[dict]:
    with open(folder / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_complete(folder: Path, count: int) -> None:
    """Exactly `count` distinct images, a manifest row for each, in index order, no stray files."""
    digests = image_digests(folder)
    assert sorted(digests) == [generation.image_file_name(i) for i in range(count)]
    assert len(set(digests.values())) == count, "two indices produced the same image"
    rows = read_manifest(folder)
    assert [int(r["index"]) for r in rows] == list(range(count))
    assert [r["file"] for r in rows] == sorted(digests)
    assert not list(folder.glob(".tmp-*"))


def test_noise_depends_only_on_seed_and_index():
    config = GANConfig(**TINY)
    whole = generation.noise_for_indices(5, range(10), config)
    parts = [generation.noise_for_indices(5, [i], config)[0] for i in (9, 3, 0)]
    assert (parts[0] == whole[9]).all() and (parts[1] == whole[3]).all() and (parts[2] == whole[0]).all()
    assert not (generation.noise_for_indices(6, [3], config)[0] == whole[3]).all()
    assert whole.min() >= -1 and whole.max() <= 1  # the thesis's uniform(-1, 1)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_ray_output_is_byte_identical_to_in_process(ray_cluster, run_dir, reference, tmp_path, workers):
    # A different batch size too: in inference mode an image depends on its own noise only.
    job = generation.plan_job(run_dir, COUNT, tmp_path / "out", seed=7, backend=BACKEND, batch_size=5, shard_size=SHARD)
    result = generation.generate_on_ray(job, workers=workers, progress=False)
    assert result.shards_run == COUNT // SHARD
    assert_complete(tmp_path / "out", COUNT)
    assert image_digests(tmp_path / "out") == image_digests(reference)
    assert (tmp_path / "out" / "manifest.csv").read_bytes() == (reference / "manifest.csv").read_bytes()


@pytest.mark.slow
def test_tf_backend_on_ray_matches_in_process(ray_cluster, run_dir, tmp_path):
    jobs = {
        place: generation.plan_job(run_dir, 40, tmp_path / place, seed=7, backend="tf", batch_size=8, shard_size=SHARD)
        for place in ("local", "ray-1", "ray-2")
    }
    generation.generate_in_process(jobs["local"])
    for workers in (1, 2):  # the same one-thread setting in every worker: the count of workers changes nothing
        generation.generate_on_ray(jobs[f"ray-{workers}"], workers=workers, progress=False)
        assert_complete(tmp_path / f"ray-{workers}", 40)
    assert image_digests(tmp_path / "ray-1") == image_digests(tmp_path / "ray-2") == image_digests(tmp_path / "local")


# The driver of a job whose shards from 2 on wait for a gate file that the test never
# writes before the kill: with one worker, exactly shards 0 and 1 are done when it is killed,
# however fast or slow the machine.
GATED_DRIVER = r"""
import pathlib, sys, time
from service import generation
run_dir, out, address, gate, backend = sys.argv[1:6]

def task(job, shard):
    if shard >= 2:
        deadline = time.monotonic() + 300
        while not pathlib.Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return generation.run_shard_task(job, shard)

job = generation.plan_job(run_dir, 600, out, seed=7, backend=backend, batch_size=5, shard_size=10)
generation.generate_on_ray(job, workers=1, address=address, progress=False, shard_task=task)
"""


def kill_after_two_shards(driver: subprocess.Popen, out: Path, gate: Path) -> Path:
    """SIGKILL a gated driver (GATED_DRIVER) once two shards of OUT are done, then open the
    gate; returns OUT's parts folder."""
    parts = out / generation.STATE_DIR / generation.PARTS_DIR
    try:
        deadline = time.monotonic() + 300
        while not (parts.is_dir() and len(list(parts.glob("shard_*.csv"))) >= 2):
            assert driver.poll() is None, f"the driver exited early: {driver.stderr.read()[-1000:]}"
            assert time.monotonic() < deadline, "the driver did not finish two shards within 300 s"
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        gate.write_text("go")  # a task Ray still runs for the dead driver ends at once (same bytes)
        if driver.poll() is None:
            driver.kill()
    return parts


@pytest.mark.slow
def test_killed_driver_then_resume_has_no_gaps_or_duplicates(ray_cluster, run_dir, reference, tmp_path):
    out, gate = tmp_path / "out", tmp_path / "gate"
    count, shard = 600, 10
    driver = subprocess.Popen([sys.executable, "-c", GATED_DRIVER, str(run_dir), str(out), ray_cluster, str(gate), BACKEND],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    parts = kill_after_two_shards(driver, out, gate)
    assert len(list(parts.glob("shard_*.csv"))) == 2
    assert not (out / "manifest.csv").exists()

    assert main(["generate", "--run", str(run_dir), "--count", str(count), "--out", str(out), "--seed", "7",
                 "--backend", BACKEND, "--batch-size", "5", "--shard-size", str(shard), "--resume"]) == 0
    assert_complete(out, count)
    # The first 200 indices are the reference job's images: same (seed, index) -> same bytes.
    digests = image_digests(out)
    assert all(digests[name] == d for name, d in image_digests(reference).items())


def failing_once(marker: Path):
    """A shard task that fails in the first task to find `marker` (which it deletes), and
    otherwise runs the real one. Defined in a function so Ray ships it by value."""

    def task(job, shard):
        try:
            os.remove(marker)  # only one task can win the removal
        except FileNotFoundError:
            return generation.run_shard_task(job, shard)
        raise RuntimeError("injected failure")

    return task


@pytest.mark.slow
def test_task_that_fails_once_is_retried(ray_cluster, run_dir, reference, tmp_path):
    marker = tmp_path / "fail-once"
    marker.touch()
    job = generation.plan_job(run_dir, COUNT, tmp_path / "out", seed=7, backend=BACKEND, shard_size=SHARD)
    result = generation.generate_on_ray(job, workers=2, progress=False, shard_task=failing_once(marker))
    assert not marker.exists(), "no task hit the injected failure"
    assert result.shards_run == COUNT // SHARD
    assert image_digests(tmp_path / "out") == image_digests(reference)


@pytest.mark.slow
def test_without_retries_the_injected_failure_fails_the_job(ray_cluster, run_dir, tmp_path):
    marker = tmp_path / "fail-once"
    marker.touch()
    job = generation.plan_job(run_dir, 40, tmp_path / "out", seed=7, backend=BACKEND, shard_size=SHARD)
    with pytest.raises(ray.exceptions.RayTaskError, match="injected failure"):
        generation.generate_on_ray(job, workers=1, progress=False, max_retries=0, shard_task=failing_once(marker))
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_conditional_run_fixed_class_and_cycled_classes(tmp_path):
    run = init_random_run(tmp_path / "run", GANConfig(**TINY, num_classes=3))
    fixed = generation.plan_job(run, 6, tmp_path / "mel", class_name="melanoma", backend=BACKEND)
    generation.generate_in_process(fixed)
    assert {r["class"] for r in read_manifest(tmp_path / "mel")} == {"melanoma"}
    cycled = generation.plan_job(run, 6, tmp_path / "all", backend=BACKEND)
    generation.generate_in_process(cycled)
    assert [r["class"] for r in read_manifest(tmp_path / "all")] == ["nevus", "melanoma", "seborrheic_keratosis"] * 2
    # Same noise, different class: the label reaches G.
    assert (tmp_path / "mel" / "img_000000001.png").read_bytes() == (tmp_path / "all" / "img_000000001.png").read_bytes()
    assert (tmp_path / "mel" / "img_000000000.png").read_bytes() != (tmp_path / "all" / "img_000000000.png").read_bytes()


def test_out_dir_holding_another_job_is_refused(run_dir, tmp_path, capsys):
    base = ["generate", "--run", str(run_dir), "--out", str(tmp_path / "o"), "--backend", BACKEND, "--in-process"]
    assert main(base + ["--count", "4"]) == 0
    assert main(base + ["--count", "5"]) == 2
    assert "different generation job" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--count", "0"], "--count must be a positive"),
        (["--count", "-3"], "--count must be a positive"),
        (["--count", "4", "--class", "melanoma"], "unconditional"),
        (["--count", "4", "--address", "127.0.0.1:1"], "unreachable"),
    ],
)
def test_bad_input_is_exit_2_with_one_line(run_dir, tmp_path, capsys, extra, message):
    # an unreachable --address is refused by a probe with its own time limit
    # (ray_cluster.PROBE_TIMEOUT_S), not by Ray's long connection retries
    code = main(["generate", "--run", str(run_dir), "--out", str(tmp_path / "o"), "--backend", BACKEND, *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o").exists()  # nothing written on bad input


def test_run_without_checkpoint_and_unknown_class_are_exit_2(tmp_path, capsys):
    from service.rundir import create_run_dir

    empty = create_run_dir(tmp_path / "empty", GANConfig(**TINY), BACKEND, {}, {})
    assert main(["generate", "--run", str(empty), "--count", "4", "--out", str(tmp_path / "o")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    conditional = init_random_run(tmp_path / "cond", GANConfig(**TINY, num_classes=3))
    assert main(["generate", "--run", str(conditional), "--count", "4", "--out", str(tmp_path / "o"), "--class", "wart"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown class 'wart'" in err


@pytest.mark.slow
def test_tar_shards_hold_the_png_job_s_images_and_read_back(ray_cluster, run_dir, reference, tmp_path, capsys):
    """--format tar: one WebDataset shard per generation shard, the same PNG bytes as the PNG
    folder, byte-identical however the work is split; validate, Ray Data and a plain tarfile
    loop read it; a shard cut short is redone on resume and refused by the reader."""
    import json
    import tarfile

    tars = {}
    for place, workers in (("in-process", 0), ("ray", 2)):
        out = tmp_path / place
        assert main(["generate", "--run", str(run_dir), "--count", str(COUNT), "--out", str(out), "--seed", "7",
                     "--backend", BACKEND, "--batch-size", "8", "--shard-size", str(SHARD), "--format", "tar",
                     "--workers", str(workers), "--no-progress"]) == 0
        tars[place] = {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.tar"))}
    assert tars["in-process"] == tars["ray"] and len(tars["ray"]) == COUNT // SHARD
    out = tmp_path / "ray"
    assert not list(out.glob("img_*.png"))

    members = {}
    for shard in sorted(out.glob("shard-*.tar")):
        with tarfile.open(shard) as archive:
            for member in archive:
                members[member.name] = archive.extractfile(member).read()
    assert len(members) == 2 * COUNT
    png_folder = image_digests(reference)
    for index in range(COUNT):
        assert hashlib.sha256(members[f"{index:09d}.png"]).hexdigest() == png_folder[generation.image_file_name(index)]
        meta = json.loads(members[f"{index:09d}.json"])
        assert meta["index"] == index and meta["seed"] == 7 and len(meta["checkpoint_sha256"]) == 64
    rows = read_manifest(out)
    assert [r["file"] for r in rows[:2]] == ["shard-000000.tar:000000000.png", "shard-000000.tar:000000001.png"]

    dataset = ray.data.read_webdataset(str(out), file_extensions=["tar"], decoder=False)
    assert dataset.count() == COUNT

    assert main(["validate", "--real", str(reference), "--fake", str(out), "--out", str(tmp_path / "report"),
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["counts"]["generated"] == COUNT

    first = out / "shard-000000.tar"
    first.write_bytes(first.read_bytes()[:1500])  # cut short
    capsys.readouterr()
    assert main(["validate", "--real", str(reference), "--fake", str(out), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "shard-000000.tar: cut short or damaged" in err, err
    assert main(["generate", "--run", str(run_dir), "--count", str(COUNT), "--out", str(out), "--seed", "7",
                 "--backend", BACKEND, "--batch-size", "8", "--shard-size", str(SHARD), "--format", "tar",
                 "--workers", "0", "--resume", "--no-progress"]) == 0
    assert "generated again" in capsys.readouterr().err
    assert first.read_bytes() == tars["ray"]["shard-000000.tar"]
