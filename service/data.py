"""Training data: loading, caching, splitting and batching.

Formats `load_images` accepts:
- A folder of images (JPEG/PNG/BMP, searched recursively, in sorted order; the ISIC
  `*_superpixels.png` label maps are ignored) with a label file: given (`labels_csv`), or found
  in the folder or its parent (the only CSV whose header service.labels recognises: every
  public ISIC / HAM10000 ground-truth file). Without one, a folder whose images all sit in
  first-level subfolders is labelled by subfolder (sorted names; a subfolder with no image is
  an error unless the choices leave its class out); a folder of loose images is unlabelled; a
  folder with both is an error. Linked folders are followed, one line naming them (a cycle is
  not; one folder reached by two paths is an error). `unlabelled=True` ignores labels of any kind.
  Class choices (`label_column`, `classes`, `binary`, `unknown`) are service.labels.choose's;
  the images of classes left out are not loaded (one line says how many).
- WebDataset-style tar shards (as `generate --format tar` writes them): a `.tar` file, or a
  folder of them; the image members in order (no labels). A folder holding both tar shards
  and image files is an error (either kind alone would leave the other out unsaid).
- A DermaMNIST-style `.npz`: `train_images` uint8 (N, H, W[, 3]) and optionally `train_labels`
  (the train split; `images` / `labels` and `x` / `y` are accepted too), integer class indices
  from 0 with no gap. Class names come from a `class_names` entry, else the three ISIC names
  for up to 3 classes, else DermaMNIST's seven. A 1-D integer array `groups` (or `group`,
  `image`, `patient`: N entries) names the source image or patient of each image.

Groups (patients, lesions, source images) from a label file or an .npz become Dataset.groups:
splits and real-vs-real references then keep each group on one side, since near-twins on both
sides make any distance look better than it is.

Pixels: OpenCV decodes (BGR, made RGB here; grayscale made RGB; alpha dropped; EXIF orientation
applied), the image is center-cropped to a square (default) or squashed, resized with INTER_AREA
(INTER_LINEAR when it must grow), and normalised to float32 NHWC in [-1, 1] (x / 127.5 - 1).

Only regular files are opened (a FIFO or device named like an image is skipped with a
warning), and an image whose header declares more than LESIONGAN_MAX_IMAGE_PIXELS pixels
(default 100 million) is skipped before it is decoded, like an unreadable one.

Decoded folders are cached on disk as uint8 `.npz`, keyed by the file list, sizes, mtimes,
image size, crop mode and pixel limit, in `cache_dir` (default: $LESIONGAN_CACHE or ~/.cache/lesiongan).
Labels are not cached: the label file is re-read on every run (it is small), so editing it
never forces a re-decode and never serves stale labels.

Mismatches between label file and images (decided: no silent loss, no guessing):
- an image with no row is an error (UserError): its class is unknown, and dropping it
  quietly would shrink the training set behind the user's back;
- a row with no image is a one-line warning (a partial download is common), and an error
  under strict=True;
- unreadable or corrupt image files are skipped with one warning line naming the count and
  the first few, and are an error under strict=True.
"""

from __future__ import annotations

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
from service.errors import UserError, listed, warn
from service.files import atomic_file
from service.imageio import from_uint8
from service import labels as label_files

CLASS_NAMES = ("nevus", "melanoma", "seborrheic_keratosis")  # ISIC 2017, in the ground truth's terms
DEFAULT_DATA_COUNT = 2000  # images of the embedded dataset: the ISIC 2017 training set's size
DEFAULT_IMAGE_SIZE = 64  # the side to train at when neither the request nor the data says
DEFAULT_SOURCE = "default"  # config.json data.source of the embedded dataset
IN_MEMORY_SOURCE = "in-memory"  # data.source of a Dataset handed over in memory
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
SUPERPIXEL_SUFFIX = "_superpixels.png"
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
MAX_IMAGE_PIXELS = 100_000_000  # larger declared images are skipped undecoded (LESIONGAN_MAX_IMAGE_PIXELS)
PIXEL_LIMIT_ENV = "LESIONGAN_MAX_IMAGE_PIXELS"
MAX_NPZ_SIDE = 1 << 15  # an .npz image side beyond this is a damaged or hostile header


