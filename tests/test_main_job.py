"""The main job end to end on a tiny dataset: train -> generate -> validate -> report."""

import json

import numpy as np
import pytest

from service.run import main
from service.synthetic import make_dataset


@pytest.fixture
def tiny_npz(tmp_path):
    images, labels = make_dataset(48, 32, seed=3)
    path = tmp_path / "tiny.npz"
    np.savez(path, train_images=images, train_labels=labels)
    return path


def test_main_job_writes_run_generated_images_and_report(tmp_path, tiny_npz, capsys, monkeypatch):
    monkeypatch.setenv("LESIONGAN_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    code = main([
        "--backend", "numpy", "--data", str(tiny_npz), "--image-size", "32", "--epochs", "1",
        "--batch-size", "16", "--count", "40", "--out", str(run_dir), "--no-progress",
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert f"report: {run_dir / 'report' / 'report.html'}" in out
    assert len(list((run_dir / "generated").glob("img_*.png"))) == 40
    assert list((run_dir / "checkpoints").glob("ckpt-*.npz"))
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    assert metrics["real_vs_generated"]["swd_mean"] > 0
    assert (run_dir / "report" / "report.html").stat().st_size > 0


def test_main_job_rejects_a_tiny_count(capsys):
    assert main(["--count", "3"]) == 2
    assert "--count" in capsys.readouterr().err
