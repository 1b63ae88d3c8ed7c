"""Training a run: the one place that creates or resumes a run directory and trains it.

A `TrainingRequest` is one training job as asked, built once (the `train` command's
`training_request`, the main job, the benchmarks) and passed through unchanged.
`run_training(request)` goes in three phases: plan the resume of an existing run
(`plan_resume`: its config.json decides the model and the data) or make a new run
(`make_new_run`: load the data, build the config as preset < --config JSON < explicit
options, write RUN/config.json), then train (`train`: restore the last valid checkpoint on
resume and run the Trainer).
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import backends
from backends import BACKENDS, DEFAULT_BACKEND
from backends.config import SUPPORTED_IMAGE_SIZES, ConfigError, GANConfig
from backends.presets import PRESETS, preset_config
from service import checkpoint as ckpt
from service import rundir
from service.data import (
    DEFAULT_DATA_COUNT,
    IN_MEMORY_SOURCE,
    DataOptions,
    Dataset,
    data_record,
    default_image_size,
)
from service.diversity import DIVERSITY_EVERY, diversity_verdict
from service.errors import UserError, needs_labels
from service.privacy import calibrate_noise
from service.rundir import METRICS_FILE
from service.trainer import SEED_STREAMS, Trainer, check_plan

DEFAULT_EPOCHS = 10  # when neither --epochs nor --time-budget is given
DEFAULT_PRESET = "default"
PRIVATE_PRESET = "dp"  # what any --dp-* option starts from when --preset is not given


@dataclass(frozen=True)
class TrainingRequest:
    """One training job, as asked. None marks an option not given: a new run takes the
    default, a resumed run what its config.json recorded (and refuses the model and data
    options, which it cannot change). A field named like a `train` option is that option."""

    # the run: a new one in `out`, or `resume` an existing one
    out: str | Path | None = None
    resume: str | Path | None = None
    # the data: where the images are and how to label them (a bare path or None accepted:
    # None is the embedded dataset, `data_count` images); `dataset` skips loading
    data: DataOptions = field(default_factory=DataOptions)
    data_count: int = DEFAULT_DATA_COUNT
    dataset: Dataset | None = field(default=None, compare=False)
    # the model and recipe: preset < config_file < config_overrides < the fields below it
    backend: str | None = None
    preset: str | None = None
    config_file: str | Path | None = None  # JSON of GANConfig fields (e.g. a tune result)
    config_overrides: dict | None = None  # GANConfig fields, applied like config_file
    image_size: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    conditional: bool = False
    # differential privacy (README "train"): a budget, its delta, the clip norm and the noise
    # multiplier; any of them turns a run private (the `dp` preset unless --preset names
    # another); a budget without a noise multiplier calibrates the noise to --epochs
    dp_epsilon: float | None = None
    dp_delta: float | None = None
    dp_clip: float | None = None
    dp_noise: float | None = None
    # the schedule: epochs is the total to reach; neither it nor time_budget: DEFAULT_EPOCHS
    epochs: int | None = None
    time_budget: float | None = None
    checkpoint_every: int = 0
    # the diversity check's interval in steps (service.diversity); None: DIVERSITY_EVERY, or 0
    # (off) in a private run; 0: off
    diversity_every: int | None = None
    # what the user sees, and the Trainer's hooks
    progress: bool = True
    validate: Callable | None = field(default=None, compare=False)
    on_epoch_end: Callable | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", DataOptions.of(self.data))

    def resolved(self, out: str | Path, time_budget: float) -> "TrainingRequest":
        """The request with what later stages read named (the main job's): `out` when none is
        given, `time_budget` when neither epochs nor a budget is, and the backend, preset and
        seed a new run would take."""
        no_schedule = self.epochs is None and self.time_budget is None
        return replace(self, out=Path(self.out or out), time_budget=time_budget if no_schedule else self.time_budget,
                       backend=self.backend or DEFAULT_BACKEND, preset=preset_of(self),
                       seed=0 if self.seed is None else self.seed)


@dataclass(frozen=True)
class TrainingOption:
    """One option of `train` (and, unless train_only, of the main job): the flag --FIELD (dashes
    for underscores, or `flag`) fills the TrainingRequest field FIELD. kind "config": a GANConfig
    field of the same name, over the preset and --config (build_config); "run": how a new run is
    made. --resume refuses both (a run keeps its model and data). "schedule": how long and where
    to train, which a resumed run may change. Not given is None (False for a switch), so a
    resumed run and the preset can tell it from a default."""

    field: str
    kind: str  # "config", "run" or "schedule"
    help: str
    arguments: dict = field(default_factory=dict)  # argparse's type, metavar, choices, action, default
    group: str = ""  # the help's group ("differential privacy")
    train_only: bool = False
    flag: str = ""

    @property
    def option(self) -> str:
        return self.flag or "--" + self.field.replace("_", "-")

    def given(self, request: TrainingRequest) -> bool:
        value = getattr(request, self.field)
        return value is not None and value is not False and value != self.arguments.get("default")

    @property
    def fixed_on_resume(self) -> bool:
        return self.kind in ("config", "run")


PRIVACY_GROUP = ("differential privacy", "any of these trains D by DP-SGD (the `dp` preset unless --preset names another)")

# Every training option, once: the parser (service.commands.common.add_training), the options a
# resumed run refuses (_options_fixed_on_resume) and the config's explicit fields (build_config)
# are derived from it. A new option: a line here, a TrainingRequest field and its use.
TRAINING_OPTIONS = (
    TrainingOption("backend", "schedule", f"compute backend (default: {DEFAULT_BACKEND})", dict(choices=BACKENDS)),
    TrainingOption("preset", "run", f"training recipe (default: {DEFAULT_PRESET}, or {PRIVATE_PRESET} with a --dp-* "
                   "option; seed = the thesis)", dict(choices=tuple(PRESETS))),
    TrainingOption("config_file", "run", "JSON file of GANConfig fields (e.g. a tune result); overrides the preset",
                   dict(metavar="JSON"), train_only=True, flag="--config"),
    TrainingOption("epochs", "schedule", "epochs to train", dict(type=int)),
    TrainingOption("image_size", "config", "image side in pixels (default: the images' own size when they are square "
                   "of a supported side, else 64)", dict(type=int, choices=SUPPORTED_IMAGE_SIZES)),
    TrainingOption("batch_size", "config", "batch size (default: the preset's)", dict(type=int)),
    TrainingOption("seed", "config", "random seed (default: 0)", dict(type=int)),
    TrainingOption("time_budget", "schedule", "stop training cleanly after this many seconds",
                   dict(type=float, metavar="SECONDS")),
    TrainingOption("conditional", "run", "condition G and D on the data's classes", dict(action="store_true")),
    TrainingOption("dp_epsilon", "config", "privacy budget: training stops before spending more; without --dp-noise "
                   "the noise is fitted to spend E over --epochs (the `dp` preset: 10)",
                   dict(type=float, metavar="E"), group="differential privacy"),
    TrainingOption("dp_delta", "config", "the guarantee's delta, below 1/N (default: 1e-5)",
                   dict(type=float, metavar="D"), group="differential privacy"),
    TrainingOption("dp_clip", "config", "per-image gradient norm bound (default: 1.0)",
                   dict(type=float, metavar="C"), group="differential privacy"),
    TrainingOption("dp_noise", "config", "noise multiplier: Gaussian noise of SIGMA x C on the clipped sum "
                   "(default: 1.0, or fitted to --dp-epsilon)", dict(type=float, metavar="SIGMA"),
                   group="differential privacy"),
    TrainingOption("diversity_every", "schedule", "check G's diversity every N training steps and at the end "
                   "(coverage of a fixed slice of the training images; a warning when it collapses); 0 turns it off "
                   "(default: 250; off in a private run)", dict(type=int, metavar="N")),
    TrainingOption("checkpoint_every", "schedule", "also checkpoint every N steps (default: epoch ends and stops only)",
                   dict(type=int, default=0, metavar="N"), train_only=True),
    TrainingOption("data_count", "schedule", f"images of the embedded dataset when no --data (default: "
                   f"{DEFAULT_DATA_COUNT})", dict(type=int, default=DEFAULT_DATA_COUNT, metavar="N"), train_only=True),
)
DP_OPTIONS = tuple(o.field for o in TRAINING_OPTIONS if o.group == "differential privacy")


@dataclass(frozen=True)
class PlannedRun:
    """What training needs once the run directory is settled, new or resumed."""

    run_dir: Path
    config: GANConfig
    backend_name: str
    dataset: Dataset
    epochs: int | None  # the total to reach; None: until the time budget
    diversity_every: int = 0  # steps between diversity checks; 0: none


@dataclass
class TrainingOutcome:
    run_dir: Path
    config: GANConfig
    backend_name: str
    result: object  # service.trainer.TrainResult
    dataset: Dataset | None = None  # the images trained on, for later stages (the main job)
    diversity: str | None = None  # the diversity checks' verdict line (None: no checks)

    @property
    def lines(self) -> list[str]:
        """What the call did, for the user (outcome_lines)."""
        return outcome_lines(self)


def outcome_lines(outcome: TrainingOutcome) -> list[str]:
    """What a training call did, for the user: steps, speed, checkpoint, how to resume."""
    result = outcome.result
    what = {
        "completed": "finished",
        "time_budget": "stopped at the time budget",
        "nothing_to_do": "already trained to the requested epochs; nothing to do",
        "privacy_budget": "stopped: the next step would spend more than the run's dp_epsilon",
    }.get(result.status, f"stopped ({result.status.split(':', 1)[-1]})")
    lines = [
        f"{what}: step {result.step}, {result.epoch} epoch(s), {result.images_per_second:.1f} images/s, "
        f"{result.rebalance_d} extra D and {result.rebalance_g} extra G steps"
    ]
    if outcome.diversity:
        lines.append(outcome.diversity)
    if result.checkpoint is not None:
        lines.append(f"checkpoint: {result.checkpoint}")
    if result.status not in ("completed", "nothing_to_do", "privacy_budget"):
        lines.append(f"resume with: python -m service.run train --resume {outcome.run_dir}")
    lines.append(f"run directory: {outcome.run_dir}")
    return lines


def diversity_verdict_of(run_dir) -> str | None:
    """The run's diversity line (service.diversity.diversity_verdict), or None without checks."""
    return diversity_verdict(Path(run_dir) / METRICS_FILE)


def run_training(request: TrainingRequest) -> TrainingOutcome:
    """Create (or resume) a run and train it; the function behind `train` and the main job.
    Raises UserError for bad input and TrainingDiverged on NaN/inf."""
    check_schedule(request)
    run = plan_resume(request) if request.resume is not None else make_new_run(request)
    outcome = train(run, request)
    outcome.diversity = diversity_verdict_of(outcome.run_dir)
    return outcome


def diversity_interval(request: TrainingRequest, config: GANConfig) -> int:
    """Steps between the run's diversity checks: the request's, else DIVERSITY_EVERY; a private
    run has none (the check reads training images outside the privacy accountant)."""
    if config.private:
        if request.diversity_every:
            raise UserError("--diversity-every: a differentially private run has no diversity check (it would read "
                            "training images outside the privacy accountant); give 0 or leave it out")
        return 0
    return DIVERSITY_EVERY if request.diversity_every is None else request.diversity_every


def check_schedule(request: TrainingRequest) -> None:
    """The schedule's options, before loading data or a framework."""
    if request.epochs is not None or request.time_budget is not None:
        check_plan(request.epochs, request.time_budget)
    if request.checkpoint_every < 0:
        raise UserError(f"--checkpoint-every must be >= 0, got {request.checkpoint_every}")
    for name in DP_OPTIONS:
        value = getattr(request, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UserError(f"--{name.replace('_', '-')} must be a number above 0, got {value}")
    if request.diversity_every is not None and request.diversity_every < 0:
        raise UserError(f"--diversity-every must be >= 0 steps (0 turns the check off), got {request.diversity_every}")


# ----------------------------------------------------------------------------- plan the resume


def plan_resume(request: TrainingRequest) -> PlannedRun:
    """The run in request.resume as its config.json recorded it: the same model, and the same
    data (checked by fingerprint); the schedule and the backend may change, and are recorded."""
    given = _options_fixed_on_resume(request)
    if given:
        raise UserError(
            f"--resume takes the model, data and seeds from {request.resume}/config.json; drop {', '.join(given)}"
        )
    config, full = rundir.load_config(request.resume)
    run_dir = Path(request.resume)
    diversity_every = diversity_interval(request, config)
    backend_name = request.backend or full.get("backend", DEFAULT_BACKEND)
    dataset = _resumed_dataset(request, run_dir, full.get("data", {}), config.image_size)
    training = dict(full.get("training", {}))
    if request.epochs is not None:
        training["epochs"] = request.epochs
    epochs = training.get("epochs")
    if epochs is None and request.time_budget is None:
        raise UserError(f"{run_dir} was trained to a time budget; give --epochs or --time-budget to resume")
    if training != full.get("training") or backend_name != full.get("backend"):
        # checkpoints are backend-neutral, so a run may continue in the other backend: record it
        rundir.update_config(run_dir, training=training, backend=backend_name)
    return PlannedRun(run_dir, config, backend_name, dataset, epochs, diversity_every)


def _options_fixed_on_resume(request: TrainingRequest) -> list[str]:
    """The options a resumed run takes from its config.json that the request gives anyway."""
    options = request.data
    explicit = {
        "--out": request.out,
        **{o.option: getattr(request, o.field) if o.given(request) else None for o in TRAINING_OPTIONS if o.fixed_on_resume},
        "--config": request.config_file or request.config_overrides,
        "--labels": options.labels, "--label-column": options.label_column, "--classes": options.classes or None,
        "--binary": options.binary, "--unknown": None if options.unknown == DataOptions.unknown else options.unknown,
        "--unlabelled": options.unlabelled or None,
    }
    return [flag for flag, value in explicit.items() if value is not None]


def _resumed_dataset(request: TrainingRequest, run_dir: Path, stored: dict, image_size: int) -> Dataset:
    """The data to continue on: request.dataset, or the data loaded as config.json recorded it
    (--data may say where it is now); UserError when it is not the data the run saw."""
    dataset = request.dataset
    if dataset is None:
        if request.data.path is None and stored.get("source") == IN_MEMORY_SOURCE:
            raise UserError(f"{run_dir} was trained on data passed in memory; give --data to resume it")
        recorded = DataOptions.from_record(request.data.path or stored.get("source"), stored)
        recorded = replace(recorded, strict=request.data.strict)
        dataset = recorded.load(image_size, count=stored.get("default_count") or request.data_count,
                                progress=request.progress)
    if dataset.fingerprint() != stored.get("fingerprint"):
        raise UserError(f"cannot resume {run_dir}: the data differs from the data the run was trained on")
    return dataset


# ----------------------------------------------------------------------------- make the new run


def make_new_run(request: TrainingRequest) -> PlannedRun:
    """A new run directory in request.out: the data loaded, the config built, RUN/config.json
    written with what --resume needs to load the same data the same way."""
    if request.out is None:
        raise UserError("give --out DIR for a new run, or --resume RUN_DIR")
    image_size = request.image_size or default_image_size(request.data.path, request.dataset)
    dataset = request.dataset
    if dataset is None:
        dataset = request.data.load(image_size, count=request.data_count, progress=request.progress)
    config = build_config(request, image_size, dataset)
    diversity_every = diversity_interval(request, config)  # before the run folder is made
    backend_name = request.backend or DEFAULT_BACKEND
    epochs = request.epochs
    if epochs is None and request.time_budget is None:
        epochs = DEFAULT_EPOCHS
    seeds = {"config": config.seed, **{name: [config.seed, stream] for name, stream in SEED_STREAMS.items()}}
    run_dir = rundir.create_run_dir(
        request.out, config, backend_name,
        data_record(request.data, dataset, config.image_size, in_memory=request.dataset is not None,
                    default_count=request.data_count),
        seeds, training={"epochs": epochs},
    )
    return PlannedRun(run_dir, config, backend_name, dataset, epochs, diversity_every)


def asks_for_privacy(request: TrainingRequest) -> bool:
    """Whether the request gives any --dp-* option."""
    return any(getattr(request, name) is not None for name in DP_OPTIONS)


def preset_of(request: TrainingRequest) -> str:
    """The request's preset: as given, else `dp` when a --dp-* option is given, else the default."""
    if request.preset:
        return request.preset
    return PRIVATE_PRESET if asks_for_privacy(request) else DEFAULT_PRESET


def build_config(request: TrainingRequest, image_size: int, dataset: Dataset) -> GANConfig:
    """The run's GANConfig: the preset, then the request's config file and overrides, then its
    explicit fields; num_classes from the data when conditional."""
    preset = preset_of(request)
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    overrides = {}
    if request.config_file is not None:
        overrides.update(read_config_file(request.config_file))
    overrides.update(request.config_overrides or {})
    overrides.pop("preset", None)
    explicit = {o.field: getattr(request, o.field) for o in TRAINING_OPTIONS if o.kind == "config"}
    explicit["image_size"] = image_size
    overrides.update({k: v for k, v in explicit.items() if v is not None})
    overrides["num_classes"] = class_count(dataset, request.conditional or overrides.get("num_classes", 0) > 0)
    try:
        config = preset_config(preset, **overrides)
    except (ConfigError, TypeError) as e:
        hint = (f" (--dp-* options with --preset {preset}: give --dp-noise, or use --preset dp)"
                if asks_for_privacy(request) else "")
        raise UserError(f"bad config: {e}{hint}") from None
    if request.config_file is not None or request.config_overrides:
        config = config.replace(preset=f"{preset}+custom")
    if request.dp_epsilon is not None and request.dp_noise is None and "dp_noise" not in overrides:
        config = _calibrated_noise(config, request, len(dataset.images))
    return config


def _calibrated_noise(config: GANConfig, request: TrainingRequest, count: int) -> GANConfig:
    """--dp-epsilon without --dp-noise: the smallest noise multiplier whose planned steps
    (--epochs x N // batch size Poisson-sampled D steps) spend the budget; the margin's extra D
    steps then end the run early, at the budget. With a time budget and no --epochs the steps are
    not known: the preset's noise multiplier stays, and the run stops when the budget is spent."""
    if not config.private:
        raise UserError("--dp-epsilon needs a private run: a noise multiplier above 0 (--dp-noise)")
    steps = None if request.epochs is None else request.epochs * (count // config.batch_size)
    if not steps:
        print(f"note: --dp-epsilon {request.dp_epsilon:g} with no --epochs: noise multiplier {config.dp_noise:g} "
              "(the preset's); training stops when the budget is spent. Give --epochs to fit the noise to the "
              "budget, or --dp-noise", file=sys.stderr)
        return config
    sigma = calibrate_noise(config.batch_size / count, steps, request.dp_epsilon, config.dp_delta)
    print(f"privacy: noise multiplier {sigma:.4g} spends epsilon {request.dp_epsilon:g} (delta {config.dp_delta:g}) "
          f"in {steps} D steps ({request.epochs} epochs of {count // config.batch_size})", file=sys.stderr)
    try:
        return config.replace(dp_noise=round(sigma, 6) + 1e-6)  # rounded up: never above the budget
    except (ConfigError, TypeError) as e:
        raise UserError(f"bad config: {e}") from None


def class_count(dataset: Dataset, conditional: bool) -> int:
    """GANConfig.num_classes for a model of `dataset`: its classes when conditional (the
    named classes, else the largest label + 1), else 0."""
    if not conditional:
        return 0
    if dataset.labels is None:
        raise needs_labels("--conditional")
    return len(dataset.class_names) or int(dataset.labels.max()) + 1


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


# ----------------------------------------------------------------------------- train


def train(run: PlannedRun, request: TrainingRequest) -> TrainingOutcome:
    """Run the Trainer on a planned run; a resumed run first restores its last valid checkpoint."""
    try:
        model = backends.get(run.backend_name, run.config)
    except ImportError as e:
        raise UserError(f"backend {run.backend_name} is not available here: {e}") from e
    trainer = Trainer(
        model,
        run.dataset.images,
        run.dataset.labels if run.config.num_classes > 0 else None,
        run_dir=run.run_dir,
        epochs=run.epochs,
        time_budget=request.time_budget,
        checkpoint_every=request.checkpoint_every,
        progress=request.progress,
        validate=request.validate,
        on_epoch_end=request.on_epoch_end,
        diversity_every=run.diversity_every,
    )
    if request.resume is not None:
        _restore_last_checkpoint(trainer, run.run_dir)
    print(f"data: {run.dataset.source}; classes: {run.dataset.class_counts()}", flush=True)
    result = trainer.run()
    return TrainingOutcome(run.run_dir, run.config, run.backend_name, result, run.dataset)


def _restore_last_checkpoint(trainer, run_dir: Path) -> None:
    """The trainer at the run's last valid checkpoint (damaged ones skipped with a warning); a
    run killed before its first checkpoint starts over."""
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
        trainer.truncate_metrics()
        print(f"warning: {run_dir} has no checkpoint yet; training from the start", file=sys.stderr)
