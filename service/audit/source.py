"""The generated set an audit reads, cut into shards without listing it whole.

Two forms:
- a folder `generate` wrote (its manifest.csv lists index and file of every image, PNG files or
  members of tar shards): the manifest is streamed; PNG rows are cut every `shard_size` rows,
  and the rows of one tar shard form one audit shard (its images are read in one pass);
- a .tar file or a folder of .tar shards without a manifest (WebDataset style, from elsewhere):
  each tar, in name order, is one shard; an image's index is its position in that order.

A shard is its number and its (index, file) rows; file is what the manifest names (NAME.png or
SHARD.tar:KEY.png), relative to the folder. The driver plans shards one at a time, so its
memory does not grow with the number of images.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from service.errors import UserError
from service.sharded import MANIFEST_FILE

DEFAULT_SHARD_SIZE = 1000
KINDS = ("manifest", "tars")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM")  # how a PNG, JPEG and BMP begin


@dataclass(frozen=True)
class Shard:
    number: int
    rows: tuple[tuple[int, str], ...]  # (index, file) in index order


@dataclass(frozen=True)
class GeneratedSet:
    folder: str  # resolved; files are relative to it
    kind: str  # "manifest" or "tars"
    shard_size: int
    fingerprint: str  # sha256 of the manifest, or of the tars' names and sizes
    tars: tuple[str, ...] = ()  # kind "tars": the shard files, in order
    count: int = 0  # images in the set (open_generated_set counts them)

    def identity(self) -> dict:
        return {"fake": self.folder, "fake_kind": self.kind, "fake_fingerprint": self.fingerprint,
                "shard_size": self.shard_size}


def open_generated_set(path, shard_size: int = DEFAULT_SHARD_SIZE) -> GeneratedSet:
    """The generated set at `path`, checked enough to fail early with one line."""
    if shard_size < 1:
        raise UserError(f"--shard-size must be positive, got {shard_size}")
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"--fake: no such file or folder: {path}")
    if path.is_file():
        if path.suffix.lower() != ".tar":
            raise UserError(f"--fake {path}: give a folder `generate` wrote (with {MANIFEST_FILE}), a .tar shard or a folder of them")
        return _counted(GeneratedSet(str(path.parent.resolve()), "tars", shard_size, _tars_fingerprint([path]), (path.name,)))
    manifest = path / MANIFEST_FILE
    if manifest.is_file():
        _check_manifest_header(manifest)
        source = GeneratedSet(str(path.resolve()), "manifest", shard_size, _file_sha256(manifest))
    else:
        tars = sorted(p for p in path.glob("*.tar") if p.is_file())
        if not tars:
            raise UserError(f"--fake {path}: no {MANIFEST_FILE} and no .tar shards; give a folder `generate` wrote")
        _refuse_loose_images(path)
        source = GeneratedSet(str(path.resolve()), "tars", shard_size, _tars_fingerprint(tars), tuple(p.name for p in tars))
    return _counted(source)


def _refuse_loose_images(folder: Path) -> None:
    """UserError when a folder of tar shards also holds image files (at any depth): only the
    shards are the set, so the count would leave them out without a word."""
    loose = []
    for place, subfolders, names in os.walk(folder):
        subfolders.sort()
        loose += [os.path.relpath(os.path.join(place, n), folder) for n in sorted(names) if n.lower().endswith(IMAGE_SUFFIXES)]
    if loose:
        shown = ", ".join(loose[:3]) + (", ..." if len(loose) > 3 else "")
        raise UserError(f"--fake {folder} holds {len(loose)} image file(s) beside its .tar shards ({shown}); "
                        "only the shards would be audited: move the images out, or audit them as a folder of their own")


def _counted(source: GeneratedSet) -> GeneratedSet:
    """The set with its image count, every row checked on the way (one streaming pass over the
    manifest or the tars' headers), so a damaged set fails before anything is written."""
    count = sum(len(shard.rows) for shard in iter_shards(source))
    if count == 0:
        raise UserError(f"--fake {source.folder}: lists no images")
    return replace(source, count=count)


def _check_manifest_header(manifest: Path) -> None:
    try:
        with open(manifest, newline="") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{manifest} is unreadable ({e})") from None
    missing = [c for c in ("index", "file") if c not in header]
    if missing:
        raise UserError(f"{manifest} has no {' or '.join(missing)} column; is it a manifest `generate` wrote?")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tars_fingerprint(tars: list[Path]) -> str:
    digest = hashlib.sha256()
    for tar in tars:
        digest.update(f"{tar.name}\0{tar.stat().st_size}\n".encode())
    return digest.hexdigest()


def iter_shards(source: GeneratedSet) -> Iterator[Shard]:
    """The set's shards in order, planned one at a time."""
    if source.kind == "manifest":
        yield from _manifest_shards(source)
    else:
        yield from _tar_shards(source)


def _manifest_rows(manifest: Path) -> Iterator[tuple[int, str]]:
    """(index, file) of every manifest row, checked: indices 0, 1, 2, ... and a file each."""
    with open(manifest, newline="") as f:
        for line, record in enumerate(csv.DictReader(f), start=2):
            try:
                index, file = int(record["index"]), record["file"]
            except (TypeError, ValueError):
                raise UserError(f"{manifest}, line {line}: not an index and a file; the manifest is damaged") from None
            if index != line - 2 or not file:
                raise UserError(f"{manifest}, line {line}: index {index}, expected {line - 2}; the manifest is damaged")
            yield index, file


def _manifest_shards(source: GeneratedSet) -> Iterator[Shard]:
    rows: list[tuple[int, str]] = []
    number, current_tar = 0, None
    for index, file in _manifest_rows(Path(source.folder) / MANIFEST_FILE):
        tar = file.partition(":")[0] if ":" in file else None
        if rows and (tar != current_tar or (tar is None and len(rows) >= source.shard_size)):
            yield Shard(number, tuple(rows))
            number, rows = number + 1, []
        current_tar = tar
        rows.append((index, file))
    if rows:
        yield Shard(number, tuple(rows))


def _tar_shards(source: GeneratedSet) -> Iterator[Shard]:
    start = 0
    for number, name in enumerate(source.tars):
        members = _tar_image_members(Path(source.folder) / name)
        yield Shard(number, tuple((start + k, f"{name}:{member}") for k, member in enumerate(members)))
        start += len(members)


def _tar_image_members(path: Path) -> list[str]:
    """Names of a tar's image members, in order, from the headers and each member's first bytes:
    a member declaring more bytes than an image within the pixel limit can take, or whose bytes
    do not begin as an image does, is refused here, before anything is written."""
    from service.data import check_member_size, max_image_bytes, max_image_pixels

    limit = max_image_bytes(max_image_pixels())
    names = []
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                if not (member.isfile() and member.name.lower().endswith(IMAGE_SUFFIXES)):
                    continue
                check_member_size(path, member, limit)
                if not archive.extractfile(member).read(8).startswith(IMAGE_SIGNATURES):
                    raise UserError(f"{path}: member {member.name} is not a PNG, JPEG or BMP image")
                names.append(member.name)
    except (OSError, tarfile.TarError) as e:
        raise UserError(f"{path}: cut short or damaged tar shard ({' '.join(str(e).split())})") from None
    return names


def read_shard_images(source: GeneratedSet, shard: Shard) -> np.ndarray:
    """uint8 RGB NHWC images of a shard, in its row order."""
    from service.data import load_generated_images

    images = load_generated_images(source.folder, [file for _, file in shard.rows])
    if images.ndim != 4 or images.shape[-1] != 3:
        raise UserError(f"shard {shard.number} of {source.folder}: images are not RGB ({images.shape})")
    return images


def first_image_side(source: GeneratedSet) -> int:
    """The side of the set's first image (the training images are loaded at it)."""
    first = next(iter_shards(source))
    image = read_shard_images(source, Shard(first.number, first.rows[:1]))[0]
    if image.shape[0] != image.shape[1]:
        raise UserError(f"generated images must be square, got {image.shape[1]}x{image.shape[0]}")
    return int(image.shape[0])


def sample_indices(count: int, size: int, seed: int) -> np.ndarray:
    """A fixed random sample of `size` of `count` indices (sorted), from (seed, 5) alone."""
    return np.sort(np.random.default_rng([seed, 5]).choice(count, size, replace=False))


def read_sample(source: GeneratedSet, indices: np.ndarray) -> tuple[np.ndarray, list[str] | None]:
    """The images at sorted `indices` (uint8 NHWC, in that order) and their class names from the
    manifest (None when any is unnamed or there is no manifest), read shard by shard."""
    from service.data import load_generated_images

    wanted = set(int(i) for i in indices)
    images, files = [], []
    for shard in iter_shards(source):
        chosen = [file for index, file in shard.rows if index in wanted]
        if chosen:
            images.append(load_generated_images(source.folder, chosen))
            files.extend(chosen)
    classes = None
    if source.kind == "manifest":
        with open(Path(source.folder) / MANIFEST_FILE, newline="") as f:
            classes = [row.get("class", "") for row in csv.DictReader(f) if int(row["index"]) in wanted]
        classes = classes if all(classes) else None
    return np.concatenate(images), classes
