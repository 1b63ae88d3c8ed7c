import subprocess
import sys

import pytest

from service.run import main


def test_unknown_option_is_exit_2_with_one_line(capsys):
    assert main(["--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unrecognized arguments" in err


def test_a_shard_size_of_0_is_one_line_of_error_not_the_default(tmp_path, capsys):
    argv = ["audit", "--fake", str(tmp_path / "fake"), "--train", str(tmp_path / "train"), "--out", str(tmp_path / "out"),
            "--shard-size", "0", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--shard-size must be positive, got 0" in err
    assert not (tmp_path / "out").exists()


def test_validate_sample_of_0_is_one_line_of_error(tmp_path, capsys):
    import numpy as np

    from service.imageio import save_png

    for folder in ("real", "fake"):
        (tmp_path / folder).mkdir()
        for i in range(2):
            save_png(tmp_path / folder / f"{i}.png", np.full((8, 8, 3), 40 * i, np.uint8))
    argv = ["validate", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"), "--out", str(tmp_path / "out"),
            "--sample", "0", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--sample must be a positive number of images, got 0" in err
    assert not (tmp_path / "out").exists()


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "service.run", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in ("train", "generate", "validate", "tune", "sample-data"):
        assert name in out.stdout


def run_cli(*args, env_extra=None, cwd=None):
    """`python -m service.run ARGS` in a fresh process, with TensorFlow's log settings unset
    (as a user's shell has them), so what the user would see is what the test sees."""
    import os
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "LESIONGAN_TF_LOGS")}
    env.update(env_extra or {})
    repo = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-m", "service.run", *args], capture_output=True, text=True,
                          env=env, cwd=cwd or repo, timeout=600)


def test_bad_input_is_one_line_with_no_framework_noise(tmp_path):
    import numpy as np

    np.savez(tmp_path / "rank.npz", train_images=np.zeros((2, 32, 32, 3, 1), np.uint8))
    np.savez(tmp_path / "none.npz", pictures=np.zeros((2, 32, 32, 3), np.uint8))
    cases = [
        (["train", "--data", str(tmp_path / "rank.npz"), "--out", str(tmp_path / "a"), "--backend", "tf"], "must be (N, H, W)"),
        (["train", "--data", str(tmp_path / "none.npz"), "--out", str(tmp_path / "b"), "--backend", "tf"], "no image array"),
        (["train", "--out", str(tmp_path / "c"), "--time-budget", "-3", "--backend", "tf"], "--time-budget must be > 0"),
    ]
    for args, message in cases:
        done = run_cli(*args)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


@pytest.mark.slow
def test_a_tf_run_keeps_tensorflow_start_up_logs_out_unless_verbose(tmp_path):
    import numpy as np

    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "tiny.npz", train_images=images)
    common = ["--data", str(tmp_path / "tiny.npz"), "--backend", "tf", "--epochs", "1", "--batch-size", "4", "--no-progress"]
    quiet = run_cli("train", "--out", str(tmp_path / "quiet"), *common)
    assert quiet.returncode == 0, quiet.stderr[-500:]
    assert quiet.stderr == "", quiet.stderr


def test_verbose_asks_for_the_framework_logs(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LESIONGAN_TF_LOGS", raising=False)
    assert main(["train", "--out", str(tmp_path / "r"), "--time-budget", "-1", "--verbose"]) == 2
    import os

    assert os.environ["LESIONGAN_TF_LOGS"] == "1"


@pytest.mark.slow
def test_the_gpu_check_says_in_one_line_that_there_is_no_gpu_and_exits_0(tmp_path):
    """The CPU path of bench/gpu_check.py (this machine has no GPU; a device check runs it)."""
    import json
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, whatever the machine has
    done = subprocess.run([sys.executable, str(repo / "bench" / "gpu_check.py"), "--out", str(tmp_path / "gpu.json")],
                          capture_output=True, text=True, env=env, cwd=repo, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.count("\n") == 1 and "no GPU" in done.stdout
    assert json.loads((tmp_path / "gpu.json").read_text()) == {"gpu": None}
