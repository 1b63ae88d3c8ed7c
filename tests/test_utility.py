"""The `utility` command: the classifier arms are honest (shuffled synthetic labels teach
nothing; "synthetic" images that are in fact held-back real ones teach what the real ones do),
each arm trains on the images the docs promise, the classifier learns a clearly learnable task
with and without the classic augmentation, the augmentation keeps images in [-1, 1] with their
colour and only flips and turns them, the fast bootstrap scores as sklearn does, the sensitivity
at 80% specificity and the minimum detectable effect are what a hand or independent computation
gives, the verdicts follow the interval, bad input is one line and exit 2, a test set sharing
training images is warned about, and a second writer on one --out fails at once. Tiny images,
tiny budgets."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from backends.config import GANConfig
from run_fixtures import init_random_run
from service.data import CLASS_NAMES, Dataset
from service import files
from service.run import main
from service.utility import ARMS, UtilitySettings, evaluate_arms
from service.utility.arms import BASELINES, arm_images, scarce_indices, synthetic_counts, top_up
from service.utility.stats import (
    MDE_FACTOR, bootstrap_difference, score, sensitivity_at_specificity, weighted_auc,
)
from service.utility.settings import shared_images
from service.utility.summary import verdict

REPO = Path(__file__).resolve().parents[1]

SIZE = 32
FAST = dict(seeds=(0, 1), epochs=12, bootstrap=50)


def colour_classes(per_class, seed: int) -> Dataset:
    """Class c: noise with a brighter channel c and a darker blob, a task a small CNN learns
    in a few epochs."""
    rng = np.random.default_rng(seed)
    per_class = np.broadcast_to(per_class, (3,))
    labels = np.repeat(np.arange(3), per_class)
    images = rng.normal(0.0, 0.35, (len(labels), SIZE, SIZE, 3)).astype(np.float32)
    images[np.arange(len(labels)), :, :, labels] += 0.6
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in range(len(labels)):
        cy, cx = rng.integers(8, SIZE - 8, 2)
        images[i][(yy - cy) ** 2 + (xx - cx) ** 2 < 20] -= 0.5
    return Dataset(images=np.clip(images, -1, 1), labels=labels.astype(np.int64), class_names=CLASS_NAMES)


def by_class(dataset: Dataset, labels=None) -> dict[int, np.ndarray]:
    labels = dataset.labels if labels is None else labels
    return {c: dataset.images[labels == c] for c in range(3)}


@pytest.fixture(scope="module")
def data():
    return colour_classes(40, seed=1), colour_classes(20, seed=2), colour_classes(40, seed=3)


@pytest.mark.parametrize("classifier", ["features", pytest.param("cnn", marks=pytest.mark.slow)])
def test_held_back_real_images_as_synthetic_score_as_the_real_arm(data, classifier):
    real, test, held_back = data
    settings = UtilitySettings(arms=("real", "synthetic"), classifier=classifier, **FAST)
    summary = evaluate_arms(real, test, by_class(held_back), CLASS_NAMES, settings)
    real_ba = summary["arms"]["real"]["balanced_accuracy"]["mean"]
    tstr_ba = summary["arms"]["synthetic"]["balanced_accuracy"]["mean"]
    assert real_ba >= 0.9  # the task is learnable by the fixed classifier
    assert abs(tstr_ba - real_ba) <= 0.1
    assert summary["arms"]["synthetic"]["positive_auc"]["mean"] >= 0.9
    difference = summary["arms"]["synthetic"]["difference"]["balanced_accuracy"]
    assert difference["low"] <= difference["difference"] <= difference["high"]
    assert summary["arms"]["synthetic"]["against"] == "real"


def test_shuffled_synthetic_labels_give_about_chance(data):
    real, test, held_back = data
    shuffled = np.random.default_rng(0).permutation(held_back.labels)
    settings = UtilitySettings(arms=("synthetic",), **FAST)
    summary = evaluate_arms(real, test, by_class(held_back, shuffled), CLASS_NAMES, settings)
    assert summary["arms"]["synthetic"]["balanced_accuracy"]["mean"] <= 0.6  # chance is 1/3
    assert summary["arms"]["synthetic"]["positive_auc"]["mean"] <= 0.7  # chance is 0.5


def test_arms_take_the_images_the_docs_promise():
    labels = np.array([0] * 8 + [1] * 2 + [2] * 4)
    images = np.arange(len(labels), dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 3), np.float32)
    scarce = scarce_indices(labels, 0.25, seed=0)
    assert np.bincount(labels[scarce]).tolist() == [2, 1, 1]  # a quarter of each class, at least one
    synthetic = {c: np.full((20, 2, 2, 3), 100 + c, np.float32) for c in range(3)}
    positive = 1
    assert top_up(np.bincount(labels)).tolist() == [0, 6, 4]
    # the synthetic arm: 8 of class 0; ratio 2: 16 / 4 / 8; minority oversampling: 6 of class 1
    assert synthetic_counts(labels, scarce, 3, ARMS, positive).tolist() == [16, 6, 8]

    def composition(arm):
        x, y, augment = arm_images(arm, images, labels, scarce, synthetic, positive)
        real = x[:, 0, 0, 0] < 100
        assert np.all(np.diff(real.astype(int)) <= 0), "the real images first, then generated ones"
        return np.bincount(y[real], minlength=3).tolist(), np.bincount(y[~real], minlength=3).tolist(), augment

    assert composition("real") == ([8, 2, 4], [0, 0, 0], False)
    assert composition("synthetic") == ([0, 0, 0], [8, 2, 4], False)
    # the ratio sweep: synthetic:real 0.5, 1, 2 in the real set's class proportions
    assert composition("real+synthetic-0.5") == ([8, 2, 4], [4, 1, 2], False)
    assert composition("real+synthetic-1") == ([8, 2, 4], [8, 2, 4], False)
    assert composition("real+synthetic-2") == ([8, 2, 4], [16, 4, 8], False)
    # minority oversampling: only the positive class gains images, up to the largest class's count
    assert composition("real+synthetic-minority") == ([8, 2, 4], [0, 6, 0], False)
    assert composition("scarce") == ([2, 1, 1], [0, 0, 0], False)
    assert composition("scarce+synthetic") == ([2, 1, 1], [0, 1, 1], False)
    assert composition("real+augment") == ([8, 2, 4], [0, 0, 0], True)
    assert composition("real+augment+synthetic") == ([8, 2, 4], [8, 2, 4], True)
    assert BASELINES["real+augment+synthetic"] == "real+augment" and BASELINES["scarce+synthetic"] == "scarce"
    assert {BASELINES[a] for a in ARMS if a.startswith("real+synthetic")} == {"real"}


def test_the_positive_class_is_melanoma_else_the_smallest_else_the_users():
    from service.errors import UserError
    from service.utility import positive_class

    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
    assert positive_class(CLASS_NAMES, labels) == CLASS_NAMES.index("melanoma")
    assert positive_class(("a", "b", "c"), labels) == 2
    assert positive_class(("a", "b", "c"), labels, "a") == 0
    with pytest.raises(UserError, match="not a class of the run"):
        positive_class(("a", "b", "c"), labels, "melanoma")


def pattern_classes(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: a fine checkerboard, class 1: a dark disc, class 2: stripes, each on noise with
    a tint of its own: what any working classifier tells apart, turned or mirrored."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), per_class)
    images = rng.normal(0.0, 0.25, (len(labels), SIZE, SIZE, 3)).astype(np.float32)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i, c in enumerate(labels):
        if c == 0:
            images[i] += 0.4 * (((yy // 2 + xx // 2) % 2)[..., None] - 0.5)
        elif c == 1:
            cy, cx = rng.integers(10, SIZE - 10, 2)
            images[i][(yy - cy) ** 2 + (xx - cx) ** 2 < 36] -= 0.6
        else:
            images[i] += 0.4 * (((yy + rng.integers(4)) // 2 % 2)[..., None] - 0.5)
        images[i, :, :, c] += 0.25
    return np.clip(images, -1, 1), labels.astype(np.int64)


@pytest.mark.slow
@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
def test_the_classifier_learns_a_clearly_learnable_task(augment):
    from backends.tf.classifier import predict_proba, train_classifier

    train_x, train_y = pattern_classes(100, seed=4)
    test_x, test_y = pattern_classes(40, seed=5)
    settings = UtilitySettings(epochs=15)
    for seed in (0, 1):
        model = train_classifier(train_x, train_y, 3, augment, seed, settings, steps=15 * 5)
        balanced = score(test_y, predict_proba(model, test_x), positive=1)["balanced_accuracy"]
        assert balanced >= 0.9, (seed, balanced)  # chance is 1/3; one class for everything scores 1/3


def apply(layers, images, training=True):
    for layer in layers:
        images = layer(images, training=training)
    return np.asarray(images)


def square_symmetries(image):
    return [np.rot90(flipped, k) for flipped in (image, image[:, ::-1]) for k in range(4)]


def test_augmentation_only_flips_and_turns_by_right_angles():
    import keras

    from backends.tf.classifier import augmentation_layers, square_symmetry_layer

    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).uniform(-1, 1, (200, 8, 8, 3)).astype(np.float32)
    moved = apply([square_symmetry_layer()], images)
    which = []
    for before, after in zip(images, moved):
        matches = [k for k, t in enumerate(square_symmetries(before)) if np.array_equal(t, after)]
        assert matches, "an image was not moved by an exact flip or quarter turn (pixels changed)"
        which.append(matches[0])
    assert sorted(set(which)) == list(range(8))  # every flip and turn of the square happens
    assert np.array_equal(apply(augmentation_layers(), images, training=False), images)  # inference: untouched


def test_colour_jitter_keeps_the_value_range_and_the_colour():
    import keras

    from backends.tf.classifier import BRIGHTNESS, augmentation_layers

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    spread = rng.uniform(-1, 1, (100, 16, 16, 3)).astype(np.float32)
    out = apply(augmentation_layers(), spread)
    assert out.min() >= -1 and out.max() <= 1
    # values stay spread over [-1, 1] (Keras' default value_range (0, 255) clipped every negative value to 0)
    assert np.mean(out < -0.5) > 0.15 and np.mean(out == 0) < 0.01
    # away from the range's ends (no clipping): every channel shifts by the same amount, at most
    # the brightness jitter, so the differences between channels (the lesion colour) are kept
    tinted = (rng.uniform(-0.5, 0.5, (100, 16, 16, 3)) * [0.5, 0.4, 0.3] + [0.1, -0.05, -0.2]).astype(np.float32)
    shift = apply(augmentation_layers(), tinted).mean(axis=(1, 2)) - tinted.mean(axis=(1, 2))
    assert np.abs(shift).max() <= 2 * BRIGHTNESS + 1e-5  # BRIGHTNESS is a share of the 2-wide range
    assert np.abs(shift - shift[:, :1]).max() <= 1e-5
    assert np.abs(shift).max() > 0.5 * BRIGHTNESS  # it does jitter


def test_fused_batch_norm_computes_what_keras_does():
    import keras

    from backends.tf.classifier import batch_norm_layer

    x = np.random.default_rng(2).normal(1.0, 2.0, (16, 8, 8, 5)).astype(np.float32)
    fused, plain = batch_norm_layer(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    fused.build(x.shape), plain.build(x.shape)
    rng = np.random.default_rng(3)
    weights = [rng.normal(1, 0.2, 5).astype(np.float32), rng.normal(0, 0.2, 5).astype(np.float32),
               rng.normal(0, 0.2, 5).astype(np.float32), rng.uniform(0.5, 2, 5).astype(np.float32)]
    fused.set_weights(weights), plain.set_weights(weights)
    np.testing.assert_allclose(np.asarray(fused(x, training=True)), np.asarray(plain(x, training=True)), atol=1e-5)
    for a, b in zip(fused.get_weights(), plain.get_weights()):  # the moving statistics, updated alike
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(fused(x, training=False)), np.asarray(plain(x, training=False)), atol=1e-5)


def test_fast_auc_is_sklearns_on_the_resampled_images():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(2, 80))
        scores = np.round(rng.normal(size=n), int(rng.integers(0, 3)))  # few decimals: many ties
        positive = rng.random(n) < rng.uniform(0.1, 0.9)
        counts = rng.integers(0, 4, (4, n))
        fast = weighted_auc(scores, positive, counts)
        for row, auc in zip(counts, fast):
            drawn = np.repeat(np.arange(n), row)
            if 0 < positive[drawn].sum() < len(drawn):
                assert abs(auc - roc_auc_score(positive[drawn], scores[drawn])) <= 1e-9
            else:
                assert np.isnan(auc)


def reference_scores(labels, proba, positive):
    """The scores written out plainly with sklearn, one classifier on one (resampled) test set."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score, roc_curve

    predicted = proba.argmax(axis=1)
    present = [c for c in range(proba.shape[1]) if np.any(labels == c)]
    sensitivity = np.array([np.mean(predicted[labels == c] == c) if c in present else np.nan
                            for c in range(proba.shape[1])])
    auc = np.array([roc_auc_score(labels == c, proba[:, c]) if 0 < np.sum(labels == c) < len(labels) else np.nan
                    for c in range(proba.shape[1])])
    is_positive = labels == positive
    if 0 < is_positive.sum() < len(labels):
        fpr, tpr, _ = roc_curve(is_positive, proba[:, positive], drop_intermediate=False)
        at_spec = tpr[fpr <= 0.2 + 1e-12].max()
    else:
        at_spec = np.nan
    ba = balanced_accuracy_score(labels, predicted) if set(predicted) <= set(present) else np.nanmean(sensitivity)
    return {"balanced_accuracy": ba, "sensitivity": sensitivity, "auc": auc, "macro_auc": np.nanmean(auc),
            "positive_auc": auc[positive], "positive_sensitivity_at_specificity": at_spec}


