"""The margin-balanced trainer: rebalancing logic (with a scripted test double of the Backend),
run-directory contents, exact resume, guards, image sizes and conditional training (numpy backend)."""

from __future__ import annotations

import json
import math
import types

import numpy as np
import pytest

from backends.base import Backend
from backends.config import GANConfig
from service import checkpoint as ckpt
from service.trainer import (
    Trainer,
    TrainingDiverged,
    grid_labels,
    lr_scale,
    rebalance,
    rng_from_arrays,
    rng_to_arrays,
    trainer_rng,
)

# --------------------------------------------------------------------------- test double


class ScriptedBackend(Backend):
    """Test double: losses come from scripts; every call is recorded. Never used by product code."""

    name = "scripted"

    def __init__(self, config, train_losses=(), d_losses=(), g_losses=()):
        super().__init__(config)
        self.train_losses = list(train_losses)
        self.d_losses = list(d_losses)
        self.g_losses = list(g_losses)
        self.calls = []
        self.weights = {"generator/w": np.zeros(2, np.float32)}
        self.counter = 0

    def _tick(self):
        self.counter += 1
        self.weights = {"generator/w": self.weights["generator/w"] + 1}

    def train_step(self, real, z, labels=None):
        self.calls.append(("train", real, z, labels))
        self._tick()
        return self.train_losses.pop(0) if self.train_losses else (0.7, 0.7)

    def d_step(self, real, z, labels=None):
        self.calls.append(("d", real, z, labels))
        self._tick()
        return self.d_losses.pop(0)

    def g_step(self, z, labels=None):
        self.calls.append(("g", None, z, labels))
        self._tick()
        return self.g_losses.pop(0)

    def generate(self, z, labels=None):
        return np.zeros((len(z), self.config.image_size, self.config.image_size, 3), np.float32)

    def discriminate(self, images, labels=None):
        return np.zeros(len(images), np.float32)

    def compute_gradients(self, real, z, labels=None):
        raise NotImplementedError

    def get_weights(self):
        return dict(self.weights)

    def set_weights(self, weights):
        self.weights = dict(weights)

    def get_optimizer_state(self):
        return {"opt/generator/iterations": np.array(self.counter, np.int64)}

    def set_optimizer_state(self, state):
        self.counter = int(state["opt/generator/iterations"])

    def get_rng_state(self):
        return {"counter": np.array(self.counter)}

    def set_rng_state(self, state):
        pass

    def set_learning_rate_scale(self, scale):
        self.calls.append(("lr_scale", scale, None, None))


def tiny_config(**changes) -> GANConfig:
    values = dict(image_size=32, width=4, max_width=16, latent_dim=8, batch_size=4, seed=3, dropout=0.2)
    values.update(changes)
    return GANConfig(**values)


def tiny_images(count=12, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=(count, size, size, 3)).astype(np.float32)


pytestmark = pytest.mark.usefixtures("single_numba_thread")  # tests/conftest.py


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- rebalance (pure)


def scripted(values):
    values = list(values)
    return lambda: values.pop(0)


def test_rebalance_retrains_discriminator_while_its_loss_is_higher_until_gap_closes():
    result = rebalance(scripted([0.8, 0.55]), scripted([]), d_loss=1.0, g_loss=0.5, margin=0.1, max_steps=10)
    assert (result.extra_d, result.extra_g) == (2, 0)
    assert result.d_loss == 0.55 and result.g_loss == 0.5


def test_rebalance_retrains_generator_while_its_loss_is_higher():
    result = rebalance(scripted([]), scripted([1.5, 1.2, 0.65]), d_loss=0.6, g_loss=2.0, margin=0.1, max_steps=10)
    assert (result.extra_d, result.extra_g) == (0, 3)
    assert result.g_loss == 0.65


def test_rebalance_stops_when_the_order_flips_even_outside_the_margin():
    result = rebalance(scripted([0.2, 0.1]), scripted([]), d_loss=1.0, g_loss=0.5, margin=0.1, max_steps=10)
    assert (result.extra_d, result.extra_g) == (1, 0)
    assert result.d_loss == 0.2  # 0.3 below G: outside the margin, but the order flipped


