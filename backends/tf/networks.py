"""Keras models built from `backends.spec`, and the map from shared weight names to variables.

Each spec layer becomes one Keras layer with the spec's name, made by the function its kind
names in `CONSTRUCTORS` (the NumPy backend's backends.numpy.networks has the same table for
the core; the fused upsample-convolution is recognised before it); the shared name of a weight
("generator/conv_1/kernel") is mapped to the Keras variable explicitly, layer by layer, so
Keras's own variable paths never matter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import tensorflow as tf

from backends import spec
from backends.config import GANConfig

# Layers whose output leaves the network stay in full precision under mixed precision:
# G's images and D's logits feed the loss and the caller.
FULL_PRECISION_OUTPUTS = {("generator", "tanh"), ("discriminator", "dense"), ("discriminator", "projection")}


class ExactLeakyReLU(keras.layers.LeakyReLU):
    """LeakyReLU as max(x, slope * x) with the slope in the input's dtype.

    TensorFlow's LeakyRelu kernel holds its slope as a float32 attribute, which rounds 0.2 in
    float64 runs (a 1.5e-8 relative error, too coarse for float64 parity checks); and with
    oneDNN on, grappler's remapper fails on Conv2D+BiasAdd+LeakyRelu followed by its gradient
    ("remapper failed ... LeakyReluGrad") and drops all its fusions. The same step time was
    measured with this form.
    """

    def call(self, inputs):
        # convert_to_tensor, not cast: cast would go through a float32 constant first
        slope = keras.ops.convert_to_tensor(self.negative_slope, dtype=inputs.dtype)
        return keras.ops.maximum(inputs, slope * inputs)  # = leaky ReLU for a slope in [0, 1]


class MinibatchStd(keras.layers.Layer):
    """Appends the minibatch standard-deviation channel (backends.spec; the NumPy core's
    core.functional.minibatch_std_forward)."""

    def __init__(self, group: int, **kwargs):
        super().__init__(**kwargs)
        self.group = int(group)

    def call(self, inputs):
        shape = tf.shape(inputs)
        grouped = tf.reshape(inputs, [-1, self.group, shape[1], shape[2], shape[3]])
        centred = grouped - tf.reduce_mean(grouped, axis=1, keepdims=True)
        std = tf.sqrt(tf.reduce_mean(tf.square(centred), axis=1) + tf.constant(1e-8, inputs.dtype))
        stat = tf.repeat(tf.reduce_mean(std, axis=[1, 2, 3]), self.group)
        plane = tf.broadcast_to(stat[:, None, None, None], tf.concat([shape[:3], [1]], axis=0))
        return tf.concat([inputs, plane], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] + 1,)


class SpectralNorm:
    """Spectral normalisation of a layer's kernel (backends.spec): the layer computes with
    kernel / sigma, sigma = |M sn_u| for M = kernel.reshape(-1, units), sn_u held constant;
    `power_iteration()` refines sn_u (the backend runs it at the start of every D step). The
    NumPy core's core.functional.spectral_* functions are the same maths."""

    EPSILON = 1e-12

    def _add_sn_vector(self, units: int) -> None:
        self.sn_u = self.add_weight(
            name="sn_u",
            shape=(units,),
            initializer=keras.initializers.Constant(1.0 / units**0.5),
            trainable=False,
        )

    def _matrix(self):
        return tf.reshape(self.kernel, [-1, self.kernel.shape[-1]])

    def _unit(self, x):
        return x / (tf.norm(x) + tf.constant(self.EPSILON, x.dtype))

    def power_iteration(self) -> None:
        matrix = self._matrix()
        v = self._unit(tf.linalg.matvec(matrix, self.sn_u))
        self.sn_u.assign(self._unit(tf.linalg.matvec(matrix, v, transpose_a=True)))

    def normalised_kernel(self, dtype):
        sigma = tf.norm(tf.linalg.matvec(self._matrix(), tf.stop_gradient(self.sn_u)))
        return tf.cast(self.kernel / sigma, dtype)


