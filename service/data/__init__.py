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

Modules: dataset (Dataset, its fingerprint, split), options (DataOptions, config.json's data
record), loading (load_images: which loader reads a path; the images' own size), folder, tars,
npz (the three loaders), decode (pixels and the pixel limit), cache (the on-disk cache),
embedded (the stand-in dataset), generated (a generation folder's images read back).
"""

from __future__ import annotations

from service.data.cache import CACHE_FORMAT, default_cache_dir
from service.data.dataset import (
    CLASS_NAMES,
    DEFAULT_IMAGE_SIZE,
    Dataset,
    check_image_size,
    dataset_fingerprint,
    group_holdout,
    split,
)
from service.data.decode import (
    CROP_MODES,
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS,
    PIXEL_LIMIT_ENV,
    declared_pixels,
    decode_image,
    fit_square,
    max_image_bytes,
    max_image_pixels,
)
from service.data.embedded import DEFAULT_DATA_COUNT, default_dataset
from service.data.folder import SUPERPIXEL_SUFFIX
from service.data.generated import load_generated_images
from service.data.loading import default_image_size, load_images, native_image_size
from service.data.npz import DERMAMNIST_CLASS_NAMES, MAX_NPZ_SIDE, NPZ_GROUP_KEYS, NPZ_IMAGE_KEYS, NPZ_LABEL_KEYS
from service.data.options import DEFAULT_SOURCE, IN_MEMORY_SOURCE, DataOptions, data_record
from service.data.tars import check_member_size, tar_images

__all__ = [
    "CACHE_FORMAT", "CLASS_NAMES", "CROP_MODES", "DEFAULT_DATA_COUNT", "DEFAULT_IMAGE_SIZE", "DEFAULT_SOURCE",
    "DERMAMNIST_CLASS_NAMES", "IMAGE_EXTENSIONS", "IN_MEMORY_SOURCE", "MAX_IMAGE_PIXELS", "MAX_NPZ_SIDE",
    "NPZ_GROUP_KEYS", "NPZ_IMAGE_KEYS", "NPZ_LABEL_KEYS", "PIXEL_LIMIT_ENV", "SUPERPIXEL_SUFFIX",
    "DataOptions", "Dataset", "check_image_size", "check_member_size", "data_record", "dataset_fingerprint",
    "declared_pixels", "decode_image", "default_cache_dir", "default_dataset", "default_image_size", "fit_square",
    "group_holdout", "load_generated_images", "load_images", "max_image_bytes", "max_image_pixels",
    "native_image_size", "split", "tar_images",
]