def bootstrap_one_resample_at_a_time(labels, arm_probas, base_probas, resamples, seed, positive=1):
    """The bootstrap scored plainly: `reference_scores` on each resample in turn."""
    rng = np.random.default_rng(seed)
    draws = {}
    for _ in range(resamples):
        idx = rng.integers(0, len(labels), len(labels))
        arm = [reference_scores(labels[idx], p[idx], positive) for p in arm_probas]
        base = [reference_scores(labels[idx], p[idx], positive) for p in base_probas]
        for k in arm[0]:
            draws.setdefault(k, []).append(np.mean([a[k] for a in arm], axis=0) - np.mean([b[k] for b in base], axis=0))
    return {k: np.array(v) for k, v in draws.items()}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference's nanmean of a resample without a class
@pytest.mark.parametrize("n", [9, 150])
def test_the_bootstrap_and_the_detectable_difference_are_what_scoring_each_resample_gives(n):
    rng = np.random.default_rng(n)
    labels = rng.choice(3, n, p=[0.6, 0.15, 0.25])
    arm, base = ([np.round(rng.dirichlet(np.ones(3), n), 1) for _ in range(3)] for _ in range(2))  # ties
    fast = bootstrap_difference(labels, arm, base, 100, positive=1, seed=5)
    slow = bootstrap_one_resample_at_a_time(labels, arm, base, 100, seed=5)
    for key, draws in slow.items():
        np.testing.assert_allclose(fast[key]["low"], np.nanpercentile(draws, 2.5, axis=0), atol=1e-9)
        np.testing.assert_allclose(fast[key]["high"], np.nanpercentile(draws, 97.5, axis=0), atol=1e-9)
        # 80% power at the two-sided 5% level: (1.959964 + 0.841621) standard errors
        np.testing.assert_allclose(fast[key]["mde"], 2.801585 * np.nanstd(draws, axis=0, ddof=1), rtol=1e-6)
    assert abs(MDE_FACTOR - 2.801585) < 1e-6