class SNConv2D(SpectralNorm, keras.layers.Conv2D):
    """Keras's Conv2D (no activation), computing with its spectrally normalised kernel."""

    def build(self, input_shape):
        super().build(input_shape)
        self._add_sn_vector(self.filters)

    def call(self, inputs):
        out = self.convolution_op(inputs, self.normalised_kernel(inputs.dtype))
        return tf.nn.bias_add(out, tf.cast(self.bias, inputs.dtype))


class SNDense(SpectralNorm, keras.layers.Dense):
    """Keras's Dense (no activation), computing with its spectrally normalised kernel."""

    def build(self, input_shape):
        super().build(input_shape)
        self._add_sn_vector(self.units)

    def call(self, inputs, training=None):
        return tf.matmul(inputs, self.normalised_kernel(inputs.dtype)) + tf.cast(self.bias, inputs.dtype)


class ClassSplit(keras.layers.Layer):
    """D's label planes off its input (backends.spec "class_split"; core.ClassSplit): called on
    (B, H, W, C + K), returns [images (B, H, W, C), class code (B, K) from pixel 0, 0]."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)

    def call(self, inputs):
        return [inputs[..., : self.channels], inputs[:, 0, 0, self.channels :]]

    def compute_output_shape(self, input_shape):
        batch, height, width, depth = input_shape
        return [(batch, height, width, self.channels), (batch, depth - self.channels)]


class ClassAffine(keras.layers.Layer):
    """x * (1 + c @ gain) + c @ bias (backends.spec "class_affine"; core.ClassAffine): called on
    [features (B, ..., C), class code (B, K)]; gain and bias (K, C) start at zero."""

    def __init__(self, channels: int, classes: int, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.classes = int(channels), int(classes)

    def build(self, input_shape):
        shape = (self.classes, self.channels)
        self.gain = self.add_weight(name="gain", shape=shape, initializer="zeros")
        self.bias = self.add_weight(name="bias", shape=shape, initializer="zeros")

    def call(self, inputs):
        features, code = inputs
        code = tf.cast(code, features.dtype)
        broadcast = [-1] + [1] * (len(features.shape) - 2) + [self.channels]
        scale = tf.reshape(tf.matmul(code, tf.cast(self.gain, features.dtype)), broadcast)
        shift = tf.reshape(tf.matmul(code, tf.cast(self.bias, features.dtype)), broadcast)
        return features * (1 + scale) + shift

    def compute_output_shape(self, input_shape):
        return input_shape[0]


class Projection(SpectralNorm, keras.layers.Layer):
    """D's output with a projection of the class (backends.spec "projection"; core.Projection):
    called on [features h (B, F), class code (B, K)], returns h @ kernel + bias +
    sum(h * (c @ embedding)) (B, 1); the embedding starts at zero. With `spectral_norm`, the
    kernel is normalised as in SNDense."""

    def __init__(self, classes: int, kernel_initializer, spectral_norm: bool = False, units: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.classes, self.kernel_initializer, self.spectral_norm = int(classes), kernel_initializer, spectral_norm
        self.units = int(units)

    def build(self, input_shape):
        features = input_shape[0][-1]
        self.kernel = self.add_weight(name="kernel", shape=(features, self.units), initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        self.embedding = self.add_weight(name="embedding", shape=(self.classes, features), initializer="zeros")
        if self.spectral_norm:
            self._add_sn_vector(self.units)

    def power_iteration(self) -> None:
        if self.spectral_norm:
            super().power_iteration()

    def call(self, inputs):
        h, code = inputs
        code = tf.cast(code, h.dtype)
        kernel = self.normalised_kernel(h.dtype) if self.spectral_norm else tf.cast(self.kernel, h.dtype)
        projected = tf.matmul(code, tf.cast(self.embedding, h.dtype))
        out = tf.matmul(h, kernel) + tf.cast(self.bias, h.dtype)
        # the projection adds to the real/fake logit only (further outputs: the class logits)
        return tf.concat([out[:, :1] + tf.reduce_sum(h * projected, axis=1, keepdims=True), out[:, 1:]], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.units)


def _phase_taps(phase: int, kernel_size: int) -> list[tuple[int, list[int]]]:
    """For output rows 2i + phase of a 'same' conv on a 2x nearest-upsampled input: the source
    row offsets d (row i + d of the small input) and the kernel taps that all read that row."""
    before = (kernel_size - 1) // 2  # 'same', stride 1: total padding k - 1, the smaller half first
    groups: dict[int, list[int]] = {}
    for tap in range(kernel_size):
        groups.setdefault((phase + tap - before) // 2, []).append(tap)
    return sorted(groups.items())


def upsample_conv_taps_per_block(kernel_size: int) -> int:
    """Kernel taps per 2x2 output block of UpSampleConv2D's phase kernels (25 for k=4, against
    64 direct); the layer runs them as one convolution whose kernel pads each phase to the
    common window (combined_window_taps)."""
    per_phase = [len(_phase_taps(p, kernel_size)) for p in (0, 1)]
    return sum(per_phase) ** 2


def combined_window_taps(kernel_size: int) -> int:
    """Multiply-adds per 2x2 output block that UpSampleConv2D's one convolution executes: the
    four phases' kernels padded to their common window (36 for k=4), as the NumPy core does."""
    offsets = {offset for p in (0, 1) for offset, _ in _phase_taps(p, kernel_size)}
    return 4 * (max(offsets) - min(offsets) + 1) ** 2


