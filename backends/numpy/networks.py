"""Turn a `backends.spec` layer list into a `core.Sequential` with the spec's weight names.

`CONSTRUCTORS` maps each spec layer kind to the function that makes its core layer (the TF
backend's `backends.tf.networks` has the same table for Keras); pairs the core fuses are
recognised before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import core
from backends import spec
from backends.config import GANConfig


@dataclass(frozen=True)
class _Context:
    """What the layer constructors share while one network is built."""

    dtype: np.dtype
    init_rng: np.random.Generator  # initial weights, drawn in spec order
    dropout_rng: np.random.Generator  # dropout masks
    noise_maps: core.NoiseMaps | None  # the generator's, shared by its noise layers
    class_code: core.ClassCode  # the network's, shared by its class layers


def _dense(layer: spec.Layer, c: _Context):
    a = layer.args
    return core.Dense(layer.name, a["in"], a["units"], c.init_rng, c.dtype, a.get("spectral_norm", False))


def _conv(layer: spec.Layer, c: _Context):
    a = layer.args
    return core.Conv2D(
        layer.name, a["in"], a["filters"], a["kernel"], a["stride"], a["padding"], c.init_rng, c.dtype,
        a.get("spectral_norm", False),
    )


def _batch_norm(layer: spec.Layer, c: _Context):
    a = layer.args
    return core.BatchNormalization(layer.name, a["channels"], a["momentum"], a["epsilon"], c.dtype)


def _noise_inputs(layer: spec.Layer, c: _Context):
    return core.NoiseInputs(layer.name, layer.args["latent"], layer.args["sides"], c.noise_maps)


def _noise(layer: spec.Layer, c: _Context):
    return core.NoiseInjection(layer.name, layer.args["channels"], layer.args["map"], c.noise_maps, c.dtype)


def _class_input(layer: spec.Layer, c: _Context):
    return core.ClassInput(layer.name, layer.args["classes"], c.class_code)


def _class_split(layer: spec.Layer, c: _Context):
    return core.ClassSplit(layer.name, layer.args["channels"], layer.args["classes"], c.class_code)


def _class_affine(layer: spec.Layer, c: _Context):
    return core.ClassAffine(layer.name, layer.args["channels"], layer.args["classes"], c.class_code, c.dtype)


def _projection(layer: spec.Layer, c: _Context):
    a = layer.args
    return core.Projection(layer.name, a["in"], a["classes"], c.class_code, c.init_rng, c.dtype,
                           a.get("spectral_norm", False), a["units"])


CONSTRUCTORS = {
    "dense": _dense,
    "conv": _conv,
    "upsample": lambda layer, c: core.UpSampling2D(layer.name, layer.args["factor"],
                                                   layer.args.get("interpolation", "nearest")),
    "bn": _batch_norm,
    "relu": lambda layer, c: core.ReLU(layer.name),
    "leaky_relu": lambda layer, c: core.LeakyReLU(layer.name, layer.args["slope"]),
    "tanh": lambda layer, c: core.Tanh(layer.name),
    "dropout": lambda layer, c: core.Dropout(layer.name, layer.args["rate"], c.dropout_rng),
    "reshape": lambda layer, c: core.Reshape(layer.name, layer.args["shape"]),
    "flatten": lambda layer, c: core.Flatten(layer.name),
    "minibatch_std": lambda layer, c: core.MinibatchStd(layer.name, layer.args["group"]),
    "noise_inputs": _noise_inputs,
    "noise": _noise,
    "class_input": _class_input,
    "class_split": _class_split,
    "class_affine": _class_affine,
    "projection": _projection,
}


def fused_upsample_conv(layers_spec: list, index: int, c: _Context):
    """core.UpSampleConv2D for spec layers `index` and `index + 1` when they are the upsampling
    and convolution pair spec.fuses_with_next names, else None. It carries the convolution's name
    and weights."""
    if not spec.fuses_with_next(layers_spec, index):
        return None
    factor, conv = layers_spec[index].args["factor"], layers_spec[index + 1]
    a = conv.args
    return core.UpSampleConv2D(conv.name, a["in"], a["filters"], a["kernel"], factor, c.init_rng, c.dtype)


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
    noise_maps = core.NoiseMaps(len(config.noise_map_sides)) if net == "generator" else None
    context = _Context(np.dtype(config.dtype), init_rng, dropout_rng, noise_maps, core.ClassCode())
    layers_spec = spec.net_spec(config, net)
    built = []
    index = 0
    while index < len(layers_spec):
        fused = fused_upsample_conv(layers_spec, index, context)
        if fused is None:
            fused = fused_element_wise(layers_spec, index, context.dtype, dropout_rng)
        if fused is not None:
            built.append(fused)
            index += 2
            continue
        layer = layers_spec[index]
        built.append(spec.constructor_for(CONSTRUCTORS, layer, net, "numpy")(layer, context))
        index += 1
    return core.Sequential(built, prefix=f"{net}/" if prefix is None else prefix)
