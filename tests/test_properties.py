"""Properties of the readers of user files, over inputs Hypothesis draws: a label file, an .npz
and an image header either read into something in range or fail as a UserError the command
line shows as one line, never another exception, and never by decoding a declared giant.

Modest example counts, no example database (nothing written into the checkout), no deadline
(the first call of a reader imports its libraries)."""

from __future__ import annotations

import io
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from service import data
from service.errors import UserError
from service.labels import read_label_file

PROPERTY = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def assert_one_line_user_error(error: UserError) -> None:
    """What the command line prints for a UserError (service.run: its words on one line)."""
    message = str(error)
    assert message.strip(), "an empty error message"
    assert "Traceback" not in message
    assert len(" ".join(message.split()).splitlines()) == 1


@pytest.fixture
def scratch():
    """A fresh folder for each drawn example (tmp_path is one per test, not per example)."""
    def make() -> Path:
        return Path(tempfile.mkdtemp(dir=base))

    with tempfile.TemporaryDirectory(prefix="properties-") as base:
        yield make


# ----------------------------------------------------------------------------- label files

HEADERS = [
    None,  # ISIC 2016: no header
    "image_id,melanoma,seborrheic_keratosis", "image_id,melanoma", "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC",
    "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK", "lesion_id,image_id,dx,dx_type", "image_name,patient_id,target",
    "image_id,age,sex", "image_id,image_id,melanoma", "",
]
CELLS = st.one_of(
    st.sampled_from(["0", "1", "0.0", "1.0", "2", "-1", "1e400", "nan", "inf", "", " ", "benign", "malignant",
                     "BENIGN", "UNK", "nv", "mel", "ISIC_0000001", "ISIC_0000002", "P1", '"a,b"', "\ufeff"]),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=8),
)
ROW_IDS = st.integers(0, 5).flatmap(lambda n: st.text(max_size=6) if n == 0 else st.just(f"ISIC_{n:07d}"))
FLAGS = st.sampled_from(["0", "1", "0.0", "1.0"])
CLASS_VALUES = st.sampled_from(["benign", "malignant", "0", "1", "0.0", "1.0", "nv", "mel", "UNK"])


@st.composite
def label_file_text(draw) -> bytes:
    """A CSV that often is one of the archives' formats, with rows that are often right (flags
    and classes in every column) and often wrong (any cell, any row length)."""
    if draw(st.integers(0, 3)):
        header = draw(st.sampled_from(HEADERS))
    else:
        header = ",".join(draw(st.lists(CELLS, min_size=1, max_size=5)))
    width = max(1, len(header.split(",")) - 1) if header else 1
    if header is None or not set(header.split(",")) & {"melanoma", "MEL"}:  # a column of classes
        well_formed = st.lists(CLASS_VALUES, min_size=width, max_size=width)
    elif "MEL" in header:  # one-hot: one 1 per row
        well_formed = st.integers(0, width - 1).map(lambda hot: ["1.0" if i == hot else "0.0" for i in range(width)])
    else:
        well_formed = st.lists(FLAGS, min_size=width, max_size=width)
    wrong = st.lists(CELLS, min_size=0, max_size=width + 1)
    rows = draw(st.lists(st.tuples(ROW_IDS, well_formed if draw(st.integers(0, 3)) else wrong), max_size=6,
                         unique_by=(lambda row: row[0]) if draw(st.integers(0, 3)) else None))
    lines = ([header] if header is not None else []) + [",".join([image_id, *cells]) for image_id, cells in rows]
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join(lines) + draw(st.sampled_from(["", newline]))
    return (draw(st.sampled_from(["", "\ufeff"])) + text).encode("utf-8")


@PROPERTY
@given(content=st.one_of(label_file_text(), label_file_text(), label_file_text(), st.binary(max_size=200)),
       label_column=st.integers(0, 4).flatmap(
           lambda n: st.sampled_from(["melanoma", "dx", "target", "age", "MEL", "nothing"]) if n == 0 else st.none()))
def test_a_label_file_reads_into_its_classes_or_is_one_line_of_error(scratch, content, label_column):
    path = scratch() / "labels.csv"
    path.write_bytes(content)
    try:
        table = read_label_file(path, label_column)
    except UserError as error:
        assert_one_line_user_error(error)
        event("refused")
        return
    event(f"read as {table.format}")
    assert table.labels, "a table without rows was accepted"
    assert len(set(table.class_names)) == len(table.class_names) and all(table.class_names)
    assert all(0 <= label < len(table.class_names) for label in table.labels.values())


# ----------------------------------------------------------------------------- .npz files

NPZ_NAMES = st.sampled_from([*data.NPZ_IMAGE_KEYS, *data.NPZ_LABEL_KEYS, *data.NPZ_GROUP_KEYS, "class_names", "other"])
DTYPES = st.sampled_from([np.uint8, np.int8, np.int64, np.uint64, np.float32, np.bool_])


