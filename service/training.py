"""Training a run: the one place that creates or resumes a run directory and trains it.

`run_training` is what the `train` command, the main job and the benchmarks call: it loads
the data (or takes a Dataset), builds the config (preset < --config JSON < explicit options),
writes RUN/config.json, restores the last valid checkpoint on resume, and runs the Trainer.
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from backends.config import ConfigError, GANConfig
from service.errors import UserError

DEFAULT_EPOCHS = 10  # when neither --epochs nor --time-budget is given
DEFAULT_DATA_COUNT = 2000
DEFAULT_IMAGE_SIZE = 64
DEFAULT_BACKEND = "tf"
DEFAULT_SOURCE = "default"  # config.json data.source of the embedded dataset
IN_MEMORY_SOURCE = "in-memory"  # a Dataset handed to run_training by a caller


@dataclass
class TrainingOutcome:
    run_dir: Path
    config: GANConfig
    backend_name: str
    result: object  # service.trainer.TrainResult


def outcome_lines(outcome: TrainingOutcome) -> list[str]:
    """What a training call did, for the user: steps, speed, checkpoint, how to resume."""
    result = outcome.result
    what = {
        "completed": "finished",
        "time_budget": "stopped at the time budget",
        "nothing_to_do": "already trained to the requested epochs; nothing to do",
    }.get(result.status, f"stopped ({result.status.split(':', 1)[-1]})")
    lines = [
        f"{what}: step {result.step}, {result.epoch} epoch(s), {result.images_per_second:.1f} images/s, "
        f"{result.rebalance_d} extra D and {result.rebalance_g} extra G steps"
    ]
    if result.checkpoint is not None:
        lines.append(f"checkpoint: {result.checkpoint}")
    if result.status not in ("completed", "nothing_to_do"):
        lines.append(f"resume with: python -m service.run train --resume {outcome.run_dir}")
    lines.append(f"run directory: {outcome.run_dir}")
    return lines


def run_training(
    out=None,
    data=None,
    backend: str | None = None,
    preset: str | None = None,
    epochs: int | None = None,
    image_size: int | None = None,
    batch_size: int | None = None,
    time_budget: float | None = None,
    seed: int | None = None,
    conditional: bool = False,
    resume=None,
    config_file=None,
    config_overrides: dict | None = None,
    checkpoint_every: int = 0,
    data_count: int = DEFAULT_DATA_COUNT,
    progress: bool = True,
    validate=None,
    on_epoch_end=None,
    dataset=None,
) -> TrainingOutcome:
    """Create (or resume) a run and train it; the function behind `train` and the main job.

    `data`: a service.data.DataOptions (where the images are and how to label them), or just a
    path; None: the embedded dataset. `dataset` (a service.data.Dataset) skips loading; `config_overrides` are GANConfig fields
    applied like --config. Raises UserError for bad input and TrainingDiverged on NaN/inf.
    """
    import backends
    from service import checkpoint as ckpt
    from service import rundir
    from service.data import DataOptions
    from service.trainer import SEED_STREAMS, Trainer, check_plan

    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {epochs}")
    if checkpoint_every < 0:
        raise UserError(f"--checkpoint-every must be >= 0, got {checkpoint_every}")
    if time_budget is not None:
        check_plan(epochs, time_budget)  # before loading data or a framework
    options = DataOptions.of(data)
    if resume is not None:
        label_flags = {
            "--labels": options.labels, "--label-column": options.label_column, "--classes": options.classes or None,
            "--binary": options.binary, "--unknown": None if options.unknown == DataOptions.unknown else options.unknown,
            "--unlabelled": options.unlabelled or None,
        }
        explicit = {
            "--out": out, "--preset": preset, "--image-size": image_size, "--batch-size": batch_size,
            "--seed": seed, "--config": config_file or config_overrides, "--conditional": conditional or None,
            **label_flags,
        }
        given = [flag for flag, value in explicit.items() if value is not None]
        if given:
            raise UserError(
                f"--resume takes the model, data and seeds from {resume}/config.json; drop {', '.join(given)}"
            )
        config, full = rundir.load_config(resume)
        run_dir = Path(resume)
        backend_name = backend or full.get("backend", DEFAULT_BACKEND)
        stored = full.get("data", {})
        if dataset is None:
            if options.path is None and stored.get("source") == IN_MEMORY_SOURCE:
                raise UserError(f"{run_dir} was trained on data passed in memory; give --data to resume it")
            recorded = DataOptions.from_record(options.path or stored.get("source"), stored)
            recorded = DataOptions(**{**vars(recorded), "strict": options.strict})
            dataset = _load_dataset(recorded, config.image_size, stored.get("default_count", data_count), progress)
        if dataset_fingerprint_of(dataset) != stored.get("fingerprint"):
            raise UserError(f"cannot resume {run_dir}: the data differs from the data the run was trained on")
        training = dict(full.get("training", {}))
        if epochs is not None:
            training["epochs"] = epochs
        epochs = training.get("epochs")
        if epochs is None and time_budget is None:
            raise UserError(f"{run_dir} was trained to a time budget; give --epochs or --time-budget to resume")
        if training != full.get("training") or backend_name != full.get("backend"):
            # checkpoints are backend-neutral, so a run may continue in the other backend: record it
            rundir.update_config(run_dir, training=training, backend=backend_name)
    else:
        if out is None:
            raise UserError("give --out DIR for a new run, or --resume RUN_DIR")
        image_size = image_size or default_image_size(options.path, dataset)
        if options.path is not None:
            source = str(Path(options.path).resolve())
        elif dataset is None:
            source = DEFAULT_SOURCE
        else:
            source = IN_MEMORY_SOURCE
        if dataset is None:
            dataset = _load_dataset(options, image_size, data_count, progress)
        config = build_config(
            preset or "default", image_size, batch_size, seed, conditional, config_file, config_overrides, dataset
        )
        backend_name = backend or DEFAULT_BACKEND
        if epochs is None and time_budget is None:
            epochs = DEFAULT_EPOCHS
        labels_file = dataset.labelling.get("labels_file")
        data_info = {
            "source": source,
            # the label file actually read (given or found), so --resume reads the same one
            "labels": str(Path(labels_file).resolve()) if labels_file and Path(labels_file).is_file() else None,
            "choices": options.choices(),
            "labelling": dataset.labelling or None,
            "crop": options.crop,
            "default_count": data_count if source == DEFAULT_SOURCE else None,
            "description": dataset.source,
            "count": len(dataset),
            "image_size": config.image_size,
            "class_names": list(dataset.class_names),
            "fingerprint": dataset_fingerprint_of(dataset),
        }
        seeds = {"config": config.seed, **{name: [config.seed, stream] for name, stream in SEED_STREAMS.items()}}
        run_dir = rundir.create_run_dir(out, config, backend_name, data_info, seeds, training={"epochs": epochs})

    try:
        model = backends.get(backend_name, config)
    except ImportError as e:
        raise UserError(f"backend {backend_name} is not available here: {e}") from e
    trainer = Trainer(
        model,
        dataset.images,
        dataset.labels if config.num_classes > 0 else None,
        run_dir=run_dir,
        epochs=epochs,
        time_budget=time_budget,
        checkpoint_every=checkpoint_every,
        progress=progress,
        validate=validate,
        on_epoch_end=on_epoch_end,
    )
    if resume is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ckpt.CheckpointWarning)
            path, arrays = ckpt.load_latest_valid(run_dir) if ckpt.list_checkpoints(run_dir) else (None, None)
        for warning in caught:
            print(f"warning: {warning.message}", file=sys.stderr)
        if arrays is not None:
            trainer.restore(arrays)
            trainer.last_checkpoint = path
            print(f"resuming {run_dir} from {path.name} (step {trainer.step}, epoch {trainer.epoch})", file=sys.stderr)
        else:
            trainer.truncate_metrics()  # a run killed before its first checkpoint starts over
            print(f"warning: {run_dir} has no checkpoint yet; training from the start", file=sys.stderr)
    print(f"data: {dataset.source}; classes: {dataset.class_counts()}", flush=True)
    result = trainer.run()
    return TrainingOutcome(run_dir=run_dir, config=config, backend_name=backend_name, result=result)


def default_image_size(data, dataset=None) -> int:
    """The size to train at when none is asked for: a given dataset's own, a `.npz`'s own (so
    32x32 data is not upscaled), else DEFAULT_IMAGE_SIZE."""
    from service.data import native_image_size

    if dataset is not None:
        return int(dataset.images.shape[1])
    return (native_image_size(data) if data is not None else None) or DEFAULT_IMAGE_SIZE


def dataset_fingerprint_of(dataset) -> str:
    from service.rundir import dataset_fingerprint

    return dataset_fingerprint(dataset.images, dataset.labels)


def _load_dataset(options, image_size, data_count, progress):
    from service import data as data_module

    if options.path is None or options.path == DEFAULT_SOURCE:
        return data_module.default_dataset(image_size, count=data_count, progress=progress)
    return options.load(image_size, progress=progress)


def read_config_file(path) -> dict:
    """GANConfig fields from a JSON file: a flat dict, or a run's config.json ({"model": ...})."""
    try:
        values = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"--config file not found: {path}") from None
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"--config {path} is not readable JSON: {e}") from None
    if isinstance(values, dict) and isinstance(values.get("model"), dict):
        values = values["model"]
    if not isinstance(values, dict):
        raise UserError(f"--config {path} must hold a JSON object of config fields")
    return values


def build_config(preset, image_size, batch_size, seed, conditional, config_file, config_overrides, dataset) -> GANConfig:
    from backends.presets import PRESETS, preset_config

    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    overrides = {}
    if config_file is not None:
        overrides.update(read_config_file(config_file))
    overrides.update(config_overrides or {})
    overrides.pop("preset", None)
    explicit = {"image_size": image_size, "batch_size": batch_size, "seed": seed}
    overrides.update({k: v for k, v in explicit.items() if v is not None})
    if conditional or overrides.get("num_classes", 0) > 0:
        if dataset.labels is None:
            raise UserError("--conditional needs class labels, and this dataset has none (give --labels, or put "
                            "the images in class subfolders)")
        overrides["num_classes"] = len(dataset.class_names) or int(dataset.labels.max()) + 1
    else:
        overrides["num_classes"] = 0
    try:
        config = preset_config(preset, **overrides)
    except (ConfigError, TypeError) as e:
        raise UserError(f"bad config: {e}") from None
    if config_file is not None or config_overrides:
        config = config.replace(preset=f"{preset}+custom")
    return config
