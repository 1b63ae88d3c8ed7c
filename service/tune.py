"""Hyperparameter trials on Ray Tune: short margin-balanced training runs ranked by SWD.

Each trial is a plain function of its sampled hyperparameters (as in Ray Tune's DCGAN
example): it trains a fresh model with `service.trainer.Trainer` on the training split and,
at every epoch end (the trainer's `on_epoch_end` hook), generates images, measures the sliced
Wasserstein distance (SWD) against a held-out split of the real data, and reports it to Tune
with a checkpoint. The checkpoint is a small run directory (config.json + the epoch's .npz),
so `generate --run` and `validate` accept it as is. ASHA stops the weakest trials early, and
the time budget bounds the whole search.

`search` is the `tune` command's search: the data loaded, the base config built, and what was
asked recorded in OUT/search.json, so `tune --resume OUT` continues the same search.

Output folder:
    OUT/search.json         the search's options and data fingerprint, for --resume
    OUT/trials.csv          one row per trial: id, status, hyperparameters, best/last SWD, epochs
    OUT/best_config.json    the best trial's GANConfig fields (`train --config` accepts it)
    OUT/best_checkpoint     path of the best trial's best checkpoint (a run directory)
    OUT/tune/               Ray Tune's own experiment folder (results, checkpoints)
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backends import DEFAULT_BACKEND
from backends.config import ConfigError, GANConfig
from service.data import DEFAULT_DATA_COUNT, DataOptions
from service.errors import UserError
from service.files import claim_output_folder, output_lock, write_json, write_text
from service.trainer import check_plan

METRIC = "swd"
EXPERIMENT_NAME = "tune"
TUNE_COMMAND = "tune"  # the command named in OUT's marker (service.files)
DIFFAUGMENT_ON = "translation"  # colour augmentation cost most of real images' variety (docs/presets.md)
# Hyperparameters the search varies; every other GANConfig field comes from the base config.
SEARCHED = ("lr_g", "lr_d", "beta_1", "margin", "width", "batch_size", "diffaugment")
SEARCH_FILE = "search.json"  # what a search was asked, so --resume can rebuild it
# The tune command's options a search records in SEARCH_FILE: all but --resume, --address, --progress
SEARCH_OPTIONS = ("data", "labels", "label_column", "classes", "binary", "unknown", "unlabelled", "crop",
                  "trials", "time_budget", "epochs", "backend", "preset", "image_size",
                  "conditional", "cpus_per_trial", "gpus_per_trial", "widths", "batch_sizes", "max_images",
                  "holdout", "seed")


@dataclass
class TuneSettings:
    trials: int
    time_budget: float
    out_dir: Path
    backend: str = DEFAULT_BACKEND
    epochs: int = 10  # epochs per trial at most (ASHA's max_t)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    widths: tuple[int, ...] = (16, 32, 64)
    batch_sizes: tuple[int, ...] = (32, 64)
    holdout_fraction: float = 0.2
    swd_images: int = 256  # generated images per SWD measurement (capped by the held-out size)
    seed: int = 0
    address: str | None = None
    base: dict = field(default_factory=dict)  # GANConfig fields shared by every trial
    progress: bool = False  # a bar of trial epochs on stderr instead of Ray Tune's status tables
    # what `search` builds the data and the base config from
    data: DataOptions = field(default_factory=DataOptions)
    max_images: int | None = None  # at most this many images (None: all; the embedded dataset: its default)
    preset: str = "default"
    image_size: int | None = None  # None: the data's own size (service.data.default_image_size)
    conditional: bool = False

    def check(self) -> None:
        if self.max_images is not None and self.max_images < 2:
            raise UserError(f"--max-images must be >= 2, got {self.max_images}")
        if self.trials < 1:
            raise UserError(f"--trials must be >= 1, got {self.trials}")
        check_plan(self.epochs, self.time_budget)
        if not self.cpus_per_trial > 0 or self.gpus_per_trial < 0:
            raise UserError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")


def search_space(settings: TuneSettings) -> dict:
    from ray import tune

    return {
        "lr_g": tune.loguniform(5e-5, 1e-3),
        "lr_d": tune.loguniform(5e-5, 1e-3),
        # The thesis's printed beta_1 (0.0005) against the DCGAN paper's 0.5, and between.
        "beta_1": tune.choice([0.0005, 0.3, 0.5]),
        "margin": tune.uniform(0.05, 1.0),
        "width": tune.choice(list(settings.widths)),
        "batch_size": tune.choice(list(settings.batch_sizes)),
        "diffaugment": tune.choice(["", DIFFAUGMENT_ON]),
    }


def trial_config(base: dict, params: dict) -> GANConfig:
    values = dict(base)
    values.update({k: params[k] for k in SEARCHED if k in params})
    values["width"] = int(values["width"])
    values["max_width"] = max(int(values.get("max_width", values["width"])), values["width"])
    values["batch_size"] = int(values["batch_size"])
    return GANConfig.from_dict(values)


def _trial_checkpoint_dir(run_dir: Path, checkpoint: Path) -> str:
    """A throwaway run directory holding one checkpoint, for Tune to copy into its storage."""
    from service.rundir import CHECKPOINT_DIR, CONFIG_FILE

    folder = Path(tempfile.mkdtemp(prefix="trial-ckpt-"))
    (folder / CHECKPOINT_DIR).mkdir()
    shutil.copy2(run_dir / CONFIG_FILE, folder / CONFIG_FILE)
    shutil.copy2(checkpoint, folder / CHECKPOINT_DIR / checkpoint.name)
    return str(folder)


def run_trial(params: dict, base: dict, backend_name: str, epochs: int, cpus: float,
              train_images, train_labels, heldout_uint8, swd_images: int) -> None:
    """One Tune trial: train, and after every epoch report SWD(held-out, generated) + checkpoint.

    A trial Tune starts again (its worker or node lost, or the search resumed) continues from
    its last checkpoint: weights, optimizer, counters and random streams, as `train --resume`.
    """
    from service.ray_cluster import thread_env

    os.environ.update(thread_env(cpus))  # before the framework starts its thread pools
    import ray.tune

    import backends
    from service.imageio import to_uint8
    from service.rundir import create_run_dir
    from service.trainer import Trainer, fixed_sample_noise
    from service.validation.metrics import swd

    from service import checkpoint as ckpt

    config = trial_config(base, params)
    backend = backends.get(backend_name, config)
    labels_for_swd = None
    if config.num_classes:
        labels_for_swd = (np.arange(swd_images) % config.num_classes).astype(np.int64)
    z = fixed_sample_noise(config, swd_images)
    run_dir = Path(tempfile.mkdtemp(prefix="trial-run-")) / "run"
    create_run_dir(run_dir, config, backend_name, {"source": "tune trial"}, {"seed": config.seed})

    def on_epoch_end(epoch, backend, run_dir, summary):
        fake = to_uint8(backend.generate(z, labels_for_swd))
        score = float(swd(heldout_uint8, fake, seed=0)["mean"])
        metrics = {METRIC: score, "epoch": epoch, "d_loss": summary["d_loss"], "g_loss": summary["g_loss"]}
        folder = _trial_checkpoint_dir(Path(run_dir), Path(summary["checkpoint"]))
        try:
            ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(folder))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    trainer = Trainer(
        backend, train_images, train_labels if config.num_classes else None,
        run_dir=run_dir, epochs=epochs, progress=False, on_epoch_end=on_epoch_end,
        sample_grid=False, handle_signals=False, keep=1,
    )
    previous = ray.tune.get_checkpoint()
    if previous is not None:  # a retried trial: continue exactly where its last report left it
        with previous.as_directory() as folder:
            _, arrays = ckpt.load_latest_valid(folder)
        trainer.restore(arrays)
    try:
        trainer.run()
    finally:
        shutil.rmtree(run_dir.parent, ignore_errors=True)


def progress_callback(settings: TuneSettings):
    """A Ray Tune callback that draws one bar on stderr: epochs reported, out of trials x
    epochs at most (ASHA stops some trials sooner, so the bar may end short of 100%)."""
    from ray import tune
    from tqdm import tqdm

    class TrialProgress(tune.Callback):
        # Ray pickles its run config, callbacks included: the bar (which holds stderr) is made
        # in setup, on the driver, when the search starts.
        def setup(self, **info):
            self.bar = tqdm(total=settings.trials * settings.epochs, desc="tune", unit="epoch", file=sys.stderr)
            self.best = None
            self.finished = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if METRIC in result:
                self.best = result[METRIC] if self.best is None else min(self.best, result[METRIC])
            self.bar.set_postfix_str(f"{self.finished}/{settings.trials} trials done, best SWD {self.best:.1f}"
                                     if self.best is not None else f"{self.finished}/{settings.trials} trials done",
                                     refresh=False)
            self.bar.update(1)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.finished += 1

        def on_experiment_end(self, trials, **info):
            self.bar.close()

    return TrialProgress()


def load_dataset(data, image_size: int, max_images: int | None = None, seed: int = 0):
    """The search's data: `data` a service.data.DataOptions, a path, or None for the embedded
    dataset; at most `max_images` of it, drawn with `seed`."""
    from service.data import default_dataset

    data = DataOptions.of(data)
    if data.path:
        dataset = data.load(image_size, progress=False)
        if max_images and len(dataset) > max_images:
            keep = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:max_images])
            dataset = dataset.subset(keep)
        return dataset
    return default_dataset(image_size, count=max_images or DEFAULT_DATA_COUNT, seed=seed, progress=False)  # as --data


def resumed_arguments(folder, arguments: dict, given: list[str]) -> dict:
    """`arguments` (the tune command's) with the options of the search in `folder` (its
    search.json) over them, for --resume; UserError when search options are `given` again
    (only --address and --progress may be) or there is no search to resume."""
    import json

    folder = Path(folder)
    if given:
        raise UserError(f"--resume takes the search's options from {folder / SEARCH_FILE}; drop {', '.join(given)}")
    try:
        stored = json.loads((folder / SEARCH_FILE).read_text())
    except FileNotFoundError:
        raise UserError(f"--resume {folder}: no search to resume there (no {SEARCH_FILE})") from None
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"--resume {folder}: {SEARCH_FILE} is unreadable ({e})") from None
    if not (folder / EXPERIMENT_NAME).is_dir():
        raise UserError(f"--resume {folder}: the search never started there (no {EXPERIMENT_NAME}/ folder)")
    return {**arguments, **stored, "out": str(folder)}


def search(settings: TuneSettings, options: dict, resume: bool = False) -> dict:
    """The tune command's search: its data loaded and checked, the base config built, then
    run_tune. `options` are the command's (SEARCH_OPTIONS are recorded in search.json; resumed,
    they hold the recorded data fingerprint, which the data must match)."""
    from backends.presets import preset_config
    from service.data import default_image_size
    from service.training import class_count

    settings.check()  # before loading data
    image_size = settings.image_size or default_image_size(settings.data.path)
    if settings.address:
        from service.ray_cluster import probe_address

        probe_address(settings.address)  # fail fast, before loading data
    dataset = load_dataset(settings.data, image_size, max_images=settings.max_images, seed=settings.seed)
    num_classes = class_count(dataset, settings.conditional)
    fingerprint = dataset.fingerprint()
    if resume and options.get("fingerprint") != fingerprint:
        raise UserError(f"cannot resume {settings.out_dir}: the data differs from the data the search started on")
    settings.base = preset_config(settings.preset, image_size=image_size, num_classes=num_classes,
                                  seed=settings.seed).to_dict()
    record = {**{name: options[name] for name in SEARCH_OPTIONS}, "fingerprint": fingerprint}
    return run_tune(settings, dataset, resume=resume, record=record)


def run_tune(settings: TuneSettings, dataset, resume: bool = False, trial=run_trial, record: dict | None = None) -> dict:
    """Run the search (or, with `resume`, continue the one in settings.out_dir whose driver
    stopped: finished trials are kept, unfinished and errored ones go on from their last
    checkpoints); write trials.csv and best_config.json; return a summary. `trial` is the
    trainable's body (run_trial; tests wrap it to inject faults); `record`, what a new search
    writes to search.json before it starts (`search`'s)."""
    from ray import tune

    from service.data import split
    from service.imageio import to_uint8
    from service.ray_cluster import ray_session

    settings.check()
    try:
        base_config = GANConfig.from_dict(settings.base)
    except (ConfigError, TypeError) as e:
        raise UserError(f"base config: {e}") from None
    for batch_size in settings.batch_sizes:  # e.g. a size the minibatch-std groups do not divide
        try:
            base_config.replace(batch_size=int(batch_size))
        except ConfigError as e:
            raise UserError(f"--batch-sizes: {e}") from None
    out_dir = settings.out_dir.resolve()
    experiment = out_dir / EXPERIMENT_NAME
    if not resume and experiment.exists():
        raise UserError(f"{out_dir} already holds a search; continue it with --resume {settings.out_dir}, or choose another --out")
    train_set, heldout = split(dataset, settings.holdout_fraction, settings.seed)
    if len(train_set) < max(settings.batch_sizes):
        raise UserError(
            f"{len(train_set)} training images after the held-out split, fewer than the largest "
            f"batch size {max(settings.batch_sizes)}; give more data or smaller --batch-sizes"
        )
    heldout_uint8 = to_uint8(heldout.images)
    swd_images = min(settings.swd_images, len(heldout))
    claim_output_folder(out_dir, TUNE_COMMAND, ours_if=_is_old_search)
    with output_lock(out_dir, "a search"):  # a second search on the same --out fails at once
        if record is not None and not resume:
            write_json(out_dir / SEARCH_FILE, record)
        base = base_config.to_dict()
        local_cpus = None if (settings.address or os.environ.get("RAY_ADDRESS")) else os.cpu_count()

        with ray_session(settings.address, num_cpus=local_cpus):
            trainable = tune.with_resources(
                tune.with_parameters(
                    trial, base=base, backend_name=settings.backend, epochs=settings.epochs,
                    cpus=settings.cpus_per_trial, train_images=train_set.images,
                    train_labels=train_set.labels, heldout_uint8=heldout_uint8, swd_images=swd_images,
                ),
                {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
            )
            if resume:
                tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True, resume_errored=True)
            else:
                tuner = tune.Tuner(trainable, param_space=search_space(settings), tune_config=_tune_config(settings),
                                   run_config=_run_config(settings, out_dir))
            results = tuner.fit()
        return summarise(results, out_dir, base)


def _is_old_search(folder: Path) -> bool:
    """A search folder from before output folders carried a marker."""
    return (folder / SEARCH_FILE).is_file() or (folder / EXPERIMENT_NAME).is_dir()


def _tune_config(settings: TuneSettings):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=settings.epochs, grace_period=1, reduction_factor=2)
    return tune.TuneConfig(
        metric=METRIC, mode="min", num_samples=settings.trials, scheduler=scheduler,
        time_budget_s=settings.time_budget, search_alg=BasicVariantGenerator(random_state=settings.seed),
    )


