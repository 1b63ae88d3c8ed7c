"""What the tool promises about its outputs: it never writes through a symbolic link, never
takes over a folder it did not make, never leaves a torn file, and answers a broken input
(a damaged or non-finite checkpoint, a full disk, a folder in use) with one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from run_fixtures import init_random_run
from backends.config import GANConfig
from service import files
from service.errors import UserError
from service.run import main

TINY = dict(image_size=32, width=4, max_width=16, latent_dim=8, base_side=4)


def one_line_error(capsys, *needles) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def listing(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    return init_random_run(tmp_path_factory.mktemp("run") / "run", GANConfig(**TINY), seed=3)


# --------------------------------------------------------------------------- symbolic links


@pytest.mark.parametrize("link", ["dangling", "live"])
def test_export_never_writes_through_a_link_at_out(tmp_path, capsys, random_run, link):
    target = tmp_path / "elsewhere" / "target.keras"
    target.parent.mkdir()
    if link == "live":
        target.write_bytes(b"the user's file")
    out = tmp_path / "out" / "G.keras"
    out.parent.mkdir()
    out.symlink_to(target)
    assert main(["export", "--run", str(random_run), "--out", str(out)]) == 2
    one_line_error(capsys, "link")
    assert out.is_symlink() and os.readlink(out) == str(target)
    assert listing(tmp_path / "out") == ["G.keras"]  # no temp file left either
    if link == "live":
        assert target.read_bytes() == b"the user's file"
    else:
        assert not target.exists()


def test_an_atomic_write_refuses_a_link_at_its_path(tmp_path):
    target = tmp_path / "secret.txt"
    target.write_text("keep")
    link = tmp_path / "report.html"
    link.symlink_to(target)
    with pytest.raises(UserError, match="symbolic link"):
        files.write_text(link, "overwritten?")
    assert target.read_text() == "keep" and link.is_symlink()
    assert listing(tmp_path) == ["report.html", "secret.txt"]


@pytest.mark.parametrize("kind", ["link", "regular"])
def test_the_report_copies_a_run_s_loss_curve_only_when_it_is_a_regular_file_of_the_run(tmp_path, capsys, kind):
    from service.validation.evaluate import _write_figures

    run, report = tmp_path / "run", tmp_path / "report"
    run.mkdir()
    report.mkdir()
    secret = tmp_path / "private.png"
    secret.write_bytes(b"\x89PNG private")
    if kind == "link":
        (run / "loss_curve.png").symlink_to(secret)
    else:
        (run / "loss_curve.png").write_bytes(b"\x89PNG curve")
    images = np.zeros((4, 8, 8, 3), np.uint8)
    figures = _write_figures(report, images, images, run, seed=0)
    if kind == "link":
        assert "loss_curve" not in figures and not (report / "loss_curve.png").exists()
        assert "not copied: a symbolic link" in capsys.readouterr().err
    else:
        assert figures["loss_curve"] == "loss_curve.png"
        assert (report / "loss_curve.png").read_bytes() == b"\x89PNG curve"


def test_copy_regular_file_refuses_a_file_outside_the_expected_folder(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"x")
    assert not files.copy_regular_file(tmp_path / "run" / ".." / "outside.png", tmp_path / "copy.png", tmp_path / "run")
    assert "outside" in capsys.readouterr().err and not (tmp_path / "copy.png").exists()


# --------------------------------------------------------------------------- folders that are not ours


def foreign_folder(path):
    """A user's own folder with names the tool also writes: none of it may change."""
    path.mkdir(parents=True)
    (path / "manifest.csv").write_text("the user's manifest\n")
    (path / "metrics.jsonl").write_text('{"user": 1}\n')
    (path / "loss_curve.png").write_bytes(b"user png")
    (path / ".tmp-user-notes").write_text("keep me")
    (path / "samples").mkdir()
    (path / "samples" / "epoch_0001.png").write_bytes(b"user sample")
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def unchanged(path, before) -> bool:
    after = {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    return after == before


def image_folder(path, count=12, size=32):
    from service.imageio import save_png

    rng = np.random.default_rng(0)
    for i in range(count):
        save_png(path / f"img_{i:03d}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return path


@pytest.mark.parametrize("command", ["train", "main-job", "generate", "validate", "audit", "tune", "utility"])
def test_every_command_refuses_a_folder_it_did_not_make_and_touches_nothing(tmp_path, capsys, random_run, command):
    out = tmp_path / "mine"
    if command == "main-job":
        argv = ["--out", str(out), "--epochs", "1", "--count", "10", "--backend", "numpy", "--image-size", "32",
                "--no-progress"]
    else:
        argv = argv_of(command, tmp_path, out, random_run)
    before = foreign_folder(out)
    assert main(argv) == 2
    one_line_error(capsys, str(out), "did not make")
    assert unchanged(out, before)


def test_a_folder_made_by_another_command_is_refused(tmp_path, capsys, random_run):
    out = tmp_path / "report"
    files.claim_output_folder(out, "validate")
    assert main(["generate", "--run", str(random_run), "--count", "4", "--out", str(out), "--workers", "0",
                 "--backend", "numpy", "--no-progress"]) == 2
    one_line_error(capsys, "`validate`")
    assert listing(out) == [files.MARKER_FILE]


def test_an_empty_folder_is_taken_and_marked_and_a_rerun_resumes_it(tmp_path, random_run):
    out = tmp_path / "images"
    out.mkdir()
    argv = ["generate", "--run", str(random_run), "--count", "4", "--out", str(out), "--workers", "0",
            "--backend", "numpy", "--no-progress"]
    assert main(argv) == 0
    assert files.read_marker(out)["command"] == "generate"
    assert main(argv) == 0  # ours: the same job again is fine
    assert files.LOCK_FILE not in listing(out)


def test_a_run_made_before_markers_is_still_resumable(tmp_path, random_run):
    from service.rundir import claim_run_dir, update_config

    import shutil

    old = tmp_path / "old"
    shutil.copytree(random_run, old)
    (old / files.MARKER_FILE).unlink()
    update_config(old, training={"epochs": 3})  # what --resume writes first
    assert files.read_marker(old)["command"] == "train"
    not_a_run = tmp_path / "other"
    foreign_folder(not_a_run)
    (not_a_run / "config.json").write_text('{"user": "settings"}')
    with pytest.raises(UserError, match="did not make"):
        claim_run_dir(not_a_run)


def test_train_with_a_bad_option_writes_nothing_and_a_failed_start_does_not_block_out(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--seed", "-1", "--data-count", "16", "--backend", "numpy",
                 "--image-size", "32", "--epochs", "1", "--no-progress"]) == 2
    one_line_error(capsys, "seed")
    assert not out.exists()
    # a run whose start failed after config.json was written: the same --out starts afresh
    from service.rundir import create_run_dir

    config = GANConfig(**TINY)
    create_run_dir(out, config, "numpy", {"source": "first try"}, {})
    (out / "metrics.jsonl").write_text('{"type": "step", "step": 1}\n')
    create_run_dir(out, config, "numpy", {"source": "second try"}, {})
    assert not (out / "metrics.jsonl").exists()


# --------------------------------------------------------------------------- locks

HOLD_LOCK = r"""
import sys, time, pathlib
from service import files
folder, ready, gate = sys.argv[1:4]
with files.output_lock(folder, "a test"):
    pathlib.Path(ready).write_text("held")
    deadline = time.monotonic() + 300
    while not pathlib.Path(gate).exists():
        if time.monotonic() > deadline:
            sys.exit("the test never opened the gate within 300 s")
        time.sleep(0.05)
"""


def test_a_second_writer_on_the_same_folder_fails_at_once_naming_the_first(tmp_path, capsys, random_run):
    out = tmp_path / "images"
    argv = ["generate", "--run", str(random_run), "--count", "4", "--out", str(out), "--workers", "0",
            "--backend", "numpy", "--no-progress"]
    assert main(argv) == 0
    ready, gate = tmp_path / "ready", tmp_path / "gate"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out), str(ready), str(gate)],
                              cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():  # a file gate: the holder says when it holds the lock
            assert holder.poll() is None, "the lock holder died"
            assert time.monotonic() < deadline, "the lock holder did not take the lock within 300 s"
            time.sleep(0.05)
        manifest = (out / "manifest.csv").read_bytes()
        assert main(argv) == 2
        one_line_error(capsys, "in use by another process", f"pid {holder.pid}")
        assert (out / "manifest.csv").read_bytes() == manifest
    finally:
        gate.write_text("go")
        holder.wait(timeout=60)
    assert main(argv) == 0  # the holder is gone: the lock is free again


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, random_run):
    out = tmp_path / "images"
    files.claim_output_folder(out, "generate")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / files.LOCK_FILE).write_text(f"{dead.pid}\n")
    assert main(["generate", "--run", str(random_run), "--count", "4", "--out", str(out), "--workers", "0",
                 "--backend", "numpy", "--no-progress"]) == 0
    assert (out / "manifest.csv").is_file() and not (out / files.LOCK_FILE).exists()