def test_rebalance_respects_the_cap():
    result = rebalance(scripted([0.9] * 100), scripted([]), d_loss=1.0, g_loss=0.5, margin=0.1, max_steps=4)
    assert (result.extra_d, result.extra_g) == (4, 0)
    assert rebalance(scripted([]), scripted([]), 1.0, 0.5, 0.1, 0).extra_d == 0


def test_rebalance_does_nothing_within_the_margin():
    result = rebalance(scripted([]), scripted([]), d_loss=0.7, g_loss=0.65, margin=0.1, max_steps=10)
    assert (result.extra_d, result.extra_g) == (0, 0)


def test_rebalance_ends_on_nan():
    result = rebalance(scripted([math.nan]), scripted([]), d_loss=1.0, g_loss=0.5, margin=0.1, max_steps=10)
    assert result.extra_d == 1 and math.isnan(result.d_loss)


# --------------------------------------------------------------------------- trainer with the double


def test_extra_steps_reuse_the_same_batch_and_noise_and_are_logged(tmp_path):
    config = tiny_config(margin=0.1, max_rebalance_steps=3)
    backend = ScriptedBackend(
        config,
        train_losses=[(1.0, 0.5), (0.6, 2.0), (0.7, 0.75)],
        d_losses=[0.8, 0.7, 0.65],  # batch 1: capped at 3 (gap 0.15 > 0.1 after each)
        g_losses=[0.5],  # batch 2: one G step flips the order
    )
    trainer = Trainer(backend, tiny_images(12), run_dir=tmp_path, epochs=1, progress=False, loss_curve=False)
    result = trainer.run()
    kinds = [c[0] for c in backend.calls]
    assert kinds == ["train", "d", "d", "d", "train", "g", "train"]
    train_1, extra = backend.calls[0], backend.calls[1:4]
    for call in extra:
        assert call[1] is train_1[1] and call[2] is train_1[2]  # same real batch, same z
    assert backend.calls[5][2] is backend.calls[4][2]
    steps = [m for m in read_metrics(tmp_path) if m["type"] == "step"]
    assert [(m["rebalance_d"], m["rebalance_g"]) for m in steps] == [(3, 0), (0, 1), (0, 0)]
    assert steps[0]["d_loss"] == 0.65 and steps[1]["g_loss"] == 0.5
    assert (result.rebalance_d, result.rebalance_g) == (3, 1)
    epoch_line = [m for m in read_metrics(tmp_path) if m["type"] == "epoch"][0]
    assert epoch_line["rebalance_d"] == 3 and epoch_line["rebalance_g"] == 1


def test_every_image_is_seen_once_per_epoch_and_epochs_reshuffle(tmp_path):
    images = np.arange(12, dtype=np.float32)[:, None, None, None] * np.ones((12, 32, 32, 3), np.float32)
    backend = ScriptedBackend(tiny_config())
    Trainer(backend, images, run_dir=tmp_path, epochs=2, progress=False, sample_grid=False, loss_curve=False).run()
    seen = [c[1][:, 0, 0, 0].astype(int) for c in backend.calls]
    first, second = np.concatenate(seen[:3]), np.concatenate(seen[3:])
    assert sorted(first) == list(range(12)) and sorted(second) == list(range(12))
    assert not np.array_equal(first, second)


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    backend = ScriptedBackend(tiny_config(), train_losses=[(0.7, 0.7), (0.7, 0.7), (math.nan, 0.7)])
    trainer = Trainer(backend, tiny_images(12), run_dir=tmp_path, epochs=3, checkpoint_every=1, progress=False, loss_curve=False)
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 3 \(d_loss=nan") as caught:
        trainer.run()
    assert "\n" not in str(caught.value)
    assert [ckpt.step_of(p) for p in ckpt.list_checkpoints(tmp_path)] == [1, 2]
    assert str(ckpt.list_checkpoints(tmp_path)[-1]) in str(caught.value)
    assert read_metrics(tmp_path)[-1]["type"] == "diverged"


def test_time_budget_stops_after_the_step_in_flight_and_saves(tmp_path):
    backend = ScriptedBackend(tiny_config())
    result = Trainer(backend, tiny_images(12), run_dir=tmp_path, time_budget=1e-9, progress=False, loss_curve=False).run()
    assert result.status == "time_budget" and result.step == 1
    assert [ckpt.step_of(p) for p in ckpt.list_checkpoints(tmp_path)] == [1]
    arrays = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))
    assert int(arrays["meta/batch_in_epoch"]) == 1 and int(arrays["meta/epoch"]) == 0