@dataclass(frozen=True)
class DataOptions:
    """Where the images are and how to label them: the data options of the command line as one
    object (service.commands.common.data_options), handed to training and the main job and
    recorded in the run's config.json, so a resumed run loads the same data the same way."""

    path: str | None = None  # None: the embedded stand-in dataset
    labels: str | None = None  # a label file; None: found beside the images (or class folders)
    label_column: str | None = None
    classes: tuple[str, ...] = ()
    binary: str | None = None
    unknown: str = "drop"  # the UNK / unknown class: "drop" or "keep"
    unlabelled: bool = False
    crop: str = "center"
    strict: bool = False

    @classmethod
    def of(cls, value) -> "DataOptions":
        """DataOptions as given, or those of a bare path (None: the embedded dataset)."""
        if isinstance(value, DataOptions):
            return value
        return cls(path=None if value is None else str(value))

    def choices(self) -> dict:
        """The label choices, as keyword arguments of load_images (and config.json records them)."""
        return {"label_column": self.label_column, "classes": list(self.classes), "binary": self.binary,
                "unknown": self.unknown, "unlabelled": self.unlabelled}

    @classmethod
    def from_record(cls, path, record: dict) -> "DataOptions":
        """The options a run recorded (config.json data, see data_record), for --resume: `path`
        where the data is now (the recorded source; DEFAULT_SOURCE is the embedded dataset); old
        runs have no choices."""
        choices = record.get("choices") or {}
        return cls(
            path=None if path == DEFAULT_SOURCE else path, labels=record.get("labels"), crop=record.get("crop", "center"),
            label_column=choices.get("label_column"), classes=tuple(choices.get("classes") or ()),
            binary=choices.get("binary"), unknown=choices.get("unknown", "drop"),
            unlabelled=bool(choices.get("unlabelled", False)),
        )

    def load(self, image_size: int, count: int = DEFAULT_DATA_COUNT, cache_dir=None, progress: bool = True) -> "Dataset":
        """The images at `path`, or without one `count` images of the embedded dataset."""
        if self.path is None:
            return default_dataset(image_size, count=count, cache_dir=cache_dir, progress=progress)
        return load_images(self.path, image_size, labels_csv=self.labels, crop=self.crop, strict=self.strict,
                           cache_dir=cache_dir, progress=progress, **self.choices())


@dataclass
class Dataset:
    """Images ready for training: float32 NHWC in [-1, 1], with optional int64 class labels."""

    images: np.ndarray
    labels: np.ndarray | None
    class_names: tuple[str, ...]
    files: list[str] = field(default_factory=list)
    source: str = ""
    groups: np.ndarray | None = None  # int64 source image / patient of each image, if known
    labelling: dict = field(default_factory=dict)  # where labels and groups came from (LabelFile.describe)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: np.ndarray) -> "Dataset":
        indices = np.asarray(indices, dtype=np.int64)
        return Dataset(
            images=self.images[indices],
            labels=None if self.labels is None else self.labels[indices],
            class_names=self.class_names,
            files=[self.files[i] for i in indices] if self.files else [],
            # a split names its part, so "data: ..." lines and config.json count what was used
            source=self.source if len(indices) == len(self) else f"{len(indices)} of {self.source}",
            groups=None if self.groups is None else self.groups[indices],
            labelling=self.labelling,
        )

    def fingerprint(self) -> str:
        """The exact images and labels (dataset_fingerprint): a resumed run checks it."""
        return dataset_fingerprint(self.images, self.labels)

    def class_counts(self) -> str:
        """'name count, ...' of the labelled images, for a line to the user."""
        if self.labels is None:
            return "unlabelled"
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return ", ".join(f"{name} {count}" for name, count in zip(self.class_names, counts))


