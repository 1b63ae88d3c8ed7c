"""Data loading: every format, pixel conventions, cache, bad input, splitting and batching."""

import os
import struct

import cv2
import numpy as np
import pytest

from service.data import CLASS_NAMES
from service import data
from service.data import default_dataset, load_images, split
from service.errors import UserError
from service.imageio import to_uint8
from service.run import main

GROUND_TRUTH = "ISIC-2017_Training_Part3_GroundTruth.csv"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Keep every test's cache in its own folder, never in the user's home."""
    monkeypatch.setenv("LESIONGAN_CACHE", str(tmp_path / "cache"))


def write_image(path, rgb, ext=None):
    """Write an RGB uint8 image with OpenCV (which wants BGR)."""
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = rgb if rgb.ndim == 2 or rgb.shape[-1] == 1 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR if rgb.shape[-1] == 3 else cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(path, image)


def random_rgb(seed, height=48, width=64):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def make_isic_folder(folder, classes=(0, 1, 2, 0), extra_rows=(), csv_columns=("image_id", "melanoma", "seborrheic_keratosis")):
    """A small ISIC 2017 layout: JPEGs, superpixel PNGs beside them and the ground-truth CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, cls in enumerate(classes):
        write_image(folder / f"ISIC_{i:07d}.jpg", random_rgb(i, 60 + 8 * i, 80))
        write_image(folder / f"ISIC_{i:07d}_superpixels.png", np.full((60 + 8 * i, 80, 3), 7, np.uint8))
        rows.append((f"ISIC_{i:07d}", float(cls == 1), float(cls == 2)))
    rows += [(name, 0.0, 0.0) for name in extra_rows]
    with open(folder / GROUND_TRUTH, "w") as f:
        f.write(",".join(csv_columns) + "\n")
        for row in rows:
            f.write(",".join(str(v) for v in row[: len(csv_columns)]) + "\n")
    return folder


# ----------------------------------------------------------------------------- formats


def test_isic_layout_gives_labels_and_ignores_superpixels(tmp_path):
    folder = make_isic_folder(tmp_path / "isic", classes=(0, 1, 2, 0))
    dataset = load_images(folder, 32, progress=False)
    assert dataset.images.shape == (4, 32, 32, 3)
    assert dataset.labels.dtype == np.int64 and dataset.labels.tolist() == [0, 1, 2, 0]
    assert dataset.class_names == CLASS_NAMES
    assert [os.path.basename(f) for f in dataset.files] == [f"ISIC_{i:07d}.jpg" for i in range(4)]


def test_ground_truth_csv_is_found_in_the_parent_folder(tmp_path):
    make_isic_folder(tmp_path / "isic")
    images = tmp_path / "isic" / "ISIC-2017_Training_Data"
    images.mkdir()
    for name in os.listdir(tmp_path / "isic"):
        if name.endswith((".jpg", ".png")):
            os.replace(tmp_path / "isic" / name, images / name)
    dataset = load_images(images, 32, progress=False)
    assert dataset.labels.tolist() == [0, 1, 2, 0]


def test_labels_csv_given_explicitly(tmp_path):
    make_isic_folder(tmp_path / "data" / "isic", classes=(2, 1))
    (tmp_path / "elsewhere").mkdir()
    os.replace(tmp_path / "data" / "isic" / GROUND_TRUTH, tmp_path / "elsewhere" / "truth.csv")
    assert load_images(tmp_path / "data" / "isic", 32, progress=False).labels is None
    labelled = load_images(tmp_path / "data" / "isic", 32, labels_csv=tmp_path / "elsewhere" / "truth.csv", progress=False)
    assert labelled.labels.tolist() == [2, 1]


