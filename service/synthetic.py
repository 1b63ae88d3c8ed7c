"""Embedded stand-in dataset: procedural dermoscopy-like images.

THIS IS NOT MEDICAL DATA. The images are drawn by a program from random numbers, to look
roughly like dermoscopic photographs of skin lesions, so that the project trains, generates
and validates end to end with no download. Nothing learned from them says anything about
real lesions, and they must never be used to judge a diagnostic method.

What is drawn, per image: a skin-tone background with low-frequency redness, fine skin texture
and a dermoscope vignette (the dark circular field edge of many ISIC photos, or a milder
fall-off); a pigmented lesion with an irregular border; colour variegation; dots/globules;
and hairs. The three ISIC 2017 classes have different looks:
- nevus (0): small to medium, symmetric, near-elliptic, an even brown with a regular pigment
  network, a few regular globules, soft edge;
- melanoma (1): larger, asymmetric and off-centre, irregular border, several colours (light
  and dark brown, black, blue-grey veil, red-brown, whitish regression), an atypical network,
  irregular black dots near the edge, edge sharp in some places and diffuse in others;
- seborrheic keratosis (2): lighter tan, waxy sheen, cerebriform ridges and furrows, milia-like
  cysts (whitish dots) and comedo-like openings (dark dots), a sharp "stuck-on" edge.

Each image is drawn on a canvas twice its side (at least 64, at most 256 pixels) and
area-downsampled, as real dermoscopy reaches the network's size from large photographs: hairs
are faint and edges soft. The skin is desaturated and the whole image brightened to the colours
of photographs. Measured against the ISIC 2017 training images at 64x64
(bench/standin_stats.py; median over images, real / stand-in): high-pass RMS 4.1 / 4.5 levels
(9.4 before this drawing), the spectrum's high band 2.7% / 1.4% (10.1%), thin dark structures
on 1.7% / 2.2% of the pixels (3.1%) at contrast 30 / 36 levels (63), mean colour (180, 151, 139)
/ (173, 144, 129), saturation 61 / 68 (104).

Classes come in the ISIC 2017 training proportions (1,372 nevi, 374 melanomas, 254 seborrheic
keratoses in 2,000 images).
Determinism: `make_image(seed, index, cls, size)` is a pure function of its arguments; in
`make_dataset` the class layout is a function of (seed, count), so the same call always gives
the same bytes.

The README's preview grids (docs/embedded_dataset.png: the first 64 images at 64x64, seed 0;
docs/embedded_dataset_128.png: the first 16 at 128x128) are made with
`save_grid(path, make_dataset(count, size, seed=0)[0], columns=8)` (service.imageio).
"""

from __future__ import annotations

import csv
import io
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from service.errors import UserError
from service.files import make_folder, refuse_link, write_bytes, write_text

DRAWING_VERSION = 4  # in every image's random stream: bump when the drawing changes
GENERATOR_VERSION = 6  # in the cache key: bump when the drawing or the class layout changes, so cached copies are rebuilt
ISIC_CLASS_COUNTS = (1372, 374, 254)  # nevus, melanoma, seborrheic keratosis in ISIC 2017 training
ISIC_IMAGE_SHAPES = ((768, 1024), (576, 767), (480, 640))  # (height, width) of the written JPEGs
GROUND_TRUTH_NAME = "ISIC-2017_Training_Part3_GroundTruth.csv"
ISIC_WORK_SIZE = 192  # drawing canvas (short side) of the large ISIC-layout JPEGs: keeps writing fast
# Calibrated against ISIC 2017 training images at 64x64 (bench/standin_stats.py, docs/presets.md):
# the skin tones below are more saturated, and the whole drawing darker, than photographs are.
SKIN_SATURATION = 0.5
PHOTO_BRIGHTNESS = 1.05
DRAW_SCALE = 2  # the drawing canvas is this many times the target side (at most 256), then area-downsampled

NEVUS, MELANOMA, KERATOSIS = 0, 1, 2

