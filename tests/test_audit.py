"""The streaming audit (`audit`): a planted copy among generated images is found whatever the
worker count, with the same rows; a resumed audit equals an uninterrupted one; the summary;
tar shards; bad input is one line and writes nothing."""

from __future__ import annotations

import csv
import io
import os
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from service import audit
from service import errors as audit_errors
from service.imageio import encode_png, save_png
from service.run import main
from test_cluster import cluster  # noqa: F401 - the two-node cluster fixture
from test_validation import lesion_like_images

COUNT, SHARD, TRAIN = 300, 50, 150
PLANTED_AT, PLANTED_FROM = 137, 42


def planted_copy(train: np.ndarray) -> np.ndarray:
    """Training image PLANTED_FROM mirrored and shifted by 2 px (edges repeated)."""
    mirrored = np.ascontiguousarray(train[PLANTED_FROM][:, ::-1])
    return cv2.warpAffine(mirrored, np.float32([[1, 0, 2], [0, 1, -2]]), (32, 32), borderMode=cv2.BORDER_REPLICATE)


def write_generated_folder(folder: Path, images: np.ndarray) -> Path:
    """A folder as `generate` writes it: img_*.png and manifest.csv."""
    folder.mkdir(parents=True)
    lines = ["index,file,class,seed,checkpoint_sha256,device"]
    for i, image in enumerate(images):
        save_png(folder / f"img_{i:09d}.png", image)
        lines.append(f"{i},img_{i:09d}.png,,0,0,cpu")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-sets")
    train = lesion_like_images(TRAIN, seed=1)
    np.savez(root / "train.npz", images=train)
    fake = lesion_like_images(COUNT, seed=2)
    fake[PLANTED_AT] = planted_copy(train)
    return root / "train.npz", train, write_generated_folder(root / "synth", fake), fake


def run(sets, out, workers=0, **kwargs):
    train_path, train, synth, _ = sets
    source = audit.open_generated_set(synth, SHARD)
    return audit.run_audit(source, train, out, train_name=str(train_path), workers=workers, **kwargs)


