"""Hyperparameter trials on a local Ray (2 CPUs): two tiny trials, then train from the best config."""

from __future__ import annotations

import csv
import json

import pytest

import ray  # noqa: E402

from backends.config import GANConfig  # noqa: E402
from service.run import main  # noqa: E402

BACKEND = "numpy"
TINY_TUNE = [
    "--image-size", "32", "--widths", "8", "--batch-sizes", "16", "--max-images", "80",
    "--epochs", "2", "--backend", BACKEND,
]


@pytest.fixture(scope="module")
def ray_cluster():
    import logging

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, object_store_memory=100 * 1024**2)
    yield
    ray.shutdown()


def test_two_tiny_trials_give_a_best_config_that_train_accepts(ray_cluster, tmp_path, capsys):
    out = tmp_path / "tune"
    assert main(["tune", "--trials", "2", "--time-budget", "100", "--out", str(out), *TINY_TUNE, "--progress"]) == 0
    captured = capsys.readouterr()
    assert "best SWD" in captured.out
    assert "tune:" in captured.err and "trials done" in captured.err  # the progress bar

    with open(out / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert all(r["status"] == "reported" and float(r["best_swd"]) > 0 for r in rows)
    assert {r["width"] for r in rows} == {"8"} and {r["batch_size"] for r in rows} == {"16"}

    best = json.loads((out / "best_config.json").read_text())
    config = GANConfig.from_dict(best)  # every field is a GANConfig field
    best_row = min(rows, key=lambda r: float(r["best_swd"]))
    assert config.lr_g == pytest.approx(float(best_row["lr_g"]))
    assert config.margin == pytest.approx(float(best_row["margin"]))
    assert (config.image_size, config.width, config.batch_size) == (32, 8, 16)

    # The best trial's checkpoint is a run directory that generation reads.
    best_checkpoint = (out / "best_checkpoint").read_text().strip()
    from service.checkpoint import latest_checkpoint

    assert latest_checkpoint(best_checkpoint).is_file()
    assert main(["generate", "--run", best_checkpoint, "--count", "3", "--out", str(tmp_path / "gen"),
                 "--backend", BACKEND, "--workers", "0"]) == 0
    assert len(list((tmp_path / "gen").glob("img_*.png"))) == 3

    run = tmp_path / "run"
    code = main(["train", "--config", str(out / "best_config.json"), "--epochs", "1", "--data-count", "48",
                 "--backend", BACKEND, "--out", str(run), "--no-progress"])
    assert code == 0
    trained = json.loads((run / "config.json").read_text())["model"]
    assert trained["lr_g"] == pytest.approx(config.lr_g) and trained["width"] == 8
    assert latest_checkpoint(run).is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--trials", "0"], "--trials"),
        (["--time-budget", "0"], "--time-budget"),
        (["--address", "127.0.0.1:1"], "unreachable"),
        (["--batch-sizes", "30"], "multiple of minibatch_std"),
    ],
)
def test_bad_input_is_exit_2_with_one_line(tmp_path, capsys, extra, message):
    code = main(["tune", "--out", str(tmp_path / "t"), *TINY_TUNE, *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_the_search_tries_training_with_and_without_diffaugment():
    from service.tune import DIFFAUGMENT_ON, TuneSettings, search_space

    settings = TuneSettings(trials=1, time_budget=1, out_dir=None)
    assert set(search_space(settings)["diffaugment"].categories) == {"", DIFFAUGMENT_ON}
