"""The --dp-* options of `train` and the main job: any of them makes a private run (the `dp`
preset unless another is named); a budget without a noise multiplier fits the noise to the
planned steps by the accountant's own calibration; bad values are one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service import privacy, training
from service.data import Dataset
from service.errors import UserError
from service.run import main
from service.training import TrainingRequest, build_config, preset_of

COUNT = 64


def dataset(count=COUNT):
    images = np.random.default_rng(0).uniform(-1, 1, (count, 32, 32, 3)).astype(np.float32)
    return Dataset(images=images, labels=None, class_names=())


def config_for(**options):
    request = TrainingRequest(out="unused", **options)
    return build_config(request, 32, dataset())


def test_a_budget_without_noise_fits_the_noise_to_the_planned_steps(capsys):
    config = config_for(dp_epsilon=2.0, epochs=3, batch_size=8)
    assert config.private and config.preset == "dp" and config.dp_epsilon == 2.0
    steps, rate = 3 * (COUNT // 8), 8 / COUNT
    # the smallest sigma within the budget (rounded up): the planned steps spend at most E, and
    # a sigma 1% smaller would spend more
    assert privacy.epsilon(rate, config.dp_noise, steps, config.dp_delta) <= 2.0
    assert privacy.epsilon(rate, config.dp_noise * 0.99, steps, config.dp_delta) > 2.0
    assert config.dp_noise == pytest.approx(privacy.calibrate_noise(rate, steps, 2.0, config.dp_delta), abs=1e-5)
    assert f"spends epsilon 2 (delta 1e-05) in {steps} D steps" in capsys.readouterr().err


def test_more_planned_steps_need_more_noise_for_the_same_budget():
    few, many = config_for(dp_epsilon=4.0, epochs=2), config_for(dp_epsilon=4.0, epochs=20)
    assert many.dp_noise > few.dp_noise > 0


def test_explicit_noise_is_kept_and_the_budget_recorded():
    config = config_for(dp_epsilon=3.0, dp_noise=1.7, epochs=2)
    assert (config.dp_noise, config.dp_epsilon) == (1.7, 3.0)


def test_a_budget_with_a_time_budget_only_keeps_the_presets_noise(capsys):
    config = config_for(dp_epsilon=5.0, time_budget=60.0)
    assert config.dp_noise == 1.0 and config.dp_epsilon == 5.0
    assert "no --epochs" in capsys.readouterr().err


def test_any_dp_option_selects_the_private_preset_and_a_named_preset_wins():
    assert preset_of(TrainingRequest(dp_clip=0.5)) == "dp"
    assert preset_of(TrainingRequest()) == training.DEFAULT_PRESET
    assert preset_of(TrainingRequest(preset="seed", dp_noise=1.0)) == "seed"
    config = config_for(dp_clip=0.5, dp_delta=1e-6)
    assert config.private and (config.dp_clip, config.dp_delta) == (0.5, 1e-6)


def test_a_non_private_preset_with_a_budget_says_what_to_do():
    with pytest.raises(UserError, match="use --preset dp"):
        config_for(preset="default", dp_epsilon=3.0, epochs=1)


@pytest.mark.parametrize("flag, value", [("--dp-epsilon", "0"), ("--dp-noise", "-1"), ("--dp-clip", "nan"),
                                         ("--dp-delta", "inf")])
def test_bad_values_are_one_line_errors_before_anything_is_written(tmp_path, capsys, flag, value):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {flag} must be a number above 0")
    assert not out.exists()


def test_a_resumed_run_refuses_dp_options(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": {}}))
    assert main(["train", "--resume", str(run), "--dp-epsilon", "3"]) == 2
    assert "drop --dp-epsilon" in capsys.readouterr().err


def test_the_main_job_with_a_dp_option_trains_the_private_preset():
    """The main job's parser leaves the preset, backend and seed unset, as train's does, so a
    --dp-* option picks the private preset there too."""
    from backends import DEFAULT_BACKEND
    from service.commands.train import training_request
    from service.main_job import MainJob, job_request
    from service.run import build_parser

    request = job_request(MainJob(training=training_request(build_parser().parse_args(["--dp-epsilon", "4"]))))
    assert (request.preset, request.backend, request.seed, request.dp_epsilon) == ("dp", DEFAULT_BACKEND, 0, 4.0)
    request = job_request(MainJob(training=training_request(build_parser().parse_args([]))))
    assert request.preset == training.DEFAULT_PRESET


@pytest.mark.slow
def test_train_with_a_budget_spends_it_and_no_more(tmp_path, capsys):
    """The CLI end to end (numpy backend, tiny data): the fitted noise spends the budget over the
    planned epochs; the recorded epsilon is within it and close to it."""
    data = tmp_path / "data.npz"
    rng = np.random.default_rng(1)
    np.savez(data, images=rng.integers(0, 256, (COUNT, 32, 32, 3), dtype=np.uint8))
    out = tmp_path / "run"
    config = json.dumps({"width": 4, "max_width": 16, "latent_dim": 8, "batch_size": 8})
    (tmp_path / "small.json").write_text(config)
    assert main(["train", "--backend", "numpy", "--data", str(data), "--image-size", "32", "--epochs", "2",
                 "--config", str(tmp_path / "small.json"), "--dp-epsilon", "3", "--out", str(out),
                 "--no-progress", "--diversity-every", "0"]) == 0
    recorded = json.loads((out / "config.json").read_text())
    spent = recorded["privacy"]
    assert recorded["model"]["dp_epsilon"] == 3.0
    assert 2.9 < spent["epsilon"] <= 3.0
    assert spent["steps"] >= 2 * (COUNT // 8)