def dataset_fingerprint(images: np.ndarray, labels: np.ndarray | None = None) -> str:
    """sha256 over the training arrays (shape, dtype, bytes): identifies the exact data a run saw."""
    digest = hashlib.sha256()
    for array in (images, labels):
        if array is None:
            digest.update(b"none")
            continue
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def data_record(options: DataOptions, dataset: Dataset, image_size: int, in_memory: bool, default_count: int) -> dict:
    """config.json's "data": where the images came from, how they were labelled and their
    fingerprint, so --resume loads the same data the same way (DataOptions.from_record) and
    checks it. `in_memory`: the Dataset was handed over, not loaded from options."""
    if options.path is not None:
        source = str(Path(options.path).resolve())
    else:
        source = IN_MEMORY_SOURCE if in_memory else DEFAULT_SOURCE
    labels_file = dataset.labelling.get("labels_file")
    return {
        "source": source,
        # the label file actually read (given or found), so --resume reads the same one
        "labels": str(Path(labels_file).resolve()) if labels_file and Path(labels_file).is_file() else None,
        "choices": options.choices(),
        "labelling": dataset.labelling or None,
        "crop": options.crop,
        "default_count": default_count if source == DEFAULT_SOURCE else None,
        "description": dataset.source,
        "count": len(dataset),
        "image_size": image_size,
        "class_names": list(dataset.class_names),
        "fingerprint": dataset.fingerprint(),
    }


def default_image_size(path, dataset: Dataset | None = None) -> int:
    """The size to train at when none is asked for: a given dataset's own, a `.npz`'s own (so
    32x32 data is not upscaled), else DEFAULT_IMAGE_SIZE."""
    if dataset is not None:
        return int(dataset.images.shape[1])
    return (native_image_size(path) if path is not None else None) or DEFAULT_IMAGE_SIZE


# ----------------------------------------------------------------------------- public API


def load_images(
    path: str | os.PathLike,
    image_size: int,
    labels_csv: str | os.PathLike | None = None,
    crop: str = "center",
    strict: bool = False,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    *,
    label_column: str | None = None,
    classes=(),
    binary: str | None = None,
    unknown: str = "drop",
    unlabelled: bool = False,
) -> Dataset:
    """Load a folder of images (labelled by a label file or class folders), tar shards, or a
    DermaMNIST-style .npz (see the module doc); the label choices are service.labels.choose's."""
    check_image_size(image_size)
    if crop not in CROP_MODES:
        raise UserError(f"crop must be one of {', '.join(CROP_MODES)}, got {crop!r}")
    if unknown not in label_files.UNKNOWN_CHOICES:
        raise UserError(f"--unknown must be one of {', '.join(label_files.UNKNOWN_CHOICES)}, got {unknown!r}")
    choice = {"classes": tuple(classes or ()), "binary": binary, "unknown": unknown}
    max_pixels = max_image_pixels()
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"data path not found: {path}")
    if path.is_file():
        if label_column is not None:
            raise UserError(f"--label-column is for label files; {path} is not a folder of images")
        if path.suffix.lower() == ".tar":
            return _load_tars([path], image_size, crop, progress, max_pixels)
        if path.suffix.lower() != ".npz":
            raise UserError(f"{path} is a file but not a .npz array file or .tar shard; give a folder of images, a .npz or a .tar")
        return _load_npz(path, image_size, crop, None if unlabelled else choice)
    shards = sorted(path.glob("*.tar"))
    if shards:
        loose = [f.relative_to(path).as_posix() for f in _list_image_files(path)]
        if loose:  # reading either kind alone would leave the other out without a word
            raise UserError(f"{path} holds both .tar shards ({listed([s.name for s in shards])}) and {len(loose)} image "
                            f"file(s) ({listed(loose)}); give a folder of one kind")
        return _load_tars(shards, image_size, crop, progress, max_pixels)
    return _load_folder(path, image_size, labels_csv, crop, strict, cache_dir, progress, max_pixels,
                        None if unlabelled else {"label_column": label_column, **choice})


def max_image_pixels() -> int:
    """The largest image (width x height, as its header declares it) that is decoded."""
    text = os.environ.get(PIXEL_LIMIT_ENV, "").strip()
    if not text:
        return MAX_IMAGE_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{PIXEL_LIMIT_ENV} must be a positive number of pixels, got {text!r}")
    return value


def default_dataset(image_size: int, count: int = DEFAULT_DATA_COUNT, seed: int = 0, cache_dir=None, progress: bool = True) -> Dataset:
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