def _tap_matrix(kernel_size: int):
    """(2 phases, window, kernel_size) 0/1 matrix: entry [p, d, t] is 1 when tap t reads source
    offset min_offset + d for output phase p; and min_offset."""
    phases = [_phase_taps(p, kernel_size) for p in (0, 1)]
    offsets = [offset for taps in phases for offset, _ in taps]
    low, window = min(offsets), max(offsets) - min(offsets) + 1
    matrix = [[[0.0] * kernel_size for _ in range(window)] for _ in range(2)]
    for p, taps in enumerate(phases):
        for offset, group in taps:
            for t in group:
                matrix[p][offset - low][t] = 1.0
    return matrix, low


# UpSampleConv2D runs as one convolution for very few filters (G's RGB output: 12 outputs run
# better than four convolutions of 3) or a small layer (input side^2 x in x filters up to
# COMBINED_MAX_WORK, where four convolutions cost more to dispatch than 1.44x the multiply-adds),
# else as four phase convolutions. Measured on a 2-core CPU (oneDNN): one convolution took
# 0.7-0.8x the time of four at 3 filters, 0.86x for the whole `default` 32x32 step, and
# 1.7-6.5x for the thesis model's 128-1024-wide layers (docs/benchmarks.md).
# extra["combined_upsample_conv"] forces either.
COMBINED_BELOW_FILTERS = 8
COMBINED_MAX_WORK = 1 << 16


