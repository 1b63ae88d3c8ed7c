"""`python -m service.run train`: run directory, config precedence, resume after kill -9,
SIGTERM, corrupt-checkpoint fallback, and one-line exit-2 errors for bad input."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from service import checkpoint as ckpt
from service.rundir import METRICS_FILE
from service.run import main

REPO = Path(__file__).resolve().parents[1]
TINY = {"width": 4, "max_width": 16, "latent_dim": 8, "batch_size": 4, "max_rebalance_steps": 2}


pytestmark = pytest.mark.usefixtures("single_numba_thread")  # tests/conftest.py


@pytest.fixture
def tiny_data(tmp_path):
    """12 random 32x32 images with labels in 3 classes (DermaMNIST-style .npz), and a tiny-model config."""
    rng = np.random.default_rng(0)
    data = tmp_path / "tiny.npz"
    np.savez(
        data,
        train_images=rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8),
        train_labels=np.arange(12) % 3,
    )
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, train_images=rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8))
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    return {"data": str(data), "unlabelled": str(unlabelled), "config": str(config)}


def train_args(tiny_data, out, *extra, backend="numpy"):
    return [
        "train", "--data", tiny_data["data"], "--out", str(out), "--backend", backend,
        "--config", tiny_data["config"], "--image-size", "32", "--no-progress", *extra,
    ]


def state_without_timings(run_dir) -> dict[str, np.ndarray]:
    _, arrays = ckpt.load_latest_valid(run_dir)
    return {k: v for k, v in arrays.items() if k not in ("meta/train_seconds", "meta/epoch_sums")}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_train_writes_a_run_directory_and_says_where(tmp_path, tiny_data, capsys):
    out = tmp_path / "run"
    assert main(train_args(tiny_data, out, "--epochs", "2", "--seed", "5")) == 0
    stdout = capsys.readouterr().out
    assert f"run directory: {out}" in stdout
    full = json.loads((out / "config.json").read_text())
    model = full["model"]
    assert model["width"] == 4 and model["batch_size"] == 4 and model["image_size"] == 32
    assert model["seed"] == 5 and model["preset"] == "default+custom" and model["num_classes"] == 0
    assert model["beta_1"] == 0.5  # from the default preset, not overridden by the JSON
    assert full["backend"] == "numpy" and full["data"]["count"] == 12 and len(full["data"]["fingerprint"]) == 64
    assert [ckpt.step_of(p) for p in ckpt.list_checkpoints(out)] == [3, 6]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]
    assert (out / "loss_curve.png").is_file()


def progress_args(tiny_data, out, *extra):
    return [a for a in train_args(tiny_data, out, *extra) if a != "--no-progress"]


@pytest.mark.parametrize("flag, shown", [("--progress", True), ("--no-progress", False), (None, False)])
def test_progress_bar_on_stderr_follows_the_flag_on_new_and_resumed_runs(tmp_path, tiny_data, capsys, flag, shown):
    """Without a flag the bar shows only on a terminal, and pytest's stderr is not one."""
    flags = [flag] if flag else []
    out = tmp_path / "run"
    assert main(progress_args(tiny_data, out, "--epochs", "1", *flags)) == 0
    first = capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--epochs", "2", *flags]) == 0
    resumed = capsys.readouterr().err
    for err, steps in ((first, "3/3"), (resumed, "6/6")):
        assert ("train: 100%" in err and f" {steps} " in err) is shown, err


def test_conditional_training_takes_classes_from_the_data(tmp_path, tiny_data):
    out = tmp_path / "cond"
    assert main(train_args(tiny_data, out, "--epochs", "1", "--conditional")) == 0
    full = json.loads((out / "config.json").read_text())
    assert full["model"]["num_classes"] == len(full["data"]["class_names"]) == 3
    assert (out / "samples" / "epoch_0001.png").is_file()


@pytest.mark.parametrize(
    "case, argv, message",
    [
        ("no out", ["train", "--backend", "numpy"], "--out"),
        ("missing data", ["train", "--data", "/nonexistent/x.npz", "--out", "{tmp}/r", "--backend", "numpy"], "not found"),
        ("no labels", "UNLABELLED", "labels"),
        ("not a run", ["train", "--resume", "{tmp}"], "not a run directory"),
        ("bad config field", "BADCONFIG", "bogus"),
        ("batch too big", "BIGBATCH", "fewer than one batch of 64; set a smaller batch size (--batch-size)"),
        ("zero epochs", "ZEROEPOCHS", "--epochs"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, tiny_data, capsys, case, argv, message):
    if argv == "UNLABELLED":
        argv = train_args({**tiny_data, "data": tiny_data["unlabelled"]}, tmp_path / "r", "--conditional")
    elif argv == "BADCONFIG":
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"bogus": 1}))
        argv = train_args({**tiny_data, "config": str(bad)}, tmp_path / "r")
    elif argv == "BIGBATCH":
        argv = train_args(tiny_data, tmp_path / "r", "--batch-size", "64", "--epochs", "1")
    elif argv == "ZEROEPOCHS":
        argv = train_args(tiny_data, tmp_path / "r", "--epochs", "0")
    else:
        argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and message in err


