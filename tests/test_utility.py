"""The `utility` command: the classifier arms are honest (shuffled synthetic labels teach
nothing; "synthetic" images that are in fact held-back real ones teach what the real ones do),
the classifier learns a clearly learnable task with and without the classic augmentation, the
augmentation keeps images in [-1, 1] with their colour and only flips and turns them, the fast
bootstrap scores as sklearn does, and bad input is one line and exit 2. Tiny images, tiny
budgets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backends.config import GANConfig
from run_fixtures import init_random_run
from service.data import CLASS_NAMES, Dataset
from service.run import main
from service.utility import (
    ARMS, BRIGHTNESS, UtilitySettings, _seed_mean, arm_images, augmentation_layers, batch_norm_layer,
    bootstrap_difference, evaluate_arms, predict_proba, scarce_indices, score, square_symmetry_layer,
    synthetic_counts, top_up, train_classifier, weighted_auc,
)

SIZE = 32
FAST = dict(seeds=(0, 1), max_epochs=12, patience=3, bootstrap=50)


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


def test_held_back_real_images_as_synthetic_score_as_the_real_arm(data):
    real, test, held_back = data
    settings = UtilitySettings(arms=("real", "synthetic"), **FAST)
    summary = evaluate_arms(real, test, by_class(held_back), CLASS_NAMES, settings)
    real_ba = summary["arms"]["real"]["balanced_accuracy"]["mean"]
    tstr_ba = summary["arms"]["synthetic"]["balanced_accuracy"]["mean"]
    assert real_ba >= 0.9  # the task is learnable by the fixed classifier
    assert abs(tstr_ba - real_ba) <= 0.1
    difference = summary["arms"]["synthetic"]["difference"]["balanced_accuracy"]
    assert difference["low"] <= difference["difference"] <= difference["high"]
    assert summary["arms"]["synthetic"]["against"] == "real"


def test_shuffled_synthetic_labels_give_about_chance(data):
    real, test, held_back = data
    shuffled = np.random.default_rng(0).permutation(held_back.labels)
    settings = UtilitySettings(arms=("synthetic",), **FAST)
    summary = evaluate_arms(real, test, by_class(held_back, shuffled), CLASS_NAMES, settings)
    assert summary["arms"]["synthetic"]["balanced_accuracy"]["mean"] <= 0.6  # chance is 1/3


def test_arms_take_the_images_the_docs_promise():
    labels = np.array([0] * 8 + [1] * 2 + [2] * 4)
    images = np.arange(len(labels), dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 3), np.float32)
    scarce = scarce_indices(labels, 0.25, seed=0)
    assert np.bincount(labels[scarce]).tolist() == [2, 1, 1]  # a quarter of each class, at least one
    synthetic = {c: np.full((10, 2, 2, 3), 100 + c, np.float32) for c in range(3)}
    assert top_up(np.bincount(labels)).tolist() == [0, 6, 4]
    assert synthetic_counts(labels, scarce, 3, ARMS).tolist() == [8, 6, 4]  # synthetic arm: 8 of class 0

    x, y, augment = arm_images("real+synthetic", images, labels, scarce, synthetic)
    assert np.bincount(y).tolist() == [8, 8, 8] and not augment
    assert np.all(x[len(labels):, 0, 0, 0] >= 100)  # the real images first, then generated ones
    x, y, _ = arm_images("synthetic", images, labels, scarce, synthetic)
    assert np.bincount(y).tolist() == [8, 2, 4] and np.all(x >= 100)
    x, y, _ = arm_images("scarce+synthetic", images, labels, scarce, synthetic)
    assert np.bincount(y).tolist() == [2, 2, 2] and np.sum(x[:, 0, 0, 0] < 100) == len(scarce)
    assert arm_images("real+augment", images, labels, scarce, synthetic)[2]


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


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
def test_the_classifier_learns_a_clearly_learnable_task(augment):
    train_x, train_y = pattern_classes(100, seed=4)
    test_x, test_y = pattern_classes(40, seed=5)
    settings = UtilitySettings(max_epochs=15, patience=4)
    for seed in (0, 1):
        model = train_classifier(train_x, train_y, 3, augment, seed, settings)
        balanced = score(test_y, predict_proba(model, test_x))["balanced_accuracy"]
        assert balanced >= 0.9, (seed, balanced)  # chance is 1/3; one class for everything scores 1/3


def apply(layers, images, training=True):
    for layer in layers:
        images = layer(images, training=training)
    return np.asarray(images)


def square_symmetries(image):
    return [np.rot90(flipped, k) for flipped in (image, image[:, ::-1]) for k in range(4)]


def test_augmentation_only_flips_and_turns_by_right_angles():
    import keras

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


def bootstrap_one_resample_at_a_time(labels, arm_probas, base_probas, resamples, seed):
    """The bootstrap as first written: `score` (sklearn's AUC) on each resample in turn."""
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in ("balanced_accuracy", "sensitivity", "auc", "macro_auc")}
    for _ in range(resamples):
        idx = rng.integers(0, len(labels), len(labels))
        arm = _seed_mean(labels[idx], [p[idx] for p in arm_probas])
        base = _seed_mean(labels[idx], [p[idx] for p in base_probas])
        for k in draws:
            draws[k].append(np.asarray(arm[k]) - np.asarray(base[k]))
    return {k: (np.nanpercentile(v, 2.5, axis=0), np.nanpercentile(v, 97.5, axis=0)) for k, v in draws.items()}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference's nanmean of a resample without a class