class UpSampleConv2D(keras.layers.Layer):
    """UpSampling2D(2, nearest) then Conv2D(filters, k, 'same'), computed without the upsampled
    image: each of the four output phases (even/odd row x even/odd column) is a small conv on
    the input, with the taps that read the same source pixel summed (25 instead of 64
    multiply-adds per 2x2 output block for k=4); the four phase outputs, side by side along
    channels, become the image by depth_to_space. The phase kernels come from contractions of
    the kernel with constant 0/1 tap matrices (rows, then columns: a few ops per layer where
    slicing and summing taps one by one took a hundred): sums of at most two taps, exact, so
    forward outputs are bit for bit those of the tap-by-tap form. With `combined` the four
    kernels, padded to their common window, run as ONE convolution with 4 x filters outputs
    (the NumPy core's layout; 36 multiply-adds per block), which is faster for very few
    filters or small layers (COMBINED_BELOW_FILTERS, COMBINED_MAX_WORK). Exactly the same function either way (the parity tests
    check it against the NumPy core to 1e-9). Weights as Conv2D: kernel (k, k, cin, filters), bias.
    """

    def __init__(self, filters: int, kernel_size: int, kernel_initializer, combined: bool | None = None, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size = filters, kernel_size
        self.kernel_initializer = kernel_initializer
        self.combined = combined
        self.tap_matrix, low = _tap_matrix(kernel_size)
        window = len(self.tap_matrix[0])
        self.padding = [[0, 0], [-low, window - 1 + low], [-low, window - 1 + low], [0, 0]]

    def build(self, input_shape):
        if self.combined is None:  # by size (COMBINED_BELOW_FILTERS, COMBINED_MAX_WORK)
            work = input_shape[1] * input_shape[2] * input_shape[-1] * self.filters
            self.combined = self.filters < COMBINED_BELOW_FILTERS or work <= COMBINED_MAX_WORK
        shape = (self.kernel_size, self.kernel_size, input_shape[-1], self.filters)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def combined_kernel(self, dtype):
        """(window, window, cin, 4 filters), channels ordered (row phase, column phase, filter)."""
        kernel = tf.cast(self.kernel, dtype)
        taps = tf.constant(self.tap_matrix, dtype)  # (2, window, k)
        by_row = tf.einsum("pdt,tuio->pduio", taps, kernel)  # (2, window, k, cin, f): rows summed
        full = tf.einsum("qet,pdtio->deipqo", taps, by_row)  # then columns
        window, cin = len(self.tap_matrix[0]), kernel.shape[2]
        return tf.reshape(full, [window, window, cin, 4 * self.filters])

    def phase_kernels(self, dtype):
        """The four phase kernels [(0, 0), (0, 1), (1, 0), (1, 1)], each only as large as its
        taps, with the padding its 'VALID' convolution needs."""
        kernel = tf.cast(self.kernel, dtype)
        low = -self.padding[1][0]
        parts = []
        for p in (0, 1):
            rows = [d for d, taps in enumerate(self.tap_matrix[p]) if any(taps)]
            by_row = tf.einsum("dt,tuio->duio", tf.constant([self.tap_matrix[p][d] for d in rows], dtype), kernel)
            for q in (0, 1):
                cols = [d for d, taps in enumerate(self.tap_matrix[q]) if any(taps)]
                phase = tf.einsum("et,dtio->deio", tf.constant([self.tap_matrix[q][d] for d in cols], dtype), by_row)
                padding = [[0, 0], [-(rows[0] + low), rows[-1] + low], [-(cols[0] + low), cols[-1] + low], [0, 0]]
                parts.append((phase, padding))
        return parts

    def call(self, inputs):
        if self.combined:
            phases = tf.nn.conv2d(inputs, self.combined_kernel(inputs.dtype), 1, self.padding)
        else:
            phases = tf.concat([tf.nn.conv2d(tf.pad(inputs, padding), phase, 1, "VALID")
                                for phase, padding in self.phase_kernels(inputs.dtype)], axis=-1)
        return tf.nn.bias_add(tf.nn.depth_to_space(phases, 2), tf.cast(self.bias, inputs.dtype))

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        return (batch, None if height is None else 2 * height, None if width is None else 2 * width, self.filters)


class BilinearUpSampling2D(keras.layers.Layer):
    """UpSampling2D(2, interpolation="bilinear") in the input's own dtype (backends.spec,
    "upsample"; the NumPy core's core.functional.bilinear_upsample_forward): along rows then
    columns, output 2i = 3/4 x[i] + 1/4 x[i - 1] and 2i + 1 = 3/4 x[i] + 1/4 x[i + 1], edges
    clamped. Keras's own layer is the same function but resizes in float32 (1e-7 off in a
    float64 run, too coarse for the parity checks), so float64 networks use this one; float32
    and mixed-precision networks and exported models use Keras's, whose fused resize kernels
    made the 64x64 `default` step with bilinear upsampling 1.5x faster on one thread (a train
    step of 133-146 ms against 207-221 ms)."""

    def call(self, inputs):
        return self._double(self._double(inputs, 1), 2)

    @staticmethod
    def _double(x, axis):
        n = x.shape[axis]  # G's map sides are static

        def rows(begin, end):
            index = [slice(None)] * 4
            index[axis] = slice(begin, end)
            return x[tuple(index)]

        before = tf.concat([rows(0, 1), rows(0, n - 1)], axis=axis)  # x[i - 1], x[0] at the edge
        after = tf.concat([rows(1, n), rows(n - 1, n)], axis=axis)  # x[i + 1], x[n - 1] at the edge
        near, far = tf.constant(0.75, x.dtype), tf.constant(0.25, x.dtype)
        pair = tf.stack([near * x + far * before, near * x + far * after], axis=axis + 1)
        shape = [-1 if d is None else d for d in x.shape]
        shape[axis] = 2 * n
        return tf.reshape(pair, shape)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (batch, None if height is None else 2 * height, None if width is None else 2 * width, channels)


def dtype_policy(config: GANConfig) -> str:
    if config.dtype == "float64":
        return "float64"
    return "mixed_bfloat16" if config.mixed_precision else "float32"


def input_shape(config: GANConfig, net: str) -> tuple[int, ...]:
    if net == "generator":
        return (config.z_size + config.num_classes,)
    return (config.image_size, config.image_size, (config.channels + config.num_classes) * config.pack)


class NoiseInjection(keras.layers.Layer):
    """features + noise_map * strength (backends.spec's "noise" layer; the NumPy core's
    core.NoiseInjection): called on [features (B, H, W, C), noise_map (B, H, W, 1)], one
    learned strength per channel, zero at the start."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)

    def build(self, input_shape):
        self.strength = self.add_weight(name="strength", shape=(self.channels,), initializer="zeros")

    def call(self, inputs):
        features, noise_map = inputs
        # the outer product noise x strength as a matmul with one term per output (the same
        # products): a broadcast multiply of (B, H, W, 1) by (C,) runs on TensorFlow's slow
        # two-sided broadcast path on a CPU, and so does its gradient
        column = tf.reshape(tf.cast(noise_map, features.dtype), [-1, 1])
        scaled = tf.matmul(column, tf.cast(self.strength, features.dtype)[None, :])
        return features + tf.reshape(scaled, tf.shape(features))

    def compute_output_shape(self, input_shape):
        return input_shape[0]


def split_noise_inputs(z, layer: spec.Layer, policy: str):
    """The spec's "noise_inputs" layer on a symbolic input: [latent | maps | label] ->
    ([latent | label], [each map as a (side, side, 1) image]), made of Keras's own layers
    (Reshape, Cropping1D, Concatenate) so that an exported generator needs nothing else."""
    a = layer.args
    width = a["latent"] + sum(side * side for side in a["sides"]) + a["classes"]
    column = keras.layers.Reshape((width, 1), name=f"{layer.name}_column", dtype=policy)(z)

    def part(start, size, shape, label):
        cropping = (start, width - start - size)
        cropped = keras.layers.Cropping1D(cropping, name=f"{layer.name}_{label}_crop", dtype=policy)(column)
        return keras.layers.Reshape(shape, name=f"{layer.name}_{label}", dtype=policy)(cropped)

    rest, maps, start = part(0, a["latent"], (a["latent"],), "latent"), [], a["latent"]
    for index, side in enumerate(a["sides"]):
        maps.append(part(start, side * side, (side, side, 1), f"map_{index}"))
        start += side * side
    if a["classes"]:
        label = part(start, a["classes"], (a["classes"],), "label")
        rest = keras.layers.Concatenate(name=f"{layer.name}_latent_and_label", dtype=policy)([rest, label])
    return rest, maps


def add_noise(features, noise_map, layer: spec.Layer, policy: str, portable: bool):
    """The spec's "noise" layer on symbolic inputs: NoiseInjection, or with `portable` the same
    function in Keras's own layers: Dense(1 -> channels, no bias) on the map (its kernel, of
    shape (1, channels), is the strength) and Add."""
    if not portable:
        return NoiseInjection(layer.args["channels"], name=layer.name, dtype=policy)([features, noise_map])
    scaled = keras.layers.Dense(
        layer.args["channels"], use_bias=False, kernel_initializer="zeros", name=layer.name, dtype=policy
    )(noise_map)
    return keras.layers.Add(name=f"{layer.name}_add", dtype=policy)([features, scaled])


@dataclass
class _Context:
    """What the layer constructors share while one network is built."""

    net: str
    policy: str  # the network's dtype policy
    portable: bool  # Keras's own layers only (for export)
    fuse: bool  # upsampling + convolution as UpSampleConv2D (never when portable)
    seeds: dict[str, int]  # layer name -> seed of its initializer or dropout (layer_seeds)
    noise_maps: list = field(default_factory=list)  # the symbolic maps, once noise_inputs has split them
    class_code: object = None  # the symbolic class code, once class_input or class_split has taken it
    combined_upsample_conv: bool | None = None  # UpSampleConv2D as one convolution; None: by its width

    def common(self, layer: spec.Layer) -> dict:
        """The Keras layer's name and dtype policy: full precision for an output under mixed precision."""
        policy = self.policy
        if (self.net, layer.kind) in FULL_PRECISION_OUTPUTS and policy.startswith("mixed"):
            policy = "float32"
        return {"name": layer.name, "dtype": policy}

    def initializer(self, layer: spec.Layer):
        return keras.initializers.GlorotUniform(seed=self.seeds[layer.name])