@st.composite
def small_array(draw) -> np.ndarray:
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
    if draw(st.booleans()):  # often an image stack the loader takes: (N, H, W[, 1|3|4])
        shape = (draw(st.integers(0, 4)), draw(st.integers(0, 6)), draw(st.integers(0, 6)),
                 *draw(st.sampled_from([(), (1,), (3,), (4,), (2,)])))
    dtype = np.dtype(draw(DTYPES))
    values = draw(st.integers(-3, 300)) if dtype.kind in "iu" else draw(st.integers(0, 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        high = int(min(info.max, max(abs(values), 1)))
        low = int(max(info.min, -3))
        return rng.integers(low, high, size=shape, endpoint=True).astype(dtype)
    return rng.integers(0, 2, size=shape).astype(dtype)


@st.composite
def labelled_set(draw) -> dict[str, np.ndarray]:
    """An image stack and its labels under keys of the same position, often nearly right."""
    position = draw(st.integers(0, len(data.NPZ_IMAGE_KEYS) - 1))
    count = draw(st.integers(1, 4)) if draw(st.integers(0, 3)) else 0
    images = draw(small_array())
    if draw(st.integers(0, 3)):
        images = np.zeros((count, draw(st.integers(1, 6)), draw(st.integers(1, 6)), 3), np.uint8)
    label_count = count if draw(st.integers(0, 3)) else draw(st.integers(0, 5))
    highest = draw(st.sampled_from([1, 2, 3, 9]))
    labels = np.array(draw(st.lists(st.integers(-1 if draw(st.booleans()) else 0, highest), min_size=label_count,
                                    max_size=label_count)), np.int64)
    arrays = {data.NPZ_IMAGE_KEYS[position]: images, data.NPZ_LABEL_KEYS[position]: labels}
    if draw(st.booleans()):
        arrays["class_names"] = np.array([f"c{i}" for i in range(draw(st.integers(0, 10)))])
    if draw(st.booleans()):
        arrays[draw(st.sampled_from(data.NPZ_GROUP_KEYS))] = draw(small_array())
    return arrays


@PROPERTY
@given(arrays=st.one_of(labelled_set(), st.dictionaries(
           NPZ_NAMES, st.one_of(small_array(), st.just(np.array(["nevus", "melanoma"]))), max_size=4)),
       unlabelled=st.booleans())
def test_an_npz_loads_in_range_or_is_one_line_of_error(scratch, arrays, unlabelled):
    path = scratch() / "set.npz"
    np.savez(path, **arrays)
    try:
        dataset = data.load_images(path, 32, progress=False, unlabelled=unlabelled)
    except UserError as error:
        assert_one_line_user_error(error)
        event("refused")
        return
    event("loaded" if dataset.labels is None else "loaded with labels")
    assert dataset.images.shape[1:] == (32, 32, 3) and len(dataset.images) > 0
    assert dataset.images.dtype == np.float32 and np.abs(dataset.images).max() <= 1.0
    if dataset.labels is not None:
        assert len(dataset.labels) == len(dataset.images)
        assert ((0 <= dataset.labels) & (dataset.labels < len(dataset.class_names))).all()


def npy_member(shape: tuple, dtype: str, payload: bytes, version: int) -> bytes:
    """An .npy whose header declares `shape` whatever `payload` holds (damaged or hostile)."""
    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    buffer.write(np.lib.format.magic(version, 0))
    if version == 1:
        np.lib.format.write_array_header_1_0(buffer, header)
    else:
        np.lib.format.write_array_header_2_0(buffer, header)
    return buffer.getvalue() + payload


@PROPERTY
@given(shape=st.lists(st.one_of(st.integers(0, 8), st.integers(2**20, 2**33)), min_size=1, max_size=4).map(tuple),
       dtype=st.sampled_from(["|u1", "<f4", "<i8", "|b1", "<U4"]), payload=st.binary(max_size=64),
       version=st.sampled_from([1, 2]), name=st.sampled_from(["train_images", "x", "labels"]),
       truncate=st.one_of(st.none(), st.integers(0, 40)))
def test_a_declared_npz_shape_is_checked_before_anything_is_loaded(scratch, shape, dtype, payload, version, name,
                                                                   truncate):
    member = npy_member(shape, dtype, payload, version)
    if truncate is not None:
        member = member[:truncate]  # a torn header
    path = scratch() / "set.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}.npy", member)
    try:
        dataset = data.load_images(path, 32, progress=False, unlabelled=True)
    except UserError as error:
        assert_one_line_user_error(error)
        event("refused")
        return
    event("loaded")
    # only a header that tells the truth about its payload loads
    assert np.prod(shape) * np.dtype(dtype).itemsize == len(payload)
    assert dataset.images.shape[1:] == (32, 32, 3)


# ----------------------------------------------------------------------------- image headers


def png_declaring(width: int, height: int) -> bytes:
    """A PNG signature and an IHDR chunk declaring width x height (8-bit RGB), then IEND: a
    header that tells a size, with no pixels behind it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


@PROPERTY
@given(width=st.integers(1, 2**31 - 1), height=st.integers(1, 2**31 - 1), max_pixels=st.integers(1, 10**6))
def test_an_image_declaring_more_pixels_than_the_limit_is_never_decoded(width, height, max_pixels):
    encoded = png_declaring(width, height)
    declared = data.declared_pixels(np.frombuffer(encoded, np.uint8))
    assert declared == float(width) * float(height) or declared == float("inf")
    if width * height > max_pixels:
        assert data.decode_image(encoded, 8, "center", max_pixels=max_pixels) is None


@PROPERTY
@given(width=st.integers(1, 48), height=st.integers(1, 48), max_pixels=st.integers(1, 2500),
       extension=st.sampled_from([".png", ".bmp", ".jpg"]))
def test_a_real_image_is_decoded_exactly_when_its_pixels_are_within_the_limit(width, height, max_pixels, extension):
    pixels = np.random.default_rng(width * 100 + height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(extension, pixels)
    assert ok
    image = data.decode_image(encoded.tobytes(), 8, "center", max_pixels=max_pixels)
    if width * height > max_pixels:
        assert image is None
    else:
        assert image is not None and image.shape == (8, 8, 3) and image.dtype == np.uint8


@PROPERTY
@given(content=st.binary(max_size=300), max_pixels=st.integers(1, 10**6))
def test_arbitrary_bytes_decode_to_an_image_or_none(content, max_pixels):
    image = data.decode_image(content, 8, "squash", max_pixels=max_pixels)
    assert image is None or image.shape == (8, 8, 3)