def rows(out: Path) -> list[dict]:
    with open(out / audit.ROWS_FILE, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def in_process(sets, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "out"
    return run(sets, out), out


def test_the_planted_copy_is_found_and_each_image_has_one_row(in_process):
    result, out = in_process
    found = rows(out)
    assert [int(r["index"]) for r in found] == list(range(COUNT))
    assert [r["file"] for r in found[:2]] == ["img_000000000.png", "img_000000001.png"]
    copies = [r for r in found if r["likely_copy"] == "1"]
    assert [int(r["index"]) for r in copies] == [PLANTED_AT]
    assert int(copies[0]["train_index"]) == PLANTED_FROM
    assert (int(copies[0]["turn"]) % 2, float(copies[0]["ratio"])) == (1, pytest.approx(0, abs=0.05))  # mirrored
    assert result.count == COUNT and result.copies == 1 and result.shards_run == COUNT // SHARD


def test_the_summary_counts_and_the_panel(in_process):
    import json

    result, out = in_process
    summary = json.loads((out / audit.SUMMARY_FILE).read_text())
    assert (summary["generated"], summary["training"], summary["copies"], summary["shards"]) == (COUNT, TRAIN, 1, COUNT // SHARD)
    assert summary["copy_share"] == pytest.approx(1 / COUNT)
    assert summary["training_images_copied"] == 1
    assert 0.7 < summary["median_ratio"] < 1.6  # novel images sit about a gap away
    first = summary["closest_pairs"][0]
    assert (first["generated"], first["train"], first["file"]) == (PLANTED_AT, PLANTED_FROM, f"img_{PLANTED_AT:09d}.png")
    assert len(summary["closest_pairs"]) == 16
    ratios = [pair["ratio"] for pair in summary["closest_pairs"]]
    assert ratios == sorted(ratios)
    assert cv2.imread(str(out / audit.PANEL_FILE)) is not None


def noting_the_index(seen: Path):
    """The audit's shard task, noting where the index it got lives (shipped by value)."""

    def task(index, job, shard):
        windows = index.aligned.windows
        (seen / f"{shard.number}").write_text(f"{os.getpid()} {windows.ctypes.data} {int(windows.flags.writeable)}")
        return audit.run_shard_task(index, job, shard)

    return task


@pytest.mark.slow
def test_two_ray_workers_give_the_same_rows(sets, in_process, tmp_path):
    _, reference = in_process
    (tmp_path / "seen").mkdir()
    result = run(sets, tmp_path / "ray", workers=2, shard_task=noting_the_index(tmp_path / "seen"))
    assert (tmp_path / "ray" / audit.ROWS_FILE).read_bytes() == (reference / audit.ROWS_FILE).read_bytes()
    assert (tmp_path / "ray" / audit.SUMMARY_FILE).read_bytes() == (reference / audit.SUMMARY_FILE).read_bytes()
    assert result.shards_run == COUNT // SHARD and len(result.worker_peak_rss) >= 1
    # every task read the index from the node's object store (read-only shared memory, one
    # buffer for all of a worker's tasks), not a copy of its own
    notes = [p.read_text().split() for p in (tmp_path / "seen").iterdir()]
    assert len(notes) == COUNT // SHARD and all(writeable == "0" for _, _, writeable in notes)
    assert all(len({address for pid, address, _ in notes if pid == worker}) == 1 for worker, _, _ in notes)


def test_a_resumed_audit_equals_an_uninterrupted_one(sets, in_process, tmp_path):
    _, reference = in_process
    out = tmp_path / "out"
    run(sets, out)
    audit.part_path(out, 3).unlink()  # as if killed before shard 3 finished
    (out / audit.ROWS_FILE).unlink()
    (out / ".tmp-half-written.csv").write_text("torn")  # a killed writer's temp file
    again = run(sets, out)
    assert (again.shards_run, again.shards_skipped) == (1, COUNT // SHARD - 1)
    assert (out / audit.ROWS_FILE).read_bytes() == (reference / audit.ROWS_FILE).read_bytes()
    assert not (out / ".tmp-half-written.csv").exists()


def test_tar_shards_without_a_manifest(sets, in_process, tmp_path):
    """A folder of WebDataset tar shards from elsewhere: each tar is a shard; an image's index
    is its position in name order."""
    _, _, _, fake = sets
    _, reference = in_process
    folder = tmp_path / "tars"
    folder.mkdir()
    for shard, start in enumerate(range(0, COUNT, 120)):
        with tarfile.open(folder / f"part-{shard}.tar", "w") as archive:
            for i in range(start, min(start + 120, COUNT)):
                data = encode_png(fake[i])
                member = tarfile.TarInfo(f"{i:06d}.png")
                member.size = len(data)
                archive.addfile(member, io.BytesIO(data))
    train_path, train, _, _ = sets
    result = audit.run_audit(audit.open_generated_set(folder), train, tmp_path / "out", train_name=str(train_path))
    found, expected = rows(tmp_path / "out"), rows(reference)
    assert result.shards_run == 3 and len(found) == COUNT
    assert found[PLANTED_AT]["file"] == f"part-1.tar:{PLANTED_AT:06d}.png"
    columns = ("index", "train_index", "turn", "shift_y", "shift_x", "ratio", "likely_copy")
    assert [[r[c] for c in columns] for r in found] == [[r[c] for c in columns] for r in expected]


@pytest.mark.parametrize("case, message", [
    ("missing fake", "--fake: no such file or folder"),
    ("no manifest", "no manifest.csv and no .tar shards"),
    ("damaged manifest", "expected 1"),
    ("one training image", "needs at least 2"),
    ("negative workers", "--workers must be >= 0"),
    ("another command's folder", "is the output folder of `validate`"),
])
def test_bad_input_is_exit_2_with_one_line_and_nothing_written(sets, tmp_path, capsys, case, message):
    train_path, train, synth, _ = sets
    fake, out, extra = str(synth), tmp_path / "out", []
    if case == "missing fake":
        fake = str(tmp_path / "nowhere")
    elif case == "no manifest":
        (tmp_path / "empty").mkdir()
        fake = str(tmp_path / "empty")
    elif case == "damaged manifest":
        damaged = tmp_path / "damaged"
        damaged.mkdir()
        (damaged / "manifest.csv").write_text("index,file\n0,img_000000000.png\n2,img_000000002.png\n")
        fake = str(damaged)
    elif case == "one training image":
        np.savez(tmp_path / "one.npz", images=train[:1])
        train_path = tmp_path / "one.npz"
    elif case == "negative workers":
        extra = ["--workers", "-1"]
    elif case == "another command's folder":
        out.mkdir()
        (out / ".lesiongan.json").write_text('{"tool": "lesiongan", "command": "validate"}')
    before = sorted(os.listdir(out)) if out.exists() else None
    code = main(["audit", "--fake", fake, "--train", str(train_path), "--out", str(out), "--workers", "0",
                 "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert (sorted(os.listdir(out)) if out.exists() else None) == before


def write_tars(folder: Path, images: np.ndarray, per_tar: int = 120, member=None) -> Path:
    """Tar shards of `images` without a manifest; member(i, png bytes) -> (name, bytes, declared size)."""
    folder.mkdir(parents=True)
    for shard, start in enumerate(range(0, len(images), per_tar)):
        with open(folder / f"part-{shard}.tar", "wb") as f:
            for i in range(start, min(start + per_tar, len(images))):
                name, data, size = member(i, encode_png(images[i])) if member else (f"{i:06d}.png", encode_png(images[i]), None)
                info = tarfile.TarInfo(name)
                info.size = len(data) if size is None else size
                f.write(info.tobuf(tarfile.USTAR_FORMAT))
                f.write(data + b"\0" * (-len(data) % 512))
            if size is None:
                f.write(b"\0" * 1024)
    return folder


def huge_member(i, png):
    return (f"{i:06d}.png", png, 3 << 30) if i == 130 else (f"{i:06d}.png", png, None)


def padded_member(i, png):
    """Member 130: a PNG followed by 2 MiB (decodable; over what LESIONGAN_MAX_IMAGE_PIXELS=2000 allows)."""
    return (f"{i:06d}.png", png + bytes(2 << 20), None) if i == 130 else (f"{i:06d}.png", png, None)


def text_member(i, png):
    return (f"{i:06d}.png", b"not an image at all\n", None) if i == 130 else (f"{i:06d}.png", png, None)


def with_a_loose_image(folder: Path, image: np.ndarray) -> Path:
    (folder / "extra").mkdir()
    save_png(folder / "extra" / "stray.png", image)
    return folder


@pytest.mark.parametrize("case, message", [
    ("loose images beside tars", "holds 1 image file(s) beside its .tar shards (extra/stray.png)"),
    ("a member that is not an image", "part-1.tar: member 000130.png is not a PNG, JPEG or BMP image"),
    ("a member declaring gigabytes", "part-1.tar: member 000130.png declares 3221225472 bytes"),
    ("a member larger than the pixel limit allows", "part-1.tar: member 000130.png declares 209"),
    ("out inside fake", "is inside the generated set's folder"),
    ("out is fake", "is inside the generated set's folder"),
    ("fake inside out", "is inside --out"),
])
def test_bad_generated_sets_are_exit_2_with_one_line_and_nothing_written(sets, tmp_path, capsys, monkeypatch, case, message):
    train_path, _, synth, fake = sets
    folder, out = tmp_path / "tars", tmp_path / "out"
    monkeypatch.setenv("LESIONGAN_MAX_IMAGE_PIXELS", "2000")  # the 32x32 images pass
    if case == "loose images beside tars":
        with_a_loose_image(write_tars(folder, fake), fake[0])
    elif case == "a member that is not an image":
        write_tars(folder, fake, member=text_member)
    elif case == "a member declaring gigabytes":
        write_tars(folder, fake, member=huge_member)
    elif case == "a member larger than the pixel limit allows":
        write_tars(folder, fake, member=padded_member)
    elif case == "out inside fake":
        write_tars(folder, fake)
        out = folder / "audit"
    elif case == "out is fake":
        write_tars(folder, fake)
        out = folder
    else:
        folder = write_tars(out / "tars", fake)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    code = main(["audit", "--fake", str(folder), "--train", str(train_path), "--out", str(out), "--workers", "0",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_a_generated_file_that_is_not_an_image_found_mid_audit_is_one_line(sets, tmp_path, capsys):
    """A PNG of the manifest that is not one (found when its shard is read, past the checks of
    the set's headers): one line, never an OpenCV traceback."""
    train_path, train, _, fake = sets
    folder = write_generated_folder(tmp_path / "synth", fake[:120])
    (folder / "img_000000070.png").write_bytes(b"\x89PNG\r\n\x1a\n but no more")
    code = main(["audit", "--fake", str(folder), "--train", str(train_path), "--out", str(tmp_path / "out"),
                 "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "img_000000070.png is not a decodable image" in err, err


@pytest.mark.parametrize("damage", ["a number edited", "rows swapped for another shard's", "another job's part",
                                    "an old part without its tag line", "cut short"])
def test_a_resume_redoes_a_damaged_or_foreign_part(sets, in_process, tmp_path, damage):
    _, reference = in_process
    out = tmp_path / "out"
    run(sets, out)
    part = audit.part_path(out, 2)
    text = part.read_text()
    tag, rows_text = text.split("\n", 1)
    if damage == "a number edited":
        first = rows_text.split("\n", 1)[0].split(",")
        first[8] = "not a number"
        part.write_text(tag + "\n" + ",".join(first) + "\n" + rows_text.split("\n", 1)[1])
    elif damage == "rows swapped for another shard's":
        part.write_text(tag + "\n" + audit.part_path(out, 1).read_text().split("\n", 1)[1])
    elif damage == "another job's part":
        part.write_text(tag.replace(tag.split(" ")[1], "0" * 32) + "\n" + rows_text)
    elif damage == "an old part without its tag line":
        part.write_text(rows_text)
    else:
        part.write_text(text[: len(text) // 2])
    (out / audit.ROWS_FILE).unlink()
    again = run(sets, out)
    assert (again.shards_run, again.shards_skipped) == (1, COUNT // SHARD - 1)
    assert (out / audit.ROWS_FILE).read_bytes() == (reference / audit.ROWS_FILE).read_bytes()


def test_a_part_that_is_not_a_regular_file_is_one_line_and_not_followed(sets, tmp_path):
    out = tmp_path / "out"
    run(sets, out)
    target = tmp_path / "elsewhere.csv"
    target.write_text("mine\n")
    audit.part_path(out, 2).unlink()
    os.symlink(target, audit.part_path(out, 2))
    with pytest.raises(audit_errors.UserError, match="is a symbolic link"):
        run(sets, out)
    assert target.read_text() == "mine\n"


def gated(started_dir: Path, go: Path):
    """An audit shard task that marks that it started, then waits for `go` (see test_cluster)."""

    def task(index, job, shard):
        import time

        (started_dir / f"{shard.number}-{os.getpid()}").touch()
        deadline = time.monotonic() + 300
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return audit.run_shard_task(index, job, shard)

    return task


@pytest.mark.slow
def test_a_worker_node_lost_mid_audit_still_audits_every_image_once(cluster, sets, in_process, tmp_path):
    import ray

    from test_cluster import lose_the_worker_node_mid_run

    (head, worker), (_, reference) = cluster, in_process
    started, go = tmp_path / "started", tmp_path / "go"
    started.mkdir()
    ray.init(address=head.address, logging_level="ERROR", log_to_driver=False)  # no late worker lines in later tests
    result = lose_the_worker_node_mid_run(
        lambda: run(sets, tmp_path / "out", workers=2, shard_task=gated(started, go)), head, worker, started, go,
    )
    assert len(list(started.iterdir())) > COUNT // SHARD  # the lost node's shard was started again
    assert result.shards_run == COUNT // SHARD
    assert (tmp_path / "out" / audit.ROWS_FILE).read_bytes() == (reference / audit.ROWS_FILE).read_bytes()


def test_validate_samples_the_metrics_and_audits_every_image(sets, tmp_path, capsys):
    import json

    train_path, _, synth, _ = sets
    np.savez(tmp_path / "real.npz", images=lesion_like_images(40, seed=5))
    out = tmp_path / "report"
    code = main(["validate", "--real", str(tmp_path / "real.npz"), "--fake", str(synth), "--train", str(train_path),
                 "--out", str(out), "--sample", "60", "--seed", "3", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "metrics.json").read_text())
    assert (result["counts"]["generated"], result["counts"]["generated_sample"]) == (COUNT, 60)
    assert result["sample"]["size"] == 60 and result["sample"]["seed"] == 3
    assert result["real_vs_generated"]["copies"] == 1  # the planted copy, whether sampled or not
    assert result["memorization"]["closest_pairs"][0]["generated"] == PLANTED_AT
    assert len(rows(out / "audit")) == COUNT
    assert "1 of 300 generated images" in " ".join((out / "report.html").read_text().split())


def test_a_generate_folder_of_tar_shards(tmp_path, sets):
    """`generate --format tar` output, through its manifest: one audit shard per tar shard."""
    from backends.config import GANConfig
    from run_fixtures import init_random_run
    from service import generation

    run_dir = init_random_run(tmp_path / "run", GANConfig(image_size=32, width=8, max_width=32, latent_dim=16), seed=3)
    synth = tmp_path / "synth"
    generation.generate_in_process(generation.plan_job(run_dir, 45, synth, seed=5, backend="numpy", shard_size=20,
                                                       output_format="tar"))
    train_path, train, _, _ = sets
    result = audit.run_audit(audit.open_generated_set(synth), train, tmp_path / "out", train_name=str(train_path))
    found = rows(tmp_path / "out")
    assert result.shards_run == 3 and [int(r["index"]) for r in found] == list(range(45))
    assert found[44]["file"] == "shard-000002.tar:000000044.png"