def planted_lock(folder, kind: str, victim):
    """Put something other than the tool's own lock file at FOLDER's lock path."""
    lock = folder / files.LOCK_FILE
    if kind in ("link", "dangling link"):
        if kind == "link":
            victim.write_bytes(b"the user's file")
        lock.symlink_to(victim)
    elif kind == "fifo":
        os.mkfifo(lock)
    elif kind == "folder":
        lock.mkdir()
    elif kind == "hard link":
        victim.write_bytes(b"the user's file")
        os.link(victim, lock)
    return lock


def untouched(lock, kind, victim) -> bool:
    if kind in ("link", "dangling link"):
        kept = lock.is_symlink() and os.readlink(lock) == str(victim)
        return kept and (victim.read_bytes() == b"the user's file" if kind == "link" else not os.path.lexists(victim))
    if kind == "fifo":
        import stat

        return stat.S_ISFIFO(os.lstat(lock).st_mode)
    if kind == "folder":
        return lock.is_dir() and not any(lock.iterdir())
    return victim.read_bytes() == b"the user's file" and lock.read_bytes() == b"the user's file"


LOCK_KINDS = ["link", "dangling link", "fifo", "folder", "hard link"]


@pytest.mark.parametrize("kind", LOCK_KINDS)
def test_a_lock_path_that_is_not_a_regular_file_of_ours_is_one_error_and_touches_nothing(tmp_path, kind):
    folder, victim = tmp_path / "out", tmp_path / "elsewhere.txt"
    folder.mkdir()
    lock = planted_lock(folder, kind, victim)
    with pytest.raises(UserError, match="lock file") as caught:
        with files.output_lock(folder, "a test"):
            pytest.fail("the lock was taken")
    assert "\n" not in str(caught.value)
    assert untouched(lock, kind, victim)


