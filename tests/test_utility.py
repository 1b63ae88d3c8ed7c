"""The `utility` command: the classifier arms are honest (shuffled synthetic labels teach
nothing; "synthetic" images that are in fact held-back real ones teach what the real ones do),
and bad input is one line and exit 2. Tiny images of three colour classes, tiny budgets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backends.config import GANConfig
from run_fixtures import init_random_run
from service.data import CLASS_NAMES, Dataset
from service.run import main
from service.utility import (
    ARMS, UtilitySettings, arm_images, evaluate_arms, scarce_indices, synthetic_counts, top_up,
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