def test_sensitivity_at_80_percent_specificity_by_hand():
    negatives = np.arange(1, 11) / 10  # 0.1 ... 1.0
    positives = np.array([0.35, 0.55, 0.75, 0.85, 0.95])
    scores = np.r_[negatives, positives]
    positive = np.r_[np.zeros(10, bool), np.ones(5, bool)]
    # 80%: 8 of the 10 negatives must fall below the threshold, so it lies above 0.8; the lowest
    # such threshold among the scores is 0.85, above which 2 of the 5 positives score
    assert sensitivity_at_specificity(scores, positive, np.ones((1, 15)), 0.8)[0] == pytest.approx(0.4)
    assert sensitivity_at_specificity(scores, positive, np.ones((1, 15)), 0.9)[0] == pytest.approx(0.2)
    # a positive tied with the ninth negative cannot be taken without that negative
    tied = np.r_[negatives, [0.9, 0.95]]
    two = np.r_[np.zeros(10, bool), np.ones(2, bool)]
    assert sensitivity_at_specificity(tied, two, np.ones((1, 12)), 0.9)[0] == pytest.approx(0.5)
    # resample weights count an image that many times: the 0.85 positive twice gives 3 of 6
    weights = np.ones((1, 15))
    weights[0, 13] = 2
    assert sensitivity_at_specificity(scores, positive, weights, 0.8)[0] == pytest.approx(0.5)


