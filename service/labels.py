"""Label files as the archives publish them, and class folders: the class (and, where the data
says, the patient or lesion) of each image.

Recognised by their header, whatever the file is called (columns beyond these are ignored,
e.g. `score_weight`, age, sex):

| set | header | classes | groups |
|---|---|---|---|
| ISIC 2016 Part 3 | none: `ISIC_0000000,benign` | benign, malignant | - |
| ISIC 2017 Part 3 | `image_id,melanoma,seborrheic_keratosis` | nevus (both 0), melanoma, seborrheic_keratosis | - |
| ISIC 2017, melanoma only | `image_id,melanoma` | not_melanoma, melanoma | - |
| ISIC 2018 Task 3, ISIC 2019 | `image,MEL,NV,BCC,...` one-hot | the columns, in order | metadata beside |
| HAM10000 | `lesion_id,image_id,dx,...` | `dx` values, sorted | `lesion_id` |
| ISIC 2020 | `image_name,patient_id,...,diagnosis,benign_malignant,target` | `target`: benign, malignant | `patient_id` |

Any CSV with an image id column (`image`, `image_id`, `image_name`) also works with
`label_column` naming the column that holds the class. A 0/1 class column chosen that way
gives `not_<column>`, `<column>`; any other column gives its values, sorted. Groups come from
the label file's `patient_id` (else `lesion_id`) column, else from the one CSV beside it that
has an image id and such a column (`HAM10000_metadata.csv`, `ISIC_2019_Training_Metadata.csv`,
`ISIC2018_Task3_Training_LesionGroupings.csv`).

After reading, `choose` applies the user's choices in this order: `unknown` ("drop", the
default, leaves out the `UNK` / `unknown` class and its images; "keep" keeps it as a class),
`classes` (a subset, kept in the file's order; the other images are left out) and `binary`
(NAME against the rest: classes `not_NAME`, `NAME`).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from service.errors import UserError, listed, warn

ID_COLUMNS = ("image_id", "image", "image_name")
GROUP_COLUMNS = ("patient_id", "lesion_id")  # patient first: the coarser, the safer split
TABLE_LABEL_COLUMNS = ("dx", "target", "diagnosis", "benign_malignant")  # a table's default, in this order
ONE_HOT_CODES = ("MEL", "NV", "BCC", "AKIEC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
IMPLICIT_COLUMNS = ("melanoma", "seborrheic_keratosis")  # ISIC 2017 Part 3: both 0 = nevus
UNKNOWN_CLASSES = ("unk", "unknown")
UNKNOWN_CHOICES = ("drop", "keep")
ISIC_2016_CLASSES = ("benign", "malignant")
ISIC_ID = re.compile(r"^ISIC_\d+")
KNOWN_FORMATS = (
    "ISIC 2016 Part 3 (no header: ISIC_0000000,benign)",
    "ISIC 2017 Part 3 (image_id,melanoma,seborrheic_keratosis)",
    "ISIC 2017 melanoma only (image_id,melanoma)",
    "ISIC 2018 Task 3 / ISIC 2019 (image,MEL,NV,... one-hot)",
    "HAM10000 metadata (lesion_id,image_id,dx,...)",
    "ISIC 2020 (image_name,patient_id,...,target)",
)


@dataclass
class LabelFile:
    """The labels of a set of images: class names in label order, and per image id (or, for
    class folders, per relative path) its class index and, where known, its group."""

    class_names: tuple[str, ...]
    labels: dict[str, int]
    source: str  # the label file, or the folder whose subfolders are the classes
    format: str
    label_column: str  # what gave the classes: a column, the one-hot columns, or "subfolder"
    groups: dict[str, str] | None = None
    group_file: str | None = None
    group_column: str | None = None
    by_path: bool = False  # keys are paths relative to the data folder (class folders), not file stems
    left_out: dict[str, str] = field(default_factory=dict)  # image id -> why its image is left out
    empty_folders: tuple[str, ...] = ()  # class folders without an image: an error unless left out

    def describe(self) -> dict:
        """Where the labels and groups came from, as config.json records it."""
        return {
            "labels_file": self.source, "format": self.format, "label_column": self.label_column,
            "groups_file": self.group_file, "group_column": self.group_column,
            "class_names": list(self.class_names),
        }


@dataclass(frozen=True)
class _Layout:
    format: str
    id_column: str | None  # None: the headerless ISIC 2016 file
    kind: str  # "one-hot", "implicit" (ISIC 2017: all 0 is the first class), "column", "headerless"
    columns: tuple[str, ...] = ()  # the class columns ("one-hot", "implicit"), or the label column
    group_column: str | None = None

    @property
    def is_ground_truth(self) -> bool:
        """A file that holds nothing but labels (preferred to a metadata table beside it)."""
        return self.kind != "column"


# ----------------------------------------------------------------------------- reading


def read_label_file(path, label_column: str | None = None) -> LabelFile:
    """The labels in `path`, in the file's classes (UserError, one line, for anything wrong)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"labels file not found: {path}")
    rows = _read_rows(path)
    if not rows:
        raise UserError(f"labels file {path} is empty")
    layout = recognise(rows[0], label_column)
    if layout is None:
        _unknown_header(path, rows[0], label_column)
    body = rows if layout.kind == "headerless" else rows[1:]
    first_line = 1 if layout.kind == "headerless" else 2
    header = [] if layout.kind == "headerless" else [c.strip() for c in rows[0]]
    _refuse_duplicates(path, header, (layout.id_column, *layout.columns, layout.group_column))
    table = _parse(path, layout, header, body, first_line)
    if not table.labels:
        raise UserError(f"labels file {path} has no rows")
    if table.groups is None and layout.kind != "headerless":
        _groups_beside(path, table)
    return table