def _run_config(settings: TuneSettings, out_dir: Path):
    from ray import tune

    return tune.RunConfig(
        storage_path=str(out_dir), name=EXPERIMENT_NAME, verbose=0 if settings.progress else 1,
        callbacks=[progress_callback(settings)] if settings.progress else None,
        # a trial whose worker or node is lost is started again, from its last checkpoint
        failure_config=tune.FailureConfig(max_failures=3),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=METRIC, checkpoint_score_order="min"),
    )


def summarise(results, out_dir: Path, base: dict) -> dict:
    """trials.csv (every trial) and best_config.json (the trial with the lowest SWD seen)."""
    rows = []
    for result in results:
        history = result.metrics_dataframe
        scores = [] if history is None or METRIC not in history else history[METRIC].dropna().tolist()
        rows.append(
            {
                "trial_id": (result.metrics or {}).get("trial_id", Path(result.path).name),
                "status": "error" if result.error else ("reported" if scores else "no result"),
                **{k: result.config.get(k, "") for k in SEARCHED},
                "best_swd": min(scores) if scores else "",
                "last_swd": scores[-1] if scores else "",
                "epochs": len(scores),
            }
        )
    rows.sort(key=lambda r: (r["best_swd"] == "", r["best_swd"] if r["best_swd"] != "" else 0.0))
    table = out_dir / "trials.csv"
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["trial_id"])
    writer.writeheader()
    writer.writerows(rows)
    write_text(table, text.getvalue())
    scored = [r for r in rows if r["best_swd"] != ""]
    if not scored:
        errors = [str(r.error).splitlines()[-1] for r in results if r.error]
        detail = f"; first error: {errors[0][:200]}" if errors else ""
        raise UserError(f"no trial finished an epoch within the time budget{detail}")
    best = results.get_best_result(metric=METRIC, mode="min", scope="all")
    best_config = trial_config(base, best.config)
    write_json(out_dir / "best_config.json", best_config.to_dict())
    best_checkpoint = best.get_best_checkpoint(METRIC, "min") if best.best_checkpoints else None
    if best_checkpoint is not None:
        write_text(out_dir / "best_checkpoint", best_checkpoint.path + "\n")
    return {
        "rows": rows,
        "table": table,
        "best_config": out_dir / "best_config.json",
        "best_swd": min(r["best_swd"] for r in scored),
        "best_checkpoint": None if best_checkpoint is None else best_checkpoint.path,
    }


def format_table(rows: list[dict]) -> str:
    columns = ["trial_id", "status", *SEARCHED, "best_swd", "epochs"]

    def cell(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value) if value != "" else "-"

    cells = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def print_summary(summary: dict, stream=None) -> None:
    stream = stream or sys.stdout  # looked up per call: whoever holds sys.stdout now gets the summary
    print(format_table(summary["rows"]), file=stream)
    print(f"best SWD {summary['best_swd']:.4g}; config: {summary['best_config']}; table: {summary['table']}", file=stream)
