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

    # log_to_driver off: Ray's log monitor prints workers' output to this process's stderr when
    # it gets to it, which can be during a later test that checks stderr is one line
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, object_store_memory=100 * 1024**2,
             log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_two_tiny_trials_give_a_best_config_that_train_accepts(ray_cluster, tmp_path, capsys):
    out = tmp_path / "tune"
    # bounded by 2 trials of 2 epochs; the time budget is far above what they need on any machine
    assert main(["tune", "--trials", "2", "--time-budget", "36000", "--out", str(out), *TINY_TUNE, "--progress"]) == 0
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


def tiny_search(tmp_path, name, trials=1):
    from service.tune import TuneSettings, load_dataset

    settings = TuneSettings(trials=trials, time_budget=36000, out_dir=tmp_path / name, backend=BACKEND, epochs=2,
                            widths=(8,), batch_sizes=(16,), seed=3)
    settings.base = GANConfig(image_size=32, width=8, max_width=16, latent_dim=16, batch_size=16).to_dict()
    return settings, load_dataset(None, 32, max_images=80, seed=3)


def killed_once_mid_epoch(marker, kill_at_step: int):
    """A trial body that, the first time (while `marker` exists), SIGKILLs its own worker in the
    middle of training step `kill_at_step`; then it is the real trial. Defined in a function so
    Ray ships it by value."""

    def trial(params, **kwargs):
        import os
        import signal

        from service import trainer as trainer_module
        from service.tune import run_trial

        if marker.exists():
            marker.unlink()
            # one RebalanceResult per step, whether the margin loop ran in Python or in the backend
            result_of_step, calls = trainer_module.RebalanceResult, [0]

            def dying(*args, **options):
                calls[0] += 1
                if calls[0] == kill_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)
                return result_of_step(*args, **options)

            trainer_module.RebalanceResult = dying
        return run_trial(params, **kwargs)

    return trial


@pytest.mark.slow
def test_a_trial_killed_mid_epoch_continues_from_its_checkpoint(ray_cluster, tmp_path):
    """64 training images in batches of 16: 4 steps an epoch. Killed in step 6 (epoch 2), the
    trial starts again from its epoch-1 checkpoint and ends exactly as an uninterrupted one."""
    from service.tune import run_tune

    settings, dataset = tiny_search(tmp_path, "plain")
    plain = run_tune(settings, dataset)
    marker = tmp_path / "kill-once"
    marker.touch()
    settings, dataset = tiny_search(tmp_path, "killed")
    killed = run_tune(settings, dataset, trial=killed_once_mid_epoch(marker, kill_at_step=6))
    assert not marker.exists(), "the trial was never killed"
    (plain_row,), (killed_row,) = plain["rows"], killed["rows"]
    assert plain_row["epochs"] == killed_row["epochs"] == 2  # epoch 1 reported once, not again
    assert killed_row["last_swd"] == plain_row["last_swd"] and killed_row["best_swd"] == plain_row["best_swd"]


def trial_states(out) -> dict[str, str]:
    """trial id -> status, from Ray Tune's experiment state file(s) under OUT/tune."""
    states = {}
    for path in sorted((out / "tune").glob("experiment_state*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # being written
        for trial, _ in data.get("trial_data", []):
            trial = json.loads(trial)
            states[trial["trial_id"]] = trial["status"]
    return states


# `tune` with a file gate in its trials: the first trial to start runs, every other one waits
# for GATE, which the test writes only after killing the driver; so exactly one trial has
# finished at the kill, on any machine.
GATED_TUNE = r"""
import sys
from service import tune
first, gate = sys.argv[1:3]

def run_trial(params, **kwargs):  # Tune knows a trainable by its name: the resume passes the real one
    import os, pathlib, time
    from service import tune
    try:
        os.close(os.open(first, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        deadline = time.monotonic() + 600
        while not pathlib.Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    return tune.run_trial(params, **kwargs)

run_tune = tune.run_tune
tune.run_tune = lambda *args, **kwargs: run_tune(*args, trial=run_trial, **kwargs)
from service.run import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.slow
def test_a_search_whose_driver_was_killed_resumes_without_repeating_finished_trials(ray_cluster, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    out, first, gate = tmp_path / "search", tmp_path / "first", tmp_path / "gate"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    driver = subprocess.Popen(
        [sys.executable, "-c", GATED_TUNE, str(first), str(gate),
         "tune", "--trials", "3", "--time-budget", "36000", "--out", str(out), *TINY_TUNE, "--no-progress"],
        cwd=Path(__file__).resolve().parents[1], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while "TERMINATED" not in trial_states(out).values():
            assert driver.poll() is None, "the search ended before it could be killed"
            assert time.monotonic() < deadline, "no trial finished within 600 s"
            time.sleep(0.2)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
        driver.wait()
        gate.write_text("go")
    finished = {t for t, status in trial_states(out).items() if status == "TERMINATED"}
    assert len(finished) == 1
    reports = {t: _reports(out, t) for t in finished}

    assert main(["tune", "--resume", str(out), "--no-progress"]) == 0
    with open(out / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(r["status"] == "reported" for r in rows)
    assert {t: _reports(out, t) for t in finished} == reports  # finished trials did not run again
    assert set(trial_states(out).values()) == {"TERMINATED"}


def _reports(out, trial_id: str) -> int:
    (folder,) = [p for p in (out / "tune").iterdir() if p.is_dir() and trial_id in p.name]
    return len((folder / "result.json").read_text().splitlines())


def test_resume_refuses_a_folder_without_a_search_and_new_options(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["tune", "--resume", str(tmp_path / "empty")]) == 2
    assert "no search to resume" in capsys.readouterr().err
    assert main(["tune", "--resume", str(tmp_path / "empty"), "--trials", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "drop --trials" in err