def decode_image(data: bytes | np.ndarray, image_size: int, crop: str, max_pixels: int | None = None) -> np.ndarray | None:
    """Encoded file bytes -> uint8 RGB (image_size, image_size, 3), or None if undecodable or
    its header declares more than `max_pixels` pixels (default: max_image_pixels()).

    JPEGs are decoded at 1/2, 1/4 or 1/8 scale when that still leaves at least `image_size`
    pixels (libjpeg scales in the DCT domain, which is much faster than a full decode of a
    large dermoscopy photo); a first cheap 1/8 decode tells the size.
    """
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    if buffer.size == 0:
        return None
    declared = declared_pixels(buffer)
    if declared is not None and declared > (max_pixels or max_image_pixels()):
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


def declared_pixels(buffer: np.ndarray) -> float | None:
    """Width x height as the file's header declares it, read by Pillow without decoding the
    pixels (inf for a header Pillow itself refuses as a decompression bomb); None when Pillow
    cannot read the header (OpenCV may still decode the file)."""
    import io
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(buffer.tobytes())) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        return float("inf")
    except Exception:  # noqa: BLE001 - not Pillow's to judge; OpenCV decides
        return None
    return float(width) * float(height)


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


def max_image_bytes(max_pixels: int) -> int:
    """The most bytes an encoded image within `max_pixels` can take (an uncompressed 16-bit
    RGBA PNG: 8 bytes a pixel, a filter byte a row, with room for its chunks): a tar member or
    generated file declaring more is refused before it is read."""
    return 9 * int(max_pixels) + (1 << 20)


def check_member_size(path, member, limit: int) -> None:
    """UserError when a tar member declares more than `limit` bytes (max_image_bytes)."""
    if member.size > limit:
        raise UserError(f"{path}: member {member.name} declares {member.size} bytes, more than an image within the "
                        f"pixel limit can take ({PIXEL_LIMIT_ENV})")


def tar_images(path: Path, max_pixels: int | None = None):
    """(member name, bytes) of a tar's image members, in order; UserError if it is cut short or
    damaged, or a member declares more bytes than an image within the pixel limit can take (one
    line naming it; nothing of that member is read)."""
    import tarfile

    limit = max_image_bytes(max_pixels or max_image_pixels())
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                if member.isfile() and member.name.lower().endswith(IMAGE_EXTENSIONS):
                    check_member_size(path, member, limit)
                    yield member.name, archive.extractfile(member).read()
    except (OSError, tarfile.TarError) as e:
        raise UserError(f"{path}: cut short or damaged tar shard ({' '.join(str(e).split())})") from None


def _load_tars(shards: list[Path], image_size: int, crop: str, progress: bool, max_pixels: int) -> Dataset:
    from tqdm import tqdm

    images, files = [], []
    for shard in tqdm(shards, desc="reading tar shards", unit="shard", disable=not progress, file=sys.stderr):
        for name, data in tar_images(shard, max_pixels):
            image = decode_image(data, image_size, crop, max_pixels)
            if image is None:
                raise UserError(f"{shard}: member {name} is not a decodable image (or is over {max_pixels} pixels)")
            images.append(image)
            files.append(f"{shard}:{name}")
    if not images:
        raise UserError(f"no images in {len(shards)} tar shard(s), e.g. {shards[0]}")
    return Dataset(images=from_uint8(np.stack(images)), labels=None, class_names=(), files=files,
                   source=f"{len(images)} images from {len(shards)} tar shard(s) in {shards[0].parent}")


