"""The TF backend's fused margin step (`train_step_rebalanced`: train_step and the rebalancing
loop in one compiled call) makes exactly the decisions of service.trainer.rebalance driven from
Python (train_step, then d_step / g_step), and a run trained through it resumes bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest

import backends.tf  # noqa: F401  (before TensorFlow itself: it sets TF start-up options)

from backends.config import GANConfig  # noqa: E402
from backends.noise import sample_noise  # noqa: E402
from backends.tf import TFBackend  # noqa: E402
from service import checkpoint as ckpt  # noqa: E402
from service.trainer import Trainer, rebalance  # noqa: E402

BATCH = 4


def tiny_config(**overrides) -> GANConfig:
    values = dict(image_size=32, width=4, max_width=16, latent_dim=8, batch_size=BATCH, dropout=0.2, seed=5,
                  margin=0.05, max_rebalance_steps=3)
    values.update(overrides)
    return GANConfig(**values)


def batches(config: GANConfig, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        real = rng.uniform(-1, 1, (BATCH, config.image_size, config.image_size, config.channels)).astype(np.float32)
        labels = rng.integers(0, config.num_classes, BATCH) if config.num_classes else None
        yield real, sample_noise(rng, BATCH, config).astype(np.float32), labels


def python_loop(backend, real, z, labels, margin, max_steps):
    d_loss, g_loss = backend.train_step(real, z, labels)
    r = rebalance(lambda: backend.d_step(real, z, labels), lambda: backend.g_step(z, labels), d_loss, g_loss,
                  margin, max_steps)
    return r.d_loss, r.g_loss, r.extra_d, r.extra_g


def full_state(backend) -> dict:
    return {**backend.get_weights(), **backend.get_optimizer_state(), **backend.get_rng_state()}


# float32 runs: the same kernels in a while loop as in separate calls, to the last bits or
# nearly (grappler may fuse a loop body's ops differently); float64: parity-tight
CASES = {
    "default-like": (tiny_config(diffaugment="translation", minibatch_std=2, ema_kimg=0.01), 1e-5),
    "g-retrained": (tiny_config(lr_d=1e-2, lr_g=1e-5), 1e-5),
    "conditional": (tiny_config(num_classes=3, d_conditioning="projection", g_conditioning="cbn",
                                condition_ramp_kimg=0.01), 1e-5),
    "float64": (tiny_config(dtype="float64", noise_inputs=True, image_size=32), 1e-10),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_the_fused_loop_makes_the_python_loops_decisions(case):
    config, tolerance = CASES[case]
    fused, python = TFBackend(config), TFBackend(config)
    extras = []
    for step, (real, z, labels) in enumerate(batches(config, 8)):
        got = fused.train_step_rebalanced(real, z, labels)
        want = python_loop(python, real, z, labels, config.margin, config.max_rebalance_steps)
        assert got[2:] == want[2:], f"step {step}: extra steps {got[2:]} against {want[2:]}"
        np.testing.assert_allclose(got[:2], want[:2], rtol=tolerance, atol=tolerance, err_msg=f"step {step}")
        extras.append(got[2:])
    a, b = full_state(fused), full_state(python)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=100 * tolerance, atol=100 * tolerance, err_msg=name)
    assert any(sum(e) for e in extras), "the case should rebalance at least once"
    assert fused.trace_counts()["train_step_rebalanced"] == 1  # no retracing, the smaller or equal batches alike


@pytest.mark.slow
def test_margin_and_cap_follow_the_arguments_and_zero_cap_is_a_plain_step():
    config = tiny_config()
    fused, plain = TFBackend(config), TFBackend(config)
    (real, z, _), = batches(config, 1)
    d_loss, g_loss, extra_d, extra_g = fused.train_step_rebalanced(real, z, max_steps=0)
    assert (extra_d, extra_g) == (0, 0)
    assert (d_loss, g_loss) == pytest.approx(plain.train_step(real, z), rel=1e-6)
    _, _, extra_d, extra_g = fused.train_step_rebalanced(real, z, margin=1e9, max_steps=5)
    assert (extra_d, extra_g) == (0, 0)  # within the margin: nothing more
    _, _, extra_d, extra_g = fused.train_step_rebalanced(real, z, margin=0.0, max_steps=2)
    assert 1 <= extra_d + extra_g <= 2
    assert fused.trace_counts()["train_step_rebalanced"] == 1


@pytest.mark.slow
def test_a_nan_loss_ends_the_fused_loop_as_it_ends_the_python_one():
    config = tiny_config(margin=0.0, max_rebalance_steps=5)
    fused = TFBackend(config)
    (real, z, _), = batches(config, 1)
    d_loss, g_loss, extra_d, extra_g = fused.train_step_rebalanced(np.full_like(real, np.nan), z)
    assert math.isnan(d_loss) and (extra_d, extra_g) == (0, 0)


def test_a_private_run_keeps_the_trainers_loop():
    backend = TFBackend(tiny_config(dp_noise=1.0, minibatch_std=0, pack=1))
    (real, z, _), = batches(backend.config, 1)
    with pytest.raises(ValueError, match="private"):
        backend.train_step_rebalanced(real, z)
    assert "train_step_rebalanced" not in backend.trace_counts()


def images(count: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(1).uniform(-1, 1, (count, size, size, 3)).astype(np.float32)


@pytest.mark.slow
def test_the_trainer_uses_the_fused_step_and_resumes_bit_for_bit(tmp_path):
    """Stopped mid-epoch and resumed through the fused step, a run ends where a straight one
    does: weights, optimizer state, RNG and logged losses (TensorFlow on one thread: conftest)."""
    config = tiny_config(diffaugment="translation", ema_kimg=0.01, lr_decay_from=0.25)
    quiet = dict(epochs=2, progress=False, sample_grid=False, loss_curve=False)
    straight = TFBackend(config)
    calls = {"fused": 0}
    fused_step = straight.train_step_rebalanced

    def counted(*args, **kwargs):
        calls["fused"] += 1
        return fused_step(*args, **kwargs)

    straight.train_step_rebalanced = counted
    Trainer(straight, images(12), run_dir=tmp_path / "a", **quiet).run()
    assert calls["fused"] == 6  # every batch through the fused step

    first = TFBackend(config)
    trainer = Trainer(first, images(12), run_dir=tmp_path / "b", **quiet)
    original = first.train_step_rebalanced

    def stop_after_4(*args, **kwargs):
        result = original(*args, **kwargs)
        if trainer.step == 3:
            trainer.request_stop("test")
        return result

    first.train_step_rebalanced = stop_after_4
    assert trainer.run().status == "stopped:test"
    resumed = TFBackend(config)
    second = Trainer(resumed, images(12), run_dir=tmp_path / "b", **quiet)
    second.restore(ckpt.load_latest_valid(tmp_path / "b")[1])
    assert second.run().step == 6
    a, b = full_state(straight), full_state(resumed)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    def logged(run):
        import json

        lines = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [(m["step"], m["d_loss"], m["g_loss"], m["rebalance_d"], m["rebalance_g"]) for m in lines
                if m["type"] == "step"]

    assert logged("a") == logged("b")
    assert sum(row[3] + row[4] for row in logged("a")) > 0  # it rebalanced


@pytest.mark.slow
def test_the_trainer_logs_the_same_run_through_either_path(tmp_path):
    """The trainer's results with the fused step against a backend whose fused step is hidden
    (the Python loop): the same extra-step counts and losses to float32 tolerance."""
    config = tiny_config()
    quiet = dict(epochs=1, progress=False, sample_grid=False, loss_curve=False)
    fused = TFBackend(config)
    Trainer(fused, images(16), run_dir=tmp_path / "fused", **quiet).run()
    python = TFBackend(config)
    python.train_step_rebalanced = None  # the trainer falls back to rebalance()
    Trainer(python, images(16), run_dir=tmp_path / "python", **quiet).run()

    import json

    def logged(run):
        return [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
                if json.loads(line)["type"] == "step"]

    a, b = logged("fused"), logged("python")
    assert [(m["rebalance_d"], m["rebalance_g"]) for m in a] == [(m["rebalance_d"], m["rebalance_g"]) for m in b]
    np.testing.assert_allclose([(m["d_loss"], m["g_loss"]) for m in a], [(m["d_loss"], m["g_loss"]) for m in b],
                               rtol=1e-5, atol=1e-5)
