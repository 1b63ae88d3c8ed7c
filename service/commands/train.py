"""`train`: train a margin-balanced DCGAN and write a run directory (see service.rundir).

    python -m service.run train --out runs/a [--data PATH] [--backend tf|numpy] [--preset default]
    python -m service.run train --resume runs/a [--epochs N]

Config precedence: preset < --config JSON (GANConfig fields, e.g. a tune result) < explicit
flags (--image-size, --batch-size, --seed, --conditional). With --resume the model, data and
seeds come from RUN/config.json; only --epochs, --time-budget and --backend may change.
Epochs: --epochs N is the total to reach; with only --time-budget, training runs epochs until
the budget is spent; with neither, 10 epochs.
A diverged run (NaN/inf loss) exits 2 with one line: it is a property of the recipe and the
data, not an internal error. SIGINT/SIGTERM save a checkpoint and exit 0.
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from backends.config import ConfigError, GANConfig
from service.commands.common import add_backend, add_data, add_seed, add_training
from service.errors import UserError

DEFAULT_EPOCHS = 10  # when neither --epochs nor --time-budget is given
DEFAULT_DATA_COUNT = 2000
DEFAULT_IMAGE_SIZE = 64
DEFAULT_BACKEND = "tf"
DEFAULT_SOURCE = "default"  # config.json data.source of the embedded dataset
IN_MEMORY_SOURCE = "in-memory"  # a Dataset handed to run_training by a caller


def add_arguments(parser) -> None:
    add_data(parser)
    parser.add_argument("--out", metavar="DIR", help="run directory to create (required unless --resume)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last valid checkpoint")
    add_backend(parser)
    add_training(parser)
    add_seed(parser)
    parser.add_argument("--config", metavar="JSON", help="JSON file of GANConfig fields (e.g. a tune result); overrides the preset")
    parser.add_argument("--checkpoint-every", type=int, default=0, metavar="N", help="also checkpoint every N steps (default: epoch ends and stops only)")
    parser.add_argument("--data-count", type=int, default=DEFAULT_DATA_COUNT, metavar="N", help=f"images of the embedded dataset when no --data (default: {DEFAULT_DATA_COUNT})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    # None marks "not given", so --resume can tell explicit flags from defaults.
    parser.set_defaults(backend=None, image_size=None, seed=None, preset=None)


@dataclass
class TrainingOutcome:
    run_dir: Path
    config: GANConfig
    backend_name: str
    result: object  # service.trainer.TrainResult


def run(args) -> int:
    outcome = run_training(
        out=args.out,
        data=args.data,
        labels=args.labels,
        crop=args.crop,
        strict=args.strict,
        backend=args.backend,
        preset=args.preset,
        epochs=args.epochs,
        image_size=args.image_size,
        batch_size=args.batch_size,
        time_budget=args.time_budget,
        seed=args.seed,
        conditional=args.conditional,
        resume=args.resume,
        config_file=args.config,
        checkpoint_every=args.checkpoint_every,
        data_count=args.data_count,
        progress=not args.no_progress,
    )
    print_outcome(outcome)
    return 0


def print_outcome(outcome: TrainingOutcome) -> None:
    result = outcome.result
    what = {
        "completed": "finished",
        "time_budget": "stopped at the time budget",
        "nothing_to_do": "already trained to the requested epochs; nothing to do",
    }.get(result.status, f"stopped ({result.status.split(':', 1)[-1]})")
    print(
        f"{what}: step {result.step}, {result.epoch} epoch(s), {result.images_per_second:.1f} images/s, "
        f"{result.rebalance_d} extra D and {result.rebalance_g} extra G steps"
    )
    if result.checkpoint is not None:
        print(f"checkpoint: {result.checkpoint}")
    if result.status != "completed" and result.status != "nothing_to_do":
        print(f"resume with: python -m service.run train --resume {outcome.run_dir}")
    print(f"run directory: {outcome.run_dir}")


def run_training(
    out=None,
    data=None,
    labels=None,
    crop: str = "center",
    strict: bool = False,
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

    `dataset` (a service.data.Dataset) skips loading; `config_overrides` are GANConfig fields
    applied like --config. Raises UserError for bad input and TrainingDiverged on NaN/inf.
    """
    import backends
    from service import checkpoint as ckpt
    from service import rundir
    from service.trainer import Trainer

    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {epochs}")
    if checkpoint_every < 0:
        raise UserError(f"--checkpoint-every must be >= 0, got {checkpoint_every}")
    if resume is not None:
        explicit = {
            "--out": out, "--preset": preset, "--image-size": image_size, "--batch-size": batch_size,
            "--seed": seed, "--config": config_file or config_overrides, "--conditional": conditional or None,
            "--labels": labels,
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
            if data is None and stored.get("source") == IN_MEMORY_SOURCE:
                raise UserError(f"{run_dir} was trained on data passed in memory; give --data to resume it")
            dataset = _load_dataset(
                data or stored.get("source"), stored.get("labels"), stored.get("crop", crop),
                strict, config.image_size, stored.get("default_count", data_count), progress,
            )
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
        image_size = image_size or DEFAULT_IMAGE_SIZE
        if data is not None:
            source = str(Path(data).resolve())
        elif dataset is None:
            source = DEFAULT_SOURCE
        else:
            source = IN_MEMORY_SOURCE
        if dataset is None:
            dataset = _load_dataset(data, labels, crop, strict, image_size, data_count, progress)
        config = build_config(
            preset or "default", image_size, batch_size, seed, conditional, config_file, config_overrides, dataset
        )
        backend_name = backend or DEFAULT_BACKEND
        if epochs is None and time_budget is None:
            epochs = DEFAULT_EPOCHS
        data_info = {
            "source": source,
            "labels": None if labels is None else str(Path(labels).resolve()),
            "crop": crop,
            "default_count": data_count if source == DEFAULT_SOURCE else None,
            "description": dataset.source,
            "count": len(dataset),
            "image_size": config.image_size,
            "class_names": list(dataset.class_names),
            "fingerprint": dataset_fingerprint_of(dataset),
        }
        seeds = {"config": config.seed, "trainer_stream": [config.seed, 1], "sample_noise_stream": [config.seed, 2]}
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
    result = trainer.run()
    return TrainingOutcome(run_dir=run_dir, config=config, backend_name=backend_name, result=result)


def dataset_fingerprint_of(dataset) -> str:
    from service.rundir import dataset_fingerprint

    return dataset_fingerprint(dataset.images, dataset.labels)


def _load_dataset(source, labels, crop, strict, image_size, data_count, progress):
    from service import data as data_module

    if source is None or source == DEFAULT_SOURCE:
        return data_module.default_dataset(image_size, count=data_count)
    return data_module.load_images(source, image_size, labels_csv=labels, crop=crop, strict=strict, progress=progress)


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
            raise UserError("--conditional needs class labels, and this dataset has none (give --labels CSV)")
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
