"""Both backends build the spec's layer list from one table of layer kinds each
(backends.<name>.networks.CONSTRUCTORS): every kind the spec uses has a constructor in both,
and a kind a backend lacks is one error naming it."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from backends import spec
from backends.config import GANConfig

# between them, every kind of layer the spec makes
CONFIGS = [
    GANConfig(image_size=32, width=4, max_width=8, dropout=0.3, minibatch_std=2, spectral_norm=True),
    GANConfig(image_size=32, width=4, max_width=8, noise_inputs=True, num_classes=2),
    GANConfig(image_size=32, width=4, max_width=8, num_classes=2, d_conditioning="projection", g_conditioning="cbn"),
]


def networks_of(backend_name: str):
    return importlib.import_module(f"backends.{backend_name}.networks")


def build(backend_name: str, config: GANConfig, net: str):
    networks = networks_of(backend_name)
    if backend_name == "numpy":
        return networks.build_network(config, net, np.random.default_rng(0), np.random.default_rng(1))
    return networks.build_network(config, net)


def test_each_backend_has_a_constructor_for_every_kind_the_spec_uses_and_no_other(backend_name):
    used = {layer.kind for config in CONFIGS for net in spec.NETS for layer in spec.net_spec(config, net)}
    assert set(networks_of(backend_name).CONSTRUCTORS) == used


def test_an_unknown_layer_kind_is_one_error_naming_it(backend_name, monkeypatch):
    config = CONFIGS[0]
    layers = spec.net_spec(config, "discriminator")
    unknown = [*layers[:-1], spec.Layer("swish", "swish_0"), layers[-1]]
    monkeypatch.setattr(spec, "net_spec", lambda config, net: unknown)
    message = f"discriminator/swish_0: the {backend_name} backend has no layer kind 'swish'"
    with pytest.raises(ValueError, match=message):
        build(backend_name, config, "discriminator")
