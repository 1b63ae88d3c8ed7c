"""Training data: loading, caching, splitting and batching.

Formats `load_images` accepts:
- ISIC 2017 layout: a folder of `ISIC_*.jpg` of any size (the `*_superpixels.png` files beside
  them are label maps, not lesions, and are ignored) and the ground-truth CSV
  `image_id,melanoma,seborrheic_keratosis` (both 0 = nevus). The CSV is given, or found
  automatically when it is the only `*GroundTruth*.csv` in the folder or else in its parent.
- Any folder of JPEG/PNG/BMP images, searched recursively, in sorted order (no labels).
- WebDataset-style tar shards (as `generate --format tar` writes them): a `.tar` file, or a
  folder of them; the image members in order (no labels).
- A DermaMNIST-style `.npz`: `train_images` uint8 (N, H, W[, 3]) and optionally `train_labels`
  (the train split; `images` / `labels` and `x` / `y` are accepted too). Class names come from
  a `class_names` entry, else the three ISIC names for up to 3 classes, else DermaMNIST's seven.
  A 1-D integer array `groups` (or `group`, `image`, `patient`: N entries) names the source
  image or patient of each image; splits and real-vs-real references then keep each group on
  one side, since patches of one image on both sides make any distance look better than it is.

Pixels: OpenCV decodes (BGR, made RGB here; grayscale made RGB; alpha dropped; EXIF orientation
applied), the image is center-cropped to a square (default) or squashed, resized with INTER_AREA
(INTER_LINEAR when it must grow), and normalised to float32 NHWC in [-1, 1] (x / 127.5 - 1).

Decoded folders are cached on disk as uint8 `.npz`, keyed by the file list, sizes, mtimes,
image size and crop mode, in `cache_dir` (default: $LESIONGAN_CACHE or ~/.cache/lesiongan).
Labels are not cached: the CSV is re-read on every run (it is small), so editing it never
forces a re-decode and never serves stale labels.

Mismatches between CSV and images (decided: no silent loss, no guessing):
- an image with no CSV row is an error (UserError): its class is unknown, and dropping it
  quietly would shrink the training set behind the user's back;
- a CSV row with no image is a one-line warning (a partial download is common), and an error
  under strict=True;
- unreadable or corrupt image files are skipped with one warning line naming the count and
  the first few, and are an error under strict=True.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from backends.config import SUPPORTED_IMAGE_SIZES
from service.errors import UserError
from service.files import atomic_file
from service.imageio import from_uint8

CLASS_NAMES = ("nevus", "melanoma", "seborrheic_keratosis")  # ISIC 2017, in the ground truth's terms
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
SUPERPIXEL_SUFFIX = "_superpixels.png"
LABEL_COLUMNS = ("image_id", "melanoma", "seborrheic_keratosis")
CROP_MODES = ("center", "squash")
NPZ_IMAGE_KEYS = ("train_images", "images", "x")  # with the labels of the same position below
NPZ_LABEL_KEYS = ("train_labels", "labels", "y")
NPZ_GROUP_KEYS = ("groups", "group", "image", "patient")
# Class names for a labelled .npz without a `class_names` entry, by class count.
DERMAMNIST_CLASS_NAMES = (
    "actinic_keratosis", "basal_cell_carcinoma", "benign_keratosis", "dermatofibroma",
    "melanoma", "nevus", "vascular_lesion",
)
CACHE_FORMAT = 1  # bump when the decoding changes, so old caches are not reused
SHOWN_NAMES = 3  # how many offending names a one-line message lists


@dataclass
class Dataset:
    """Images ready for training: float32 NHWC in [-1, 1], with optional int64 class labels."""

    images: np.ndarray
    labels: np.ndarray | None
    class_names: tuple[str, ...]
    files: list[str] = field(default_factory=list)
    source: str = ""
    groups: np.ndarray | None = None  # int64 source image / patient of each image, if known

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: np.ndarray) -> "Dataset":
        indices = np.asarray(indices, dtype=np.int64)
        return Dataset(
            images=self.images[indices],
            labels=None if self.labels is None else self.labels[indices],
            class_names=self.class_names,
            files=[self.files[i] for i in indices] if self.files else [],
            source=self.source,
            groups=None if self.groups is None else self.groups[indices],
        )


# ----------------------------------------------------------------------------- public API


def load_images(
    path: str | os.PathLike,
    image_size: int,
    labels_csv: str | os.PathLike | None = None,
    crop: str = "center",
    strict: bool = False,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Dataset:
    """Load an ISIC 2017 folder, any image folder, or a DermaMNIST-style .npz (see module doc)."""
    check_image_size(image_size)
    if crop not in CROP_MODES:
        raise UserError(f"crop must be one of {', '.join(CROP_MODES)}, got {crop!r}")
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"data path not found: {path}")
    if path.is_file():
        if path.suffix.lower() == ".tar":
            return _load_tars([path], image_size, crop, progress)
        if path.suffix.lower() != ".npz":
            raise UserError(f"{path} is a file but not a .npz array file or .tar shard; give a folder of images, a .npz or a .tar")
        return _load_npz(path, image_size, crop)
    shards = sorted(path.glob("*.tar"))
    if shards and not _list_image_files(path):
        return _load_tars(shards, image_size, crop, progress)
    return _load_folder(path, image_size, labels_csv, crop, strict, cache_dir, progress)


def default_dataset(image_size: int, count: int = 2000, seed: int = 0, cache_dir=None, progress: bool = True) -> Dataset:
    """The embedded stand-in dataset (procedural, NOT medical data; see service.synthetic)."""
    from service import synthetic

    check_image_size(image_size)
    if count < 1:
        raise UserError(f"count must be at least 1, got {count}")
    key = _hash_json(["synthetic", synthetic.GENERATOR_VERSION, count, seed, image_size])
    cached = _read_cache(cache_dir, "synthetic", key)
    if cached is not None:
        images, labels = cached["images"], cached["labels"]
    else:
        images, labels = synthetic.make_dataset(count, image_size, seed, progress=progress)
        _write_cache(cache_dir, "synthetic", key, images=images, labels=labels)
    return Dataset(
        images=from_uint8(images),
        labels=labels.astype(np.int64),
        class_names=CLASS_NAMES,
        files=[],
        source=f"embedded stand-in dataset (procedural, not medical data): {count} images, seed {seed}",
    )


def split(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Disjoint (kept, held_out) with `fraction` of the images held out.

    With groups (source images or patients), whole groups are held out, drawn at random until
    they hold `fraction` of the images, so no group has images on both sides. Without them,
    the split is stratified by class: each class gives round(fraction * its size) images (at
    least one where the class has two or more), so a held-out set keeps the class proportions.
    """
    count = len(dataset)
    if not 0.0 < fraction < 1.0:
        raise UserError(f"held-out fraction must be between 0 and 1, got {fraction}")
    if count < 2:
        raise UserError(f"cannot split a dataset of {count} image(s)")
    rng = np.random.default_rng(seed)
    if dataset.groups is not None:
        held_out = group_holdout(dataset.groups, fraction, rng)
    else:
        held_out = _stratified_holdout(dataset.labels, count, fraction, rng)
    kept = np.setdiff1d(np.arange(count), held_out)
    return dataset.subset(kept), dataset.subset(held_out)


