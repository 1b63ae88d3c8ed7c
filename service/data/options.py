"""The data options of a run (DataOptions: where the images are and how to label them) and what
config.json records of its data (data_record), so a resumed run loads the same data the same way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.data.dataset import Dataset
from service.data.embedded import DEFAULT_DATA_COUNT, default_dataset
from service.data.loading import load_images

DEFAULT_SOURCE = "default"  # config.json data.source of the embedded dataset
IN_MEMORY_SOURCE = "in-memory"  # data.source of a Dataset handed over in memory


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