def test_epoch_hooks_see_metrics_and_can_stop(tmp_path):
    seen = []

    def validate(epoch, backend, run_dir):
        return {"swd": 10.0 / epoch}

    def on_epoch_end(epoch, backend, run_dir, metrics):
        seen.append((epoch, metrics["swd"], metrics["checkpoint"]))
        return epoch == 2

    backend = ScriptedBackend(tiny_config())
    result = Trainer(
        backend, tiny_images(12), run_dir=tmp_path, epochs=5, progress=False,
        validate=validate, on_epoch_end=on_epoch_end, loss_curve=False,
    ).run()
    assert result.status == "stopped:callback" and result.epoch == 2
    assert [(e, s) for e, s, _ in seen] == [(1, 10.0), (2, 5.0)]
    assert seen[1][2].endswith("ckpt-000000006.npz")


def test_bad_trainer_inputs_are_user_errors(tmp_path):
    from service.errors import UserError

    backend = ScriptedBackend(tiny_config())
    with pytest.raises(UserError, match="fewer than one batch"):
        Trainer(backend, tiny_images(3), run_dir=tmp_path, epochs=1)
    with pytest.raises(UserError, match="expects"):
        Trainer(backend, tiny_images(12, size=64), run_dir=tmp_path, epochs=1)
    with pytest.raises(UserError, match="epochs or a time budget"):
        Trainer(backend, tiny_images(12), run_dir=tmp_path)
    with pytest.raises(UserError, match="labels"):
        Trainer(ScriptedBackend(tiny_config(num_classes=3)), tiny_images(12), run_dir=tmp_path, epochs=1)


def test_lr_scale_holds_then_falls_linearly_to_zero():
    assert [lr_scale(p, 0.5) for p in (0.0, 0.5, 0.75, 0.9, 1.0)] == pytest.approx([1.0, 1.0, 0.5, 0.2, 0.0])
    assert [lr_scale(p, 0.0) for p in (0.0, 0.25, 1.0)] == pytest.approx([1.0, 0.75, 0.0])
    assert lr_scale(0.99, 1.0) == 1.0 and lr_scale(1.0, 1.0) == 1.0


def test_learning_rate_schedule_follows_the_planned_epochs_and_is_logged(tmp_path):
    config = tiny_config(batch_size=4, margin=10.0, lr_decay_from=0.5)
    backend = ScriptedBackend(config)
    trainer = Trainer(backend, tiny_images(16), run_dir=tmp_path / "run", epochs=2, progress=False,
                      sample_grid=False, loss_curve=False)
    trainer.run()
    scales = [c[1] for c in backend.calls if c[0] == "lr_scale"]
    expected = [lr_scale(step / 8, 0.5) for step in range(8)]  # 2 epochs x 4 batches, set before each step
    assert scales == pytest.approx(expected) and scales[-1] == pytest.approx(0.25)
    logged = [m["lr_scale"] for m in read_metrics(tmp_path / "run") if m["type"] == "step"]
    assert logged == pytest.approx(expected)
    assert float(trainer.state_arrays()["meta/progress"]) == pytest.approx(7 / 8)