def recognise(header: list[str], label_column: str | None = None) -> _Layout | None:
    """The layout of a label file from its first row; None when it is not one."""
    columns = [c.strip() for c in header]
    if len(columns) >= 2 and ISIC_ID.match(columns[0]) and columns[1].lower() in (*ISIC_2016_CLASSES, "0", "1", "0.0", "1.0"):
        return _Layout("ISIC 2016 Part 3", None, "headerless")
    id_column = next((c for c in ID_COLUMNS if c in columns), None)
    if id_column is None:
        return None
    group = next((c for c in GROUP_COLUMNS if c in columns), None)
    others = [c for c in columns if c != id_column]
    if label_column is not None:
        if label_column not in others:
            return None
        is_class_column = label_column in ONE_HOT_CODES or label_column in IMPLICIT_COLUMNS
        return _Layout(f"{label_column} column", id_column, "implicit" if is_class_column else "column",
                       (label_column,), group)
    codes = tuple(c for c in others if c in ONE_HOT_CODES)
    if len(codes) >= 2:
        name = "ISIC 2019" if "SCC" in codes or "AK" in codes else "ISIC 2018 Task 3"
        return _Layout(name, id_column, "one-hot", codes, group)
    implicit = tuple(c for c in IMPLICIT_COLUMNS if c in others)
    if implicit and id_column == "image_id":
        name = "ISIC 2017 Part 3" if len(implicit) == 2 else "ISIC 2017 melanoma only"
        return _Layout(name, id_column, "implicit", implicit, group)
    column = next((c for c in TABLE_LABEL_COLUMNS if c in others), None)
    if column is not None:
        name = "HAM10000" if column == "dx" else "ISIC 2020" if "target" in others else "table"
        return _Layout(name, id_column, "column", (column,), group)
    return None


def _refuse_duplicates(path: Path, header: list[str], read, what: str = "labels file") -> None:
    """UserError naming a column the format reads that the header holds more than once: which
    of the two the labels (or groups) would come from is a guess, so none is taken."""
    for column in dict.fromkeys(c for c in read if c):
        count = header.count(column)
        if count > 1:
            raise UserError(f"{what} {path}: the header has {count} columns named {column}; "
                            "rename or remove all but one")


