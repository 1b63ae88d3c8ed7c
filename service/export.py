"""A run's generator as a standard Keras 3 model, for use in one's own Keras code.

The model holds only Keras's own layers (Dense, BatchNormalization, ReLU, Reshape,
UpSampling2D, Conv2D, tanh; the training backends' fused upsample-convolution is written out
as its two layers; with noise inputs also Cropping1D, Concatenate and Add, each noise layer's
strength as a bias-free Dense on its map), so `keras.saving.load_model(path)` needs nothing
of this project. Its weights are the run's latest checkpoint's averaged generator where the
run has one, else G's, from a run trained on either backend (the checkpoint names are the same).

    unconditional:  model(z) -> images          z: (N, z_size) float32
    conditional:    model([z, label]) -> images label: (N,) int class index
images: (N, size, size, 3) float32 in [-1, 1], as `generate` makes them before PNG encoding
(the same noise and label give the same image, to float tolerance). z_size is latent_dim, or
with the run's `noise_inputs` latent_dim + noise_map_size: the latent, then G's per-pixel noise
maps (standard normal; side 2*base, 4*base, ... up to half the image side, each row-major),
as `backends.noise.sample_noise` draws them.
"""

from __future__ import annotations

from pathlib import Path

from service.errors import UserError

FORMATS = ("keras", "savedmodel")


def build_generator_model(run_dir):
    """(keras model, config, checkpoint path) of `run_dir`'s latest checkpoint."""
    from backends import spec
    from backends.tf.networks import build_network, weight_variables
    from service.checkpoint import latest_checkpoint, load_checkpoint, weights_only
    from service.rundir import load_config

    import keras
    import numpy as np

    config, _ = load_config(run_dir)
    checkpoint = latest_checkpoint(run_dir)
    weights = weights_only(load_checkpoint(checkpoint))
    plain = config.replace(dtype="float32", mixed_precision=False)
    generator = build_network(plain, "generator", portable=True)
    averaged = config.ema_kimg > 0
    for name, variable in weight_variables(plain, "generator", generator).items():
        # reshaped: the portable form holds a noise strength (channels,) as a (1, channels) kernel
        variable.assign(np.reshape(weights[spec.ema_name(name) if averaged else name], variable.shape))
    if config.num_classes == 0:
        return generator, config, checkpoint
    z = keras.Input(shape=(config.z_size,), name="z")
    label = keras.Input(shape=(), dtype="int32", name="label")
    one_hot = keras.layers.CategoryEncoding(num_tokens=config.num_classes, output_mode="one_hot", name="label_one_hot")(label)
    images = generator(keras.layers.Concatenate(name="z_and_label")([z, one_hot]))
    return keras.Model([z, label], images, name="conditional_generator"), config, checkpoint


def export_generator(run_dir, out, fmt: str = "keras") -> dict:
    """Write the model to `out` (a .keras file, or a SavedModel folder); returns what was written.

    `out` must be a new path (never a link): the model is written into a temp path beside it
    and moved into place whole, so a full disk or a kill leaves no torn model and a rerun works.
    """
    from service.files import refuse_link, temp_path_beside

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    if fmt == "keras" and out.suffix != ".keras":
        raise UserError(f"--out {out}: a Keras model file must end in .keras")
    refuse_link(out, f"--out {out}")
    if out.exists():
        raise UserError(f"--out {out} already exists; choose a new path")
    _check_latest_checkpoint(run_dir)
    model, config, checkpoint = build_generator_model(run_dir)
    privacy = _checkpoint_privacy(config, checkpoint)
    try:
        with temp_path_beside(out, durable=True, folder=fmt == "savedmodel") as temp:
            if fmt == "keras":
                model.save(temp)
            else:
                model.export(temp, format="tf_saved_model", verbose=False)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    return {
        "path": str(out), "format": fmt, "checkpoint": str(checkpoint),
        "weights": "averaged generator" if config.ema_kimg > 0 else "generator",
        "inputs": "[z, label]" if config.num_classes else "z", "latent_dim": config.latent_dim,
        "noise": config.noise, "image_size": config.image_size,
        **({} if privacy is None else {"privacy": privacy}),
    }


def _checkpoint_privacy(config, checkpoint) -> dict | None:
    """Epsilon and delta the exported checkpoint has spent (service.privacy); None if not private."""
    from service.checkpoint import load_checkpoint
    from service.privacy import checkpoint_privacy

    return checkpoint_privacy(config, load_checkpoint(checkpoint)) if config.private else None


def _check_latest_checkpoint(run_dir) -> None:
    """The checkpoint export would read, whole, of this run's model and finite (one line if not)."""
    from service.checkpoint import latest_checkpoint, load_verified
    from service.rundir import load_config

    config, _ = load_config(run_dir)
    load_verified(latest_checkpoint(run_dir), config)