def test_constant_rates_never_touch_the_backend_schedule(tmp_path):
    backend = ScriptedBackend(tiny_config(batch_size=4, margin=10.0))
    Trainer(backend, tiny_images(8), run_dir=tmp_path / "run", epochs=1, progress=False, sample_grid=False,
            loss_curve=False).run()
    assert not [c for c in backend.calls if c[0] == "lr_scale"]
    assert {m["lr_scale"] for m in read_metrics(tmp_path / "run") if m["type"] == "step"} == {1.0}


def test_time_budget_schedule_resumes_where_it_stopped(tmp_path, monkeypatch):
    """With a time budget the schedule runs over wall time; a resumed run spreads what is left
    of it over its new budget instead of starting again at the full rate."""
    clock = {"now": 0.0}
    monkeypatch.setattr("service.trainer.time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    config = tiny_config(batch_size=4, margin=10.0, lr_decay_from=0.0)
    backend = ScriptedBackend(config)
    original = backend.train_step

    def step_takes_ten_seconds(real, z, labels=None):
        clock["now"] += 10.0
        return original(real, z, labels)

    backend.train_step = step_takes_ten_seconds
    first = Trainer(backend, tiny_images(16), run_dir=tmp_path / "run", time_budget=40.0, progress=False,
                    sample_grid=False, loss_curve=False)
    assert first.run().status == "time_budget"
    scales = [c[1] for c in backend.calls if c[0] == "lr_scale"]
    assert scales == pytest.approx([1.0, 0.75, 0.5, 0.25])  # progress 0, 1/4, 2/4, 3/4 of 40 s
    backend.calls.clear()
    second = Trainer(backend, tiny_images(16), run_dir=tmp_path / "run", time_budget=20.0, progress=False,
                     sample_grid=False, loss_curve=False)
    second.restore(first.state_arrays())
    second.run()
    scales = [c[1] for c in backend.calls if c[0] == "lr_scale"]
    assert scales == pytest.approx([0.25, 0.125])  # the last quarter, over 20 s


def test_trainer_rng_state_round_trips_exactly():
    rng = trainer_rng(7)
    rng.standard_normal(5)
    rng.integers(0, 10, size=3, dtype=np.uint32)  # leaves a buffered half word
    copy = rng_from_arrays(rng_to_arrays(rng, "rng/trainer/"), "rng/trainer/")
    assert np.array_equal(rng.standard_normal(8), copy.standard_normal(8))
    assert np.array_equal(rng.integers(0, 2**31, 9, dtype=np.uint32), copy.integers(0, 2**31, 9, dtype=np.uint32))


def test_grid_labels_give_whole_rows_per_class():
    labels = grid_labels(3)
    rows = labels.reshape(8, 8)
    assert (rows == rows[:, :1]).all()
    assert sorted(set(labels)) == [0, 1, 2]
    assert list(rows[:, 0]) == sorted(rows[:, 0])
    assert grid_labels(0) is None


# --------------------------------------------------------------------------- numpy backend


@pytest.fixture
def make_backend(backend_name):
    """Real backends, each in turn (conftest's backend_name): the trainer's promises hold on both."""
    import backends

    return lambda config: backends.get(backend_name, config)


def weights_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_two_epoch_run_writes_the_run_directory(tmp_path, make_backend):
    from service.rundir import create_run_dir

    config = tiny_config(max_rebalance_steps=2)
    run_dir = create_run_dir(tmp_path / "run", config, "numpy", {"source": "test"}, {"trainer": 3})
    result = Trainer(make_backend(config), tiny_images(12), run_dir=run_dir, epochs=2, progress=False).run()
    assert result.status == "completed" and result.step == 6 and result.epoch == 2
    assert (run_dir / "config.json").is_file()
    assert [ckpt.step_of(p) for p in ckpt.list_checkpoints(run_dir)] == [3, 6]
    import cv2

    grid = cv2.imread(str(run_dir / "samples" / "epoch_0002.png"))
    assert (run_dir / "samples" / "epoch_0001.png").is_file() and grid.shape[0] > 8 * 32
    metrics = read_metrics(run_dir)
    steps = [m for m in metrics if m["type"] == "step"]
    assert [m["step"] for m in steps] == [1, 2, 3, 4, 5, 6]
    assert set(steps[0]) >= {"step", "epoch", "d_loss", "g_loss", "rebalance_d", "rebalance_g", "seconds"}
    assert [m["epoch"] for m in metrics if m["type"] == "epoch"] == [1, 2]
    assert (run_dir / "loss_curve.png").stat().st_size > 1000
    arrays = ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir))
    assert int(arrays["meta/step"]) == 6
    assert any(k.startswith("opt/") for k in arrays)
    backend = make_backend(config)
    assert sorted(k for k in arrays if k.startswith(f"rng/{backend.name}/")) == sorted(backend.get_rng_state())