UNSEEDED_CLASS_KINDS = ("class_input", "class_split", "class_affine")  # nothing random in them


def layer_seeds(config: GANConfig, net: str, layers: list[spec.Layer]) -> dict[str, int]:
    """Each layer's seed, from config.seed, distinct per layer and per network. The noise layers
    take none, so the other layers' seeds (and initial weights) are the same with or without them."""
    first = config.seed * 10007 + spec.NETS.index(net) * 1000
    seeded = [layer for layer in layers if layer.kind not in spec.NOISE_KINDS + UNSEEDED_CLASS_KINDS]
    return {layer.name: first + position for position, layer in enumerate(seeded)}


def _dense(layer: spec.Layer, c: _Context):
    dense = SNDense if layer.args.get("spectral_norm") else keras.layers.Dense
    return dense(layer.args["units"], kernel_initializer=c.initializer(layer), **c.common(layer))


def _conv(layer: spec.Layer, c: _Context):
    a = layer.args
    conv = SNConv2D if a.get("spectral_norm") else keras.layers.Conv2D
    return conv(
        a["filters"], a["kernel"], strides=a["stride"], padding=a["padding"], kernel_initializer=c.initializer(layer),
        **c.common(layer),
    )


def _upsample(layer: spec.Layer, c: _Context):
    interpolation = layer.args.get("interpolation", "nearest")
    if interpolation == "bilinear" and c.policy == "float64":  # Keras's resizes in float32
        return BilinearUpSampling2D(**c.common(layer))
    return keras.layers.UpSampling2D(layer.args["factor"], interpolation=interpolation, **c.common(layer))