def load_generated_images(folder, files: list[str]) -> np.ndarray:
    """uint8 NHWC images of a generation folder, as its manifest lists them: NAME.png, or
    SHARD.tar:KEY.png (a member of a tar shard). Each goes through the bounds of any image
    read (max_image_pixels, from its header, before it is decoded); a file is opened only when
    it is a regular file (never through a link, never a FIFO). UserError, one line, naming the
    first that is too large or not an image."""
    from service.files import open_regular

    folder = Path(folder)
    max_pixels = max_image_pixels()
    members: dict[str, dict[str, bytes]] = {}
    images = []
    for name in files:
        shard, sep, member = name.partition(":")
        if not sep:
            where = folder / name
            with os.fdopen(open_regular(where, os.O_RDONLY), "rb") as f:
                if os.fstat(f.fileno()).st_size > max_image_bytes(max_pixels):
                    raise UserError(f"{where} is larger than an image within the pixel limit can be ({PIXEL_LIMIT_ENV})")
                data = f.read()
        else:
            where = f"{folder / shard}: member {member}"
            if shard not in members:
                members[shard] = dict(tar_images(folder / shard, max_pixels))
            if member not in members[shard]:
                raise UserError(f"{folder / shard} has no member {member}, which the manifest lists")
            data = members[shard][member]
        buffer = np.frombuffer(data, np.uint8)
        declared = declared_pixels(buffer) if buffer.size else None
        image = None if buffer.size == 0 or (declared or 0) > max_pixels else cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        if image is None:
            raise UserError(f"{where} is not a decodable image (or is over {max_pixels} pixels, {PIXEL_LIMIT_ENV})")
        if images and image.shape != images[0].shape:
            raise UserError(f"{where} is {image.shape[1]}x{image.shape[0]} pixels, unlike {files[0]} "
                            f"({images[0].shape[1]}x{images[0].shape[0]}); generated images are all of one size")
        images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return np.stack(images)


# ----------------------------------------------------------------------------- folders


def _load_folder(root: Path, image_size, labels_csv, crop, strict, cache_dir, progress, max_pixels, choice) -> Dataset:
    listing = _walk(root)
    if listing.special:
        warn(f"skipped {len(listing.special)} file(s) in {root} that are not regular files (FIFO, socket or device): "
              + listed(listing.special))
    _note_links(root, listing.linked)
    if not listing.files:
        raise UserError(f"no JPEG/PNG/BMP images in {root}")
    relative = [f.relative_to(root).as_posix() for f in listing.files]
    class_folders = [name for name in listing.folders if "/" not in name]

    table = None if choice is None else _label_table(root, relative, labels_csv, choice, class_folders)
    if table is not None:  # check before the (slow) decode, so a mismatch fails fast
        relative = _labelled_only(root, relative, table, strict)

    stats = [(root / name).stat() for name in relative]
    key = _hash_json([CACHE_FORMAT, image_size, crop, max_pixels,
                      [[r, s.st_size, s.st_mtime_ns] for r, s in zip(relative, stats)]])
    cached = _read_cache(cache_dir, "images", key)
    if cached is not None:
        images, kept = cached["images"], [str(name) for name in cached["kept"]]
    else:
        images, kept = _decode_files(root, relative, image_size, crop, progress, max_pixels)
        _write_cache(cache_dir, "images", key, images=images, kept=np.array(kept, dtype=np.str_))

    skipped = sorted(set(relative) - set(kept))
    if skipped:
        what = f"unreadable or corrupt image(s) (or over {max_pixels} pixels, {PIXEL_LIMIT_ENV})"
        if strict:
            raise UserError(f"{len(skipped)} {what} in {root}: {listed(skipped)}")
        warn(f"skipped {len(skipped)} {what} in {root}: {listed(skipped)}")
    if not kept:
        raise UserError(f"no decodable image in {root} ({len(relative)} file(s) tried)")

    labels, class_names, groups, labelling = None, (), None, {}
    described = f"{len(kept)} images from {root}"
    if table is not None:
        keys = kept if table.by_path else [_image_id(name) for name in kept]
        labels = np.array([table.labels[k] for k in keys], dtype=np.int64)
        class_names = table.class_names
        groups = _group_indices(table, keys)
        labelling = table.describe()
        if groups is None:
            labelling.update(groups_file=None, group_column=None)
        described += f", labels from {table.source} ({table.format}: {table.label_column})"
        if groups is not None:
            described += f", groups from {table.group_column}"
    return Dataset(
        images=from_uint8(images),
        labels=labels,
        class_names=class_names,
        files=[str(root / name) for name in kept],
        source=described,
        groups=groups,
        labelling=labelling,
    )