@pytest.mark.parametrize("n", [9, 150])
def test_the_bootstrap_gives_what_scoring_each_resample_gives(n):
    rng = np.random.default_rng(n)
    labels = rng.choice(3, n, p=[0.6, 0.15, 0.25])
    arm, base = ([np.round(rng.dirichlet(np.ones(3), n), 1) for _ in range(3)] for _ in range(2))  # ties
    fast = bootstrap_difference(labels, arm, base, 200, seed=5)
    slow = bootstrap_one_resample_at_a_time(labels, arm, base, 200, seed=5)
    for key, (low, high) in slow.items():
        np.testing.assert_allclose(fast[key]["low"], low, atol=1e-9)
        np.testing.assert_allclose(fast[key]["high"], high, atol=1e-9)


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


def test_the_command_writes_every_arm_with_intervals(runs, data, tmp_path, capsys):
    conditional, _ = runs
    real, test, _ = data
    out = tmp_path / "utility"
    code = main(["utility", "--run", str(conditional), "--real", write_npz(tmp_path / "real.npz", real),
                 "--test", write_npz(tmp_path / "test.npz", test), "--out", str(out), "--seeds", "0",
                 "--max-epochs", "2", "--bootstrap", "20", "--backend", "numpy", "--no-progress"])
    assert code == 0
    summary = json.loads((out / "utility.json").read_text())
    assert list(summary["arms"]) == list(ARMS)
    assert {a for a, e in summary["arms"].items() if "difference" in e} == {
        "synthetic", "real+synthetic", "scarce+synthetic", "real+augment"}
    assert summary["arms"]["real+synthetic"]["training_images_per_class"] == dict.fromkeys(CLASS_NAMES, 40)
    assert summary["generation_seed"] == UtilitySettings.generation_seed and len(summary["checkpoint_sha256"]) == 64
    assert (out / "utility.png").stat().st_size > 0
    assert len(list((out / "generated" / "melanoma").glob("img_*.png"))) == 40  # the synthetic arm's count
    printed = capsys.readouterr().out
    assert all(arm in printed for arm in ARMS)


@pytest.mark.parametrize("case, message", [
    ("unconditional", "needs a conditional run"),
    ("test without labels", "has no class labels"),
    ("class missing from test", "no images of class seborrheic_keratosis"),
])
def test_bad_input_is_one_line_and_exit_2(runs, data, tmp_path, capsys, case, message):
    conditional, unconditional = runs
    real, test, _ = data
    run = unconditional if case == "unconditional" else conditional
    if case == "class missing from test":
        test = test.subset(np.flatnonzero(test.labels < 2))
    test_path = write_npz(tmp_path / "test.npz", test, labels=case != "test without labels")
    code = main(["utility", "--run", str(run), "--real", write_npz(tmp_path / "real.npz", real), "--test", test_path,
                 "--out", str(tmp_path / "out"), "--seeds", "0", "--backend", "numpy", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out" / "utility.json").exists()