# Colours, RGB in [0, 1].
SKIN_TONES = np.array([[0.93, 0.76, 0.68], [0.86, 0.64, 0.55], [0.78, 0.56, 0.44], [0.68, 0.48, 0.36]], np.float32)
LIGHT_BROWN = np.array([0.66, 0.46, 0.31], np.float32)
MID_BROWN = np.array([0.47, 0.29, 0.18], np.float32)
DARK_BROWN = np.array([0.28, 0.16, 0.10], np.float32)
BLACKISH = np.array([0.11, 0.08, 0.08], np.float32)
BLUE_GREY = np.array([0.42, 0.47, 0.57], np.float32)
RED_BROWN = np.array([0.60, 0.27, 0.22], np.float32)
REGRESSION_WHITE = np.array([0.86, 0.80, 0.80], np.float32)
KERATOSIS_TAN = np.array([0.74, 0.58, 0.42], np.float32)
KERATOSIS_BROWN = np.array([0.52, 0.38, 0.27], np.float32)
MILIA_WHITE = np.array([0.93, 0.90, 0.78], np.float32)
GYRUS_LIGHT = np.array([0.85, 0.74, 0.60], np.float32)


# ----------------------------------------------------------------------------- public API


def class_counts(count: int) -> tuple[int, int, int]:
    """Images per class for `count` images, in the ISIC 2017 proportions (largest remainder)."""
    shares = np.array(ISIC_CLASS_COUNTS, dtype=np.float64) * count / sum(ISIC_CLASS_COUNTS)
    counts = np.floor(shares).astype(int)
    for i in np.argsort(-(shares - counts), kind="stable")[: count - counts.sum()]:
        counts[i] += 1
    return tuple(int(c) for c in counts)


def class_layout(count: int, seed: int) -> np.ndarray:
    """int64 (count,) class of each image: exact proportions, order shuffled by the seed."""
    labels = np.repeat(np.arange(3), class_counts(count))
    return np.random.default_rng([seed, 0x5EED]).permutation(labels).astype(np.int64)


def make_image(seed: int, index: int, cls: int, size: int | tuple[int, int], work_size: int | None = None) -> np.ndarray:
    """One uint8 RGB image, (size, size, 3) or (height, width, 3) for size=(height, width).

    Drawn on a canvas whose short side is `work_size` (default: default_work_size) and
    resized with INTER_AREA (linear when enlarging).
    """
    if cls not in (NEVUS, MELANOMA, KERATOSIS):
        raise ValueError(f"class must be 0, 1 or 2, got {cls}")
    shape = (size, size) if np.isscalar(size) else tuple(size)
    return _draw_batch(seed, [index], cls, shape, work_size)[0]


def default_work_size(short_side: int) -> int:
    """Drawing canvas: DRAW_SCALE times the target side, area-downsampled as real dermoscopy
    reaches the network's size from photographs of about 1000 px (hairs faint, edges soft),
    but at least 64 pixels and at most 256 (or the target itself when larger), so large images
    stay cheap."""
    return int(max(min(max(DRAW_SCALE * short_side, 64), 256), short_side))


BATCH_PIXELS = 300_000  # canvas pixels drawn at once: bounds memory, amortises per-call cost


