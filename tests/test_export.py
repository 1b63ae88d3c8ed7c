"""`export`: a run's generator as a plain Keras 3 model that gives `generate`'s images."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from run_fixtures import init_random_run
from backends.config import GANConfig
from service.generation import load_generator, noise_for_indices
from service.run import main

TINY = dict(image_size=32, width=4, max_width=16, latent_dim=8, base_side=4)

# Loads the model with Keras and NumPy alone, as a researcher's own script would.
LOADER = r"""
import json, sys
import numpy as np
import keras
path, inputs_path, out_path = sys.argv[1:4]
inputs = np.load(inputs_path)
if path.endswith(".keras"):
    model = keras.saving.load_model(path)
    args = [inputs["z"], inputs["label"]] if "label" in inputs else inputs["z"]
    images = np.asarray(model(args, training=False))
else:
    layer = keras.layers.TFSMLayer(path, call_endpoint="serve")
    args = [inputs["z"], inputs["label"]] if "label" in inputs else inputs["z"]
    images = np.asarray(layer(args))
layer_kinds = sorted({type(l).__module__.split(".")[0] for l in getattr(model, "layers", [])}) if path.endswith(".keras") else []
np.save(out_path, images)
print(json.dumps(layer_kinds))
"""


def exported_images(model_path, tmp_path, z, labels=None):
    inputs = tmp_path / "inputs.npz"
    arrays = {"z": z} if labels is None else {"z": z, "label": labels.astype(np.int32)}
    np.savez(inputs, **arrays)
    out = tmp_path / "images.npy"
    done = subprocess.run([sys.executable, "-c", LOADER, str(model_path), str(inputs), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]
    return np.load(out), json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("case", ["unconditional-numpy", "conditional-averaged-tf", "conditional-cbn-noise-numpy",
                                  "unconditional-bilinear-tf"])
def test_exported_generator_gives_generate_s_images(tmp_path, case):
    conditional = case.startswith("conditional")
    config = GANConfig(**TINY, num_classes=3 if conditional else 0, ema_kimg=1.0 if "averaged" in case else 0.0,
                       g_conditioning="cbn" if "cbn" in case else "concat", noise_inputs="noise" in case,
                       upsample="bilinear" if "bilinear" in case else "nearest")
    backend = case.rsplit("-", 1)[1]
    run = init_random_run(tmp_path / "run", config, backend=backend, seed=4)
    if "averaged" in case or "cbn" in case:
        from service import checkpoint as ckpt

        rng = np.random.default_rng(0)
        arrays = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
        for name, value in arrays.items():
            if name.startswith("generator_ema/") and name.endswith("kernel"):
                arrays[name] = value * 0.5  # the average differs from G: the test sees which one is exported
            elif "/class_affine_" in name:  # the class's gains and biases away from their zero start
                arrays[name] = (0.3 * rng.standard_normal(value.shape)).astype(value.dtype)
        ckpt.save_checkpoint(run, 1, arrays)
    model_path = tmp_path / "G.keras"
    assert main(["export", "--run", str(run), "--out", str(model_path)]) == 0

    z = noise_for_indices(0, range(6), config)
    labels = np.arange(6) % 3 if conditional else None
    expected = load_generator(run, ckpt_path(run), backend).generate(z, labels)
    images, modules = exported_images(model_path, tmp_path, z, labels)
    assert modules == ["keras"]  # Keras's own layers only
    np.testing.assert_allclose(images, expected, atol=2e-5)
    assert main(["export", "--run", str(run), "--out", str(model_path)]) == 2  # never overwrites


def ckpt_path(run):
    from service.checkpoint import latest_checkpoint

    return latest_checkpoint(run)


@pytest.mark.slow
def test_savedmodel_export_serves_the_same_images(tmp_path):
    config = GANConfig(**TINY)
    run = init_random_run(tmp_path / "run", config, seed=5)
    out = tmp_path / "G-savedmodel"
    assert main(["export", "--run", str(run), "--out", str(out), "--format", "savedmodel"]) == 0
    z = noise_for_indices(1, range(4), config)
    images, _ = exported_images(out, tmp_path, z)
    np.testing.assert_allclose(images, load_generator(run, ckpt_path(run), "numpy").generate(z), atol=2e-5)


@pytest.mark.parametrize("args, message", [
    (["--out", "{tmp}/G.h5"], "must end in .keras"),
    (["--run", "{tmp}"], "not a run directory"),
])
def test_export_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    run = init_random_run(tmp_path / "run", GANConfig(**TINY))
    argv = ["export", "--run", str(run), "--out", str(tmp_path / "G.keras")]
    for option, value in zip(args[::2], args[1::2]):
        argv[argv.index(option) + 1] = value.replace("{tmp}", str(tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