def group_holdout(groups: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of whole groups, drawn in random order until they hold at least
    `fraction` of the images; at least one group on each side."""
    names, sizes = np.unique(groups, return_counts=True)
    if len(names) < 2:
        raise UserError(f"cannot split by group: all {len(groups)} images belong to one group")
    order = rng.permutation(len(names))
    taken = np.searchsorted(np.cumsum(sizes[order]), fraction * len(groups)) + 1
    held_names = names[order[: min(max(taken, 1), len(names) - 1)]]
    return np.flatnonzero(np.isin(groups, held_names))


def _stratified_holdout(labels, count: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    classes = [np.arange(count)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    held = []
    for members in classes:
        # Every class of two or more images gives at least one and keeps at least one.
        take = int(round(fraction * len(members)))
        take = min(max(take, 1), len(members) - 1) if len(members) >= 2 else 0
        held.append(rng.permutation(members)[:take])
    held_out = np.sort(np.concatenate(held))
    if len(held_out) == 0:  # only single-image classes: fall back to an unstratified pick
        take = min(max(int(round(fraction * count)), 1), count - 1)
        held_out = np.sort(rng.permutation(count)[:take])
    return held_out


def check_image_size(image_size: int) -> None:
    if image_size not in SUPPORTED_IMAGE_SIZES:
        raise UserError(
            f"image size must be a power of two from {SUPPORTED_IMAGE_SIZES[0]} to "
            f"{SUPPORTED_IMAGE_SIZES[-1]}, got {image_size}"
        )


def native_image_size(path) -> int | None:
    """The images' own side when it is a supported size: a `.npz`'s images (read from the array
    header, without loading the pixels), or a folder's first image when it is square. None for
    anything else (an ISIC folder's photographs of many sizes). Commands train and compare at
    this size unless asked otherwise, so 32x32 data is not upscaled to 64x64 behind the
    user's back."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = _list_image_files(path)
        image = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED) if files else None
        shape = (0,) if image is None else (1, *image.shape)
    elif path.is_file() and path.suffix.lower() == ".npz":
        shape = _npz_image_shape(path)
    else:
        return None
    if len(shape) >= 3 and shape[1] == shape[2] and shape[1] in SUPPORTED_IMAGE_SIZES:
        return int(shape[1])
    return None


def _npz_image_shape(path: Path) -> tuple:
    try:
        with zipfile.ZipFile(path) as archive:
            members = {Path(name).stem: name for name in archive.namelist()}
            key = next((k for k in NPZ_IMAGE_KEYS if k in members), None)
            if key is None:
                return ()
            with archive.open(members[key]) as f:
                major, _ = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                return read_header(f)[0]
    except (OSError, ValueError, zipfile.BadZipFile):
        return ()  # the loader will say what is wrong with it


def default_cache_dir() -> Path:
    return Path(os.environ.get("LESIONGAN_CACHE") or Path.home() / ".cache" / "lesiongan")


# ----------------------------------------------------------------------------- pixels


def decode_image(data: bytes | np.ndarray, image_size: int, crop: str) -> np.ndarray | None:
    """Encoded file bytes -> uint8 RGB (image_size, image_size, 3), or None if undecodable.

    JPEGs are decoded at 1/2, 1/4 or 1/8 scale when that still leaves at least `image_size`
    pixels (libjpeg scales in the DCT domain, which is much faster than a full decode of a
    large dermoscopy photo); a first cheap 1/8 decode tells the size.
    """
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    if buffer.size == 0:
        return None
    is_jpeg = buffer.size > 3 and buffer[0] == 0xFF and buffer[1] == 0xD8 and buffer[2] == 0xFF
    image = None
    if is_jpeg:
        small = cv2.imdecode(buffer, cv2.IMREAD_REDUCED_COLOR_8)
        if small is None:
            return None
        # Short side at full size (approximate); it must stay >= image_size for both crop modes.
        needed = min(small.shape[0], small.shape[1]) * 8
        factor = next((f for f in (8, 4, 2) if needed // f >= image_size), 1)
        image = small if factor == 8 else cv2.imdecode(buffer, _REDUCED_FLAGS[factor])
    else:
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        return None
    return cv2.cvtColor(fit_square(image, image_size, crop), cv2.COLOR_BGR2RGB)


_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}


def fit_square(image: np.ndarray, image_size: int, crop: str) -> np.ndarray:
    """Center-crop to the largest square (crop='center') or not (crop='squash'), then resize."""
    if crop == "center":
        height, width = image.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        image = image[top : top + side, left : left + side]
    shrinking = image.shape[0] >= image_size and image.shape[1] >= image_size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    if image.shape[:2] == (image_size, image_size):
        return np.ascontiguousarray(image)
    return cv2.resize(image, (image_size, image_size), interpolation=interpolation)


# ----------------------------------------------------------------------------- tar shards


def tar_images(path: Path):
    """(member name, bytes) of a tar's image members, in order; UserError if it is cut short or
    damaged (one line naming it)."""
    import tarfile

    try:
        with tarfile.open(path) as archive:
            for member in archive:
                if member.isfile() and member.name.lower().endswith(IMAGE_EXTENSIONS):
                    yield member.name, archive.extractfile(member).read()
    except (OSError, tarfile.TarError) as e:
        raise UserError(f"{path}: cut short or damaged tar shard ({' '.join(str(e).split())})") from None


def _load_tars(shards: list[Path], image_size: int, crop: str, progress: bool) -> Dataset:
    from tqdm import tqdm

    images, files = [], []
    for shard in tqdm(shards, desc="reading tar shards", unit="shard", disable=not progress, file=sys.stderr):
        for name, data in tar_images(shard):
            image = decode_image(data, image_size, crop)
            if image is None:
                raise UserError(f"{shard}: member {name} is not a decodable image")
            images.append(image)
            files.append(f"{shard}:{name}")
    if not images:
        raise UserError(f"no images in {len(shards)} tar shard(s), e.g. {shards[0]}")
    return Dataset(images=from_uint8(np.stack(images)), labels=None, class_names=(), files=files,
                   source=f"{len(images)} images from {len(shards)} tar shard(s) in {shards[0].parent}")


def load_generated_images(folder, files: list[str]) -> np.ndarray:
    """uint8 NHWC images of a generation folder, as its manifest lists them: NAME.png, or
    SHARD.tar:KEY.png (a member of a tar shard)."""
    from service.imageio import read_png

    folder = Path(folder)
    members: dict[str, dict[str, bytes]] = {}
    images = []
    for name in files:
        shard, sep, member = name.partition(":")
        if not sep:
            images.append(read_png(folder / name))
            continue
        if shard not in members:
            members[shard] = dict(tar_images(folder / shard))
        if member not in members[shard]:
            raise UserError(f"{folder / shard} has no member {member}, which the manifest lists")
        data = np.frombuffer(members[shard][member], np.uint8)
        images.append(cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    return np.stack(images)


# ----------------------------------------------------------------------------- folders


def _load_folder(root: Path, image_size, labels_csv, crop, strict, cache_dir, progress) -> Dataset:
    files = _list_image_files(root)
    if not files:
        raise UserError(f"no JPEG/PNG/BMP images in {root}")
    relative = [f.relative_to(root).as_posix() for f in files]

    labels_path = Path(labels_csv) if labels_csv is not None else _find_labels_csv(root)
    label_table = _read_labels_csv(labels_path) if labels_path is not None else None
    if label_table is not None:  # check before the (slow) decode, so a mismatch fails fast
        _check_labels_cover(files, label_table, labels_path, strict)

    stats = [f.stat() for f in files]
    key = _hash_json([CACHE_FORMAT, image_size, crop, [[r, s.st_size, s.st_mtime_ns] for r, s in zip(relative, stats)]])
    cached = _read_cache(cache_dir, "images", key)
    if cached is not None:
        images, kept = cached["images"], [str(name) for name in cached["kept"]]
    else:
        images, kept = _decode_files(root, relative, image_size, crop, progress)
        _write_cache(cache_dir, "images", key, images=images, kept=np.array(kept, dtype=np.str_))

    skipped = sorted(set(relative) - set(kept))
    if skipped:
        listed = ", ".join(skipped[:SHOWN_NAMES]) + (", ..." if len(skipped) > SHOWN_NAMES else "")
        if strict:
            raise UserError(f"{len(skipped)} unreadable or corrupt image(s) in {root}: {listed}")
        _warn(f"skipped {len(skipped)} unreadable or corrupt image(s) in {root}: {listed}")
    if not kept:
        raise UserError(f"no decodable image in {root} ({len(relative)} file(s) tried)")

    labels, class_names = None, ()
    if label_table is not None:
        labels = np.array([label_table[_image_id(name)] for name in kept], dtype=np.int64)
        class_names = CLASS_NAMES
    described = f"{len(kept)} images from {root}" + (f", labels from {labels_path}" if labels_path else "")
    return Dataset(
        images=from_uint8(images),
        labels=labels,
        class_names=class_names,
        files=[str(root / name) for name in kept],
        source=described,
    )


def _list_image_files(root: Path) -> list[Path]:
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in names:
            lower = name.lower()
            if name.startswith(".") or lower.endswith(SUPERPIXEL_SUFFIX):
                continue
            if lower.endswith(IMAGE_EXTENSIONS):
                found.append(Path(folder) / name)
    return sorted(found)


def _decode_files(root: Path, relative: list[str], image_size: int, crop: str, progress: bool):
    """Decode in threads (OpenCV releases the GIL); returns (uint8 NHWC, kept names in order)."""
    from tqdm import tqdm

    def decode_one(name: str):
        try:
            data = np.fromfile(root / name, dtype=np.uint8)
        except OSError:
            return None
        return decode_image(data, image_size, crop)

    workers = min(len(relative), max(1, os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(
            tqdm(
                pool.map(decode_one, relative),
                total=len(relative),
                desc="decoding images",
                unit="img",
                file=sys.stderr,
                disable=not progress,
                leave=False,
            )
        )
    kept = [name for name, image in zip(relative, results) if image is not None]
    images = [image for image in results if image is not None]
    stacked = np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.uint8)
    return stacked, kept


# ----------------------------------------------------------------------------- labels


def _find_labels_csv(root: Path) -> Path | None:
    """The only *GroundTruth*.csv in the folder, else in its parent; None when there is none."""
    for folder in (root, root.parent):
        candidates = sorted(p for p in folder.glob("*.csv") if "groundtruth" in p.name.lower())
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            names = ", ".join(p.name for p in candidates)
            _warn(f"several ground-truth CSVs in {folder} ({names}); pass --labels to pick one; loading without labels")
            return None
    return None


def _read_labels_csv(path: Path) -> dict[str, int]:
    """ISIC 2017 ground truth -> {image_id: class index} (0 nevus, 1 melanoma, 2 seb. keratosis)."""
    if not path.is_file():
        raise UserError(f"labels CSV not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in LABEL_COLUMNS if c not in columns]
            if missing:
                raise UserError(
                    f"labels CSV {path} lacks column(s) {', '.join(missing)} "
                    f"(needs {','.join(LABEL_COLUMNS)})"
                )
            table = {}
            for line_number, row in enumerate(reader, start=2):
                row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
                table[row["image_id"]] = _row_class(row, path, line_number)
    except UnicodeDecodeError:
        raise UserError(f"labels CSV {path} is not UTF-8 text") from None
    except csv.Error as e:
        raise UserError(f"labels CSV {path} is malformed: {e}") from None
    if not table:
        raise UserError(f"labels CSV {path} has no rows")
    return table


def _row_class(row: dict, path: Path, line_number: int) -> int:
    try:
        melanoma, keratosis = (float(row[c]) for c in ("melanoma", "seborrheic_keratosis"))
    except ValueError:
        raise UserError(f"labels CSV {path} line {line_number}: melanoma and seborrheic_keratosis must be 0 or 1") from None
    if melanoma not in (0.0, 1.0) or keratosis not in (0.0, 1.0) or melanoma + keratosis > 1:
        raise UserError(f"labels CSV {path} line {line_number}: expected 0/1 values with at most one 1")
    return 1 if melanoma else 2 if keratosis else 0


def _image_id(relative_name: str) -> str:
    return Path(relative_name).stem


def _check_labels_cover(files: list[Path], table: dict[str, int], labels_path: Path, strict: bool) -> None:
    ids = [f.stem for f in files]
    unlabelled = [i for i in ids if i not in table]
    if unlabelled:
        shown = ", ".join(unlabelled[:SHOWN_NAMES]) + (", ..." if len(unlabelled) > SHOWN_NAMES else "")
        raise UserError(
            f"{len(unlabelled)} of {len(ids)} images have no row in {labels_path} ({shown}); "
            "add their rows or pass the matching --labels"
        )
    without_image = sorted(set(table) - set(ids))
    if without_image:
        shown = ", ".join(without_image[:SHOWN_NAMES]) + (", ..." if len(without_image) > SHOWN_NAMES else "")
        message = f"{len(without_image)} id(s) in {labels_path} have no image in the folder ({shown})"
        if strict:
            raise UserError(message)
        _warn(message + "; those rows are ignored")


# ----------------------------------------------------------------------------- arrays


def _load_npz(path: Path, image_size: int, crop: str) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path} as .npz: {' '.join(str(e).split())}") from None
    image_key = next((k for k in NPZ_IMAGE_KEYS if k in contents), None)
    if image_key is None:
        raise UserError(
            f"{path} has no image array ({', '.join(NPZ_IMAGE_KEYS)}; found: {', '.join(sorted(contents)) or 'nothing'})"
        )
    images = contents[image_key]
    if images.ndim == 3:  # grayscale (N, H, W)
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or len(images) == 0:
        raise UserError(f"{path}: {image_key} must be (N, H, W) or (N, H, W, 1|3|4) with N > 0, got {images.shape}")
    if images.dtype != np.uint8:
        raise UserError(f"{path}: {image_key} must be uint8 (0..255), got {images.dtype}")
    images = images[..., :3]  # drop alpha
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    resized = np.stack([fit_square(image, image_size, crop) for image in images])

    labels, class_names = None, ()
    label_key = NPZ_LABEL_KEYS[NPZ_IMAGE_KEYS.index(image_key)]
    if label_key in contents:
        labels = contents[label_key].reshape(-1).astype(np.int64)
        if len(labels) != len(images):
            raise UserError(f"{path}: {len(labels)} labels for {len(images)} images")
        if labels.min() < 0:
            raise UserError(f"{path}: labels must be non-negative class indices")
        class_names = _npz_class_names(contents, int(labels.max()) + 1)
    return Dataset(
        images=from_uint8(resized),
        labels=labels,
        class_names=class_names,
        files=[],
        source=f"{len(images)} images from {path} ({image_key})",
        groups=_npz_groups(contents, path, len(images)),
    )


def _npz_groups(contents: dict, path: Path, count: int) -> np.ndarray | None:
    key = next((k for k in NPZ_GROUP_KEYS if k in contents), None)
    if key is None:
        return None
    groups = contents[key]
    if groups.shape != (count,) or groups.dtype.kind not in "iu":
        raise UserError(f"{path}: {key} must hold one integer group per image ({count}), got {groups.shape} {groups.dtype}")
    return groups.astype(np.int64)


def _npz_class_names(contents: dict, class_count: int) -> tuple[str, ...]:
    if "class_names" in contents:
        names = tuple(str(n) for n in contents["class_names"])
        if len(names) >= class_count:
            return names
    if class_count <= len(CLASS_NAMES):
        return CLASS_NAMES
    if class_count <= len(DERMAMNIST_CLASS_NAMES):
        return DERMAMNIST_CLASS_NAMES
    return tuple(f"class_{i}" for i in range(class_count))


# ----------------------------------------------------------------------------- cache


def _hash_json(value) -> str:
    return hashlib.sha256(json.dumps(value, separators=(",", ":")).encode()).hexdigest()[:32]


def _cache_path(cache_dir, kind: str, key: str) -> Path:
    return (Path(cache_dir) if cache_dir else default_cache_dir()) / f"{kind}-{key}.npz"


def _read_cache(cache_dir, kind: str, key: str) -> dict | None:
    path = _cache_path(cache_dir, kind, key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError):  # damaged cache: rebuild it
        return None


def _write_cache(cache_dir, kind: str, key: str, **arrays) -> None:
    """Best effort: a cache that cannot be written costs speed next time, never this run."""
    path = _cache_path(cache_dir, kind, key)
    try:
        with atomic_file(path) as f:
            np.savez(f, **arrays)
    except OSError as e:
        _warn(f"could not write the cache {path} ({e.strerror or e}); the next run will decode again")


def _warn(message: str) -> None:
    print(f"warning: {' '.join(message.split())}", file=sys.stderr)