def make_dataset(count: int, size: int, seed: int = 0, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (count, size, size, 3), labels int64 (count,)) in the ISIC proportions.

    Image i equals make_image(seed, i, labels[i], size), up to rare one-level differences
    where vectorised maths rounds differently for a batch than for one image.
    """
    if count < 1:
        raise UserError(f"count must be at least 1, got {count}")
    labels = class_layout(count, seed)
    work_short = default_work_size(size)
    batch = max(1, BATCH_PIXELS // (work_short * work_short))
    jobs = [(cls, members[start : start + batch])
            for cls in range(3) for members in [np.flatnonzero(labels == cls)]
            for start in range(0, len(members), batch)]
    images = np.empty((count, size, size, 3), np.uint8)

    def draw(job):
        cls, indices = job
        images[indices] = _draw_batch(seed, indices, cls, (size, size))

    from tqdm import tqdm

    # Threads: the batched NumPy work releases the GIL (processes would re-import __main__).
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for _ in tqdm(pool.map(draw, jobs), total=len(jobs), desc="drawing the stand-in dataset",
                      unit="batch", file=sys.stderr, disable=not progress, leave=False):
            pass
    return images, labels


def write_isic_layout(out_dir: str | os.PathLike, count: int, seed: int = 0, progress: bool = True) -> dict:
    """Write `count` images in ISIC 2017 training layout; returns a summary dict.

    out_dir/ISIC_%07d.jpg (sizes cycling through ISIC_IMAGE_SHAPES), one
    ISIC_%07d_superpixels.png each (a label map encoded in RGB as ISIC does:
    index = R + 256 G + 65536 B), and out_dir/ISIC-2017_Training_Part3_GroundTruth.csv.
    """
    from tqdm import tqdm

    if count < 1:
        raise UserError(f"count must be at least 1, got {count}")
    out = Path(out_dir).expanduser()
    refuse_link(out, f"--out {out}")
    if out.exists() and not out.is_dir():
        raise UserError(f"output path exists and is not a folder: {out}")
    if out.is_dir() and any(out.iterdir()):
        # Old images beside a new ground-truth CSV would make a layout that does not load.
        raise UserError(f"output folder is not empty: {out}; choose a new or empty folder")
    make_folder(out)
    labels = class_layout(count, seed)

    def write_one(index: int) -> None:
        shape = ISIC_IMAGE_SHAPES[index % len(ISIC_IMAGE_SHAPES)]
        image = make_image(seed, index, int(labels[index]), shape, work_size=ISIC_WORK_SIZE)
        image = _add_grain(image, np.random.default_rng([seed, index, 0x6A]))
        stem = out / f"ISIC_{index:07d}"
        jpeg_ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        png_ok, png = cv2.imencode(".png", _superpixel_png(shape, seed, index))
        if not (jpeg_ok and png_ok):
            raise UserError(f"cannot encode {stem}.jpg or its superpixels")
        write_bytes(f"{stem}.jpg", jpeg.tobytes())
        write_bytes(f"{stem}_superpixels.png", png.tobytes())

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for _ in tqdm(pool.map(write_one, range(count)), total=count, desc="writing images",
                      unit="img", file=sys.stderr, disable=not progress, leave=False):
            pass

    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["image_id", "melanoma", "seborrheic_keratosis"])
    for index, cls in enumerate(labels):
        writer.writerow([f"ISIC_{index:07d}", f"{float(cls == MELANOMA):.1f}", f"{float(cls == KERATOSIS):.1f}"])
    write_text(out / GROUND_TRUTH_NAME, table.getvalue())
    return {"out_dir": str(out), "count": count, "class_counts": class_counts(count), "seed": seed}


def _superpixel_png(shape: tuple[int, int], seed: int, index: int) -> np.ndarray:
    """A superpixel label map as ISIC encodes it (index = R + 256 G + 65536 B), BGR for OpenCV.

    ISIC's maps come from SLIC; a grid of about 1,000 cells of uneven sizes stands in.
    """
    height, width = shape
    rng = np.random.default_rng([seed, index, 0x5B])

    def cell_index(length: int) -> np.ndarray:
        cell = max(4, int(np.sqrt(height * width / 1000)))
        sizes = rng.integers(cell // 2, cell * 3 // 2 + 1, size=length // (cell // 2) + 2)
        return np.repeat(np.arange(len(sizes)), sizes)[:length]

    rows, cols = cell_index(height).astype(np.int32), cell_index(width).astype(np.int32)
    labels = rows[:, None] * np.int32(cols[-1] + 1) + cols[None, :]
    encoded = np.empty((height, width, 3), np.uint8)
    for channel, shift in ((0, 16), (1, 8), (2, 0)):  # B, G, R
        encoded[..., channel] = labels >> shift
    return encoded


def _add_grain(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fine sensor-like grain on an enlarged image, so its JPEG is not unnaturally smooth
    (a smooth JPEG decodes faster than a photograph and would flatter the loader benchmark)."""
    height, width = image.shape[:2]
    tiles = rng.integers(0, 7, size=(2, 96, 96, 3), dtype=np.uint8)
    reps = (height // 96 + 1, width // 96 + 1, 1)
    image = cv2.add(image, np.tile(tiles[0], reps)[:height, :width])
    return cv2.subtract(image, np.tile(tiles[1], reps)[:height, :width])


# ----------------------------------------------------------------------------- drawing
#
# Images are drawn in batches of one class and size. Every random choice comes from the
# image's own generator, in the same order whatever the batch, so an image does not depend on
# its batch; the pixel arithmetic runs once per batch on (B, H, W) arrays, which is what makes
# drawing thousands of images fast (one image at a time, NumPy's per-call overhead dominates).


def _draw_batch(seed: int, indices, cls: int, shape: tuple[int, int], work_size: int | None = None) -> np.ndarray:
    """uint8 (B, height, width, 3): images `indices` of class `cls`, drawn and resized."""
    height, width = shape
    short = min(height, width)
    work_short = work_size or default_work_size(short)
    scale = work_short / short
    work_h, work_w = max(8, round(height * scale)), max(8, round(width * scale))
    rngs = [np.random.default_rng([seed, int(index), cls, DRAWING_VERSION]) for index in indices]
    drawn = _render(rngs, cls, work_h, work_w)
    interpolation = cv2.INTER_AREA if work_h >= height else cv2.INTER_LINEAR
    return np.stack([cv2.resize(image, (width, height), interpolation=interpolation) for image in drawn])


def _render(rngs, cls: int, height: int, width: int) -> np.ndarray:
    """uint8 RGB (B, H, W, 3): one lesion on skin per generator, at the working resolution."""
    short = min(height, width)
    # Coordinates in units of half the short side, origin at the image centre; (H, W),
    # broadcast over the batch.
    ys = (np.arange(height, dtype=np.float32) - (height - 1) / 2) / np.float32(short / 2)
    xs = (np.arange(width, dtype=np.float32) - (width - 1) / 2) / np.float32(short / 2)
    y, x = np.meshgrid(ys, xs, indexing="ij")

    image = _skin(rngs, height, width)
    shapes = [_lesion_shape(rng, cls) for rng in rngs]
    rho, theta = _lesion_coordinates(x, y, shapes)
    edge_width = _edge_width(rngs, cls, theta)
    coverage = _smoothstep(1.0 + edge_width, 1.0 - edge_width, rho)  # 1 inside, 0 outside
    colour, opacity = _lesion_colour(rngs, cls, rho, x, y)
    image += (colour - image) * (coverage * opacity)[..., None]
    for b, rng in enumerate(rngs):  # drawing primitives, in place on each image
        _dots(rng, cls, image[b], shapes[b], short)
        _hairs(rng, image[b], short)
    image *= _vignette(rngs, x, y)[..., None]
    sigma = 0.5 * short / 128
    for b, rng in enumerate(rngs):
        image[b] = cv2.GaussianBlur(image[b], (0, 0), sigma)
        image[b] += rng.standard_normal((height, width, 3), dtype=np.float32) * np.float32(0.006)
    # the colours of a dermoscope photograph: the skin's saturation scaled (each pixel's hue and
    # brightest channel kept; the lesion's colours as drawn), then the brightness
    value = image.max(axis=-1, keepdims=True)
    saturation = SKIN_SATURATION + (1 - SKIN_SATURATION) * coverage[..., None]
    image = (value - (value - image) * saturation) * PHOTO_BRIGHTNESS
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)


