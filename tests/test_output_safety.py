"""What the tool promises about its outputs: it never writes through a symbolic link, never
takes over a folder it did not make, never leaves a torn file, and answers a broken input
(a damaged or non-finite checkpoint, a full disk, a folder in use) with one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

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
