"""The margin-balanced trainer: the thesis's training loop, once, above the Backend interface.

Per batch: one D step on [real; G(z)] and one G step on the same z (`Backend.train_step`), then
the thesis's inter-model margin rebalancing (`rebalance`).

Which model is retrained. The thesis's prose says "identify the model with smallest loss and
keep training it", but its GAN.py listing ("Convergence conditions", lines 176-192) does the
opposite, and the listing is what produced its results: if g_loss < d_loss it calls
`discriminator.train_on_batch` again, if d_loss < g_loss it calls
`discriminator_on_generator.train_on_batch` (G) again - so the model with the HIGHER loss is
trained again, on the same batch, while |d_loss - g_loss| > margin, and the loop breaks as soon
as the retrained model's loss drops below the other's (the order flips). We follow the
listing, as README's `train` section says. Two deliberate differences: the loop is capped by
`config.max_rebalance_steps` per batch (the thesis's loop had no cap and hung at 512x512), and
a repeated D step regenerates G(z) from the same z with the current G (the Backend's d_step),
where the thesis reused the fakes generated before the batch's G step.

Conditional runs: with `class_balanced` the epoch's order is drawn class-balanced
(`epoch_order`); with `condition_ramp_kimg` the class code's strength before each batch is a
function of the images trained on so far (`condition_strength`, from the step counter), so
both resume exactly with the rest.

Differential privacy (config.dp_noise > 0; service.privacy): every D step that reads real
images, the rebalancing's extra ones included, takes a fresh Poisson sample of the training set
(each image in with probability q = batch_size / N, from the trainer RNG), so each is one
Poisson-sampled Gaussian mechanism for the accountant; the fakes keep batch_size, their classes
drawn uniformly (the real labels' proportions are not read). The accountant's steps travel in
every checkpoint; epsilon spent is logged at each epoch's end and in config.json's "privacy";
before a step that would take epsilon past config.dp_epsilon the run saves and stops with
status "privacy_budget", and a resumed run stops there too. An epoch is N / batch_size steps.

Randomness is all in the trainer RNG (a seeded numpy PCG64 Generator: the epoch's shuffle,
then each step's z) and the backend's own RNG (dropout). Both, with the epoch's permutation and
the batch index within it, go into every checkpoint, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from backends.base import Backend
from backends.noise import sample_noise
from backends.rng_state import rng_from_arrays, rng_to_arrays
from service import checkpoint as ckpt
from service.errors import UserError, needs_labels
from service.files import append_lines, make_folder, output_lock, write_text
from service.rundir import CONFIG_FILE, LOSS_CURVE_FILE, METRICS_FILE, SAMPLES_DIR, claim_run_dir, update_config

SAMPLE_GRID_SIZE = 64  # images in each epoch's fixed-noise sample grid (8 x 8)
# SeedSequence([seed, stream]) keeps the trainer's streams apart; config.json records them
SEED_STREAMS = {"trainer_stream": 1, "sample_noise_stream": 2, "diversity_noise_stream": 3}


class TrainingDiverged(UserError):
    """A loss became NaN or inf: bad hyperparameters or data, not a bug, so the CLI exits 2."""


# --------------------------------------------------------------------------- rebalancing


@dataclass
class RebalanceResult:
    d_loss: float
    g_loss: float
    extra_d: int
    extra_g: int


def rebalance(
    d_step: Callable[[], float],
    g_step: Callable[[], float],
    d_loss: float,
    g_loss: float,
    margin: float,
    max_steps: int,
    max_d_steps: int | None = None,
) -> RebalanceResult:
    """The thesis's convergence condition: retrain the model with the higher loss on the same batch.

    Runs while |d_loss - g_loss| > margin, at most `max_steps` extra steps, and stops as soon as
    the retrained model's loss falls below the other's. Only the retrained model's loss is
    re-measured (the other model did not change). A NaN loss ends the loop (the caller checks).
    `max_d_steps` caps the extra D steps alone (a private run's budget).
    """
    extra_d = extra_g = 0
    retrain_d = d_loss > g_loss  # fixed for the batch, as in the thesis's two separate loops
    while abs(d_loss - g_loss) > margin and extra_d + extra_g < max_steps:
        if retrain_d:
            if max_d_steps is not None and extra_d >= max_d_steps:
                break
            d_loss = float(d_step())
            extra_d += 1
            if d_loss < g_loss:
                break
        else:
            g_loss = float(g_step())
            extra_g += 1
            if g_loss < d_loss:
                break
    return RebalanceResult(d_loss, g_loss, extra_d, extra_g)


# --------------------------------------------------------------------------- learning rate


def lr_scale(progress: float, decay_from: float) -> float:
    """The learning-rate factor at `progress` (0..1 of the planned training): 1 until
    `decay_from`, then linear to 0 at the end; decay_from 1.0 keeps it at 1."""
    if progress <= decay_from or decay_from >= 1.0:
        return 1.0
    return max(0.0, (1.0 - progress) / (1.0 - decay_from))


# --------------------------------------------------------------------------- RNG streams, sample grid


def condition_strength(config, images_seen: int) -> float | None:
    """The class code's strength for the next batch under transitional conditioning:
    min(1, images seen / (condition_ramp_kimg * 1000)); None when there is no ramp (an
    unconditional model, or a ramp of 0)."""
    if config.num_classes == 0 or config.condition_ramp_kimg <= 0:
        return None
    return min(1.0, images_seen / (config.condition_ramp_kimg * 1000.0))


def epoch_order(rng: np.random.Generator, count: int, labels: np.ndarray | None = None) -> np.ndarray:
    """The images of one epoch, in order: a permutation, or with `labels` (class-balanced
    sampling) `count` draws with replacement, each class equally likely and each image equally
    likely within its class."""
    if labels is None:
        return rng.permutation(count).astype(np.int64)
    present, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    weights = 1.0 / (len(present) * sizes[inverse])
    return rng.choice(count, size=count, replace=True, p=weights / weights.sum()).astype(np.int64)


def trainer_rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), SEED_STREAMS["trainer_stream"]])))


def fixed_sample_noise(config, count: int = SAMPLE_GRID_SIZE) -> np.ndarray:
    """The noise behind every epoch's sample grid: the same z each epoch, so grids are comparable."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(config.seed), SEED_STREAMS["sample_noise_stream"]])))
    return sample_noise(rng, count, config)


def grid_labels(num_classes: int, count: int = SAMPLE_GRID_SIZE, columns: int = 8) -> np.ndarray | None:
    """Class of each grid cell, whole rows per class (rows split as evenly as the classes allow)."""
    if num_classes <= 0:
        return None
    rows = math.ceil(count / columns)
    row_class = (np.arange(rows) * num_classes) // rows
    return np.repeat(row_class, columns)[:count].astype(np.int64)


# --------------------------------------------------------------------------- stop signals


@contextlib.contextmanager
def stop_on_signals(trainer: "Trainer"):
    """SIGINT/SIGTERM ask the trainer to stop after the step in flight (it then saves and returns).

    A second SIGINT raises KeyboardInterrupt at once. Outside the main thread (e.g. a Ray
    worker thread) signal handlers cannot be installed, and this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if trainer.stop_reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.request_stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --------------------------------------------------------------------------- trainer


@dataclass
class TrainResult:
    status: str  # "completed", "time_budget", "privacy_budget", "stopped:<SIGNAL>", "stopped:callback", "nothing_to_do"
    step: int
    epoch: int  # completed epochs
    checkpoint: Path | None
    seconds: float  # wall seconds of this call
    images_per_second: float
    rebalance_d: int  # extra D steps over the whole run
    rebalance_g: int


def check_plan(epochs: int | None, time_budget: float | None) -> None:
    """A training plan the Trainer can run: epochs (at least one), a time budget, or both. The
    one home of these bounds: train, the main job and tune check them here."""
    if epochs is None and time_budget is None:
        raise UserError("give a number of epochs or a time budget")
    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {epochs}")
    if time_budget is not None and not time_budget > 0:
        raise UserError(f"--time-budget must be > 0 seconds, got {time_budget}")


EpochHook = Callable[[int, Backend, Path, dict], object]


class Trainer:
    """Trains `backend` on `images` (float32 NHWC in [-1, 1]), writing into `run_dir`.

    epochs: total epochs to reach (None: until the time budget). time_budget: seconds for this
    call; the step in flight finishes, then a checkpoint is saved. checkpoint_every: also save
    every N steps (0: only at epoch ends and on stop). validate(epoch, backend, run_dir) -> dict
    of metrics merged into the epoch's summary line; on_epoch_end(epoch, backend, run_dir,
    metrics) is called after the epoch's checkpoint, and returning True stops the run.
    sample_grid / loss_curve turn off the per-epoch PNG grid and the end-of-run loss plot.
    diversity_every: every N steps, and at the end, measure G's diversity (service.diversity:
    a "diversity" line in metrics.jsonl, a warning on stderr below its threshold); 0: never.
    Not in a private run (it reads training images outside the privacy accountant).
    """

    def __init__(
        self,
        backend: Backend,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        run_dir,
        epochs: int | None = None,
        time_budget: float | None = None,
        checkpoint_every: int = 0,
        keep: int = 3,
        progress: bool = True,
        validate: Callable[[int, Backend, Path], dict | None] | None = None,
        on_epoch_end: EpochHook | None = None,
        sample_grid: bool = True,
        loss_curve: bool = True,
        handle_signals: bool = True,
        diversity_every: int = 0,
    ):
        self.backend = backend
        self.config = config = backend.config
        self.run_dir = Path(run_dir)
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (config.image_size, config.image_size, config.channels):
            raise UserError(
                f"images have shape {images.shape[1:]}, the model expects "
                f"{(config.image_size, config.image_size, config.channels)}"
            )
        if images.dtype != np.dtype(config.dtype):
            images = images.astype(config.dtype)
        self.images = images
        if config.num_classes > 0:
            if labels is None:
                raise needs_labels("conditional training")
            labels = np.asarray(labels, dtype=np.int64)
            if labels.shape != (len(images),):
                raise UserError(f"got {labels.shape[0] if labels.ndim else 0} labels for {len(images)} images")
            if labels.min() < 0 or labels.max() >= config.num_classes:
                raise UserError(f"labels must be class indices in [0, {config.num_classes - 1}]")
            self.labels = labels
        else:
            self.labels = None
        self.batch_size = config.batch_size
        self.batches_per_epoch = len(images) // self.batch_size  # the last partial batch is dropped
        if self.batches_per_epoch == 0:
            raise UserError(
                f"the dataset has {len(images)} images, fewer than one batch of {self.batch_size}; "
                "set a smaller batch size (--batch-size)"
            )
        check_plan(epochs, time_budget)
        self.epochs = epochs
        self.time_budget = time_budget
        self.checkpoint_every = int(checkpoint_every or 0)
        self.keep = keep
        self.show_progress = progress
        self.validate = validate
        self.on_epoch_end = on_epoch_end
        self.sample_grid = sample_grid
        self.loss_curve = loss_curve
        self.handle_signals = handle_signals
        self.stop_reason: str | None = None

        # state that a checkpoint carries
        self.rng = trainer_rng(config.seed)
        self.step = 0
        self.epoch = 0  # completed epochs
        self.batch_in_epoch = 0
        self.permutation = np.zeros(0, dtype=np.int64)
        self.rebalance_d = 0
        self.rebalance_g = 0
        self.train_seconds = 0.0
        self.planned_fraction = 0.0  # of the planned training done, for the learning-rate schedule
        self._fraction_at_start = 0.0
        self._epoch_sums = np.zeros(5)  # d_loss, g_loss, rebalance_d, rebalance_g, seconds
        self.last_checkpoint: Path | None = None
        self._checkpoint_step: int | None = None  # the step of the checkpoint saved or resumed from
        self.accountant = None
        if config.private:
            from service.privacy import PrivacyAccountant, check_delta

            check_delta(config.dp_delta, len(images))
            self.accountant = PrivacyAccountant(
                self.batch_size / len(images), config.dp_noise, config.dp_delta, config.dp_epsilon
            )
        self.diversity = self._diversity_check(diversity_every)
        self._diversity_step: int | None = None  # the step last checked
        self._diversity_low = False  # the last check was below the threshold (warned)

    # ----------------------------------------------------------------- state

    def request_stop(self, reason: str = "requested") -> None:
        """Stop after the step in flight (safe to call from a signal handler or another thread)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def state_arrays(self) -> dict[str, np.ndarray]:
        backend = self.backend
        arrays = {n: np.asarray(v) for n, v in backend.get_weights().items()}
        arrays.update({n: np.asarray(v) for n, v in backend.get_optimizer_state().items()})
        prefix = f"rng/{backend.name}/"  # backends name their RNG arrays "rng/<backend>/..." already
        arrays.update(
            {(n if n.startswith(prefix) else prefix + n): np.asarray(v) for n, v in backend.get_rng_state().items()}
        )
        arrays.update(rng_to_arrays(self.rng, "rng/trainer/"))
        arrays["rng/trainer/permutation"] = np.asarray(self.permutation, dtype=np.int64)
        arrays.update(
            {
                "meta/step": np.array(self.step, dtype=np.int64),
                "meta/epoch": np.array(self.epoch, dtype=np.int64),
                "meta/batch_in_epoch": np.array(self.batch_in_epoch, dtype=np.int64),
                "meta/batch_size": np.array(self.batch_size, dtype=np.int64),
                "meta/dataset_count": np.array(len(self.images), dtype=np.int64),
                "meta/rebalance_d": np.array(self.rebalance_d, dtype=np.int64),
                "meta/rebalance_g": np.array(self.rebalance_g, dtype=np.int64),
                "meta/train_seconds": np.array(self.train_seconds, dtype=np.float64),
                "meta/progress": np.array(self.planned_fraction, dtype=np.float64),
                "meta/epoch_sums": self._epoch_sums.astype(np.float64),
            }
        )
        if self.accountant is not None:
            arrays.update(self.accountant.to_arrays())
        return arrays

    def restore(self, arrays: dict[str, np.ndarray], path=None) -> None:
        """Continue from a checkpoint's arrays (weights, optimizer, RNG streams, counters);
        a checkpoint that lacks any of them, or holds non-finite weights, is a UserError."""
        ckpt.check_arrays(arrays, None, path or "to resume", resume=True)  # shapes: set_weights below
        parts = ckpt.split_arrays(arrays)
        meta = parts["meta"]
        for name in ("meta/batch_size", "meta/dataset_count"):
            if name in meta:
                expected = self.batch_size if name == "meta/batch_size" else len(self.images)
                if int(meta[name]) != expected:
                    raise UserError(
                        f"cannot resume: the checkpoint was trained with {name.split('/')[1]} "
                        f"{int(meta[name])}, now {expected}"
                    )
        try:
            self.backend.set_weights(parts["weights"])
            if parts["opt"]:
                self.backend.set_optimizer_state(parts["opt"])
        except ValueError as e:
            raise UserError(f"cannot resume: checkpoint does not match the model: {e}") from e
        own_rng = ckpt.backend_rng_state(arrays, self.backend.name)
        if own_rng:  # resuming in the other backend: its dropout stream starts afresh
            self.backend.set_rng_state(own_rng)
        self.rng = rng_from_arrays(arrays, "rng/trainer/")
        self.permutation = np.asarray(arrays["rng/trainer/permutation"], dtype=np.int64)
        self.step = int(meta["meta/step"])
        self.epoch = int(meta["meta/epoch"])
        self.batch_in_epoch = int(meta["meta/batch_in_epoch"])
        self.rebalance_d = int(meta.get("meta/rebalance_d", 0))
        self.rebalance_g = int(meta.get("meta/rebalance_g", 0))
        self.train_seconds = float(meta.get("meta/train_seconds", 0.0))
        self.planned_fraction = float(meta.get("meta/progress", 0.0))
        self._epoch_sums = np.asarray(meta.get("meta/epoch_sums", np.zeros(5)), dtype=np.float64).copy()
        if self.accountant is not None:
            self.accountant.restore(meta)
        self._checkpoint_step = self.step
        self.truncate_metrics()

    def save(self) -> Path:
        self.last_checkpoint = ckpt.save_checkpoint(self.run_dir, self.step, self.state_arrays(), keep=self.keep)
        self._checkpoint_step = self.step
        if self.accountant is not None and (self.run_dir / CONFIG_FILE).is_file():
            update_config(self.run_dir, privacy=self.accountant.summary())  # epsilon spent, beside the model
        return self.last_checkpoint

    # ----------------------------------------------------------------- private batches

    def _poisson_batch(self):
        """A private D step's real images: each training image with probability q, independently
        (the accountant's Poisson sampling), and their labels."""
        index = np.flatnonzero(self.rng.random(len(self.images)) < self.accountant.sampling_rate)
        return self.images[index], None if self.labels is None else self.labels[index]

    def _private_fake_labels(self):
        """The fakes' classes in a private conditional run: uniform, from the trainer RNG."""
        if self.labels is None:
            return None
        return self.rng.integers(0, self.config.num_classes, self.batch_size)

    def truncate_metrics(self) -> None:
        """Drop metrics lines written after the checkpoint we resume from (a killed run's tail)."""
        path = self.run_dir / METRICS_FILE
        if not path.exists():
            return
        claim_run_dir(self.run_dir, "run folder")  # never rewrite the metrics.jsonl of a folder that is not a run of ours
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill
            if record.get("type") == "epoch":
                if record.get("epoch", 0) <= self.epoch:
                    kept.append(line)
            elif record.get("step", 0) <= self.step:
                kept.append(line)
        write_text(path, "".join(line + "\n" for line in kept))

    # ----------------------------------------------------------------- loop

    def _finished_epochs(self) -> bool:
        return self.epochs is not None and self.epoch >= self.epochs

    def _planned_fraction(self, started: float) -> float:
        """How far through the planned training this step is, 0..1: steps over the steps of
        `epochs`, or this call's share of its time budget (a resumed run spreads what was left
        of the schedule over its new budget), whichever is further."""
        parts = []
        if self.epochs:
            parts.append(self.step / (self.epochs * self.batches_per_epoch))
        if self.time_budget is not None:
            elapsed = (time.perf_counter() - started) / self.time_budget
            parts.append(self._fraction_at_start + (1.0 - self._fraction_at_start) * elapsed)
        return min(1.0, max(parts, default=0.0))

    def run(self) -> TrainResult:
        context = stop_on_signals(self) if self.handle_signals else contextlib.nullcontext()
        with context:
            return self._run()

    def _run(self) -> TrainResult:
        started = time.perf_counter()
        start_step = self.step
        self._fraction_at_start = self.planned_fraction
        if self._finished_epochs():
            return self._result("nothing_to_do", started, start_step)
        claim_run_dir(self.run_dir, "run folder")
        with output_lock(self.run_dir, "a run"):
            try:
                status = self._train(started)
            except OSError as e:  # a full disk, a folder made read-only: the checkpoints written stay whole
                kept = f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was written in this session"
                raise UserError(f"cannot write to {self.run_dir}: {e.strerror or e}; {kept}") from None
        return self._result(status, started, start_step)

    def _train(self, started: float) -> str:
        make_folder(self.run_dir / SAMPLES_DIR)
        bar = self._progress_bar()
        status = "completed"
        try:
            with append_lines(self.run_dir / METRICS_FILE) as metrics_file:
                while not self._finished_epochs():
                    status = self._run_epoch(started, bar, metrics_file)
                    if status != "completed":
                        break
                if self.diversity is not None and self._diversity_step != self.step:
                    self._check_diversity(metrics_file)  # the end of training is always checked
        finally:
            bar.close()
            if self.loss_curve:
                self._plot_losses()
        return status

    def _run_epoch(self, started: float, bar, metrics_file) -> str:
        config, backend = self.config, self.backend
        private = self.accountant is not None
        if self.batch_in_epoch == 0:
            if not private:  # a private run samples each step afresh
                self.permutation = epoch_order(self.rng, len(self.images), self.labels if config.class_balanced else None)
            self._epoch_sums[:] = 0.0
        for batch in range(self.batch_in_epoch, self.batches_per_epoch):
            if private and not self.accountant.can_step():
                if self._checkpoint_step != self.step:
                    self.save()
                return "privacy_budget"
            if private:
                real, real_labels = self._poisson_batch()
                fake_labels = self._private_fake_labels()
                labels = None if fake_labels is None else (real_labels, fake_labels)
            else:
                index = self.permutation[batch * self.batch_size : (batch + 1) * self.batch_size]
                real = self.images[index]
                labels = None if self.labels is None else self.labels[index]
            z = sample_noise(self.rng, self.batch_size, config)
            self.planned_fraction = self._planned_fraction(started)
            scale = lr_scale(self.planned_fraction, config.lr_decay_from)
            if config.lr_decay_from < 1.0:
                backend.set_learning_rate_scale(scale)
            strength = condition_strength(config, self.step * self.batch_size)
            if strength is not None:
                backend.set_condition_strength(strength)

            step_started = time.perf_counter()
            # A backend that runs the margin loop itself (tf: one compiled call, the decisions on
            # the device; the same stop rules) takes the batch whole, unless the run is private
            # (each extra D step samples afresh and is accounted here) or its train_step was
            # wrapped on the instance (a hook that must see every step).
            fused = None if private or "train_step" in vars(backend) else getattr(backend, "train_step_rebalanced", None)
            if fused is not None:
                result = RebalanceResult(*fused(real, z, labels, config.margin, config.max_rebalance_steps))
            else:
                d_loss, g_loss = backend.train_step(real, z, labels)
                if private:
                    self.accountant.record_step()
                result = rebalance(
                    (lambda: self._private_d_step(z, fake_labels)) if private else (lambda: backend.d_step(real, z, labels)),
                    lambda: backend.g_step(z, labels if not private else fake_labels),
                    float(d_loss),
                    float(g_loss),
                    config.margin,
                    config.max_rebalance_steps,
                    self._d_steps_left() if private else None,
                )
            seconds = time.perf_counter() - step_started
            if not (math.isfinite(result.d_loss) and math.isfinite(result.g_loss)):
                self._diverged(self.step + 1, result, metrics_file)

            self.step += 1
            self.batch_in_epoch = batch + 1
            self.rebalance_d += result.extra_d
            self.rebalance_g += result.extra_g
            self.train_seconds += seconds
            self._epoch_sums += (result.d_loss, result.g_loss, result.extra_d, result.extra_g, seconds)
            metrics_file.write(
                json.dumps(
                    {
                        "type": "step",
                        "step": self.step,
                        "epoch": self.epoch + 1,
                        "d_loss": result.d_loss,
                        "g_loss": result.g_loss,
                        "rebalance_d": result.extra_d,
                        "rebalance_g": result.extra_g,
                        "seconds": round(seconds, 6),
                        "lr_scale": round(scale, 6),
                        **({} if strength is None else {"condition_strength": round(strength, 6)}),
                    }
                )
                + "\n"
            )
            metrics_file.flush()
            if self.diversity is not None and self.step % self.diversity_every == 0:
                self._check_diversity(metrics_file)
            self._update_bar(bar, result)

            out_of_time = self.time_budget is not None and time.perf_counter() - started >= self.time_budget
            if self.stop_reason is not None or out_of_time:
                self.save()
                return f"stopped:{self.stop_reason}" if self.stop_reason else "time_budget"
            if self.checkpoint_every and self.step % self.checkpoint_every == 0 and batch + 1 < self.batches_per_epoch:
                self.save()
        return self._end_epoch(metrics_file)

    def _private_d_step(self, z, fake_labels) -> float:
        """A rebalancing D step of a private run: a fresh Poisson sample, counted."""
        real, real_labels = self._poisson_batch()
        labels = None if fake_labels is None else (real_labels, fake_labels)
        loss = self.backend.d_step(real, z, labels)
        self.accountant.record_step()
        return loss

    def _d_steps_left(self) -> int:
        """The extra private D steps this batch may take: the budget's remaining steps, at most."""
        limit = self.accountant.max_steps
        return self.config.max_rebalance_steps if limit is None else max(0, limit - self.accountant.steps)

    def _end_epoch(self, metrics_file) -> str:
        self.epoch += 1
        self.batch_in_epoch = 0
        steps = self.batches_per_epoch
        d_sum, g_sum, extra_d, extra_g, seconds = self._epoch_sums
        summary = {
            "type": "epoch",
            "epoch": self.epoch,
            "step": self.step,
            "d_loss": d_sum / steps,
            "g_loss": g_sum / steps,
            "rebalance_d": int(extra_d),
            "rebalance_g": int(extra_g),
            "seconds": round(float(seconds), 6),
            "images_per_second": steps * self.batch_size / seconds if seconds > 0 else None,
        }
        if self.accountant is not None:
            summary.update(epsilon=self.accountant.epsilon(), delta=self.accountant.delta, privacy_steps=self.accountant.steps)
        if self.sample_grid:
            summary["samples"] = str(self._write_sample_grid())
        self.save()
        summary["checkpoint"] = str(self.last_checkpoint)
        if self.validate is not None:
            summary.update(self.validate(self.epoch, self.backend, self.run_dir) or {})
        metrics_file.write(json.dumps(summary) + "\n")
        metrics_file.flush()
        if self.on_epoch_end is not None and self.on_epoch_end(self.epoch, self.backend, self.run_dir, summary) is True:
            self.request_stop("callback")
        if self.stop_reason is not None:
            return f"stopped:{self.stop_reason}"
        return "completed"

    # ----------------------------------------------------------------- diversity

    def _diversity_check(self, every: int):
        """The run's service.diversity.DiversityCheck, or None when off (every 0, a private
        run, or too few images for its k-NN balls)."""
        every = int(every or 0)
        if every < 0:
            raise UserError(f"--diversity-every must be >= 0 steps (0 turns the check off), got {every}")
        self.diversity_every = every
        if every == 0 or self.accountant is not None:
            return None
        from service.diversity import COVERAGE_K, DiversityCheck

        if len(self.images) <= COVERAGE_K:
            return None
        return DiversityCheck(self.images, self.labels, self.config)

    def _check_diversity(self, metrics_file) -> None:
        """Measure G's diversity now (it changes no weight and no random stream), log it, and
        warn once each time it falls below the threshold."""
        started = time.perf_counter()
        record = self.diversity.measure(self.backend, self.step * self.batch_size)
        record = {"type": "diversity", "step": self.step, **record, "seconds": round(time.perf_counter() - started, 6)}
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()
        self._diversity_step = self.step
        if record["collapsed"] and not self._diversity_low:
            from tqdm import tqdm

            tqdm.write(self.diversity.warning(self.step, record), file=sys.stderr)
        self._diversity_low = record["collapsed"]

    def _write_sample_grid(self) -> Path:
        from service.imageio import save_grid

        z = fixed_sample_noise(self.config)
        labels = grid_labels(self.config.num_classes, len(z))
        images = self.backend.generate(z, labels)
        path = self.run_dir / SAMPLES_DIR / f"epoch_{self.epoch:04d}.png"
        save_grid(path, images, columns=8)
        return path

    def _diverged(self, step: int, result: RebalanceResult, metrics_file) -> None:
        metrics_file.write(
            json.dumps({"type": "diverged", "step": step, "d_loss": repr(result.d_loss), "g_loss": repr(result.g_loss)})
            + "\n"
        )
        metrics_file.flush()
        kept = (
            f"the last good checkpoint is {self.last_checkpoint}"
            if self.last_checkpoint is not None
            else "no checkpoint was written in this session"
        )
        raise TrainingDiverged(
            f"training diverged at step {step} (d_loss={result.d_loss}, g_loss={result.g_loss}); "
            f"{kept}; try a lower learning rate"
        )

    # ----------------------------------------------------------------- reporting

    def _progress_bar(self):
        from tqdm import tqdm

        total = None if self.epochs is None else self.epochs * self.batches_per_epoch
        return tqdm(
            total=total,
            initial=self.step,
            disable=not self.show_progress,
            unit="step",
            desc="train",
            dynamic_ncols=True,
            mininterval=0.5,
        )

    def _update_bar(self, bar, result: RebalanceResult) -> None:
        if bar.disable:
            return
        rate = self.step and self.batch_size * self.step / max(self.train_seconds, 1e-9)
        epochs = "?" if self.epochs is None else str(self.epochs)
        bar.set_postfix_str(
            f"epoch {self.epoch + 1}/{epochs} step {self.step} d {result.d_loss:.3f} "
            f"g {result.g_loss:.3f} {rate:.0f} img/s",
            refresh=False,
        )
        bar.update(1)

    def _plot_losses(self) -> None:
        from service.plots import plot_loss_curve

        metrics = self.run_dir / METRICS_FILE
        if metrics.exists():
            try:
                plot_loss_curve(metrics, self.run_dir / LOSS_CURVE_FILE)
            except (OSError, UserError) as e:  # a plot is not worth the run: say so and go on
                print(f"warning: no loss curve: {e}", file=sys.stderr)

    def _result(self, status: str, started: float, start_step: int) -> TrainResult:
        seconds = time.perf_counter() - started
        images = (self.step - start_step) * self.batch_size
        return TrainResult(
            status=status,
            step=self.step,
            epoch=self.epoch,
            checkpoint=self.last_checkpoint,
            seconds=seconds,
            images_per_second=images / seconds if seconds > 0 else 0.0,
            rebalance_d=self.rebalance_d,
            rebalance_g=self.rebalance_g,
        )