def _per_image(values) -> np.ndarray:
    """One value per image, shaped (B, 1, 1) to broadcast over (B, H, W)."""
    return np.asarray(values, np.float32).reshape(-1, 1, 1)


def _uniform(rngs, low, high) -> np.ndarray:
    return _per_image([rng.uniform(low, high) for rng in rngs])


CUBIC_NOISE_STD = 0.86  # std of bicubically enlarged unit normal noise (measured)


def _noise(rngs, height: int, width: int, cells) -> np.ndarray:
    """(B, H, W) smooth value noise, std ~1, with about `cells` features (one number, or one
    per image) across the short side."""
    short = min(height, width)
    field = np.empty((len(rngs), height, width), np.float32)
    for b, rng in enumerate(rngs):
        image_cells = cells[b] if np.ndim(cells) else cells
        grid_h = max(2, int(round(image_cells * height / short)) + 1)
        grid_w = max(2, int(round(image_cells * width / short)) + 1)
        field[b] = cv2.resize(rng.standard_normal((grid_h, grid_w), dtype=np.float32), (width, height),
                              interpolation=cv2.INTER_CUBIC)
    field *= np.float32(1 / CUBIC_NOISE_STD)
    return field


def _fractal(rngs, height, width, cells, octaves=3) -> np.ndarray:
    total = _noise(rngs, height, width, cells)
    for octave in range(1, octaves):
        total += _noise(rngs, height, width, cells * 2**octave) * np.float32(0.5**octave)
    return total * np.float32(1 / np.sqrt(sum(4.0**-o for o in range(octaves))))