def test_resume_refuses_model_flags_and_finished_runs_do_nothing(tmp_path, tiny_data, capsys):
    out = tmp_path / "run"
    assert main(train_args(tiny_data, out, "--epochs", "1")) == 0
    assert main(["train", "--resume", str(out), "--preset", "seed"]) == 2
    assert "drop --preset" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_resume_skips_a_corrupt_newest_checkpoint_with_a_warning(tmp_path, tiny_data, capsys, backend_name):
    out = tmp_path / "run"
    assert main(train_args(tiny_data, out, "--epochs", "2", backend=backend_name)) == 0
    newest = ckpt.latest_checkpoint(out)
    newest.write_bytes(newest.read_bytes()[:-200])  # torn
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "3", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and newest.name in captured.err
    assert "from ckpt-000000003.npz" in captured.err
    assert ckpt.step_of(ckpt.latest_checkpoint(out)) == 9  # 3 (kept) + 2 epochs of 3 steps
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines() if '"step"' in l and '"type": "step"' in l]
    assert steps == list(range(1, 10))


def start_training_subprocess(tiny_data, out):
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        [sys.executable, "-m", "service.run", *train_args(tiny_data, out, "--epochs", "10000", "--checkpoint-every", "1")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_checkpoint(process, out, timeout=300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ckpt.list_checkpoints(out):
            return
        if process.poll() is not None:
            pytest.fail(f"training exited early ({process.returncode}): {process.stderr.read()[-500:]}")
        time.sleep(0.02)
    process.kill()
    pytest.fail("no checkpoint appeared in time")


# One framework thread in every run that is compared bit for bit: TensorFlow's multi-threaded
# float sums may differ in the last bits from one run to the next, and a few weights (the biases
# before a batch norm, whose gradient is rounding noise that Adam scales up) carry that far.
ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "LESIONGAN_TF_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def train_in_subprocess(argv: list[str]) -> None:
    """`python -m service.run ARGV` with one framework thread; it must succeed."""
    process = subprocess.run([sys.executable, "-m", "service.run", *argv], cwd=REPO, env={**os.environ, **ONE_THREAD},
                             capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-500:]


def train_then_sigkill(kill_step: int, argv: list[str], fake_clock: float | None = None) -> None:
    """Run `train` in a subprocess that SIGKILLs itself in the middle of step `kill_step`."""
    clock = [] if fake_clock is None else ["--fake-clock", str(fake_clock)]
    env = {**os.environ, **ONE_THREAD}
    process = subprocess.run(
        [sys.executable, str(REPO / "tests" / "sigkill_during_training.py"), str(kill_step), *clock, "--", *argv],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr[-500:]


def step_lines(run_dir) -> list[dict]:
    lines = [json.loads(l) for l in (Path(run_dir) / METRICS_FILE).read_text().splitlines()]
    return [m for m in lines if m["type"] == "step"]


# 8 epochs of 3 steps; `default` holds its rates to step 12, then lowers them. The kill lands
# before the decay (step 5) or after it has begun (step 17); checkpoints every 4 steps, so the
# killed run has trained past its last checkpoint and the resume replays those steps.
@pytest.mark.slow
@pytest.mark.parametrize("kill_step", [5, 17], ids=["before-decay", "during-decay"])
def test_kill_9_then_resume_gives_the_same_weights_as_a_straight_run(tmp_path, tiny_data, kill_step, backend_name):
    epochs, steps = 8, 24
    killed = tmp_path / "killed"
    train_then_sigkill(kill_step, train_args(tiny_data, killed, "--epochs", str(epochs), "--checkpoint-every", "4",
                                             backend=backend_name))
    _, arrays = ckpt.load_latest_valid(killed)
    assert int(arrays["meta/step"]) == (kill_step - 1) // 4 * 4  # the last checkpoint before the kill
    assert step_lines(killed)[-1]["step"] == kill_step - 1  # trained past it
    train_in_subprocess(["train", "--resume", str(killed), "--no-progress"])

    straight = tmp_path / "straight"
    train_in_subprocess(train_args(tiny_data, straight, "--epochs", str(epochs), backend=backend_name))
    assert ckpt.step_of(ckpt.latest_checkpoint(straight)) == steps
    assert_same_state(state_without_timings(straight), state_without_timings(killed))
    resumed, reference = step_lines(killed), step_lines(straight)
    assert [m["step"] for m in resumed] == list(range(1, steps + 1))
    assert [m["lr_scale"] for m in resumed] == [m["lr_scale"] for m in reference]
    assert (reference[kill_step - 1]["lr_scale"] < 1.0) == (kill_step > steps // 2)  # the case is what it says


@pytest.mark.slow
def test_kill_9_of_a_time_budget_run_resumes_its_schedule_where_it_stopped(tmp_path, tiny_data, backend_name):
    """A run planned by time, killed after its rates began to fall, resumed with a new budget:
    the steps continue without gap or repeat, and the rates go on falling from where the
    checkpoint left them instead of starting again at full strength."""
    run = tmp_path / "timed"
    # the fake clock reads 4 times a step, so 10 s of it last about 25 steps on any machine
    train_then_sigkill(19, train_args(tiny_data, run, "--time-budget", "10", "--checkpoint-every", "2", backend=backend_name),
                       fake_clock=0.1)
    _, arrays = ckpt.load_latest_valid(run)
    checkpoint_step = int(arrays["meta/step"])
    assert checkpoint_step == 18
    before = step_lines(run)
    assert 0.0 < before[checkpoint_step - 1]["lr_scale"] < 1.0  # the decay had begun
    assert main(["train", "--resume", str(run), "--time-budget", "2", "--no-progress"]) == 0

    after = step_lines(run)
    assert [m["step"] for m in after] == list(range(1, len(after) + 1))
    assert len(after) > checkpoint_step
    assert after[:checkpoint_step] == before[:checkpoint_step]
    resumed_scales = [m["lr_scale"] for m in after[checkpoint_step:]]
    assert resumed_scales[0] <= before[checkpoint_step - 1]["lr_scale"]
    assert resumed_scales == sorted(resumed_scales, reverse=True)
    _, final = ckpt.load_latest_valid(run)
    assert int(final["meta/step"]) == len(after)
    assert float(final["meta/progress"]) > float(arrays["meta/progress"])


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_0(tmp_path, tiny_data):
    out = tmp_path / "run"
    process = start_training_subprocess(tiny_data, out)
    try:
        wait_for_checkpoint(process, out)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-500:]
    assert "stopped (SIGTERM)" in stdout and f"run directory: {out}" in stdout
    last_step = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()][-1]["step"]
    assert ckpt.step_of(ckpt.latest_checkpoint(out)) == last_step
    ckpt.load_checkpoint(ckpt.latest_checkpoint(out))  # verifies


@pytest.mark.parametrize("first, then", [("numpy", "tf"), ("tf", "numpy")])
def test_resume_in_the_other_backend_continues_the_same_run(tmp_path, tiny_data, capsys, first, then):
    """Checkpoints are backend-neutral: a run resumed in the other backend goes on from its
    step, with the trainer's random stream where a straight run would have it."""
    def args(out, *extra):
        argv = train_args(tiny_data, out, *extra)
        argv[argv.index("--backend") + 1] = first
        return argv

    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    assert main(args(resumed, "--epochs", "1")) == 0
    assert main(["train", "--resume", str(resumed), "--backend", then, "--epochs", "2", "--no-progress"]) == 0
    assert main(args(straight, "--epochs", "2")) == 0
    assert json.loads((resumed / "config.json").read_text())["backend"] == then
    assert [m["step"] for m in step_lines(resumed)] == list(range(1, 7))
    _, after = ckpt.load_latest_valid(resumed)
    _, reference = ckpt.load_latest_valid(straight)
    assert int(after["meta/step"]) == int(reference["meta/step"]) == 6
    for name in ("rng/trainer/state", "rng/trainer/inc", "rng/trainer/permutation"):
        np.testing.assert_array_equal(after[name], reference[name], err_msg=name)
    assert all(np.isfinite(v).all() for n, v in after.items() if v.dtype.kind == "f")


def test_every_training_option_is_one_table_row():
    """TRAINING_OPTIONS drives the parser, the resume refusal and the config's explicit fields:
    each row is a request field; a "config" row a GANConfig field; every row a flag of train;
    every config and run row refused by --resume."""
    from dataclasses import fields as dataclass_fields

    from backends.config import GANConfig
    from service.commands import train
    from service.training import TRAINING_OPTIONS, TrainingRequest, _options_fixed_on_resume

    request_fields = {f.name for f in dataclass_fields(TrainingRequest)}
    config_fields = {f.name for f in dataclass_fields(GANConfig)}
    train_parser = argparse.ArgumentParser()
    train.add_arguments(train_parser)
    flags = {flag for action in train_parser._actions for flag in action.option_strings}
    samples = {"str": "x", "int": 3, "float": 0.5, "store_true": True}
    for option in TRAINING_OPTIONS:
        assert option.field in request_fields and option.option in flags, option
        assert option.kind in ("config", "run", "schedule"), option
        if option.kind == "config":
            assert option.field in config_fields, option
        kind = option.arguments.get("action") or getattr(option.arguments.get("type"), "__name__", "str")
        refused = _options_fixed_on_resume(TrainingRequest(resume="r", **{option.field: samples[kind]}))
        assert (option.option in refused) == option.fixed_on_resume, (option, refused)