def _batch_norm(layer: spec.Layer, c: _Context):
    a = layer.args
    return keras.layers.BatchNormalization(momentum=a["momentum"], epsilon=a["epsilon"], **c.common(layer))


def _noise_inputs(layer: spec.Layer, c: _Context):
    """The split of G's input (split_noise_inputs), as a function of the symbolic input that keeps
    the maps for the noise layers and passes [latent | label] on."""

    def split(z):
        rest, c.noise_maps = split_noise_inputs(z, layer, c.policy)
        return rest

    return split


def _noise(layer: spec.Layer, c: _Context):
    """A map's add (add_noise), as a function of the symbolic features."""
    return lambda features: add_noise(features, c.noise_maps[layer.args["map"]], layer, c.policy, c.portable)


def _class_input(layer: spec.Layer, c: _Context):
    """G's class code off the end of its input [rest | c], in Keras's own layers (Reshape,
    Cropping1D), as a function of the symbolic input that keeps the code and passes rest on."""

    def split(z):
        width, classes = z.shape[-1], layer.args["classes"]
        column = keras.layers.Reshape((width, 1), name=f"{layer.name}_column", dtype=c.policy)(z)
        rest = keras.layers.Cropping1D((0, classes), name=f"{layer.name}_rest_crop", dtype=c.policy)(column)
        code = keras.layers.Cropping1D((width - classes, 0), name=f"{layer.name}_code_crop", dtype=c.policy)(column)
        c.class_code = keras.layers.Reshape((classes,), name=f"{layer.name}_code", dtype=c.policy)(code)
        return keras.layers.Reshape((width - classes,), name=f"{layer.name}_rest", dtype=c.policy)(rest)

    return split