def test_the_lock_of_a_folder_reached_through_a_linked_parent_is_the_folder_s_own(tmp_path):
    real = tmp_path / "real"
    (real / "out").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(real)
    with files.output_lock(tmp_path / "alias" / "out"):
        assert (real / "out" / files.LOCK_FILE).read_text().strip() == str(os.getpid())
        with files.output_lock(real / "out"):  # the same folder by another name: re-entered, not refused
            pass
    assert not (real / "out" / files.LOCK_FILE).exists()


def test_release_deletes_only_the_lock_file_it_opened(tmp_path):
    victim = tmp_path / "elsewhere.txt"
    victim.write_bytes(b"the user's file")
    with files.output_lock(tmp_path):
        lock = tmp_path / files.LOCK_FILE
        lock.unlink()
        lock.symlink_to(victim)  # swapped while held
    assert lock.is_symlink() and victim.read_bytes() == b"the user's file"


def generated(out, run):
    assert main(["generate", "--run", str(run), "--count", "4", "--out", str(out), "--workers", "0",
                 "--backend", "numpy", "--no-progress"]) == 0
    return out


def command_argv(command, tmp_path, out, random_run):
    small = ["--backend", "numpy", "--image-size", "32", "--no-progress"]
    return {
        "train": ["train", "--out", str(out), "--epochs", "1", "--data-count", "16", *small],
        "generate": ["generate", "--run", str(random_run), "--count", "4", "--out", str(out), "--workers", "0",
                     "--backend", "numpy", "--no-progress"],
        "validate": ["validate", "--real", str(image_folder(tmp_path / "real")), "--fake",
                     str(image_folder(tmp_path / "fake", count=8)), "--out", str(out), "--no-progress"],
        "audit": ["audit", "--fake", str(generated(tmp_path / "generated", random_run)), "--train",
                  str(image_folder(tmp_path / "real")), "--out", str(out), "--workers", "0", "--no-progress"],
        "tune": ["tune", "--out", str(out), "--max-images", "16", "--image-size", "32", "--batch-sizes", "8",
                 "--widths", "8", "--no-progress"],
        "utility": lambda: utility_argv(tmp_path, out),
    }[command]


