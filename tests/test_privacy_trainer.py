"""A private run in the trainer: Poisson-sampled real batches, every real-image D step counted,
the accountant resumed exactly, the budget's stop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backends.config import GANConfig
from service import checkpoint as ckpt
from service import privacy
from service.errors import UserError
from service.trainer import Trainer

COUNT = 40  # q = 4 / 40


def private_config(**changes) -> GANConfig:
    values = dict(image_size=32, width=4, max_width=16, latent_dim=8, base_side=4, batch_size=4, seed=3,
                  dropout=0.2, dp_noise=1.5, dp_clip=1.0, margin=0.0, max_rebalance_steps=2)
    values.update(changes)
    return GANConfig(**values)


def images(count=COUNT, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=(count, 32, 32, 3)).astype(np.float32)


def trainer(backend, run_dir, epochs, **options):
    return Trainer(backend, images(), run_dir=run_dir, epochs=epochs, progress=False, sample_grid=False,
                   loss_curve=False, **options)


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def make_backend(backend_name):
    import backends

    return lambda config: backends.get(backend_name, config)


def test_real_batches_are_poisson_samples_and_every_d_step_is_counted(tmp_path):
    import backends

    config = private_config()
    backend = backends.get("numpy", config)
    real_counts = []
    for method in ("train_step", "d_step"):
        original = getattr(backend, method)

        def spy(real, z, labels=None, original=original):
            real_counts.append(len(real))
            assert len(z) == config.batch_size
            return original(real, z, labels)

        setattr(backend, method, spy)
    run = trainer(backend, tmp_path, epochs=3)
    result = run.run()
    assert result.step == 3 * COUNT // 4 and result.rebalance_d > 0
    # each D step on real images took its own sample and counted once
    assert run.accountant.steps == len(real_counts) == result.step + result.rebalance_d
    assert len(set(real_counts)) > 1  # sizes vary: Poisson, not fixed batches
    assert abs(np.mean(real_counts) - 4.0) < 4 * np.sqrt(4.0 * 0.9 / len(real_counts))
    epochs = [m for m in read_metrics(tmp_path) if m["type"] == "epoch"]
    assert epochs[-1]["privacy_steps"] == run.accountant.steps
    assert epochs[-1]["epsilon"] == pytest.approx(privacy.epsilon(0.1, 1.5, run.accountant.steps, 1e-5))
    assert epochs[0]["epsilon"] < epochs[-1]["epsilon"]
    arrays = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))
    assert int(arrays["meta/privacy/steps"]) == run.accountant.steps


def test_delta_at_or_above_one_over_n_is_refused(tmp_path):
    import backends

    with pytest.raises(UserError, match="dp_delta"):
        trainer(backends.get("numpy", private_config(dp_delta=1.0 / COUNT)), tmp_path, epochs=1)


@pytest.mark.slow
def test_private_stop_and_resume_gives_identical_weights_and_privacy(tmp_path, make_backend):
    config = private_config()
    straight = make_backend(config)
    whole = trainer(straight, tmp_path / "a", epochs=2)
    whole.run()

    first = make_backend(config)
    run = trainer(first, tmp_path / "b", epochs=2)
    original = first.train_step

    def train_step_then_stop(real, z, labels=None):
        losses = original(real, z, labels)
        if run.step == 12:  # mid-epoch 2
            run.request_stop("test")
        return losses

    first.train_step = train_step_then_stop
    assert run.run().status == "stopped:test"
    resumed = make_backend(config)
    second = trainer(resumed, tmp_path / "b", epochs=2)
    second.restore(ckpt.load_latest_valid(tmp_path / "b")[1])
    assert second.accountant.steps == run.accountant.steps
    second.run()
    assert second.accountant.steps == whole.accountant.steps
    for name, value in straight.get_weights().items():
        np.testing.assert_array_equal(resumed.get_weights()[name], value, err_msg=name)
    epsilons = [m["epsilon"] for m in read_metrics(tmp_path / "b") if m["type"] == "epoch"]
    assert epsilons == [m["epsilon"] for m in read_metrics(tmp_path / "a") if m["type"] == "epoch"]


def test_budget_stops_the_run_cleanly_and_resume_cannot_exceed_it(tmp_path):
    import backends
    from service.rundir import create_run_dir

    config = private_config(dp_epsilon=1.5)
    allowed = privacy.max_steps(0.1, 1.5, 1.5, 1e-5)
    assert 2 < allowed < 3 * COUNT // 4
    run_dir = create_run_dir(tmp_path / "run", config, "numpy", {"source": "test"}, {"trainer": 3})
    run = trainer(backends.get("numpy", config), run_dir, epochs=3)
    result = run.run()
    assert result.status == "privacy_budget"
    assert run.accountant.steps <= allowed and run.accountant.epsilon() <= 1.5
    # the budget ran out at a batch's start or cut its rebalancing short: nothing was left for a batch
    assert run.accountant.steps == allowed
    latest = ckpt.latest_checkpoint(run_dir)
    assert ckpt.step_of(latest) == result.step
    recorded = json.loads((run_dir / "config.json").read_text())["privacy"]
    assert recorded["steps"] == allowed and recorded["epsilon"] <= 1.5 and recorded["delta"] == 1e-5

    again = trainer(backends.get("numpy", config), run_dir, epochs=3)
    again.restore(ckpt.load_latest_valid(run_dir)[1])
    assert again.run().status == "privacy_budget"
    assert again.step == result.step and again.accountant.steps == allowed
    assert ckpt.list_checkpoints(run_dir)[-1] == latest


def test_export_of_a_private_run_carries_its_epsilon(tmp_path):
    import backends
    from service.export import export_generator
    from service.rundir import create_run_dir

    config = private_config(max_rebalance_steps=0)
    run_dir = create_run_dir(tmp_path / "run", config, "numpy", {"source": "test"}, {"trainer": 3})
    run = trainer(backends.get("numpy", config), run_dir, epochs=1)
    run.run()
    written = export_generator(run_dir, tmp_path / "g.keras")
    assert written["privacy"]["steps"] == run.accountant.steps == COUNT // 4
    assert written["privacy"]["epsilon"] == pytest.approx(run.accountant.epsilon())
    assert written["privacy"]["delta"] == config.dp_delta


def test_every_manifest_row_of_a_private_run_carries_its_epsilon_and_delta(tmp_path):
    import backends
    from service.generation import generate_in_process, plan_job, read_manifest
    from service.rundir import create_run_dir

    config = private_config(max_rebalance_steps=0)
    run_dir = create_run_dir(tmp_path / "run", config, "numpy", {"source": "test"}, {"trainer": 3})
    run = trainer(backends.get("numpy", config), run_dir, epochs=1)
    run.run()
    job = plan_job(run_dir, 5, tmp_path / "images", backend="numpy")
    generate_in_process(job)
    rows = read_manifest(tmp_path / "images")
    assert len(rows) == 5
    assert [float(r["dp_epsilon"]) for r in rows] == [pytest.approx(run.accountant.epsilon(), rel=1e-5)] * 5
    assert [float(r["dp_delta"]) for r in rows] == [config.dp_delta] * 5
    recorded = json.loads((tmp_path / "images" / ".generation" / "job.json").read_text())
    assert recorded["dp_epsilon"] == pytest.approx(run.accountant.epsilon())


@pytest.mark.slow
def test_the_validation_report_of_a_private_run_opens_with_its_epsilon(tmp_path):
    import backends
    from service.rundir import create_run_dir
    from service.validation import validate_sets

    config = private_config(max_rebalance_steps=0)
    run_dir = create_run_dir(tmp_path / "run", config, "numpy", {"source": "test"}, {"trainer": 3})
    run = trainer(backends.get("numpy", config), run_dir, epochs=1)
    run.run()
    real = (np.random.default_rng(1).uniform(0, 255, (16, 32, 32, 3))).astype(np.uint8)
    fake = (np.random.default_rng(2).uniform(0, 255, (8, 32, 32, 3))).astype(np.uint8)
    result = validate_sets(real, fake, out_dir=tmp_path / "report", run_dir=run_dir, progress=False)
    assert result["privacy"]["epsilon"] == pytest.approx(run.accountant.epsilon())
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.index("Differential privacy: epsilon") < page.index("<h2>Metrics</h2>")
    plain = validate_sets(real, fake, out_dir=tmp_path / "plain", progress=False)
    assert plain["privacy"] is None and "Differential privacy" not in (tmp_path / "plain" / "report.html").read_text()