def _class_split(layer: spec.Layer, c: _Context):
    def split(images):
        out, c.class_code = ClassSplit(layer.args["channels"], **c.common(layer))(images)
        return out

    return split


def _class_affine(layer: spec.Layer, c: _Context):
    """ClassAffine, or with `portable` the same function in Keras's own layers: Dense(K ->
    channels) with a bias of ones for 1 + c @ gain, a bias-free Dense for c @ bias, Multiply, Add."""
    a = layer.args

    def affine(features):
        if not c.portable:
            return ClassAffine(a["channels"], a["classes"], **c.common(layer))([features, c.class_code])
        shape = (1,) * (len(features.shape) - 2) + (a["channels"],)

        def per_channel(name, **dense):
            values = keras.layers.Dense(a["channels"], kernel_initializer="zeros", name=f"{layer.name}_{name}",
                                        dtype=c.policy, **dense)(c.class_code)
            return keras.layers.Reshape(shape, name=f"{layer.name}_{name}_shape", dtype=c.policy)(values)

        scale = per_channel("gain", bias_initializer="ones")
        shift = per_channel("bias", use_bias=False)
        scaled = keras.layers.Multiply(name=f"{layer.name}_scale", dtype=c.policy)([features, scale])
        return keras.layers.Add(name=f"{layer.name}_shift", dtype=c.policy)([scaled, shift])

    return affine


def _projection(layer: spec.Layer, c: _Context):
    a = layer.args
    made = Projection(a["classes"], c.initializer(layer), bool(a.get("spectral_norm")), a["units"], **c.common(layer))
    return lambda features: made([features, c.class_code])


# Spec layer kind -> the function that makes its Keras layer (or, for the noise kinds, a function
# of the symbolic tensor: they only occur in a functional model). The NumPy backend's
# backends.numpy.networks has the same table for the core.
CONSTRUCTORS = {
    "dense": _dense,
    "conv": _conv,
    "upsample": _upsample,
    "bn": _batch_norm,
    "relu": lambda layer, c: keras.layers.ReLU(**c.common(layer)),
    "leaky_relu": lambda layer, c: ExactLeakyReLU(negative_slope=layer.args["slope"], **c.common(layer)),
    "tanh": lambda layer, c: keras.layers.Activation("tanh", **c.common(layer)),
    "dropout": lambda layer, c: keras.layers.Dropout(layer.args["rate"], seed=c.seeds[layer.name], **c.common(layer)),
    "reshape": lambda layer, c: keras.layers.Reshape(layer.args["shape"], **c.common(layer)),
    "flatten": lambda layer, c: keras.layers.Flatten(**c.common(layer)),
    "minibatch_std": lambda layer, c: MinibatchStd(layer.args["group"], **c.common(layer)),
    "noise_inputs": _noise_inputs,
    "noise": _noise,
    "class_input": _class_input,
    "class_split": _class_split,
    "class_affine": _class_affine,
    "projection": _projection,
}