def utility_argv(tmp_path, out):
    rng = np.random.default_rng(0)
    run = init_random_run(tmp_path / "conditional", GANConfig(**TINY, num_classes=3), seed=3)
    for name in ("real", "test"):
        labels = np.arange(18) % 3
        np.savez(tmp_path / f"{name}.npz", train_images=rng.integers(0, 256, (18, 32, 32, 3), dtype=np.uint8),
                 train_labels=labels)
    return ["utility", "--run", str(run), "--real", str(tmp_path / "real.npz"), "--test", str(tmp_path / "test.npz"),
            "--out", str(out), "--seeds", "0", "--arms", "real", "--bootstrap", "2", "--backend", "numpy",
            "--no-progress"]


def argv_of(command, tmp_path, out, random_run):
    argv = command_argv(command, tmp_path, out, random_run)
    return argv() if callable(argv) else argv


@pytest.mark.parametrize("kind", ["link", "fifo"])
@pytest.mark.parametrize("command", ["train", "generate", "validate", "audit", "tune", "utility"])
def test_every_writing_command_refuses_a_planted_lock_file_and_touches_nothing(tmp_path, capsys, random_run,
                                                                              command, kind):
    out, victim = tmp_path / "out", tmp_path / "elsewhere.txt"
    files.claim_output_folder(out, {"train": "train"}.get(command, command))
    lock = planted_lock(out, kind, victim)
    before = sorted(os.listdir(out))
    assert main(argv_of(command, tmp_path, out, random_run)) == 2
    one_line_error(capsys, "lock file")
    assert untouched(lock, kind, victim)
    assert sorted(os.listdir(out)) == before


def test_the_lock_is_reentrant_within_a_process_and_released_after(tmp_path):
    with files.output_lock(tmp_path):
        with files.output_lock(tmp_path):
            assert (tmp_path / files.LOCK_FILE).read_text().strip() == str(os.getpid())
        assert (tmp_path / files.LOCK_FILE).exists()
    assert not (tmp_path / files.LOCK_FILE).exists()


