"""How `train` stops: SIGINT from outside saves a checkpoint and exits 0, and --resume goes on to
the same weights as a run never stopped; a loss that becomes NaN exits 2 with one line and keeps
the last good checkpoint, from which the run resumes. Both backends, in a subprocess.

This file is also the subprocess's harness (no sleeps tied to speed):

    python tests/test_stop_signals.py --pause-at N --ready FILE -- ARGS...   (train, paused in step N
        after its update: writes FILE, then waits until the stop was requested by a signal)
    python tests/test_stop_signals.py --nan-at N -- ARGS...                  (step N's real batch is NaN)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY = {"width": 4, "max_width": 16, "latent_dim": 8, "batch_size": 4, "max_rebalance_steps": 2}
EPOCHS, STEPS_PER_EPOCH = 3, 3  # 12 images, batches of 4
SAFETY_TIMEOUT = 600  # a hung child fails the test instead of the suite; never a pace to keep


# ----------------------------------------------------------------------------- the harness


def pause_in_step(step: int, ready: Path) -> None:
    """In step `step`, after its update and before its metrics line or checkpoint, write `ready`
    and wait until a signal has asked the trainer to stop (the handler runs in this wait)."""
    from service import trainer

    # every step's result is a RebalanceResult, made once per step whether the margin loop ran in
    # Python (rebalance) or in the backend's fused call
    result_of_step, request_stop = trainer.RebalanceResult, trainer.Trainer.request_stop
    calls, requested = 0, []

    def request_and_note(self, reason):
        requested.append(reason)
        return request_stop(self, reason)

    def result_after_a_pause(*args, **kwargs):
        nonlocal calls
        calls += 1  # one call per training step
        if calls == step:
            ready.write_text("paused")
            deadline = time.monotonic() + SAFETY_TIMEOUT
            while not requested:
                if time.monotonic() > deadline:  # the test is gone: end, not wait forever
                    print(f"no stop was requested within {SAFETY_TIMEOUT} s of the pause", file=sys.stderr, flush=True)
                    os._exit(3)
                time.sleep(0.01)
        return result_of_step(*args, **kwargs)

    trainer.Trainer.request_stop = request_and_note
    trainer.RebalanceResult = result_after_a_pause


def nan_batch_in_step(step: int) -> None:
    """The backend's fused step `step` sees a real batch of NaN: its losses and weights go NaN
    as a diverging run's do."""
    import numpy as np

    import backends

    make = backends.get

    def get_poisoned(name, config):
        backend = make(name, config)
        train_step, calls = backend.train_step, 0

        def poisoned(real, z, labels=None):
            nonlocal calls
            calls += 1
            return train_step(np.full_like(real, np.nan) if calls == step else real, z, labels)

        backend.train_step = poisoned
        return backend

    backends.get = get_poisoned


def harness(argv: list[str]) -> int:
    import argparse

    from service.run import main

    own, args = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = argparse.ArgumentParser()
    parser.add_argument("--pause-at", type=int, metavar="STEP")
    parser.add_argument("--ready", type=Path, metavar="FILE")
    parser.add_argument("--nan-at", type=int, metavar="STEP")
    options = parser.parse_args(own)
    if options.pause_at:
        pause_in_step(options.pause_at, options.ready)
    if options.nan_at:
        nan_batch_in_step(options.nan_at)
    return main(args)


if __name__ == "__main__":
    sys.exit(harness(sys.argv[1:]))


# ----------------------------------------------------------------------------- the tests

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from service import checkpoint as ckpt  # noqa: E402
from service.rundir import METRICS_FILE  # noqa: E402
from service.run import main  # noqa: E402

# TensorFlow's log settings unset, as a user's shell has them: stderr is what the user would see.
# One framework thread: the runs compared bit for bit must not differ by how threads split a sum.
ENV = {**{k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "LESIONGAN_TF_LOGS")},
       "NUMBA_NUM_THREADS": "1", "LESIONGAN_TF_THREADS": "1"}


@pytest.fixture
def tiny_data(tmp_path):
    rng = np.random.default_rng(0)
    data, config = tmp_path / "tiny.npz", tmp_path / "tiny.json"
    np.savez(data, train_images=rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8))
    config.write_text(json.dumps(TINY))
    return {"data": str(data), "config": str(config)}