def test_several_ground_truth_csvs_warn_and_load_without_labels(tmp_path, capsys):
    folder = make_isic_folder(tmp_path / "isic", classes=(0, 1))
    (folder / "ISIC-2017_Validation_Part3_GroundTruth.csv").write_text("image_id,melanoma,seborrheic_keratosis\n")
    dataset = load_images(folder, 32, progress=False)
    assert dataset.labels is None
    assert "several label files" in capsys.readouterr().err


def test_any_folder_is_searched_recursively_in_sorted_order(tmp_path):
    write_image(tmp_path / "b" / "z.png", random_rgb(1))
    write_image(tmp_path / "a.bmp", random_rgb(2))
    write_image(tmp_path / "b" / "c" / "y.JPEG", random_rgb(3))
    (tmp_path / "notes.txt").write_text("not an image")
    write_image(tmp_path / ".hidden" / "x.png", random_rgb(4))
    dataset = load_images(tmp_path, 32, cache_dir=tmp_path / "cache", progress=False, unlabelled=True)
    assert [os.path.relpath(f, tmp_path) for f in dataset.files] == ["a.bmp", "b/c/y.JPEG", "b/z.png"]
    assert dataset.labels is None and dataset.class_names == ()


def test_dermamnist_npz(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 28, 28, 3), dtype=np.uint8)
    labels = np.arange(10).reshape(-1, 1) % 7
    np.savez(tmp_path / "dermamnist.npz", train_images=images, train_labels=labels, val_images=images[:2])
    dataset = load_images(tmp_path / "dermamnist.npz", 32)
    assert dataset.images.shape == (10, 32, 32, 3) and dataset.images.dtype == np.float32
    assert dataset.labels.tolist() == (np.arange(10) % 7).tolist()
    assert len(dataset.class_names) == 7


def test_grayscale_npz_becomes_rgb(tmp_path):
    images = np.full((3, 64, 64), 200, np.uint8)
    np.savez(tmp_path / "gray.npz", train_images=images)
    dataset = load_images(tmp_path / "gray.npz", 32)
    assert dataset.images.shape == (3, 32, 32, 3) and dataset.labels is None
    np.testing.assert_allclose(dataset.images, 200 / 127.5 - 1, atol=1e-6)


# ----------------------------------------------------------------------------- pixels


def test_pure_red_file_loads_as_red_in_minus_one_to_one(tmp_path):
    red = np.zeros((40, 40, 3), np.uint8)
    red[..., 0] = 255
    write_image(tmp_path / "red.png", red)
    image = load_images(tmp_path, 32, progress=False).images[0]
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image[..., 0], 1.0)
    np.testing.assert_array_equal(image[..., 1:], -1.0)


def test_red_jpeg_loads_as_red(tmp_path):
    red = np.zeros((300, 400, 3), np.uint8)
    red[..., 0] = 255
    write_image(tmp_path / "red.jpg", red)
    mean = load_images(tmp_path, 32, progress=False).images[0].mean(axis=(0, 1))
    assert mean[0] > 0.9 and mean[1] < -0.9 and mean[2] < -0.9