# --------------------------------------------------------------------------- torn outputs, full disk

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The command under a file-size limit, as on a full disk: a write past it fails with EFBIG.
UNDER_FILE_SIZE_LIMIT = r"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from service.run import main
sys.exit(main(sys.argv[2:]))
"""


def run_with_file_size_limit(limit: int, argv: list[str]):
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", UNDER_FILE_SIZE_LIMIT, str(limit), *argv],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env=env)


@pytest.mark.slow
def test_export_on_a_full_disk_leaves_nothing_torn_and_a_rerun_works(tmp_path, random_run):
    out = tmp_path / "models" / "G.keras"
    done = run_with_file_size_limit(4096, ["export", "--run", str(random_run), "--out", str(out)])
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "cannot write" in lines[0], done.stderr[-2000:]
    assert not out.exists() and listing(out.parent) == []
    assert main(["export", "--run", str(random_run), "--out", str(out)]) == 0
    import zipfile

    assert zipfile.is_zipfile(out)


def test_training_on_a_full_disk_is_one_line_and_leaves_no_torn_checkpoint(tmp_path):
    out = tmp_path / "run"
    done = run_with_file_size_limit(16384, ["train", "--out", str(out), "--backend", "numpy", "--data-count", "16",
                                            "--image-size", "32", "--batch-size", "8", "--epochs", "1", "--no-progress"])
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "cannot write" in errors[0] and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert not [p for p in out.rglob(files.TEMP_PREFIX + "*")]
    assert not list((out / "checkpoints").glob("*.npz"))



def test_export_where_its_folder_cannot_be_made_is_one_line(tmp_path, capsys, random_run):
    (tmp_path / "a-file").write_text("not a folder")
    assert main(["export", "--run", str(random_run), "--out", str(tmp_path / "a-file" / "G.keras")]) == 2
    one_line_error(capsys, "cannot write")
    assert (tmp_path / "a-file").read_text() == "not a folder"


# --------------------------------------------------------------------------- broken inputs: one line


def save_latest(run, change):
    """A newer checkpoint of `run` with `change(arrays)` applied (checksummed: only its content is wrong)."""
    from service import checkpoint as ckpt

    arrays = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    change(arrays)
    ckpt.save_checkpoint(run, ckpt.step_of(ckpt.latest_checkpoint(run)) + 1, arrays)


@pytest.fixture
def own_run(tmp_path):
    return init_random_run(tmp_path / "run", GANConfig(**TINY), seed=1)


def test_non_finite_weights_are_refused_by_generate_and_export_instead_of_black_images(tmp_path, capsys, own_run):
    def poison(arrays):
        arrays["generator/dense_0/kernel"] = np.full_like(arrays["generator/dense_0/kernel"], np.nan)

    save_latest(own_run, poison)
    assert main(["generate", "--run", str(own_run), "--count", "4", "--out", str(tmp_path / "images"),
                 "--workers", "0", "--backend", "numpy", "--no-progress"]) == 2
    one_line_error(capsys, "non-finite", "generator/dense_0/kernel")
    assert not (tmp_path / "images").exists()
    assert main(["export", "--run", str(own_run), "--out", str(tmp_path / "G.keras")]) == 2
    one_line_error(capsys, "non-finite")
    assert not (tmp_path / "G.keras").exists()


@pytest.mark.parametrize("damage", ["truncated", "missing-weight", "wrong-shape", "folder"])
def test_a_broken_newest_checkpoint_is_one_line_for_export_and_generate(tmp_path, capsys, own_run, damage):
    from service import checkpoint as ckpt

    newest = ckpt.checkpoint_path(own_run, 5)
    if damage == "truncated":
        data = ckpt.latest_checkpoint(own_run).read_bytes()
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "folder":
        newest.mkdir()
    else:
        def change(arrays):
            if damage == "missing-weight":
                del arrays["generator/dense_0/kernel"]
            else:
                arrays["generator/dense_0/kernel"] = arrays["generator/dense_0/kernel"][:-1]

        save_latest(own_run, change)
    for argv in (["export", "--run", str(own_run), "--out", str(tmp_path / "G.keras")],
                 ["generate", "--run", str(own_run), "--count", "4", "--out", str(tmp_path / "images"),
                  "--workers", "0", "--backend", "numpy", "--no-progress"]):
        code = main(argv)
        err = capsys.readouterr().err
        if damage == "folder":  # not a checkpoint: skipped with a warning, the one before is used
            assert code == 0 and "not a regular file; ignored" in err, err
            continue
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    if damage != "folder":
        assert not (tmp_path / "G.keras").exists() and not (tmp_path / "images").exists()


def test_a_checkpoint_without_its_rng_state_cannot_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--backend", "numpy", "--data-count", "16", "--image-size", "32",
                 "--batch-size", "8", "--epochs", "1", "--no-progress"]) == 0

    def drop_rng(arrays):
        del arrays["rng/trainer/state"]

    save_latest(out, drop_rng)
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 2
    one_line_error(capsys, "lacks rng/trainer/state", "cannot be resumed")


def test_damaged_generation_state_is_one_line_or_redone(tmp_path, capsys, random_run):
    out = tmp_path / "images"
    argv = ["generate", "--run", str(random_run), "--count", "4", "--shard-size", "2", "--out", str(out),
            "--workers", "0", "--backend", "numpy", "--no-progress"]
    assert main(argv) == 0
    manifest = (out / "manifest.csv").read_bytes()
    (out / ".generation" / "parts" / "shard_000001.csv").write_text("garbage,\n\x00\n")
    (out / ".generation" / "parts" / "shard_x.csv").write_text("not ours")
    assert main(argv) == 0  # a damaged part: that shard is made again, the same bytes
    assert (out / "manifest.csv").read_bytes() == manifest
    assert "damaged" in capsys.readouterr().err
    (out / ".generation" / "job.json").write_text("[1, 2]")
    assert main(argv) == 2
    one_line_error(capsys, "job.json")


def test_a_huge_count_is_refused_before_anything_is_planned(tmp_path, capsys, random_run):
    assert main(["generate", "--run", str(random_run), "--count", str(10**12), "--out", str(tmp_path / "o"),
                 "--workers", "0", "--no-progress"]) == 2
    one_line_error(capsys, "at most 1,000,000,000")
    assert not (tmp_path / "o").exists()