def train_args(tiny_data, out, backend, *extra) -> list[str]:
    return ["train", "--data", tiny_data["data"], "--out", str(out), "--backend", backend, "--config", tiny_data["config"],
            "--image-size", "32", "--epochs", str(EPOCHS), "--no-progress", *extra]


def harness_command(*own: str, argv: list[str]) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *own, "--", *argv]


def train_in_subprocess(argv: list[str]) -> None:
    """`python -m service.run ARGV` with ENV (one framework thread); it must succeed."""
    done = subprocess.run([sys.executable, "-m", "service.run", *argv], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=SAFETY_TIMEOUT)
    assert done.returncode == 0, done.stderr[-800:]


def lines_of(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / METRICS_FILE).read_text().splitlines()]


def step_numbers(run_dir) -> list[int]:
    return [m["step"] for m in lines_of(run_dir) if m["type"] == "step"]


def final_state(run_dir) -> dict[str, np.ndarray]:
    _, arrays = ckpt.load_latest_valid(run_dir)
    return {k: v for k, v in arrays.items() if k not in ("meta/train_seconds", "meta/epoch_sums")}


@pytest.mark.slow
def test_sigint_mid_run_saves_a_checkpoint_exits_0_and_resume_finishes_the_run(tmp_path, tiny_data, backend_name):
    stop_step = 4  # in the second epoch, between checkpoints (only epoch ends save)
    run, ready = tmp_path / "run", tmp_path / "ready"
    process = subprocess.Popen(harness_command("--pause-at", str(stop_step), "--ready", str(ready),
                                               argv=train_args(tiny_data, run, backend_name)),
                               cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + SAFETY_TIMEOUT
        while not ready.exists():
            if process.poll() is not None:
                pytest.fail(f"training exited before step {stop_step} ({process.returncode}): {process.stderr.read()[-800:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"training did not reach step {stop_step}")
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)  # as Ctrl-C in a terminal
        stdout, stderr = process.communicate(timeout=SAFETY_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr[-800:]
    assert "stopped (SIGINT)" in stdout and f"run directory: {run}" in stdout
    assert step_numbers(run) == list(range(1, stop_step + 1))  # the step in flight finished, none after it
    assert [ckpt.step_of(p) for p in ckpt.list_checkpoints(run)][-1] == stop_step
    ckpt.load_checkpoint(ckpt.latest_checkpoint(run))  # whole and verified

    train_in_subprocess(["train", "--resume", str(run), "--no-progress"])  # threads as the stopped run's
    assert step_numbers(run) == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    straight = tmp_path / "straight"
    train_in_subprocess(train_args(tiny_data, straight, backend_name))
    stopped, reference = final_state(run), final_state(straight)
    assert stopped.keys() == reference.keys()
    for name in reference:
        np.testing.assert_array_equal(stopped[name], reference[name], err_msg=name)


@pytest.mark.slow
def test_a_nan_loss_exits_2_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data, backend_name):
    nan_step = 5
    run = tmp_path / "run"
    done = subprocess.run(harness_command("--nan-at", str(nan_step),
                                          argv=train_args(tiny_data, run, backend_name, "--checkpoint-every", "1")),
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=SAFETY_TIMEOUT)
    assert done.returncode == 2, done.stderr[-800:]
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: training diverged at step {nan_step} (d_loss=nan")
    last_good = ckpt.latest_checkpoint(run)
    assert ckpt.step_of(last_good) == nan_step - 1 and str(last_good) in done.stderr
    assert [ckpt.step_of(p) for p in ckpt.list_checkpoints(run)][-1] == nan_step - 1  # nothing saved from the NaN step
    arrays = ckpt.load_checkpoint(last_good)
    assert all(np.isfinite(v).all() for v in arrays.values() if v.dtype.kind == "f")
    assert lines_of(run)[-1]["type"] == "diverged" and lines_of(run)[-1]["step"] == nan_step

    # the kept checkpoint is a run to go on with (here without the NaN batch)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert ckpt.step_of(ckpt.latest_checkpoint(run)) == EPOCHS * STEPS_PER_EPOCH
