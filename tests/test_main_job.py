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


@pytest.mark.slow
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


@pytest.mark.slow
def test_main_job_with_utility_adds_the_classifier_arms_to_the_report(tmp_path, tiny_npz, monkeypatch):
    from service.main_job import MainJob, run_main_job, summary_lines
    from service.training import TrainingRequest
    from service.utility import ARMS, UtilitySettings

    monkeypatch.setenv("LESIONGAN_CACHE", str(tmp_path / "cache"))
    images, labels = make_dataset(30, 32, seed=4)  # other images: the held-out test set
    np.savez(tmp_path / "test.npz", train_images=images, train_labels=labels)
    training = TrainingRequest(out=tmp_path / "run", data=str(tiny_npz), backend="numpy", epochs=1, image_size=32,
                               batch_size=16, conditional=True, progress=False)
    job = MainJob(training=training, count=20, utility=True, utility_test=str(tmp_path / "test.npz"),
                  utility_settings=UtilitySettings(seeds=(0,), epochs=2, bootstrap=20))
    outcome = run_main_job(job)
    metrics = json.loads((tmp_path / "run" / "report" / "metrics.json").read_text())
    assert list(metrics["utility"]["arms"]) == list(ARMS)
    assert metrics["real_vs_generated"]["swd_mean"] > 0  # the validation result is kept beside it
    html = (tmp_path / "run" / "report" / "report.html").read_text()
    assert "Downstream utility" in html and "utility.png" in html
    assert (tmp_path / "run" / "report" / "utility.png").is_file()
    assert all(any(line.startswith(arm + " ") for line in summary_lines(outcome)) for arm in ARMS)


@pytest.mark.parametrize("extra, message", [
    (["--utility"], "--utility needs --conditional"),
    (["--utility", "--conditional", "--data", "x.npz"], "--utility-test"),
    (["--utility", "--conditional", "--data", "x.npz", "--utility-test", "missing.npz"], "data path not found"),
])
def test_main_job_utility_options_are_checked_first(capsys, extra, message):
    assert main(["--count", "20", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