def fused_upsample_conv(layers: list[spec.Layer], index: int, c: _Context):
    """UpSampleConv2D for spec layers `index` and `index + 1` when they are the upsampling and
    convolution pair spec.fuses_with_next names and the network fuses them, else None. It
    carries the convolution's name, weights and seed."""
    if not c.fuse or not spec.fuses_with_next(layers, index):
        return None
    conv = layers[index + 1]
    return UpSampleConv2D(
        conv.args["filters"], conv.args["kernel"], c.initializer(conv), name=conv.name, dtype=c.policy,
        combined=c.combined_upsample_conv,
    )


def build_network(config: GANConfig, net: str, name: str | None = None, portable: bool = False) -> keras.Model:
    """The network `net` as a built Keras model (called `name`, default `net`): a Sequential,
    or with noise inputs a functional model (each noise layer takes its map from the split of
    the input as a second input). Initial weights and dropout seeds derive from config.seed
    (layer_seeds). `portable`: Keras's own layers only (for export): the fused
    upsample-convolution as its two layers, noise as in `add_noise`."""
    policy = dtype_policy(config)
    inputs = keras.Input(shape=input_shape(config, net), dtype="float64" if policy == "float64" else "float32")
    layers_spec = spec.net_spec(config, net)
    functional = any(layer.kind in spec.FUNCTIONAL_KINDS for layer in layers_spec)
    fuse = config.extra.get("fuse_upsample_conv", True) and not portable
    context = _Context(net, policy, portable, fuse, layer_seeds(config, net, layers_spec),
                       combined_upsample_conv=config.extra.get("combined_upsample_conv"))
    layers, outputs = [inputs], inputs
    index = 0
    while index < len(layers_spec):
        made = fused_upsample_conv(layers_spec, index, context)
        if made is not None:
            index += 2
        else:
            layer = layers_spec[index]
            made = spec.constructor_for(CONSTRUCTORS, layer, net, "tf")(layer, context)
            index += 1
        if functional:
            outputs = made(outputs)
        else:
            layers.append(made)
    if functional:
        return keras.Model(inputs, outputs, name=name or net)
    return keras.Sequential(layers, name=name or net)


def weight_variables(config: GANConfig, net: str, model: keras.Model) -> dict:
    """Shared weight name -> Keras variable, in spec order; shapes checked against the spec."""
    variables = {}
    for layer in spec.net_spec(config, net):
        params = spec.layer_param_shapes(layer)
        keras_layer = _layer_or_none(model, layer.name) if params else None
        for param, shape in params.items():
            if keras_layer is None and layer.kind == "class_affine":  # the portable form: two Dense layers
                variables[f"{net}/{layer.name}/{param}"] = model.get_layer(f"{layer.name}_{param}").kernel
                continue
            variable = getattr(keras_layer, param, None)  # Keras names its variables' attributes as the spec does
            if variable is None and layer.kind == "noise":  # the portable form (add_noise): a (1, channels) kernel
                variable, shape = keras_layer.kernel, (1, *shape)
            if tuple(variable.shape) != tuple(shape):
                raise AssertionError(f"{net}/{layer.name}/{param}: Keras shape {variable.shape}, spec {shape}")
            variables[f"{net}/{layer.name}/{param}"] = variable
    return variables


def _layer_or_none(model: keras.Model, name: str):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def dropout_seed_variables(config: GANConfig, net: str, model: keras.Model) -> dict:
    """"rng/tf/<net>/<layer>/seed" -> the seed-state variable of each active Dropout layer."""
    states = {}
    for layer in spec.net_spec(config, net):
        if layer.kind == "dropout":
            generator = getattr(model.get_layer(layer.name), "seed_generator", None)
            if generator is not None:  # rate 0 has no generator: nothing random to save
                states[f"rng/tf/{net}/{layer.name}/seed"] = generator.state
    return states
