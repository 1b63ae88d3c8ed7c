"""The in-training diversity check (service.diversity): the measure against its definition on
hand-made features, the verdict on a collapsed generator and on a diverse one, the checks at
their interval, the warning on stderr, and that the check changes nothing in training (both
backends; resume exact)."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from service import checkpoint as ckpt
from service.diversity import (
    COLLAPSE_THRESHOLD,
    DiversityCheck,
    coverage,
    diversity_noise,
    diversity_verdict,
    real_radii,
    reference_indices,
)
from service.imageio import from_uint8
from service.run import main
from service.synthetic import make_dataset
from service.trainer import Trainer
from test_trainer import ScriptedBackend, read_metrics, tiny_config, tiny_images, weights_equal


pytestmark = pytest.mark.usefixtures("single_numba_thread")  # tests/conftest.py


# --------------------------------------------------------------------------- the measure


def coverage_by_definition(real, fake, k):
    """Naeem et al. 2020, literally: real point i is covered when some fake lies within the
    distance from i to its k-th nearest other real point."""
    covered = 0
    for i, point in enumerate(real):
        others = sorted(float(np.linalg.norm(point - other)) for j, other in enumerate(real) if j != i)
        radius = others[k - 1]
        covered += any(float(np.linalg.norm(point - f)) <= radius for f in fake)
    return covered / len(real)


def test_coverage_on_hand_made_points():
    real = np.array([[0.0, 0], [1, 0], [3, 0], [6, 0], [10, 0]])
    fake = np.array([[0.4, 0], [9.0, 0], [100.0, 100]])
    # k=1 radii 1, 1, 2, 3, 4: the nearest fakes 0.4, 0.6, 2.6, 3 and 1 away cover all but the point at 3
    np.testing.assert_allclose(real_radii(real, 1), [1, 1, 2, 3, 4])
    assert coverage(real, fake, k=1) == pytest.approx(0.8)
    # k=2 radii 3, 2, 3, 4, 7: every point is covered
    np.testing.assert_allclose(real_radii(real, 2), [3, 2, 3, 4, 7])
    assert coverage(real, fake, k=2) == 1.0
    # one fake far from everything covers nothing
    assert coverage(real, np.array([[50.0, 50]]), k=3) == 0.0


@pytest.mark.parametrize("k", [1, 3, 5])
def test_coverage_matches_its_definition_and_the_reports(k):
    from service.validation.metrics import density_coverage

    rng = np.random.default_rng(k)
    real = rng.normal(size=(40, 6))
    fake = np.concatenate([rng.normal(size=(25, 6)), rng.normal(3.0, 0.1, size=(15, 6))])
    value = coverage(real, fake, k)
    assert value == pytest.approx(coverage_by_definition(real, fake, k))
    assert value == pytest.approx(density_coverage(real, fake, k)["coverage"])
    assert coverage(real, fake, k, radii=real_radii(real, k)) == value


def test_reference_slice_and_noise_are_fixed():
    assert reference_indices(10, 256).tolist() == list(range(10))
    index = reference_indices(1000, 256)
    assert len(index) == 256 and index[0] == 0 and index[-1] < 1000 and np.all(np.diff(index) > 0)
    np.testing.assert_array_equal(index, reference_indices(1000, 256))
    config = tiny_config()
    np.testing.assert_array_equal(diversity_noise(config, 5), diversity_noise(config, 5))
    assert not np.array_equal(diversity_noise(config, 5), diversity_noise(config.replace(seed=4), 5))


# --------------------------------------------------------------------------- the verdict


@pytest.fixture(scope="module")
def lesions():
    """Procedural lesion images: a 'training set' and, from another seed, more of the same kind."""
    train, _ = make_dataset(256, 32, seed=1)
    more, _ = make_dataset(256, 32, seed=2)
    return from_uint8(train), from_uint8(more)


def fixed_output(images):
    """A stand-in generator that always draws `images` (the same set whatever the noise)."""
    return types.SimpleNamespace(generate=lambda z, labels=None: images[: len(z)])


def test_a_collapsed_generator_is_called_collapsed_and_a_diverse_one_is_not(lesions):
    train, more = lesions
    check = DiversityCheck(train, None, tiny_config())
    collapsed = check.measure(fixed_output(np.repeat(more[:1], 256, axis=0)))
    diverse = check.measure(fixed_output(more))
    assert collapsed["collapsed"] and collapsed["coverage"] < 0.05
    assert not diverse["collapsed"] and diverse["coverage"] > 2 * COLLAPSE_THRESHOLD
    assert collapsed["judged"] and collapsed["images"] == 256 and collapsed["k"] == 3


def test_checks_in_the_warm_up_are_not_judged(lesions):
    train, more = lesions
    check = DiversityCheck(train, None, tiny_config(), warmup_images=1000)
    constant = fixed_output(np.repeat(more[:1], 256, axis=0))
    early = check.measure(constant, images_seen=999)
    assert not early["judged"] and not early["collapsed"] and early["coverage"] < 0.05
    assert check.measure(constant, images_seen=1000)["collapsed"]


def test_verdict_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert diversity_verdict(path) is None

    def write(*records):
        path.write_text("".join(json.dumps({"type": "diversity", "images": 256, "k": 3, **r}) + "\n" for r in records)
                        + '{"type": "step", "step": 1}\n{"torn')

    write({"step": 250, "coverage": 0.01, "judged": False, "collapsed": False})
    assert "too early to judge" in diversity_verdict(path)
    write({"step": 250, "coverage": 0.5, "judged": True, "collapsed": False},
          {"step": 500, "coverage": 0.03, "judged": True, "collapsed": True})
    assert "COLLAPSED" in diversity_verdict(path) and "0.03" in diversity_verdict(path)
    write({"step": 250, "coverage": 0.03, "judged": True, "collapsed": True},
          {"step": 500, "coverage": 0.6, "judged": True, "collapsed": False})
    assert "not collapsed now, but was" in diversity_verdict(path)
    write({"step": 250, "coverage": 0.6, "judged": True, "collapsed": False})
    assert ": not collapsed (lowest 0.60" in diversity_verdict(path)


# --------------------------------------------------------------------------- in the trainer


class FixedImagesBackend(ScriptedBackend):
    """The scripted test double whose G draws `images` whatever the noise."""

    def __init__(self, config, images):
        super().__init__(config)
        self.images = images

    def generate(self, z, labels=None):
        return self.images[np.arange(len(z)) % len(self.images)]


def scripted_trainer(tmp_path, images, generated, every, epochs=2, warmup=0):
    config = tiny_config(batch_size=4)
    trainer = Trainer(FixedImagesBackend(config, generated), images, run_dir=tmp_path / "run", epochs=epochs,
                      progress=False, sample_grid=False, loss_curve=False, diversity_every=every)
    trainer.diversity.warmup_images = warmup
    return trainer


def diversity_lines(run_dir):
    return [m for m in read_metrics(run_dir) if m["type"] == "diversity"]


def test_checks_run_at_the_interval_and_at_the_end(tmp_path, lesions):
    train, more = lesions
    trainer = scripted_trainer(tmp_path, train[:40], more, every=4)  # 10 steps an epoch, 20 in all
    trainer.run()
    lines = diversity_lines(tmp_path / "run")
    assert [m["step"] for m in lines] == [4, 8, 12, 16, 20]  # step 20 is the end: checked once
    assert set(lines[0]) >= {"coverage", "k", "images", "judged", "collapsed", "seconds"}
    assert lines[0]["images"] == 40

    other = scripted_trainer(tmp_path / "b", train[:40], more, every=7)
    other.run()
    assert [m["step"] for m in diversity_lines(tmp_path / "b" / "run")] == [7, 14, 20]  # 20: the end


def test_off_when_every_is_0_and_refused_when_negative(tmp_path, lesions):
    from service.errors import UserError

    train, more = lesions
    trainer = Trainer(FixedImagesBackend(tiny_config(), more), train[:40], run_dir=tmp_path / "run", epochs=1,
                      progress=False, sample_grid=False, loss_curve=False)
    assert trainer.diversity is None
    trainer.run()
    assert diversity_lines(tmp_path / "run") == []
    with pytest.raises(UserError, match="--diversity-every must be >= 0"):
        Trainer(FixedImagesBackend(tiny_config(), more), train[:40], run_dir=tmp_path / "r2", epochs=1,
                progress=False, diversity_every=-1)


def test_the_warning_fires_once_on_a_collapsed_generator_and_never_on_a_diverse_one(tmp_path, lesions, capsys):
    train, more = lesions
    scripted_trainer(tmp_path / "collapsed", train[:40], np.repeat(more[:1], 4, axis=0), every=4).run()
    err = capsys.readouterr().err
    assert err.count("the generator may have collapsed") == 1 and "warning: step 4:" in err
    assert err.count("\n") == 1
    assert all(m["collapsed"] for m in diversity_lines(tmp_path / "collapsed" / "run"))

    scripted_trainer(tmp_path / "diverse", train[:40], more, every=4).run()
    assert "collapsed" not in capsys.readouterr().err
    assert not any(m["collapsed"] for m in diversity_lines(tmp_path / "diverse" / "run"))


def test_no_warning_in_the_warm_up(tmp_path, lesions, capsys):
    train, more = lesions
    trainer = scripted_trainer(tmp_path, train[:40], np.repeat(more[:1], 4, axis=0), every=4, warmup=10_000)
    trainer.run()
    assert "collapsed" not in capsys.readouterr().err
    assert not any(m["judged"] for m in diversity_lines(tmp_path / "run"))


def test_the_loss_curve_draws_the_checks(tmp_path, lesions):
    from service.plots import plot_loss_curve

    train, more = lesions
    trainer = scripted_trainer(tmp_path, train[:40], np.repeat(more[:1], 4, axis=0), every=4, warmup=40)
    trainer.run()
    out = plot_loss_curve(tmp_path / "run" / "metrics.jsonl", tmp_path / "curve.png")
    import cv2

    assert cv2.imread(str(out)).shape[0] == 800  # three panels: 8 inches at 100 dpi


def test_a_private_run_has_no_check(tmp_path):
    config = tiny_config(dp_noise=1.0, minibatch_std=0)
    import backends

    trainer = Trainer(backends.get("numpy", config), tiny_images(12), run_dir=tmp_path / "run", epochs=1,
                      progress=False, diversity_every=5)
    assert trainer.diversity is None


@pytest.mark.parametrize("backend_name", ["numpy", pytest.param("tf", marks=pytest.mark.slow)])
def test_the_check_changes_nothing_in_training_and_resume_stays_exact(tmp_path, backend_name):
    """The same weights, optimizer state and random streams with checks at every step as
    without; and with them, a run stopped mid-way and resumed ends where the straight run does."""
    import backends

    config = tiny_config(max_rebalance_steps=2, lr_decay_from=0.5)
    images = from_uint8(make_dataset(12, 32, seed=5)[0])

    def trainer(run, every, backend=None):
        return Trainer(backend or backends.get(backend_name, config), images, run_dir=tmp_path / run, epochs=2,
                       progress=False, sample_grid=False, loss_curve=False, diversity_every=every)

    plain = trainer("plain", 0)
    plain.run()
    checked = trainer("checked", 1)
    checked.run()
    assert len(diversity_lines(tmp_path / "checked")) == 6
    assert weights_equal(plain.backend.get_weights(), checked.backend.get_weights())
    assert weights_equal(plain.backend.get_optimizer_state(), checked.backend.get_optimizer_state())
    assert weights_equal(plain.backend.get_rng_state(), checked.backend.get_rng_state())
    assert weights_equal(plain.state_arrays() | {"meta/train_seconds": 0, "meta/epoch_sums": 0},
                         checked.state_arrays() | {"meta/train_seconds": 0, "meta/epoch_sums": 0})

    first = trainer("resumed", 1)
    original_step = first.backend.train_step

    def stop_after_4(real, z, labels=None):
        losses = original_step(real, z, labels)
        if first.step == 3:
            first.request_stop("test")
        return losses

    first.backend.train_step = stop_after_4
    assert first.run().status == "stopped:test"
    second = trainer("resumed", 1)
    second.restore(ckpt.load_latest_valid(tmp_path / "resumed")[1])
    second.run()
    assert weights_equal(checked.backend.get_weights(), second.backend.get_weights())
    assert weights_equal(checked.backend.get_optimizer_state(), second.backend.get_optimizer_state())
    straight = [(m["step"], m["coverage"]) for m in diversity_lines(tmp_path / "checked")]
    assert [(m["step"], m["coverage"]) for m in diversity_lines(tmp_path / "resumed")] == straight


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def tiny_npz(tmp_path):
    images, labels = make_dataset(24, 32, seed=3)
    path = tmp_path / "tiny.npz"
    np.savez(path, train_images=images, train_labels=labels)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"width": 4, "max_width": 16, "latent_dim": 8, "batch_size": 4}))
    return ["--data", str(path), "--config", str(config), "--image-size", "32", "--backend", "numpy", "--no-progress"]


def test_train_checks_at_the_given_interval_and_says_how_it_ended(tmp_path, tiny_npz, capsys):
    out = tmp_path / "run"
    assert main(["train", *tiny_npz, "--out", str(out), "--epochs", "2", "--diversity-every", "5"]) == 0
    assert [m["step"] for m in diversity_lines(out)] == [5, 10, 12]
    assert "diversity: coverage" in capsys.readouterr().out
    assert main(["train", "--resume", str(out), "--epochs", "3", "--diversity-every", "0", "--no-progress"]) == 0
    assert [m["step"] for m in diversity_lines(out)] == [5, 10, 12]  # off on the resumed part


def test_default_interval_checks_the_end_of_a_short_run(tmp_path, tiny_npz):
    out = tmp_path / "run"
    assert main(["train", *tiny_npz, "--out", str(out), "--epochs", "1"]) == 0
    assert [m["step"] for m in diversity_lines(out)] == [6]


@pytest.mark.parametrize("value, message", [
    ("-1", "--diversity-every must be >= 0 steps"),
    ("x", "--diversity-every: invalid int value"),
])
def test_bad_intervals_exit_2_with_one_line(tmp_path, tiny_npz, capsys, value, message):
    assert main(["train", *tiny_npz, "--out", str(tmp_path / "r"), "--diversity-every", value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "r").exists()


def test_a_private_run_refuses_an_explicit_interval(tmp_path, tiny_npz, capsys):
    private = tmp_path / "dp.json"
    private.write_text(json.dumps({"width": 4, "max_width": 16, "latent_dim": 8, "batch_size": 4, "dp_noise": 1.0,
                                   "minibatch_std": 0, "dp_delta": 1e-3}))
    args = [a if a != tiny_npz[3] else str(private) for a in tiny_npz]
    assert main(["train", *args, "--out", str(tmp_path / "r"), "--diversity-every", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "privacy accountant" in err
    assert not (tmp_path / "r").exists()


def test_the_main_job_summary_says_whether_the_run_collapsed(tmp_path):
    """run_training's outcome carries the run's verdict (read from its metrics.jsonl); the main
    job's summary prints it."""
    from service.main_job import summary_lines
    from service.training import diversity_verdict_of

    run = tmp_path / "run"
    run.mkdir()
    outcome = {"run_dir": run, "generated": run / "generated", "report": run / "report.html", "results": {},
               "seconds": 1.0, "diversity": diversity_verdict_of(run)}
    assert "diversity: not checked during training" in "\n".join(summary_lines(outcome))
    (run / "metrics.jsonl").write_text(json.dumps(
        {"type": "diversity", "step": 500, "coverage": 0.02, "k": 3, "images": 256, "judged": True, "collapsed": True}
    ) + "\n")
    outcome["diversity"] = diversity_verdict_of(run)
    assert any("COLLAPSED" in line for line in summary_lines(outcome))