@dataclass
class _Listing:
    """What a walk of a data folder found (paths relative to it, except `files`)."""

    files: list[Path] = field(default_factory=list)  # image files, sorted
    special: list[str] = field(default_factory=list)  # named like images but not regular files
    linked: list[tuple[str, str]] = field(default_factory=list)  # (linked folder followed, its target)
    folders: list[str] = field(default_factory=list)  # every folder walked


def _list_image_files(root: Path) -> list[Path]:
    return _walk(root).files


def _walk(root: Path) -> _Listing:
    """Image files under `root`, sorted; files named like images that are not regular files
    (FIFOs, sockets, devices: opening one can block forever) are left out and named. Linked
    folders are followed and named; one that leads back to a folder it sits in is not (a
    cycle: its images are listed already), and a folder reached twice, by a link and by its own
    path or by two links, is a UserError: its images would be listed twice, perhaps in two
    classes."""
    listing = _Listing()
    seen: dict[str, str] = {os.path.realpath(root): "."}  # real path of each folder walked -> its relative path
    for folder, subfolders, names in os.walk(root, followlinks=True):
        here = os.path.realpath(folder)
        kept = []
        for name in sorted(d for d in subfolders if not d.startswith(".")):
            path = Path(folder) / name
            relative, target = path.relative_to(root).as_posix(), os.path.realpath(path)
            if target == here or here.startswith(target.rstrip(os.sep) + os.sep):
                continue
            if target in seen:
                raise UserError(f"{root / relative} and {root / seen[target]} are the same folder "
                                "(through a symbolic link); each image must be reachable by one path only")
            seen[target] = relative
            if path.is_symlink():
                listing.linked.append((relative, target))
            listing.folders.append(relative)
            kept.append(name)
        subfolders[:] = kept
        for name in names:
            lower = name.lower()
            if name.startswith(".") or lower.endswith(SUPERPIXEL_SUFFIX) or not lower.endswith(IMAGE_EXTENSIONS):
                continue
            path = Path(folder) / name
            if path.is_file():  # follows a symbolic link; False for a FIFO, socket or device
                listing.files.append(path)
            else:
                listing.special.append(path.relative_to(root).as_posix())
    listing.files.sort()
    return listing


def _note_links(root: Path, linked: list[tuple[str, str]]) -> None:
    """One line naming each linked folder followed, flagging those outside the data folder."""
    if not linked:
        return
    inside = os.path.realpath(root).rstrip(os.sep) + os.sep
    shown = [f"{relative} -> {target}" + ("" if target.startswith(inside) else " (outside the data folder)")
             for relative, target in linked]
    _note(f"followed {len(linked)} linked folder(s) in {root}: " + "; ".join(shown))


def _decode_files(root: Path, relative: list[str], image_size: int, crop: str, progress: bool, max_pixels: int):
    """Decode in threads (OpenCV releases the GIL); returns (uint8 NHWC, kept names in order)."""
    from tqdm import tqdm

    def decode_one(name: str):
        try:
            data = np.fromfile(root / name, dtype=np.uint8)
        except OSError:
            return None
        return decode_image(data, image_size, crop, max_pixels)

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


def _label_table(root: Path, relative: list[str], labels_csv, choice: dict, class_folders: list[str]):
    """The images' labels (service.labels.LabelFile, after the choices), or None. class_folders:
    the first-level subfolders of root (with images or not)."""
    path = Path(labels_csv) if labels_csv is not None else label_files.find_label_file(root, choice["label_column"])
    if path is not None:
        table = label_files.read_label_file(path, choice["label_column"])
    else:
        table = label_files.class_folders(root, relative, class_folders)
        if table is None:
            if choice["label_column"] is not None:
                raise UserError(f"--label-column {choice['label_column']}: no label file with that column in {root} "
                                "or its parent; give it with --labels")
            return None
        if choice["label_column"] is not None:
            raise UserError("--label-column is for label files; this folder is labelled by its class subfolders")
    options = {k: choice[k] for k in ("classes", "binary", "unknown")}
    return label_files.choose(table, **options)


