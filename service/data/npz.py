"""DermaMNIST-style .npz array files: every array's shape and type checked from its header before
anything is loaded, then the images, class indices and names (after the class choices) and groups."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from service import labels as label_files
from service.data.dataset import CLASS_NAMES, Dataset
from service.data.decode import PIXEL_LIMIT_ENV, fit_square, max_image_pixels
from service.errors import UserError, listed, note
from service.imageio import from_uint8

NPZ_IMAGE_KEYS = ("train_images", "images", "x")  # with the labels of the same position below
NPZ_LABEL_KEYS = ("train_labels", "labels", "y")
NPZ_GROUP_KEYS = ("groups", "group", "image", "patient")
# Class names for a labelled .npz without a `class_names` entry, by class count.
DERMAMNIST_CLASS_NAMES = (
    "actinic_keratosis", "basal_cell_carcinoma", "benign_keratosis", "dermatofibroma",
    "melanoma", "nevus", "vascular_lesion",
)
MAX_NPZ_SIDE = 1 << 15  # an .npz image side beyond this is a damaged or hostile header


def load_npz(path: Path, image_size: int, crop: str, choice: dict | None = None) -> Dataset:
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
    note(f"left out {len(labels) - len(keep)} of {len(labels)} images of {path} by the class choices")
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


def npz_image_shape(path: Path) -> tuple:
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
