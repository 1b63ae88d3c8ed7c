"""Conditioning mechanisms (backends.spec): the NumPy core's class layers checked by central
differences and against their definitions; what each mechanism changes in the spec; the
conditioning ramp as a scale of the class code; older (concat) configs unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import core
from backends import spec
from backends.config import ConfigError, GANConfig
from test_core_layers import check_layer

CLASSES = 3


def code_of(labels, strength=1.0):
    return np.eye(CLASSES)[labels] * strength


@pytest.mark.parametrize("shape", [(4, 6), (3, 2, 5, 4)], ids=["after-dense", "after-conv"])
def test_class_affine_gradients_and_definition(shape):
    rng = np.random.default_rng(len(shape))
    context = core.ClassCode()
    layer = core.ClassAffine("class_affine", shape[-1], CLASSES, context, np.float64)
    layer.parameters["gain"][:] = rng.standard_normal(layer.parameters["gain"].shape)
    layer.parameters["bias"][:] = rng.standard_normal(layer.parameters["bias"].shape)
    labels = rng.integers(0, CLASSES, shape[0])
    context.code = code_of(labels, 0.6)
    x = rng.standard_normal(shape)
    check_layer(layer, x, rng)
    out = layer.forward(x)
    for b, label in enumerate(labels):  # each example scaled and shifted by its own class's rows
        gain, bias = 0.6 * layer.parameters["gain"][label], 0.6 * layer.parameters["bias"][label]
        np.testing.assert_allclose(out[b], x[b] * (1 + gain) + bias, atol=1e-12)


def test_class_affine_starts_as_the_identity():
    context = core.ClassCode()
    layer = core.ClassAffine("class_affine", 5, CLASSES, context, np.float64)
    context.code = code_of(np.array([0, 2]))
    x = np.random.default_rng(0).standard_normal((2, 3, 3, 5))
    np.testing.assert_array_equal(layer.forward(x), x)


@pytest.mark.parametrize("spectral_norm", [False, True], ids=["plain", "spectral-norm"])
def test_projection_gradients_and_definition(spectral_norm):
    rng = np.random.default_rng(7 + spectral_norm)
    context = core.ClassCode()
    layer = core.Projection("dense_out", 6, CLASSES, context, rng, np.float64, spectral_norm)
    layer.parameters["bias"][:] = rng.standard_normal(1)
    layer.parameters["embedding"][:] = rng.standard_normal((CLASSES, 6))
    if spectral_norm:
        layer.power_iteration()
    labels = np.array([0, 1, 2, 1])
    context.code = code_of(labels)
    h = rng.standard_normal((4, 6))
    check_layer(layer, h, rng)
    plain = core.Dense("dense_out", 6, 1, rng, np.float64, spectral_norm)
    plain.parameters.update({k: layer.parameters[k].copy() for k in ("kernel", "bias")})
    plain.buffers.update({k: v.copy() for k, v in layer.buffers.items()})
    # Miyato & Koyama: the plain logit plus the inner product of the class's embedding with h
    expected = plain.forward(h)[:, 0] + np.einsum("bf,bf->b", h, layer.parameters["embedding"][labels])
    np.testing.assert_allclose(layer.forward(h)[:, 0], expected, atol=1e-12)


def test_class_input_and_class_split_take_the_code_and_pass_the_rest():
    rng = np.random.default_rng(3)
    context = core.ClassCode()
    labels = np.array([2, 0])
    vector = np.concatenate([rng.standard_normal((2, 5)), code_of(labels)], axis=1)
    split = core.ClassInput("class_input", CLASSES, context)
    np.testing.assert_array_equal(split.forward(vector), vector[:, :5])
    np.testing.assert_array_equal(context.code, code_of(labels))
    check_layer(split, vector, rng)
    images = rng.standard_normal((2, 4, 4, 3))
    planes = np.broadcast_to(code_of(labels)[:, None, None, :], (2, 4, 4, CLASSES))
    planar = core.ClassSplit("class_split", 3, CLASSES, context)
    np.testing.assert_array_equal(planar.forward(np.concatenate([images, planes], axis=-1)), images)
    np.testing.assert_array_equal(context.code, code_of(labels))


def kinds(config: GANConfig, net: str) -> list[str]:
    return [layer.kind for layer in spec.net_spec(config, net)]


def test_each_mechanism_changes_only_its_own_part_of_the_spec():
    base = dict(image_size=32, width=4, max_width=16, latent_dim=8, num_classes=CLASSES)
    concat = GANConfig(**base)
    cbn = GANConfig(**base, g_conditioning="cbn")
    projection = GANConfig(**base, d_conditioning="projection")
    assert "class_affine" not in kinds(concat, "generator") and "projection" not in kinds(concat, "discriminator")
    # cbn: the code leaves G's input vector first, and a class affine follows every batch norm
    g = spec.net_spec(cbn, "generator")
    assert g[0].kind == "class_input" and g[1].args["in"] == 8
    assert [a.kind for a, b in zip(g, g[1:]) if b.kind == "class_affine"] == ["bn"] * kinds(cbn, "generator").count("bn")
    assert kinds(cbn, "discriminator") == kinds(concat, "discriminator")
    # projection: D's convolutions see the image alone, and its output projects the class
    d = spec.net_spec(projection, "discriminator")
    assert d[0].kind == "class_split" and d[1].args["in"] == 3 and d[-1].kind == "projection"
    assert kinds(projection, "generator") == kinds(concat, "generator")
    shapes = spec.weight_shapes(projection)
    assert shapes["discriminator/dense_out/embedding"] == (CLASSES, d[-1].args["in"])
    # an unconditional model ignores the mechanisms; an older config (no such fields) is concat
    plain = dict(base, num_classes=0)
    assert spec.weight_shapes(GANConfig(**plain, d_conditioning="projection", g_conditioning="cbn")) == \
        spec.weight_shapes(GANConfig(**plain))
    old = GANConfig(**base).to_dict()
    for field in ("d_conditioning", "g_conditioning", "condition_ramp_kimg", "class_balanced"):
        old.pop(field)
    assert GANConfig.from_dict(old) == concat


@pytest.mark.parametrize("bad,message", [
    (dict(d_conditioning="hinge"), "d_conditioning"),
    (dict(g_conditioning="embed"), "g_conditioning"),
    (dict(d_conditioning="projection", pack=2, batch_size=4), "pack"),
    (dict(condition_ramp_kimg=-1.0), "condition_ramp_kimg"),
    (dict(class_balanced="yes"), "class_balanced"),
])
def test_bad_conditioning_settings_are_refused(bad, message):
    with pytest.raises(ConfigError, match=message):
        GANConfig(image_size=32, num_classes=CLASSES, **bad)


# --------------------------------------------------------------------------- the trainer's side


def test_class_balanced_epochs_draw_each_class_equally_and_a_plain_epoch_is_a_permutation():
    from service.trainer import epoch_order

    labels = np.array([0] * 90 + [1] * 7 + [2] * 3)
    rng = np.random.default_rng(0)
    draws = np.concatenate([epoch_order(rng, 100, labels) for _ in range(60)])
    shares = np.bincount(labels[draws], minlength=3) / len(draws)
    np.testing.assert_allclose(shares, [1 / 3] * 3, atol=0.03)  # 6,000 draws: sd of a share ~0.006
    assert len(np.unique(draws[labels[draws] == 2])) == 3  # within a class, every image drawn
    plain = epoch_order(np.random.default_rng(0), 100)
    assert sorted(plain) == list(range(100))


def test_the_conditioning_ramp_grows_with_the_images_seen():
    from service.trainer import condition_strength

    ramped = GANConfig(image_size=32, num_classes=2, condition_ramp_kimg=2.0)
    assert [condition_strength(ramped, n) for n in (0, 500, 1000, 2000, 5000)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert condition_strength(ramped.replace(condition_ramp_kimg=0.0), 0) is None
    assert condition_strength(ramped.replace(num_classes=0), 0) is None


@pytest.fixture
def conditional_run_parts():
    from test_trainer import tiny_config, tiny_images

    config = tiny_config(num_classes=3, dropout=0.2, max_rebalance_steps=2, d_conditioning="projection",
                         g_conditioning="cbn", condition_ramp_kimg=0.02, class_balanced=True)
    labels = np.array([0] * 8 + [1] * 3 + [2] * 1)
    return config, tiny_images(12), labels


@pytest.mark.slow
def test_a_ramped_class_balanced_conditional_run_resumes_exactly(tmp_path, backend_name, conditional_run_parts):
    """Stopped mid-epoch and resumed in a new backend: the same weights, optimizer state and
    logged strengths as a straight run (bit for bit: conftest runs TensorFlow on one thread)."""
    import backends
    from service import checkpoint as ckpt
    from service.trainer import Trainer
    from test_trainer import read_metrics, weights_equal

    config, images, labels = conditional_run_parts
    quiet = dict(epochs=3, progress=False, sample_grid=False, loss_curve=False)
    straight = backends.get(backend_name, config)
    Trainer(straight, images, labels, run_dir=tmp_path / "a", **quiet).run()

    first = backends.get(backend_name, config)
    trainer = Trainer(first, images, labels, run_dir=tmp_path / "b", **quiet)
    original_step = first.train_step

    def stop_after_step_5(real, z, labels=None):
        losses = original_step(real, z, labels)
        if trainer.step == 4:
            trainer.request_stop("test")
        return losses

    first.train_step = stop_after_step_5
    assert trainer.run().status == "stopped:test"
    resumed = backends.get(backend_name, config)
    second = Trainer(resumed, images, labels, run_dir=tmp_path / "b", **quiet)
    second.restore(ckpt.load_latest_valid(tmp_path / "b")[1])
    assert second.run().step == 9
    assert weights_equal(straight.get_weights(), resumed.get_weights())
    assert weights_equal(straight.get_optimizer_state(), resumed.get_optimizer_state())
    strengths = [m["condition_strength"] for m in read_metrics(tmp_path / "b") if m["type"] == "step"]
    assert strengths == [min(1.0, 4 * step / 20) for step in range(9)]  # 4 images a batch, 20 to full strength
    assert strengths == [m["condition_strength"] for m in read_metrics(tmp_path / "a") if m["type"] == "step"]


def test_a_class_balanced_run_feeds_the_minority_class_about_as_often_as_the_majority(tmp_path, conditional_run_parts):
    import backends
    from service.trainer import Trainer

    config, images, labels = conditional_run_parts
    backend = backends.get("numpy", config)
    seen = []
    original = backend.train_step

    def recording(real, z, batch_labels=None):
        seen.append(batch_labels)
        return original(real, z, batch_labels)

    backend.train_step = recording
    Trainer(backend, images, labels, run_dir=tmp_path, epochs=20, progress=False, sample_grid=False,
            loss_curve=False).run()
    counts = np.bincount(np.concatenate(seen), minlength=3)
    assert counts.sum() == 20 * 12 and counts.min() > 0.2 * counts.sum()  # plain shuffles give class 2 1/12


# --------------------------------------------------------------------------- many classes, end to end

SEVEN = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")  # DermaMNIST's seven, as HAM10000 names them


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["numpy", "tf"])
def test_a_seven_class_run_trains_and_generates_each_class(tmp_path, backend_name):
    import json

    from service.generation import read_manifest
    from service.run import main

    rng = np.random.default_rng(0)
    labels = np.arange(28) % 7
    np.savez(tmp_path / "seven.npz", train_images=rng.integers(0, 256, (28, 32, 32, 3), dtype=np.uint8),
             train_labels=labels, class_names=np.array(SEVEN))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"width": 4, "max_width": 16, "latent_dim": 8, "batch_size": 4,
                                  "max_rebalance_steps": 1, "d_conditioning": "projection", "g_conditioning": "cbn",
                                  "condition_ramp_kimg": 0.01, "class_balanced": True}))
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "seven.npz"), "--out", str(run), "--backend", backend_name,
                 "--config", str(config), "--image-size", "32", "--epochs", "1", "--conditional", "--no-progress"]) == 0
    model = json.loads((run / "config.json").read_text())["model"]
    assert model["num_classes"] == 7 and model["d_conditioning"] == "projection" and model["g_conditioning"] == "cbn"
    images = {}
    for name in SEVEN:
        out = tmp_path / f"gen-{name}"
        assert main(["generate", "--run", str(run), "--count", "2", "--out", str(out), "--class", name,
                     "--backend", backend_name, "--workers", "0", "--no-progress"]) == 0
        assert [row["class"] for row in read_manifest(out)] == [name, name]
        images[name] = (out / "img_000000000.png").read_bytes()
    assert len(set(images.values())) == 7  # the same noise, seven classes: seven different images


# --------------------------------------------------------------------------- the auxiliary class loss


def test_softmax_cross_entropy_against_its_definition_and_central_differences():
    from core import functional as F
    from core.gradcheck import numerical_gradient, relative_error

    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((5, 4)) * 3, np.array([0, 3, 1, 1, 2])
    loss, dlogits = F.softmax_cross_entropy(logits, labels)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.log(probabilities[np.arange(5), labels]).mean(), rel=1e-12)
    numeric = numerical_gradient(lambda: F.softmax_cross_entropy(logits, labels)[0], logits, np.arange(20))
    assert relative_error(dlogits.reshape(-1), numeric) < 1e-7
    assert np.isfinite(F.softmax_cross_entropy(np.array([[1e4, -1e4]]), np.array([1]))[0])


def test_the_class_loss_adds_class_logits_to_d_and_its_cross_entropy_to_both_losses():
    import backends

    base = dict(image_size=32, width=4, max_width=16, latent_dim=8, base_side=4, num_classes=3, batch_size=4,
                dropout=0.0, dtype="float64", d_conditioning="projection")
    plain, classed = GANConfig(**base), GANConfig(**base, class_loss=0.5)
    assert spec.weight_shapes(classed)["discriminator/dense_out/kernel"][1] == 1 + CLASSES
    assert spec.weight_shapes(GANConfig(**base, class_loss=0.0)) == spec.weight_shapes(plain)
    rng = np.random.default_rng(1)
    real, z, labels = rng.uniform(-1, 1, (4, 32, 32, 3)), rng.uniform(-1, 1, (4, 8)), np.array([0, 2, 1, 2])
    with_classes, without = backends.get("numpy", classed), backends.get("numpy", plain)
    weights = with_classes.get_weights()
    shared = {name: (value[:, :1] if name.endswith("dense_out/kernel") else value[:1] if name.endswith("dense_out/bias")
                     else value) for name, value in weights.items()}
    without.set_weights(shared)
    # the real/fake logit is the plain D's; the class logits add w * cross-entropy to each loss
    np.testing.assert_allclose(with_classes.discriminate(real, labels), without.discriminate(real, labels), atol=1e-12)
    outputs = with_classes.discriminator.forward(with_classes._discriminator_input(real, labels, training=False),
                                                 training=False)
    from core import functional as F

    real_ce = F.softmax_cross_entropy(outputs[:, 1:], labels)[0]
    got, reference = with_classes.compute_gradients(real, z, labels), without.compute_gradients(real, z, labels)
    assert got["d_loss"] == pytest.approx(reference["d_loss"] + 0.5 * real_ce, rel=1e-9)
    assert got["g_loss"] > reference["g_loss"]


def test_the_class_loss_is_refused_where_it_cannot_work():
    with pytest.raises(ConfigError, match="class_loss"):
        GANConfig(image_size=32, num_classes=2, class_loss=-1.0)
    with pytest.raises(ConfigError, match="pack"):
        GANConfig(image_size=32, num_classes=2, class_loss=1.0, pack=2, batch_size=4)