def _labelled_only(root: Path, relative: list[str], table, strict: bool) -> list[str]:
    """The images to load: every image must have a row, rows without an image are a warning,
    and the images of classes left out by the choices are dropped (one line says how many)."""
    keys = relative if table.by_path else [_image_id(name) for name in relative]
    unlabelled = [k for k in keys if k not in table.labels and k not in table.left_out]
    if unlabelled:
        raise UserError(
            f"{len(unlabelled)} of {len(keys)} images have no row in {table.source} ({listed(unlabelled)}); "
            "add their rows or pass the matching --labels (or --unlabelled)"
        )
    present = set(keys)
    without_image = sorted((set(table.labels) | set(table.left_out)) - present)
    if without_image:
        message = f"{len(without_image)} id(s) in {table.source} have no image in {root} ({listed(without_image)})"
        if strict:
            raise UserError(message)
        warn(message + "; those rows are ignored")
    reasons: dict[str, int] = {}
    for k in keys:
        if k in table.left_out:
            reasons[table.left_out[k]] = reasons.get(table.left_out[k], 0) + 1
    if reasons:
        count = sum(reasons.values())
        _note(f"left out {count} of {len(keys)} images: " + "; ".join(f"{n} {why}" for why, n in reasons.items()))
    kept = [name for name, k in zip(relative, keys) if k not in table.left_out]
    if not kept:
        raise UserError(f"no image of {root} is left after the class choices")
    return kept


def _group_indices(table, keys: list[str]) -> np.ndarray | None:
    """int64 group per image (an image with no group is a group of its own); None without groups."""
    if not table.groups or not any(k in table.groups for k in keys):
        return None
    names = [table.groups.get(k, "\0image " + k) for k in keys]
    return np.unique(names, return_inverse=True)[1].astype(np.int64).reshape(-1)


def _image_id(relative_name: str) -> str:
    return Path(relative_name).stem


# ----------------------------------------------------------------------------- arrays


def _load_npz(path: Path, image_size: int, crop: str, choice: dict | None = None) -> Dataset:
    """A DermaMNIST-style array file; every array's shape and type is checked from its header
    before anything is loaded, so a damaged or hostile header costs no memory."""
    headers = _npz_headers(path)
    image_key = next((k for k in NPZ_IMAGE_KEYS if k in headers), None)
    if image_key is None:
        raise UserError(
            f"{path} has no image array ({', '.join(NPZ_IMAGE_KEYS)}; found: {', '.join(sorted(headers)) or 'nothing'})"
        )
    shape, dtype = headers[image_key]
    if len(shape) == 3:  # grayscale (N, H, W)
        shape = (*shape, 1)
    if len(shape) != 4 or shape[-1] not in (1, 3, 4) or 0 in shape:
        raise UserError(f"{path}: {image_key} must be (N, H, W) or (N, H, W, 1|3|4) with no zero size, got {headers[image_key][0]}")
    if dtype != np.uint8:
        raise UserError(f"{path}: {image_key} must be uint8 (0..255), got {dtype}")
    if max(shape[1], shape[2]) > MAX_NPZ_SIDE or shape[1] * shape[2] > max_image_pixels():
        raise UserError(f"{path}: {image_key} declares images of {shape[1]}x{shape[2]} pixels, beyond the limit "
                        f"({PIXEL_LIMIT_ENV}, side at most {MAX_NPZ_SIDE})")
    count = shape[0]
    label_key = NPZ_LABEL_KEYS[NPZ_IMAGE_KEYS.index(image_key)]
    group_key = next((k for k in NPZ_GROUP_KEYS if k in headers), None)
    for key in (label_key, group_key):
        if key in headers and (int(np.prod(headers[key][0])) != count or headers[key][1].kind not in "iu"):
            what = "group" if key == group_key else "class index"
            raise UserError(f"{path}: {key} must hold one integer {what} per image ({count}), got shape "
                            f"{headers[key][0]} of {headers[key][1]}")
    wanted = [image_key] + [k for k in (label_key, group_key, "class_names") if k in headers]
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {name: archive[name] for name in wanted}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, MemoryError) as e:
        raise UserError(f"cannot read {path} as .npz: {' '.join(str(e).split()) or type(e).__name__}") from None
    images = contents[image_key].reshape(shape)[..., :3]  # drop alpha
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)

    labels, class_names, groups = None, (), None
    if group_key is not None:
        groups = contents[group_key].reshape(-1).astype(np.int64)
    if label_key in contents and choice is not None:
        labels = contents[label_key].reshape(-1).astype(np.int64)
        class_names = _npz_class_names(contents, labels, path)
        labels, keep, class_names = _npz_choice(labels, class_names, choice, path)
        if keep is not None:
            images = images[keep]
            groups = None if groups is None else groups[keep]
    resized = np.stack([fit_square(image, image_size, crop) for image in images])
    return Dataset(
        images=from_uint8(resized),
        labels=labels,
        class_names=class_names,
        files=[],
        source=f"{len(images)} images from {path} ({image_key})",
        groups=groups,
        labelling={} if labels is None else {"labels_file": str(path), "format": "npz", "label_column": label_key,
                                             "groups_file": str(path) if groups is not None else None,
                                             "group_column": group_key if groups is not None else None,
                                             "class_names": list(class_names)},
    )


