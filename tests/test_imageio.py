import os

import cv2
import numpy as np
import pytest

from service.files import atomic_file
from service.imageio import from_uint8, make_grid, save_grid, save_png, to_uint8


def test_uint8_round_trip_is_exact():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    floats = from_uint8(pixels)
    assert floats.dtype == np.float32
    assert floats.min() == -1.0 and floats.max() == 1.0
    np.testing.assert_array_equal(to_uint8(floats), pixels)


def test_to_uint8_rounds_and_clips():
    values = np.array([-3.0, -1.0, 0.0, 0.999, 1.0, 7.0], np.float32)
    np.testing.assert_array_equal(to_uint8(values), [0, 0, 128, 255, 255, 255])


def test_make_grid_layout_and_padding():
    images = np.stack([np.full((4, 6, 3), 10 * (i + 1), np.uint8) for i in range(5)])
    grid = make_grid(images, columns=3, pad=2)
    assert grid.shape == (2 * (4 + 2) + 2, 3 * (6 + 2) + 2, 3) and grid.dtype == np.uint8
    assert (grid[2:6, 2:8] == 10).all() and (grid[8:12, 10:16] == 50).all()
    assert (grid[:2] == 0).all() and (grid[8:12, 18:24] == 0).all()  # padding and the empty cell


def test_make_grid_rejects_float_images():
    with pytest.raises(ValueError):
        make_grid(np.zeros((2, 4, 4, 3), np.float32))


def test_save_png_writes_rgb_atomically(tmp_path):
    red = np.zeros((5, 7, 3), np.uint8)
    red[..., 0] = 255
    path = tmp_path / "sub" / "red.png"
    save_png(path, red)
    assert cv2.imread(str(path))[0, 0].tolist() == [0, 0, 255]  # OpenCV reads BGR
    assert os.listdir(path.parent) == ["red.png"]  # no temporary file left behind


def test_save_grid_accepts_float_images(tmp_path):
    images = np.full((4, 8, 8, 3), 1.0, np.float32)
    save_grid(tmp_path / "grid.png", images, columns=2)
    grid = cv2.imread(str(tmp_path / "grid.png"))
    assert grid.shape == (2 * 10 + 2, 2 * 10 + 2, 3)
    assert grid[2, 2].tolist() == [255, 255, 255]


def test_atomic_file_leaves_nothing_when_the_write_fails(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as f:
            f.write(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["data.bin"]
    with atomic_file(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["data.bin"]


def test_read_png_returns_what_save_png_wrote(tmp_path):
    import numpy as np

    from service.imageio import read_png, save_png

    image = np.random.default_rng(0).integers(0, 256, size=(8, 6, 3), dtype=np.uint8)
    save_png(tmp_path / "a.png", image)
    assert np.array_equal(read_png(tmp_path / "a.png"), image)
