"""Turn a `backends.spec` layer list into a `core.Sequential` with the spec's weight names."""

from __future__ import annotations

import numpy as np

import core
from backends import spec
from backends.config import GANConfig


def fused_element_wise(layers_spec: list, index: int, dtype, dropout_rng: np.random.Generator):
    """The core's fused layer for spec layers `index` and `index + 1` when they are a pair it
    fuses (batch norm then ReLU or LeakyReLU; LeakyReLU then dropout), else None. The fused layer
    carries the first layer's name (and the batch norm's weights under it)."""
    if index + 1 >= len(layers_spec):
        return None
    first, second = layers_spec[index], layers_spec[index + 1]
    a = first.args
    if first.kind == "bn" and second.kind in ("relu", "leaky_relu"):
        slope = second.args["slope"] if second.kind == "leaky_relu" else 0.0
        return core.BatchNormActivation(first.name, a["channels"], a["momentum"], a["epsilon"], slope, dtype)
    if first.kind == "leaky_relu" and second.kind == "dropout" and second.args["rate"] > 0:
        return core.LeakyReLUDropout(first.name, a["slope"], second.args["rate"], dropout_rng)
    return None


def build_network(
    config: GANConfig, net: str, init_rng: np.random.Generator, dropout_rng: np.random.Generator,
    prefix: str | None = None,
) -> core.Sequential:
    """The network `net` of the spec, its weights named "<prefix><layer>/<param>" (prefix
    "<net>/" unless given: the averaged generator is G's layers under spec.EMA_NET). With noise
    inputs, G's NoiseInputs layer and its NoiseInjection layers share one core.NoiseMaps."""
    dtype = np.dtype(config.dtype)
    layers_spec = spec.net_spec(config, net)
    noise_maps = core.NoiseMaps(len(config.noise_map_sides)) if net == "generator" else None
    built = []
    index = 0
    while index < len(layers_spec):
        layer = layers_spec[index]
        a = layer.args
        if spec.fuses_with_next(layers_spec, index):
            conv = layers_spec[index + 1]
            c = conv.args
            built.append(
                core.UpSampleConv2D(conv.name, c["in"], c["filters"], c["kernel"], a["factor"], init_rng, dtype)
            )
            index += 2
            continue
        fused = fused_element_wise(layers_spec, index, dtype, dropout_rng)
        if fused is not None:
            built.append(fused)
            index += 2
            continue
        if layer.kind == "dense":
            built.append(core.Dense(layer.name, a["in"], a["units"], init_rng, dtype, a.get("spectral_norm", False)))
        elif layer.kind == "conv":
            built.append(
                core.Conv2D(
                    layer.name, a["in"], a["filters"], a["kernel"], a["stride"], a["padding"], init_rng, dtype,
                    a.get("spectral_norm", False),
                )
            )
        elif layer.kind == "upsample":
            built.append(core.UpSampling2D(layer.name, a["factor"]))
        elif layer.kind == "bn":
            built.append(core.BatchNormalization(layer.name, a["channels"], a["momentum"], a["epsilon"], dtype))
        elif layer.kind == "relu":
            built.append(core.ReLU(layer.name))
        elif layer.kind == "leaky_relu":
            built.append(core.LeakyReLU(layer.name, a["slope"]))
        elif layer.kind == "tanh":
            built.append(core.Tanh(layer.name))
        elif layer.kind == "dropout":
            built.append(core.Dropout(layer.name, a["rate"], dropout_rng))
        elif layer.kind == "reshape":
            built.append(core.Reshape(layer.name, a["shape"]))
        elif layer.kind == "minibatch_std":
            built.append(core.MinibatchStd(layer.name, a["group"]))
        elif layer.kind == "flatten":
            built.append(core.Flatten(layer.name))
        elif layer.kind == "noise_inputs":
            built.append(core.NoiseInputs(layer.name, a["latent"], a["sides"], noise_maps))
        elif layer.kind == "noise":
            built.append(core.NoiseInjection(layer.name, a["channels"], a["map"], noise_maps, dtype))
        else:
            raise ValueError(f"{net}: layer kind {layer.kind!r} is not supported by the numpy backend")
        index += 1
    return core.Sequential(built, prefix=f"{net}/" if prefix is None else prefix)
