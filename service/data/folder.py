"""A folder of images: the walk (regular files only; linked folders followed and named, a folder
reached twice refused), its labels (a label file or class folders, after the class choices) and
groups, and the decode in threads, through the on-disk cache."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service import labels as label_files
from service.data.cache import CACHE_FORMAT, hash_json, read_cache, write_cache
from service.data.dataset import Dataset
from service.data.decode import IMAGE_EXTENSIONS, PIXEL_LIMIT_ENV, decode_image
from service.errors import UserError, listed, note, warn
from service.imageio import from_uint8

SUPERPIXEL_SUFFIX = "_superpixels.png"


def load_folder(root: Path, image_size, labels_csv, crop, strict, cache_dir, progress, max_pixels, choice) -> Dataset:
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
    key = hash_json([CACHE_FORMAT, image_size, crop, max_pixels,
                     [[r, s.st_size, s.st_mtime_ns] for r, s in zip(relative, stats)]])
    cached = read_cache(cache_dir, "images", key)
    if cached is not None:
        images, kept = cached["images"], [str(name) for name in cached["kept"]]
    else:
        images, kept = _decode_files(root, relative, image_size, crop, progress, max_pixels)
        write_cache(cache_dir, "images", key, images=images, kept=np.array(kept, dtype=np.str_))

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


def list_image_files(root: Path) -> list[Path]:
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
    note(f"followed {len(linked)} linked folder(s) in {root}: " + "; ".join(shown))


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
        note(f"left out {count} of {len(keys)} images: " + "; ".join(f"{n} {why}" for why, n in reasons.items()))
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
