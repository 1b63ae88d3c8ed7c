"""Class fidelity (service.validation.fidelity): a classifier fitted on real images only scores
generated images of each class; tested against its definition on two classes drawn apart."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.validation import fidelity


def drawn_lesions(count: int, labels: np.ndarray, seed: int, side: int = 32) -> np.ndarray:
    """Skin with one lesion each: class 0 small and brown, class 1 larger and blue-grey, with
    random position, size and noise, so that the classes overlap a little."""
    import cv2

    rng = np.random.default_rng(seed)
    images = np.empty((count, side, side, 3), np.uint8)
    for i, label in enumerate(labels):
        image = np.full((side, side, 3), (205, 160, 140), np.float64) + rng.normal(0, 6, (side, side, 3))
        colour = (95, 60, 40) if label == 0 else (80, 85, 110)
        radius = rng.uniform(5, 8) if label == 0 else rng.uniform(7, 11)
        centre = tuple(int(v) for v in rng.integers(side // 2 - 3, side // 2 + 4, 2))
        canvas = image.copy()
        cv2.ellipse(canvas, centre, (int(radius), int(radius * rng.uniform(0.7, 1.0))), float(rng.uniform(0, 180)),
                    0, 360, tuple(float(c + rng.normal(0, 12)) for c in colour), -1)
        images[i] = np.clip(canvas, 0, 255).astype(np.uint8)
    return images


@pytest.fixture(scope="module")
def classes():
    labels = np.arange(120) % 2
    return drawn_lesions(120, labels, seed=1), labels


def test_features_are_finite_fixed_in_number_and_see_the_lesion(classes):
    images, labels = classes
    features = fidelity.lesion_features(images)
    assert features.shape == (len(images), len(fidelity.FEATURES)) and np.isfinite(features).all()
    np.testing.assert_array_equal(features, fidelity.lesion_features(images))  # a pure function
    column = {name: i for i, name in enumerate(fidelity.FEATURES)}
    assert (features[:, column["contrast_L"]] < 0).all()  # the lesion is darker than the skin
    assert features[labels == 1, column["area"]].mean() > features[labels == 0, column["area"]].mean()
    with pytest.raises(ValueError, match="uint8"):
        fidelity.lesion_features(images.astype(np.float32))


def test_a_faithful_generator_scores_near_the_real_auc_and_one_that_ignores_its_label_near_half(classes):
    images, labels = classes
    classifier = fidelity.fit_classifier(images, labels, seed=0)
    held_labels = np.arange(80) % 2
    held = drawn_lesions(80, held_labels, seed=2)
    generated_labels = np.arange(80) % 2
    cases = {
        "faithful": drawn_lesions(80, generated_labels, seed=3),  # each image of its class
        "ignores its label": drawn_lesions(80, np.random.default_rng(4).integers(0, 2, 80), seed=4),
        "swapped": drawn_lesions(80, 1 - generated_labels, seed=5),
    }
    result = {name: fidelity.class_fidelity(classifier, held, held_labels, fake, generated_labels, ("small", "large"))
              for name, fake in cases.items()}
    real_auc = result["faithful"]["classes"]["large"]["real_auc"]
    assert real_auc > 0.9
    assert result["faithful"]["mean_ratio"] > 0.9
    assert abs(result["ignores its label"]["classes"]["large"]["generated_auc"] - 0.5) < 0.2
    assert result["swapped"]["classes"]["large"]["generated_auc"] < 0.2
    entry = result["faithful"]["classes"]["small"]
    assert entry["real"] == 40 and entry["generated"] == 40
    assert entry["ratio"] == pytest.approx(entry["generated_auc"] / entry["real_auc"])


def test_without_a_training_set_the_real_scores_are_out_of_fold(classes):
    """Labels that carry no information give a real AUC near 0.5 out-of-fold; trees scoring the
    images they were fitted on would call them near 1."""
    images, _ = classes
    noise_labels = np.random.default_rng(0).integers(0, 2, len(images))
    _, probabilities, how = fidelity.classifier_for_report(images, noise_labels, seed=0)
    auc = fidelity.one_vs_rest_auc(probabilities, noise_labels, np.array([0, 1]))[1]
    assert abs(auc - 0.5) < 0.2 and "out-of-fold" in how
    in_sample = fidelity.fit_classifier(images, noise_labels).probabilities(images)
    assert fidelity.one_vs_rest_auc(in_sample, noise_labels, np.array([0, 1]))[1] > 0.9


@pytest.mark.slow
def test_validate_reports_class_fidelity_beside_the_per_class_values(tmp_path, classes, capsys):
    from service.run import main

    images, labels = classes
    generated_labels = np.arange(60) % 2
    np.savez(tmp_path / "train.npz", train_images=images, train_labels=labels, class_names=np.array(["small", "large"]))
    held_labels = np.arange(40) % 2
    np.savez(tmp_path / "real.npz", train_images=drawn_lesions(40, held_labels, seed=6), train_labels=held_labels,
             class_names=np.array(["small", "large"]))
    np.savez(tmp_path / "fake.npz", train_images=drawn_lesions(60, generated_labels, seed=7),
             train_labels=generated_labels, class_names=np.array(["small", "large"]))
    out = tmp_path / "report"
    assert main(["validate", "--real", str(tmp_path / "real.npz"), "--fake", str(tmp_path / "fake.npz"),
                 "--train", str(tmp_path / "train.npz"), "--out", str(out), "--no-progress"]) == 0
    section = json.loads((out / "metrics.json").read_text())["class_fidelity"]
    assert section["how"] == "fitted on the 120 training images"
    assert set(section["classes"]) == {"small", "large"} and section["mean_ratio"] > 0.8
    page = (out / "report.html").read_text()
    assert "Class fidelity" in page and "AUC on generated" in page