def test_verdicts_follow_the_interval():
    assert verdict({"difference": 0.03, "low": 0.01, "high": 0.05}) == "gain +0.030 (+0.010 to +0.050)"
    assert verdict({"difference": -0.03, "low": -0.05, "high": -0.01}) == "loss -0.030 (-0.050 to -0.010)"
    assert verdict({"difference": -0.004, "low": -0.02, "high": 0.01}) == "no detectable gain (interval -0.020 to +0.010)"
    assert verdict({"difference": 0.004, "low": -0.001, "high": 0.01}).startswith("no detectable gain")


def write_npz(path, dataset: Dataset, labels: bool = True):
    arrays = {"x": np.round((dataset.images + 1) * 127.5).astype(np.uint8)}
    if labels:
        arrays["y"] = dataset.labels
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tiny = dict(image_size=SIZE, width=8, max_width=16, latent_dim=16)
    root = tmp_path_factory.mktemp("utility")
    return (init_random_run(root / "conditional", GANConfig(**tiny, num_classes=3)),
            init_random_run(root / "unconditional", GANConfig(**tiny)))


@pytest.mark.slow
def test_the_command_writes_every_arm_with_intervals_and_verdicts(runs, data, tmp_path, capsys):
    conditional, _ = runs
    real, test, _ = data
    out = tmp_path / "utility"
    code = main(["utility", "--run", str(conditional), "--real", write_npz(tmp_path / "real.npz", real),
                 "--test", write_npz(tmp_path / "test.npz", test), "--out", str(out), "--seeds", "0",
                 "--epochs", "1", "--bootstrap", "20", "--backend", "numpy", "--no-progress"])
    assert code == 0
    summary = json.loads((out / "utility.json").read_text())
    assert list(summary["arms"]) == list(ARMS) and summary["positive_class"] == "melanoma"
    assert {a: e.get("against") for a, e in summary["arms"].items() if "difference" in e} == BASELINES
    arms = summary["arms"]
    assert arms["real+synthetic-2"]["training_images_per_class"] == dict.fromkeys(CLASS_NAMES, 120)
    for entry in (e for e in arms.values() if "difference" in e):
        for metric in ("positive_auc", "positive_sensitivity_at_specificity", "balanced_accuracy"):
            d = entry["difference"][metric]
            assert d["low"] <= d["difference"] <= d["high"] and d["mde"] >= 0
            assert entry["verdict"][metric] == verdict(d)
        assert entry["verdict"]["positive_auc"] in entry["reading"]
    assert arms["synthetic"]["difference"]["positive_auc"]["mde"] > 0  # random generator: TSTR differs from real
    assert summary["generation_seed"] == UtilitySettings.generation_seed and len(summary["checkpoint_sha256"]) == 64
    assert (out / "utility.png").stat().st_size > 0
    assert len(list((out / "generated" / "melanoma").glob("img_*.png"))) == 80  # the ratio-2 arm's count
    printed = capsys.readouterr().out
    assert all(arm in printed for arm in ARMS) and "detectable" in printed and "slightly" not in printed