@pytest.mark.slow
@pytest.mark.parametrize("lr_decay_from", [1.0, 0.25], ids=["constant-rates", "decaying-rates"])
def test_stop_and_resume_in_process_gives_identical_weights(tmp_path, make_backend, lr_decay_from):
    # bit for bit: conftest runs TensorFlow on one thread (multi-threaded sums may differ per run)
    config = tiny_config(dropout=0.2, max_rebalance_steps=2, lr_decay_from=lr_decay_from)
    images = tiny_images(12)

    straight = make_backend(config)
    Trainer(straight, images, run_dir=tmp_path / "a", epochs=2, progress=False, sample_grid=False, loss_curve=False).run()

    first = make_backend(config)
    trainer = Trainer(first, images, run_dir=tmp_path / "b", epochs=2, progress=False, sample_grid=False, loss_curve=False)
    original_step = first.train_step

    def train_step_then_stop_at_4(real, z, labels=None):  # stop mid-epoch 2
        losses = original_step(real, z, labels)
        if trainer.step == 3:
            trainer.request_stop("test")
        return losses

    first.train_step = train_step_then_stop_at_4
    assert trainer.run().status == "stopped:test"
    assert ckpt.step_of(ckpt.latest_checkpoint(tmp_path / "b")) == 4

    resumed = make_backend(config)
    second = Trainer(resumed, images, run_dir=tmp_path / "b", epochs=2, progress=False, sample_grid=False, loss_curve=False)
    second.restore(ckpt.load_latest_valid(tmp_path / "b")[1])
    result = second.run()
    assert result.step == 6
    assert weights_equal(straight.get_weights(), resumed.get_weights())
    assert weights_equal(straight.get_optimizer_state(), resumed.get_optimizer_state())
    steps = [m["step"] for m in read_metrics(tmp_path / "b") if m["type"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("image_size", [32, 64, 128, 256])
def test_each_image_size_trains_two_steps(tmp_path, image_size):
    import backends

    # the architecture at each size, once: test_spec and test_parity hold the two backends to it
    config = tiny_config(image_size=image_size, batch_size=2, max_rebalance_steps=1)
    trainer = Trainer(
        backends.get("numpy", config), tiny_images(4, size=image_size), run_dir=tmp_path, epochs=1,
        progress=False, sample_grid=False, loss_curve=False,
    )
    result = trainer.run()
    assert result.step == 2
    losses = [(m["d_loss"], m["g_loss"]) for m in read_metrics(tmp_path) if m["type"] == "step"]
    assert len(losses) == 2 and all(math.isfinite(v) for pair in losses for v in pair)


def test_conditional_training_feeds_labels_and_draws_rows_per_class(tmp_path, make_backend):
    config = tiny_config(num_classes=3)
    backend = make_backend(config)
    labels = np.arange(12) % 3
    seen = []
    original = backend.train_step

    def recording_train_step(real, z, labels=None):
        seen.append(labels)
        return original(real, z, labels)

    backend.train_step = recording_train_step
    Trainer(backend, tiny_images(12), labels, run_dir=tmp_path, epochs=1, progress=False, loss_curve=False).run()
    assert len(seen) == 3 and all(s is not None and s.shape == (4,) for s in seen)
    assert sorted(np.concatenate(seen)) == sorted(labels)
    assert (tmp_path / "samples" / "epoch_0001.png").is_file()