def _unknown_header(path: Path, first_row: list[str], label_column: str | None):
    found = ", ".join(c.strip() for c in first_row[:12]) + (", ..." if len(first_row) > 12 else "")
    if label_column is not None:
        ids = next((c for c in ID_COLUMNS if c in [c.strip() for c in first_row]), None)
        if ids is None:
            raise UserError(f"labels file {path} has no image id column ({', '.join(ID_COLUMNS)}); its columns: {found}")
        raise UserError(f"--label-column {label_column}: no such column in {path}; its columns: {found}")
    raise UserError(
        f"labels file {path}: unknown header (columns: {found}); known formats: {'; '.join(KNOWN_FORMATS)}; "
        "or name the class column with --label-column"
    )


def _read_rows(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: a BOM is not part of the header
            return [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except UnicodeDecodeError:
        raise UserError(f"labels file {path} is not UTF-8 text") from None
    except csv.Error as e:
        raise UserError(f"labels file {path} is malformed: {e}") from None
    except OSError as e:
        raise UserError(f"cannot read labels file {path}: {e.strerror or e}") from None


def _header(path: Path) -> list[str]:
    """The first row of a CSV, or [] when it is not readable text."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _parse(path: Path, layout: _Layout, header: list[str], body: list[list[str]], first_line: int) -> LabelFile:
    index = {name: i for i, name in enumerate(header)}

    def cell(row, column):
        i = index[column]
        return row[i].strip() if i < len(row) else ""

    where = lambda line, image_id: f"labels file {path} line {line} ({image_id})"  # noqa: E731
    values: dict[str, str] = {}  # image id -> class name
    first_seen: dict[str, int] = {}
    groups: dict[str, str] = {}
    for line, row in enumerate(body, start=first_line):
        image_id = row[0].strip() if layout.kind == "headerless" else cell(row, layout.id_column)
        if not image_id:
            raise UserError(f"labels file {path} line {line} has no image id")
        if layout.kind == "headerless":
            value = row[1].strip().lower() if len(row) > 1 else ""
            if value not in (*ISIC_2016_CLASSES, "0", "1", "0.0", "1.0"):
                raise UserError(f"{where(line, image_id)}: expected benign or malignant, got {value!r}")
            name = value if value in ISIC_2016_CLASSES else ISIC_2016_CLASSES[int(float(value))]
        elif layout.kind in ("one-hot", "implicit"):
            active = [c for c in layout.columns if _flag(cell(row, c), c, where(line, image_id))]
            if layout.kind == "one-hot" and len(active) != 1:
                state = f"{len(active)} active class columns ({', '.join(active)})" if active else "no active class column"
                raise UserError(f"{where(line, image_id)}: {state}; each row needs exactly one 1 among {', '.join(layout.columns)}")
            if len(active) > 1:
                raise UserError(f"{where(line, image_id)}: {' and '.join(active)} are both 1; at most one may be")
            name = active[0] if active else _negative(layout)
        else:
            name = _normal(cell(row, layout.columns[0]))
            if not name:
                raise UserError(f"{where(line, image_id)}: no value in column {layout.columns[0]}")
        if image_id in values and values[image_id] != name:
            raise UserError(
                f"labels file {path}: image {image_id} appears twice with different labels "
                f"(line {first_seen[image_id]}: {values[image_id]}, line {line}: {name})"
            )
        values[image_id] = name
        first_seen.setdefault(image_id, line)
        if layout.group_column is not None and cell(row, layout.group_column):
            groups[image_id] = cell(row, layout.group_column)

    class_names, label_of = _class_names(layout, values)
    return LabelFile(
        class_names=class_names,
        labels={image_id: label_of[name] for image_id, name in values.items()},
        source=str(path), format=layout.format,
        label_column=",".join(layout.columns) if layout.columns else "second column",
        groups=groups or None,
        group_file=str(path) if groups else None,
        group_column=layout.group_column if groups else None,
    )


def _class_names(layout: _Layout, values: dict[str, str | None]) -> tuple[tuple[str, ...], dict]:
    """(class names, {value as parsed: index})."""
    if layout.kind == "headerless":
        return ISIC_2016_CLASSES, {n: i for i, n in enumerate(ISIC_2016_CLASSES)}
    if layout.kind == "one-hot":
        return layout.columns, {c: i for i, c in enumerate(layout.columns)}
    if layout.kind == "implicit":
        names = (_negative(layout), *layout.columns)
        return names, {c: i for i, c in enumerate(names)}
    column = layout.columns[0]
    distinct = set(values.values())
    if distinct <= {"0", "1"}:
        names = ISIC_2016_CLASSES if column == "target" else (f"not_{column}", column)
        return names, {"0": 0, "1": 1}
    ordered = sorted(distinct, key=lambda v: (0, float(v), v) if _is_number(v) else (1, 0.0, v))
    return tuple(ordered), {v: i for i, v in enumerate(ordered)}


def _negative(layout: _Layout) -> str:
    """The class of a row with no 1 in an ISIC 2017-style file."""
    return "nevus" if layout.columns == IMPLICIT_COLUMNS else f"not_{layout.columns[0]}"


def _flag(text: str, column: str, where: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        value = None
    if value not in (0.0, 1.0):
        raise UserError(f"{where}: column {column} holds {text!r}; class columns hold 0 or 1")
    return value == 1.0


def _normal(text: str) -> str:
    """A class value as a name: '1.0' and '1' are the same class."""
    if _is_number(text) and float(text).is_integer():
        return str(int(float(text)))
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- groups


def _groups_beside(path: Path, table: LabelFile) -> None:
    """Groups from the one CSV beside the label file with an image id and a group column."""
    found = []
    for candidate in sorted(path.parent.glob("*.csv")):
        if candidate.resolve() == path.resolve():
            continue
        header = [c.strip() for c in _header(candidate)]
        id_column = next((c for c in ID_COLUMNS if c in header), None)
        group_column = next((c for c in GROUP_COLUMNS if c in header), None)
        if id_column and group_column:
            found.append((candidate, id_column, group_column))
    if len(found) > 1:
        names = ", ".join(p.name for p, _, _ in found)
        warn(f"several files with patient or lesion ids beside {path} ({names}); loading without groups")
        return
    if not found:
        return
    candidate, id_column, group_column = found[0]
    rows = _read_rows(candidate)
    header = [c.strip() for c in rows[0]]
    _refuse_duplicates(candidate, header, (id_column, group_column), "groups file")
    i, g = header.index(id_column), header.index(group_column)
    groups = {row[i].strip(): row[g].strip() for row in rows[1:] if len(row) > max(i, g) and row[g].strip()}
    if groups:
        table.groups, table.group_file, table.group_column = groups, str(candidate), group_column


# ----------------------------------------------------------------------------- finding


def find_label_file(folder: Path, label_column: str | None = None) -> Path | None:
    """The label file in `folder`, else in its parent: the only CSV whose header is a label
    file's (a ground-truth file wins over a metadata table beside it); None when there is none
    or the choice is not clear (a one-line warning then)."""
    for place in (folder, folder.parent):
        candidates = []
        for path in sorted(place.glob("*.csv")):
            layout = recognise(_header(path), label_column)
            if layout is not None:
                candidates.append((path, layout))
        if len(candidates) > 1:
            ground_truth = [c for c in candidates if c[1].is_ground_truth]
            candidates = ground_truth if ground_truth else candidates
        if len(candidates) == 1:
            return candidates[0][0]
        if candidates:
            names = ", ".join(p.name for p, _ in candidates)
            warn(f"several label files in {place} ({names}); pass --labels to pick one; loading without labels")
            return None
    return None


def class_folders(root: Path, relative: list[str], subfolders=()) -> LabelFile | None:
    """Labels by first-level subfolder (sorted names, as Keras and torchvision do); None when
    every image is loose in `root`; UserError when both are there. `subfolders`: every
    first-level subfolder, with images or not; one without is a class with no image, which
    `choose` refuses unless the choices leave it out (dropping it quietly would drop a class)."""
    loose = [name for name in relative if "/" not in name]
    nested = [name for name in relative if "/" in name]
    if not nested:
        return None
    with_images = {name.split("/", 1)[0] for name in nested}
    folders = sorted(with_images | set(subfolders))
    if loose:
        shown = listed(loose)
        named = listed(f + "/" for f in folders)
        raise UserError(
            f"{root} mixes {len(loose)} loose image(s) ({shown}) and class subfolders ({named}); "
            "put every image in a class subfolder, or pass --unlabelled"
        )
    index = {name: i for i, name in enumerate(folders)}
    return LabelFile(
        class_names=tuple(folders), labels={name: index[name.split("/", 1)[0]] for name in nested},
        source=str(root), format="class folders", label_column="subfolder", by_path=True,
        empty_folders=tuple(f for f in folders if f not in with_images),
    )


# ----------------------------------------------------------------------------- choices


def choose(table: LabelFile, classes=(), binary: str | None = None, unknown: str = "drop") -> LabelFile:
    """The user's choice of classes (module doc); the images of classes left out are named in
    `left_out` (by image id), with why."""
    if unknown not in UNKNOWN_CHOICES:
        raise UserError(f"--unknown must be one of {', '.join(UNKNOWN_CHOICES)}, got {unknown!r}")
    names = list(table.class_names)
    keep = list(range(len(names)))
    reasons = {}
    if unknown == "drop":
        for c in range(len(names)):
            if names[c].lower() in UNKNOWN_CLASSES:
                keep.remove(c)
                reasons[c] = f"labelled {names[c]} (--unknown keep keeps them)"
    if any(not str(name).strip() for name in classes):
        raise UserError(f"--classes: an empty class name in {','.join(classes)!r}; give class names separated by commas")
    if classes:
        wanted = [class_index(name, table.class_names, "--classes", table.source, allow_index=False) for name in classes]
        for c in list(keep):
            if c not in wanted:
                keep.remove(c)
                reasons[c] = "of classes not in --classes"
    empty = [names[c] for c in keep if names[c] in table.empty_folders]
    if empty:
        shown = listed(Path(table.source) / name for name in empty)
        raise UserError(f"{len(empty)} class folder(s) hold no JPEG/PNG/BMP image ({shown}); add the images, remove "
                        "the folder, or leave its class out with --classes")
    new_index = {old: new for new, old in enumerate(keep)}
    new_names = tuple(names[c] for c in keep)
    if binary is not None:
        positive = class_index(binary, table.class_names, "--binary", table.source, allow_index=False)
        if positive not in new_index:
            raise UserError(f"--binary {binary}: that class is left out (by --classes or --unknown drop)")
        new_index = {old: int(old == positive) for old in keep}
        new_names = (f"not_{names[positive]}", names[positive])
    if not keep:
        raise UserError(f"no class of {table.source} is left ({', '.join(names)})")
    labels, left_out = {}, dict(table.left_out)
    for key, label in table.labels.items():
        if label in new_index:
            labels[key] = new_index[label]
        else:
            left_out[key] = reasons[label]
    return replace(table, class_names=new_names, labels=labels, left_out=left_out)


def class_index(name: str, class_names, option: str, source: str = "", allow_index: bool = True) -> int:
    """A class given by name (exact, else the one matching without regard to case) or, where
    allowed, by index; UserError naming the known classes otherwise."""
    names = list(class_names)
    if name in names:
        return names.index(name)
    folded = [i for i, known in enumerate(names) if known.lower() == name.strip().lower()]
    if len(folded) == 1:
        return folded[0]
    if allow_index and name.strip().isdigit() and int(name) < len(names):
        return int(name)
    where = f" in {source}" if source else ""
    known = ", ".join(f"{i} {n}" if allow_index else n for i, n in enumerate(names))
    raise UserError(f"{option}: unknown class {name!r}{where}; the classes are {known}")