def test_grayscale_and_alpha_images_become_rgb(tmp_path):
    write_image(tmp_path / "gray.png", np.full((40, 40), 100, np.uint8))
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 1] = 255  # green, half transparent
    rgba[..., 3] = 128
    write_image(tmp_path / "rgba.png", rgba)
    dataset = load_images(tmp_path, 32, progress=False)
    assert dataset.images.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(dataset.images[0], 100 / 127.5 - 1, atol=1e-6)  # gray.png
    np.testing.assert_array_equal(dataset.images[1][..., 1], 1.0)  # rgba.png: alpha dropped
    np.testing.assert_array_equal(dataset.images[1][..., [0, 2]], -1.0)


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert a minimal EXIF APP1 segment (one IFD entry: Orientation) after the JPEG SOI."""
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + b"MM\x00\x2a" + struct.pack(">I", 8) + ifd
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


@pytest.mark.parametrize("width", [80, 800])  # small: full decode; large: reduced-scale decode
def test_exif_orientation_is_honoured(tmp_path, width):
    # Stored landscape with a red left half; orientation 6 = show rotated 90 degrees clockwise,
    # so the loaded (portrait) image is red on top and black below.
    stored = np.zeros((width // 2, width, 3), np.uint8)
    stored[:, : width // 2, 2] = 255  # BGR red
    ok, encoded = cv2.imencode(".jpg", stored)
    (tmp_path / "rotated.jpg").write_bytes(with_exif_orientation(encoded.tobytes(), 6))
    image = load_images(tmp_path, 32, crop="squash", progress=False).images[0]
    assert image[:12, :, 0].mean() > 0.9 and image[20:, :, 0].mean() < -0.9


def test_center_crop_and_squash(tmp_path):
    bands = np.zeros((40, 120, 3), np.uint8)
    bands[:, :40, 0] = bands[:, 40:80, 1] = bands[:, 80:, 2] = 255  # red | green | blue
    write_image(tmp_path / "bands.png", bands)
    cropped = load_images(tmp_path, 32, crop="center", progress=False).images[0]
    squashed = load_images(tmp_path, 32, crop="squash", progress=False).images[0]
    assert cropped.shape == squashed.shape == (32, 32, 3)
    np.testing.assert_array_equal(cropped[..., 1], 1.0)  # only the green middle survives
    assert squashed[:, 2, 0].min() == 1.0 and squashed[:, 16, 1].min() == 1.0 and squashed[:, 29, 2].min() == 1.0


def test_reduced_jpeg_decode_matches_a_full_decode(tmp_path):
    rng = np.random.default_rng(0)
    smooth = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (1024, 768), interpolation=cv2.INTER_CUBIC)
    write_image(tmp_path / "big.jpg", smooth)
    loaded = load_images(tmp_path, 64, progress=False).images[0]
    full = cv2.cvtColor(cv2.imread(str(tmp_path / "big.jpg")), cv2.COLOR_BGR2RGB)
    reference = data.fit_square(full, 64, "center").astype(np.float32) / 127.5 - 1
    assert np.abs(loaded - reference).mean() < 0.02


def test_small_images_are_enlarged(tmp_path):
    write_image(tmp_path / "tiny.png", random_rgb(0, 10, 10))
    assert load_images(tmp_path, 64, progress=False).images.shape == (1, 64, 64, 3)


# ----------------------------------------------------------------------------- cache


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    folder = make_isic_folder(tmp_path / "isic")
    first = load_images(folder, 32, cache_dir=tmp_path / "c", progress=False)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(data.folder, "decode_image", no_decoding)
    second = load_images(folder, 32, cache_dir=tmp_path / "c", progress=False)
    np.testing.assert_array_equal(first.images, second.images)
    assert second.labels.tolist() == first.labels.tolist() and second.files == first.files
    with pytest.raises(AssertionError, match="decoded although cached"):
        load_images(folder, 32, crop="squash", cache_dir=tmp_path / "c", progress=False)  # other key


def test_cache_is_invalidated_when_a_file_changes(tmp_path, monkeypatch):
    folder = make_isic_folder(tmp_path / "isic", classes=(0, 1))
    first = load_images(folder, 32, cache_dir=tmp_path / "c", progress=False)
    decoded = []
    real_decode = data.decode_image
    monkeypatch.setattr(data.folder, "decode_image", lambda *a: decoded.append(1) or real_decode(*a))
    write_image(folder / "ISIC_0000001.jpg", np.zeros((50, 50, 3), np.uint8))
    second = load_images(folder, 32, cache_dir=tmp_path / "c", progress=False)
    assert len(decoded) == 2
    assert not np.array_equal(first.images[1], second.images[1])
    np.testing.assert_array_equal(second.images[1], -1.0)


def test_default_cache_folder_comes_from_the_environment(tmp_path):
    write_image(tmp_path / "data" / "a.png", random_rgb(0))
    load_images(tmp_path / "data", 32, progress=False)
    assert any(name.startswith("images-") for name in os.listdir(tmp_path / "cache"))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "data path not found"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no JPEG/PNG/BMP images"),
        (lambda p: (p / "x.txt").write_text("hi") and p / "x.txt", "not a .npz"),
    ],
    ids=["missing", "empty", "not-npz"],
)
def test_bad_paths_are_one_line_user_errors(tmp_path, make, message):
    with pytest.raises(UserError, match=message) as caught:
        load_images(make(tmp_path), 32, progress=False)
    assert "\n" not in str(caught.value)


def test_no_decodable_image(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "b.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"no decodable image in .* \(2 file\(s\) tried\)"):
        load_images(tmp_path, 32, progress=False)


def test_corrupt_files_are_skipped_with_one_warning(tmp_path, capsys):
    for i in range(3):
        write_image(tmp_path / f"good{i}.png", random_rgb(i))
    for i in range(5):
        (tmp_path / f"bad{i}.jpg").write_bytes(b"\xff\xd8\xff garbage")
    ok, encoded = cv2.imencode(".jpg", random_rgb(9, 100, 100))
    (tmp_path / "truncated.jpg").write_bytes(encoded.tobytes()[:300])
    dataset = load_images(tmp_path, 32, progress=False)
    assert len(dataset) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "skipped 6 unreadable or corrupt image(s)" in err and "bad0.jpg, bad1.jpg, bad2.jpg, ..." in err
    load_images(tmp_path, 32, progress=False)  # from the cache: the warning is not lost
    assert "skipped 6" in capsys.readouterr().err
    with pytest.raises(UserError, match="6 unreadable or corrupt image"):
        load_images(tmp_path, 32, strict=True, progress=False)


def test_csv_with_an_unknown_header_lists_the_known_formats(tmp_path):
    folder = make_isic_folder(tmp_path / "isic", csv_columns=("image_id", "naevus"))
    with pytest.raises(UserError, match="unknown header .columns: image_id, naevus.; known formats: ISIC 2016"):
        load_images(folder, 32, labels_csv=folder / GROUND_TRUTH, progress=False)


def test_csv_with_bad_values(tmp_path):
    folder = make_isic_folder(tmp_path / "isic", classes=(0,))
    (folder / GROUND_TRUTH).write_text("image_id,melanoma,seborrheic_keratosis\nISIC_0000000,yes,0\n")
    with pytest.raises(UserError, match="line 2"):
        load_images(folder, 32, progress=False)


def test_images_without_csv_row_are_an_error(tmp_path):
    folder = make_isic_folder(tmp_path / "isic", classes=(0, 1))
    write_image(folder / "ISIC_0000009.jpg", random_rgb(9))
    write_image(folder / "ISIC_0000010.jpg", random_rgb(10))
    with pytest.raises(UserError, match=r"2 of 4 images have no row in .*ISIC_0000009, ISIC_0000010"):
        load_images(folder, 32, progress=False)


def test_csv_rows_without_image_warn_or_fail_under_strict(tmp_path, capsys):
    folder = make_isic_folder(tmp_path / "isic", classes=(0, 1), extra_rows=("ISIC_0000100", "ISIC_0000101"))
    dataset = load_images(folder, 32, progress=False)
    assert dataset.labels.tolist() == [0, 1]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 id(s) in" in err and "ISIC_0000100, ISIC_0000101" in err
    with pytest.raises(UserError, match="2 id\\(s\\) in .* have no image"):
        load_images(folder, 32, strict=True, progress=False)


def test_labels_csv_not_found(tmp_path):
    folder = make_isic_folder(tmp_path / "isic")
    with pytest.raises(UserError, match="labels file not found"):
        load_images(folder, 32, labels_csv=tmp_path / "nope.csv", progress=False)


@pytest.mark.parametrize("size", [16, 48, 512])
def test_image_size_must_be_a_power_of_two_in_range(tmp_path, size):
    write_image(tmp_path / "a.png", random_rgb(0))
    with pytest.raises(UserError, match="power of two from 32 to 256"):
        load_images(tmp_path, size)
    with pytest.raises(UserError, match="power of two"):
        default_dataset(size, count=3)


def test_npz_without_images_or_with_wrong_dtype(tmp_path):
    np.savez(tmp_path / "a.npz", pictures=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(UserError, match="no image array .*found: pictures"):
        load_images(tmp_path / "a.npz", 32)
    np.savez(tmp_path / "b.npz", train_images=np.zeros((2, 8, 8, 3), np.float64))
    with pytest.raises(UserError, match="must be uint8"):
        load_images(tmp_path / "b.npz", 32)
    (tmp_path / "c.npz").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot read"):
        load_images(tmp_path / "c.npz", 32)


# ----------------------------------------------------------------------------- default, split, batches


def test_default_dataset_is_the_stand_in_and_is_cached(tmp_path, monkeypatch):
    dataset = default_dataset(32, count=20, seed=3, cache_dir=tmp_path / "c")
    assert dataset.images.shape == (20, 32, 32, 3) and dataset.images.dtype == np.float32
    assert np.bincount(dataset.labels).tolist() == [14, 4, 2]  # ISIC 2017 proportions: 13.7 nevi, 3.7 melanomas, 2.5 keratoses
    assert dataset.class_names == CLASS_NAMES and "not medical data" in dataset.source
    from service import synthetic

    monkeypatch.setattr(synthetic, "make_dataset", lambda *a, **k: (_ for _ in ()).throw(AssertionError("regenerated")))
    again = default_dataset(32, count=20, seed=3, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(again.images, dataset.images)


def test_split_is_disjoint_stratified_and_seeded():
    labels = np.repeat([0, 1, 2], [70, 10, 20])
    dataset = data.Dataset(np.arange(100, dtype=np.float32).reshape(100, 1, 1, 1), labels, CLASS_NAMES, [f"{i}" for i in range(100)], "t")
    kept, held = split(dataset, 0.2, seed=1)
    assert len(kept) + len(held) == 100 and len(held) == 20
    assert not set(kept.files) & set(held.files)
    assert np.bincount(held.labels).tolist() == [14, 2, 4]
    np.testing.assert_array_equal(held.images.ravel(), [int(f) for f in held.files])
    assert split(dataset, 0.2, seed=1)[1].files == held.files
    assert split(dataset, 0.2, seed=2)[1].files != held.files
    with pytest.raises(UserError):
        split(dataset, 1.0, seed=0)


def test_split_with_groups_keeps_every_group_on_one_side():
    groups = np.repeat(np.arange(20), np.arange(20) % 5 + 1)  # 20 source images, 1 to 5 patches each
    dataset = data.Dataset(np.zeros((len(groups), 1, 1, 1), np.float32), None, (), [], "t", groups=groups)
    kept, held = split(dataset, 0.2, seed=3)
    assert not set(kept.groups) & set(held.groups)
    assert len(kept) + len(held) == len(groups)
    assert 0.2 * len(groups) <= len(held) < 0.2 * len(groups) + 5  # whole groups, just past the fraction
    assert split(dataset, 0.2, seed=3)[1].groups.tolist() == held.groups.tolist()
    one = data.Dataset(np.zeros((4, 1, 1, 1), np.float32), None, (), [], "t", groups=np.zeros(4, np.int64))
    with pytest.raises(UserError, match="one group"):
        split(one, 0.5, seed=0)


def test_npz_with_x_and_a_source_image_array_loads_groups(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "p.npz", x=images, image=np.array([0, 0, 1, 1, 2, 2], np.int16))
    dataset = load_images(tmp_path / "p.npz", 32)
    assert dataset.groups.tolist() == [0, 0, 1, 1, 2, 2] and dataset.labels is None
    np.testing.assert_array_equal(to_uint8(dataset.images), images)
    np.savez(tmp_path / "bad.npz", x=images, image=np.zeros(5, np.int16))
    with pytest.raises(UserError, match="image must hold one integer group per image"):
        load_images(tmp_path / "bad.npz", 32)


# ----------------------------------------------------------------------------- CLI


def test_sample_data_command_writes_the_isic_layout(tmp_path, capsys):
    assert main(["sample-data", str(tmp_path / "out"), "--count", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "wrote 3 stand-in images" in out and str(tmp_path / "out") in out
    names = sorted(os.listdir(tmp_path / "out"))
    assert names == [GROUND_TRUTH] + [f"ISIC_{i:07d}{s}" for i in range(3) for s in (".jpg", "_superpixels.png")]


@pytest.mark.parametrize(
    "args, message",
    [
        (["file.txt", "--count", "0"], "--count must be between 1 and"),
        (["file.txt", "--count", "x"], "invalid int value"),
        (["file.txt"], "exists and is not a folder"),
        (["full"], "output folder is not empty"),
        ([], "the following arguments are required: OUT"),
    ],
    ids=["zero", "not-a-number", "out-is-a-file", "out-not-empty", "no-out"],
)
def test_sample_data_bad_input_exits_2_with_one_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "ISIC_0000000.jpg").write_text("")
    assert main(["sample-data", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:")
    assert message in err


def test_unwritable_cache_warns_and_still_loads(tmp_path, capsys):
    write_image(tmp_path / "data" / "a.png", random_rgb(0))
    (tmp_path / "not-a-folder").write_text("")
    dataset = load_images(tmp_path / "data", 32, cache_dir=tmp_path / "not-a-folder", progress=False)
    assert len(dataset) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not write the cache" in err


def test_split_of_single_image_classes_falls_back_to_unstratified():
    dataset = data.Dataset(np.zeros((3, 1, 1, 1), np.float32), np.array([0, 1, 2]), CLASS_NAMES, [], "t")
    kept, held = split(dataset, 0.3, seed=0)
    assert len(kept) == 2 and len(held) == 1


def test_a_folder_of_tar_shards_and_loose_images_is_a_one_line_error(tmp_path):
    """Either kind alone would be read without a word about the other."""
    import io
    import tarfile

    folder = tmp_path / "mixed"
    folder.mkdir()
    image = random_rgb(1, 32, 32)
    write_image(folder / "loose.png", image)
    data = cv2.imencode(".png", image)[1].tobytes()
    with tarfile.open(folder / "shard-000000.tar", "w") as archive:
        member = tarfile.TarInfo("000000000.png")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    with pytest.raises(UserError, match=r"holds both .tar shards \(shard-000000.tar\) and 1 image file\(s\) \(loose.png\)") as caught:
        load_images(folder, 32, progress=False)
    assert "\n" not in str(caught.value)
    (folder / "loose.png").unlink()
    assert len(load_images(folder, 32, progress=False)) == 1


def test_isic_2016_headerless_labels_read_0_0_and_1_0_as_benign_and_malignant(tmp_path):
    from service.labels import read_label_file

    path = tmp_path / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv"
    path.write_text("ISIC_0000000,0.0\nISIC_0000001,1.0\nISIC_0000002,0\nISIC_0000003,1\nISIC_0000004,malignant\n")
    table = read_label_file(path)
    assert table.format == "ISIC 2016 Part 3" and table.class_names == ("benign", "malignant")
    assert table.labels == {"ISIC_0000000": 0, "ISIC_0000001": 1, "ISIC_0000002": 0, "ISIC_0000003": 1, "ISIC_0000004": 1}
    path.write_text("ISIC_0000000,1.0\nISIC_0000001,0.5\n")
    with pytest.raises(UserError, match=r"line 2 \(ISIC_0000001\): expected benign or malignant, got '0.5'"):
        read_label_file(path)