def _npz_headers(path: Path) -> dict[str, tuple[tuple, np.dtype]]:
    """{array name: (shape, dtype)} of an .npz, from the headers alone."""
    try:
        headers = {}
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as f:
                    major, _ = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f)
                headers[member[: -len(".npy")]] = (tuple(int(n) for n in shape), dtype)
        return headers
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read {path} as .npz: {' '.join(str(e).split()) or type(e).__name__}") from None


def _npz_choice(labels: np.ndarray, class_names: tuple, choice: dict, path: Path):
    """The label choices on an .npz: (labels, kept image indices or None, class names)."""
    if not choice["classes"] and choice["binary"] is None and choice["unknown"] == "keep":
        return labels, None, class_names
    table = label_files.LabelFile(class_names=tuple(class_names), labels={str(i): int(c) for i, c in enumerate(labels)},
                                  source=str(path), format="npz", label_column="labels")
    table = label_files.choose(table, **choice)
    if not table.left_out:
        return np.array([table.labels[str(i)] for i in range(len(labels))], np.int64), None, table.class_names
    keep = np.array([i for i in range(len(labels)) if str(i) in table.labels], np.int64)
    if len(keep) == 0:
        raise UserError(f"no image of {path} is left after the class choices")
    _note(f"left out {len(labels) - len(keep)} of {len(labels)} images of {path} by the class choices")
    return np.array([table.labels[str(i)] for i in keep], np.int64), keep, table.class_names


def _npz_class_names(contents: dict, labels: np.ndarray, path: Path) -> tuple[str, ...]:
    """Names for an .npz's classes: its `class_names`, else ISIC's three or DermaMNIST's seven.
    Without `class_names`, the class indices must be 0..K-1 with none missing (a gap is more
    likely a mistake than an empty class, and a huge index must not make a huge run)."""
    if len(labels) and labels.min() < 0:
        raise UserError(f"{path}: labels must be non-negative class indices")
    present = np.unique(labels)
    class_count = int(present[-1]) + 1 if len(present) else 0
    if "class_names" in contents:
        names = tuple(str(n) for n in np.asarray(contents["class_names"]).reshape(-1))
        if len(names) >= class_count:
            return names
        raise UserError(f"{path}: class_names names {len(names)} classes, but the labels go up to {class_count - 1}")
    if len(present) != class_count:
        gaps, previous = [], -1
        for value in present.tolist():
            if value > previous + 1:
                gaps.append(str(previous + 1) if value == previous + 2 else f"{previous + 1}..{value - 1}")
            previous = value
        gap = listed(gaps)
        raise UserError(
            f"{path}: labels use classes {', '.join(str(c) for c in present[:6].tolist())}"
            f"{', ...' if len(present) > 6 else ''} but none of {gap}: class indices must run from 0 with "
            "no gap (or add a class_names array naming every class)"
        )
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
    except (OSError, UserError) as e:
        reason = getattr(e, "strerror", None) or e
        warn(f"could not write the cache {path} ({reason}); the next run will decode again")


def _note(message: str) -> None:
    print(" ".join(message.split()), file=sys.stderr)
