"""The embedded stand-in dataset: determinism, proportions, class looks, ISIC layout round trip."""

import csv
import os

import cv2
import numpy as np
import pytest

from service import synthetic
from service.data import CLASS_NAMES, load_images
from service.errors import UserError


def test_make_image_is_a_pure_function_of_its_arguments():
    first = synthetic.make_image(7, 3, 1, 64)
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, synthetic.make_image(7, 3, 1, 64))
    assert not np.array_equal(first, synthetic.make_image(7, 4, 1, 64))
    assert not np.array_equal(first, synthetic.make_image(8, 3, 1, 64))


@pytest.mark.parametrize("size", [32, 128, (48, 64)])
def test_any_size(size):
    shape = (size, size) if isinstance(size, int) else size
    assert synthetic.make_image(0, 0, 2, size).shape == (*shape, 3)


# ISIC 2017's published training set (Codella et al. 2018, "Skin lesion analysis toward melanoma
# detection", ISBI 2017 challenge): 2,000 images, 374 melanomas, 254 seborrheic keratoses, the
# other 1,372 nevi. Stated here from the paper, not from the code under test.
ISIC_2017_TRAINING = {"nevus": 1372, "melanoma": 374, "seborrheic_keratosis": 254}


def test_isic_proportions():
    published = [ISIC_2017_TRAINING[name] for name in CLASS_NAMES]  # in the class order labels use
    assert CLASS_NAMES == ("nevus", "melanoma", "seborrheic_keratosis")
    assert synthetic.class_counts(2000) == tuple(published)
    assert synthetic.class_counts(4000) == (2744, 748, 508)
    for count in (1, 7, 100, 333):
        counts = synthetic.class_counts(count)
        assert sum(counts) == count
        expected = np.array(published) * count / 2000
        assert np.all(np.abs(np.array(counts) - expected) < 1)
    layout = synthetic.class_layout(2000, seed=0)
    assert np.bincount(layout).tolist() == published
    assert not np.array_equal(layout, np.sort(layout))  # shuffled, not in blocks
    np.testing.assert_array_equal(layout, synthetic.class_layout(2000, seed=0))


def test_make_dataset_matches_make_image():
    images, labels = synthetic.make_dataset(12, 32, seed=4)
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8 and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, synthetic.class_layout(12, 4))
    np.testing.assert_array_equal(images[5], synthetic.make_image(4, 5, int(labels[5]), 32))
    with pytest.raises(UserError):
        synthetic.make_dataset(0, 32)


def lesion_centre_stats(cls, count=16, size=64, seed=0):
    """Per class: mean chromaticity spread and mean brightness in a disc at the lesion centre,
    on images averaged down 2x (variegation is a property of regions, not of pixel grain)."""
    half = size // 2
    yy, xx = np.mgrid[:half, :half]
    disc = (yy - (half - 1) / 2) ** 2 + (xx - (half - 1) / 2) ** 2 < (0.12 * half) ** 2
    spreads, brightness = [], []
    for index in range(count):
        image = cv2.resize(synthetic.make_image(seed, index, cls, size), (half, half), interpolation=cv2.INTER_AREA)
        pixels = image.astype(np.float64)[disc] + 1
        chromaticity = pixels / pixels.sum(axis=1, keepdims=True)
        spreads.append(chromaticity.std(axis=0).sum())
        brightness.append(pixels.mean())
    return np.mean(spreads), np.mean(brightness)


def test_classes_look_different():
    nevus_spread, nevus_brightness = lesion_centre_stats(synthetic.NEVUS)
    melanoma_spread, _ = lesion_centre_stats(synthetic.MELANOMA)
    keratosis_spread, keratosis_brightness = lesion_centre_stats(synthetic.KERATOSIS)
    assert melanoma_spread > 2.5 * nevus_spread  # several colours against an even brown
    assert keratosis_brightness > nevus_brightness + 20  # lighter tan
    assert melanoma_spread > 1.8 * keratosis_spread


def test_write_isic_layout_round_trips_through_the_loader(tmp_path):
    summary = synthetic.write_isic_layout(tmp_path / "isic", 5, seed=2, progress=False)
    assert summary["count"] == 5
    names = sorted(os.listdir(tmp_path / "isic"))
    assert synthetic.GROUND_TRUTH_NAME in names
    shapes = set()
    for index in range(5):
        jpeg = cv2.imread(str(tmp_path / "isic" / f"ISIC_{index:07d}.jpg"))
        shapes.add(jpeg.shape[:2])
        superpixels = cv2.imread(str(tmp_path / "isic" / f"ISIC_{index:07d}_superpixels.png"))
        assert superpixels.shape == jpeg.shape
        b, g, r = (superpixels[..., c].astype(np.int64) for c in range(3))
        assert 500 < len(np.unique(r + 256 * g + 65536 * b)) < 2000  # about 1,000 superpixels
    assert shapes == set(synthetic.ISIC_IMAGE_SHAPES)
    with open(tmp_path / "isic" / synthetic.GROUND_TRUTH_NAME) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image_id", "melanoma", "seborrheic_keratosis"]

    dataset = load_images(tmp_path / "isic", 32, cache_dir=tmp_path / "cache", progress=False)
    assert len(dataset) == 5
    np.testing.assert_array_equal(dataset.labels, synthetic.class_layout(5, 2))
    # The loaded 32x32 image is the written one, center-cropped and resized.
    expected = synthetic.make_image(2, 0, int(dataset.labels[0]), synthetic.ISIC_IMAGE_SHAPES[0])
    side = min(expected.shape[:2])
    left = (expected.shape[1] - side) // 2
    expected = cv2.resize(expected[:, left : left + side], (32, 32), interpolation=cv2.INTER_AREA)
    assert np.abs(dataset.images[0] - (expected / 127.5 - 1)).mean() < 0.04