@pytest.mark.parametrize("case, message", [
    ("unconditional", "needs a conditional run"),
    ("test without labels", "has no class labels"),
    ("class missing from test", "no images of class seborrheic_keratosis"),
    ("unknown positive class", "--positive-class 'cancer' is not a class of the run"),
])
def test_bad_input_is_one_line_and_exit_2(runs, data, tmp_path, capsys, case, message):
    conditional, unconditional = runs
    real, test, _ = data
    run = unconditional if case == "unconditional" else conditional
    if case == "class missing from test":
        test = test.subset(np.flatnonzero(test.labels < 2))
    test_path = write_npz(tmp_path / "test.npz", test, labels=case != "test without labels")
    extra = ["--positive-class", "cancer"] if case == "unknown positive class" else []
    code = main(["utility", "--run", str(run), "--real", write_npz(tmp_path / "real.npz", real), "--test", test_path,
                 "--out", str(tmp_path / "out"), "--seeds", "0", "--backend", "numpy", "--no-progress", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out" / "utility.json").exists()


def test_a_test_set_sharing_training_images_gets_one_warning_naming_how_many(runs, data, tmp_path, capsys):
    conditional, _ = runs
    real, test, _ = data
    assert shared_images(real, test) == 0
    mixed = Dataset(images=np.concatenate([test.images, real.images[[3, 50, 99]]]),
                    labels=np.concatenate([test.labels, real.labels[[3, 50, 99]]]), class_names=CLASS_NAMES)
    assert shared_images(real, mixed) == 3
    same = write_npz(tmp_path / "real.npz", real)
    code = main(["utility", "--run", str(conditional), "--real", same, "--test", same, "--out", str(tmp_path / "out"),
                 "--arms", "real", "--seeds", "0", "--epochs", "1", "--bootstrap", "20", "--backend", "numpy",
                 "--no-progress"])
    assert code == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"{len(real)} of the {len(real)} test images are also training images" in warnings[0]


HOLD_LOCK = """
import pathlib, sys, time
from service import files
folder, ready, gate = sys.argv[1:4]
with files.output_lock(folder, "a test"):
    pathlib.Path(ready).write_text("held")
    while not pathlib.Path(gate).exists():
        time.sleep(0.05)
"""


def test_a_second_writer_on_the_same_out_fails_at_once_and_writes_nothing(runs, data, tmp_path, capsys):
    conditional, _ = runs
    real, test, _ = data
    out, ready, gate = tmp_path / "out", tmp_path / "ready", tmp_path / "gate"
    files.claim_output_folder(out, "utility")  # a folder of this command's, as a first utility run leaves it
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out), str(ready), str(gate)], cwd=REPO)
    try:
        while not ready.exists():  # a file gate: the holder says when it holds the lock
            assert holder.poll() is None, "the lock holder died"
            time.sleep(0.05)
        code = main(["utility", "--run", str(conditional), "--real", write_npz(tmp_path / "real.npz", real),
                     "--test", write_npz(tmp_path / "test.npz", test), "--out", str(out), "--seeds", "0",
                     "--backend", "numpy", "--no-progress"])
    finally:
        gate.write_text("go")
        holder.wait(timeout=60)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "in use by another process" in err[0] and f"pid {holder.pid}" in err[0], err
    assert not (out / "generated").exists() and not (out / "utility.json").exists()


def test_colour_constancy_removes_a_lighting_cast():
    """The same lesion under a bluer light reaches the classifier with the same colours (the
    channels' ratios; shades of gray fixes the light's colour, not its strength), under a
    dimmer light as the same image, dimmer."""
    from backends.tf.classifier import ShadesOfGray

    rng = np.random.default_rng(0)
    values = rng.uniform(0.05, 0.3, (4, 16, 16, 3)).astype(np.float32)  # in [0, 1], well below clipping
    lit = np.concatenate([values, values * [0.7, 0.8, 1.0], values * 0.5]).astype(np.float32) * 2 - 1
    out = (np.asarray(ShadesOfGray()(lit)) + 1) / 2
    np.testing.assert_allclose(out[8:], 0.5 * out[:4], atol=1e-5)
    ratio = out[4:8] / out[:4]  # the tint (0.7, 0.8, 1.0) is gone: one factor per image, in every channel
    np.testing.assert_allclose(ratio, ratio.mean(axis=(1, 2, 3), keepdims=True) * np.ones_like(ratio), rtol=1e-3)