def _smoothstep(edge0, edge1, value):
    t = np.clip((value - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _skin(rngs, height, width) -> np.ndarray:
    """(B, H, W, 3) skin tone with blotchy redness, fine texture, furrows and a lighting ramp."""
    tones = np.stack([(rng.dirichlet(np.ones(len(SKIN_TONES)) * 0.7) @ SKIN_TONES) * rng.uniform(0.92, 1.05)
                      for rng in rngs])
    image = _filled(len(rngs), height, width, tones)
    redness = _fractal(rngs, height, width, 3, octaves=2) * _uniform(rngs, 0.02, 0.05)
    image += redness[..., None] * np.array([0.6, -0.5, -0.4], np.float32)
    texture = _fractal(rngs, height, width, 20, octaves=2) * _uniform(rngs, 0.008, 0.02)
    image *= 1 + texture[..., None]
    # Skin furrows: faint lines where smooth noise crosses zero.
    furrows = np.exp(-(_noise(rngs, height, width, 10) * np.float32(1 / 0.12)) ** 2) * _uniform(rngs, 0.02, 0.06)
    image *= 1 - furrows[..., None]
    angle = _uniform(rngs, 0, 2 * np.pi)
    ramp = np.cos(angle) * np.linspace(-1, 1, width, dtype=np.float32) + np.sin(angle) * np.linspace(
        -1, 1, height, dtype=np.float32)[:, None]
    image *= (1 + _uniform(rngs, 0.0, 0.08) * ramp)[..., None]
    return image


def _lesion_shape(rng, cls) -> dict:
    """Centre, radius, orientation and border harmonics of the lesion outline."""
    if cls == NEVUS:
        radius, offset, amplitude, harmonics, aspect = rng.uniform(0.30, 0.72), 0.08, rng.uniform(0.015, 0.05), 4, rng.uniform(1.0, 1.3)
    elif cls == MELANOMA:
        radius, offset, amplitude, harmonics, aspect = rng.uniform(0.50, 0.78), 0.18, rng.uniform(0.09, 0.16), 11, rng.uniform(1.0, 1.5)
    else:
        radius, offset, amplitude, harmonics, aspect = rng.uniform(0.38, 0.66), 0.12, rng.uniform(0.04, 0.08), 7, rng.uniform(1.0, 1.4)
    orders = np.arange(2, harmonics + 1)
    # Symmetric nevi keep only even harmonics (point symmetry); others get all, decaying slowly.
    amplitudes = amplitude * rng.uniform(0.4, 1.0, len(orders)) / orders**0.6
    if cls == NEVUS:
        amplitudes[orders % 2 == 1] = 0.0
    return {
        "cx": rng.uniform(-offset, offset),
        "cy": rng.uniform(-offset, offset),
        "radius": radius,
        "aspect": aspect,
        "rotation": rng.uniform(0, np.pi),
        "orders": orders,
        "amplitudes": amplitudes,
        "phases": rng.uniform(0, 2 * np.pi, len(orders)),
    }


def _border(shape, theta):
    """Outline radius at each angle (relative units)."""
    theta = np.asarray(theta, np.float64)[..., None]
    wobble = (shape["amplitudes"] * np.cos(shape["orders"] * theta + shape["phases"])).sum(-1)
    return 1.0 + wobble


BORDER_TABLE_SIZE = 512  # angular steps of 0.7 degrees: far finer than the 11th harmonic


def _lesion_coordinates(x, y, shapes):
    """(B, H, W) rho: distance from the lesion centre relative to its outline (1 on the
    border), and theta: the angle; the outline comes from a table over the angle."""
    def per_image(key):
        return _per_image([shape[key] for shape in shapes])

    dx, dy = x - per_image("cx"), y - per_image("cy")
    rotation = per_image("rotation")
    c, s = np.cos(rotation), np.sin(rotation)
    u, v = (c * dx + s * dy) / per_image("aspect"), c * dy - s * dx
    theta = np.arctan2(v, u)
    angles = np.linspace(-np.pi, np.pi, BORDER_TABLE_SIZE + 1)
    tables = np.stack([_border(shape, angles) for shape in shapes]).astype(np.float32)
    index = np.clip(((theta + np.float32(np.pi)) * np.float32(BORDER_TABLE_SIZE / (2 * np.pi)) + 0.5).astype(np.int32),
                    0, BORDER_TABLE_SIZE)
    border = np.take_along_axis(tables, index.reshape(len(shapes), -1), axis=1).reshape(index.shape)
    rho = np.sqrt(u * u + v * v) / (per_image("radius") * border)
    return rho, theta


def _edge_width(rngs, cls, theta):
    """Half-width of the border fade in rho units: soft for nevi, sharp for keratoses,
    sharp in some directions and diffuse in others for melanoma."""
    if cls == NEVUS:
        return _uniform(rngs, 0.08, 0.16)
    if cls == KERATOSIS:
        return _uniform(rngs, 0.015, 0.04)
    phase = _uniform(rngs, 0, 2 * np.pi)
    order = _per_image([rng.integers(1, 4) for rng in rngs])
    return 0.03 + 0.14 * (0.5 + 0.5 * np.cos(order * theta + phase))


def _mix(colour, other, weight):
    """colour <- colour + (other - colour) * clip(weight, 0, 1), in place; returns colour.
    `other`: one RGB colour, one per image (B, 3), or per pixel; weight broadcasts to (B, H, W)."""
    other = np.asarray(other, np.float32)
    if other.ndim == 2:
        other = other[:, None, None, :]
    weight = np.clip(weight, 0.0, 1.0, dtype=np.float32)[..., None]
    colour += (other - colour) * weight
    return colour


def _filled(count, height, width, rgb):
    """(B, H, W, 3) filled with one colour, or one per image for rgb of shape (B, 3)."""
    colour = np.empty((count, height, width, 3), np.float32)
    rgb = np.asarray(rgb, np.float32)
    colour[:] = rgb[:, None, None, :] if rgb.ndim == 2 else rgb
    return colour


def _network(rngs, x, y, cells, sharpness):
    """(B, H, W) pigment-network-like mesh: two crossing gratings warped by noise into
    irregular holes; 1 on the lines, 0 in the holes. `cells` (per image): holes across the
    short side."""
    height, width = x.shape
    cells = np.asarray(cells, np.float64)
    angle = _uniform(rngs, 0, np.pi)
    c, s = np.cos(angle), np.sin(angle)
    frequency = _per_image(np.pi * cells / 2)
    warp = np.float32(2.0)
    along = np.sin(frequency * (c * x + s * y) + warp * _noise(rngs, height, width, cells / 2.5))
    across = np.sin(frequency * (c * y - s * x) + warp * _noise(rngs, height, width, cells / 2.5))
    sharp = np.float32(1 / sharpness)
    lines = np.maximum(np.exp(-(along * sharp) ** 2), np.exp(-(across * sharp) ** 2))
    return lines * np.clip(0.65 + 0.35 * _noise(rngs, height, width, cells / 2), 0, 1)


def _lesion_colour(rngs, cls, rho, x, y):
    """(colour (B, H, W, 3), opacity broadcastable to (B, H, W)) of the lesions, before the
    outline mask."""
    count, height, width = rho.shape
    inner = np.clip(1 - rho, 0, 1)
    if cls == NEVUS:
        # Even brown, a little darker in the middle, a fine regular network fading at the rim.
        base = np.stack([(LIGHT_BROWN + (DARK_BROWN - LIGHT_BROWN) * rng.uniform(0.05, 0.8)) * rng.uniform(0.9, 1.05)
                         for rng in rngs])
        colour = _filled(count, height, width, base)
        _mix(colour, DARK_BROWN, _uniform(rngs, 0.1, 0.4) * inner**1.5)
        network = _network(rngs, x, y, [rng.uniform(14, 20) for rng in rngs], 0.35)
        _mix(colour, DARK_BROWN, _uniform(rngs, 0.2, 0.4) * network * _smoothstep(1.0, 0.6, rho))
        colour *= (1 + 0.04 * _noise(rngs, height, width, 6))[..., None]
        opacity = _uniform(rngs, 0.75, 0.95) * (0.75 + 0.25 * _smoothstep(1.0, 0.4, rho))
        return colour, opacity

    if cls == MELANOMA:
        # Asymmetric light-to-dark ramp, then diffuse areas of other colours where noise peaks.
        angle = _uniform(rngs, 0, 2 * np.pi)
        ramp = 0.5 + 0.6 * (np.cos(angle) * x + np.sin(angle) * y)
        colour = _filled(count, height, width, LIGHT_BROWN)
        _mix(colour, DARK_BROWN, ramp)
        _mix(colour, MID_BROWN, 0.3 + 0.4 * _noise(rngs, height, width, 5))
        _mix(colour, BLACKISH, 0.9 * (_fractal(rngs, height, width, 4) - _uniform(rngs, 0.2, 0.7)))
        _mix(colour, BLUE_GREY, 0.8 * (_fractal(rngs, height, width, 3) - _uniform(rngs, 0.2, 0.8)) * inner**0.5)
        _mix(colour, RED_BROWN, 0.8 * (_fractal(rngs, height, width, 4) - _uniform(rngs, 0.2, 0.8)))
        regression = _per_image([rng.random() < 0.4 for rng in rngs])  # whitish areas in some
        _mix(colour, REGRESSION_WHITE, regression * 0.7 * (_fractal(rngs, height, width, 5) - 1.0) * inner**0.5)
        # Atypical network: thick, dark, and only in patches.
        patch = _smoothstep(0.0, 0.8, _noise(rngs, height, width, 3))
        _mix(colour, BLACKISH, 0.4 * _network(rngs, x, y, [rng.uniform(9, 13) for rng in rngs], 0.45) * patch)
        opacity = _uniform(rngs, 0.85, 1.0) * (0.8 + 0.2 * _smoothstep(-0.5, 0.8, _noise(rngs, height, width, 4)))
        return colour, opacity

    # Seborrheic keratosis: tan, waxy, cerebriform ridges (gyri light, furrows dark).
    base = np.stack([KERATOSIS_TAN + (KERATOSIS_BROWN - KERATOSIS_TAN) * rng.uniform(0.0, 0.9) for rng in rngs])
    colour = _filled(count, height, width, base)
    field = _noise(rngs, height, width, [rng.uniform(8, 13) for rng in rngs])
    furrows = np.exp(-(field * np.float32(1 / 0.3)) ** 2)
    _mix(colour, base * 0.55, _uniform(rngs, 0.4, 0.7) * furrows)
    _mix(colour, GYRUS_LIGHT, 0.4 * _smoothstep(0.5, 1.6, np.abs(field)))
    colour *= (1 + 0.06 * _noise(rngs, height, width, 4))[..., None]
    # Waxy sheen: a broad soft highlight.
    hx, hy = _uniform(rngs, -0.3, 0.3), _uniform(rngs, -0.3, 0.3)
    sheen = np.exp(-((x - hx) ** 2 + (y - hy) ** 2) * np.float32(1 / 0.12))
    colour += (0.10 * sheen)[..., None]
    return colour, _uniform(rngs, 0.8, 0.95)


def _points_in_lesion(rng, shape, count, rho_low, rho_high):
    """`count` random points (x, y arrays) whose relative radius lies in [rho_low, rho_high]."""
    theta = rng.uniform(-np.pi, np.pi, count)
    r = rng.uniform(rho_low, rho_high, count) * shape["radius"] * _border(shape, theta)
    u, v = r * np.cos(theta) * shape["aspect"], r * np.sin(theta)
    c, s = np.cos(shape["rotation"]), np.sin(shape["rotation"])
    return shape["cx"] + c * u - s * v, shape["cy"] + s * u + c * v


def _dots(rng, cls, image, shape, short) -> None:
    """Globules (nevus), irregular peripheral black dots (melanoma), milia and comedo
    openings (keratosis): anti-aliased circles on a layer, blended into `image` in place."""
    height, width = image.shape[:2]
    half = short / 2
    layer = np.zeros_like(image)
    mask = np.zeros((height, width), np.float32)
    if cls == NEVUS:
        globules = 0 if rng.random() < 0.4 else rng.integers(1, 10)
        specs = [(DARK_BROWN * 0.8, globules, 0.0, 0.7, (0.018, 0.03))]
    elif cls == MELANOMA:
        specs = [(BLACKISH, rng.integers(6, 22), 0.55, 1.08, (0.006, 0.02)),
                 (DARK_BROWN, rng.integers(0, 8), 0.2, 0.9, (0.015, 0.04))]
    else:
        specs = [(MILIA_WHITE, rng.integers(2, 9), 0.0, 0.8, (0.012, 0.03)),
                 (DARK_BROWN * 0.6, rng.integers(1, 8), 0.0, 0.85, (0.012, 0.03))]
    for colour, number, rho_low, rho_high, (r_low, r_high) in specs:
        px, py = _points_in_lesion(rng, shape, int(number), rho_low, rho_high)
        # OpenCV sub-pixel drawing: coordinates and radii in 1/16 pixel (shift=4).
        centres_x = np.rint((px * half + (width - 1) / 2) * 16).astype(int)
        centres_y = np.rint((py * half + (height - 1) / 2) * 16).astype(int)
        radii = np.maximum(16, np.rint(rng.uniform(r_low, r_high, int(number)) * half * shape["radius"] / 0.5 * 16)).astype(int)
        rgb = tuple(float(c) for c in colour)
        for cx, cy, radius in zip(centres_x.tolist(), centres_y.tolist(), radii.tolist()):
            cv2.circle(layer, (cx, cy), radius, rgb, -1, cv2.LINE_AA, shift=4)
            cv2.circle(mask, (cx, cy), radius, 1.0, -1, cv2.LINE_AA, shift=4)
    # The layer holds colour x coverage (premultiplied), so blurring both keeps them consistent.
    softness = 0.6 * short / 128
    mask = cv2.GaussianBlur(mask, (0, 0), softness)[..., None] * np.float32(0.85)
    image *= 1 - mask
    image += cv2.GaussianBlur(layer, (0, 0), softness) * np.float32(0.85)


def _hairs(rng, image, short) -> None:
    """Dark, slightly curved hairs (quadratic Bezier curves), none in about half of the
    images; drawn into `image` (a contiguous H x W x 3 view) in place."""
    height, width = image.shape[:2]
    count = 0 if rng.random() < 0.5 else int(rng.integers(1, 7))
    colour = tuple(float(c) for c in rng.uniform(0.12, 0.35) * np.array([1.0, 0.85, 0.75]))
    t = np.linspace(0, 1, 24)[:, None]
    for _ in range(count):
        start = rng.uniform(0, 1, 2) * (width, height)
        direction = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.4, 1.2) * short
        end = start + length * np.array([np.cos(direction), np.sin(direction)])
        bend = (start + end) / 2 + rng.normal(0, 0.15 * short, 2)
        curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end
        thickness = max(1, int(round(rng.uniform(0.6, 1.4) * short / 128)))
        cv2.polylines(image, [np.round(curve * 16).astype(np.int32)], False, colour, thickness, cv2.LINE_AA, shift=4)


def _vignette(rngs, x, y):
    """(B, H, W) brightness factor of the dermoscope's field: a dark circular edge (about 60%
    of images) or a mild fall-off."""
    r2 = (x - _uniform(rngs, -0.1, 0.1)) ** 2 + (y - _uniform(rngs, -0.1, 0.1)) ** 2
    circular = _per_image([rng.random() < 0.6 for rng in rngs])
    radius = _uniform(rngs, 1.05, 1.45)
    outside = _uniform(rngs, 0.02, 0.07)
    mild = _uniform(rngs, 0.08, 0.22)
    field = _smoothstep(radius + 0.06, radius - 0.06, np.sqrt(r2))
    dark_edge = (1 - 0.25 * r2 / radius**2) * field + (1 - field) * outside
    return np.where(circular > 0, dark_edge, 1 - mild * r2 / 2)
