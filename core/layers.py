"""Layers with hand-written forward and backward passes.

The contract (numpy-ml / CS231n style): a layer holds `parameters` (trainable) and
`gradients` with the same keys, plus `buffers` (weights that are not trained, e.g. batch-norm
moving averages). `forward(x, training)` caches what `backward` needs; `backward(dout)`
overwrites `gradients` with this pass's gradients and returns d loss / d input. The maths
lives in `core.functional`; a layer only wires state to it.

`backward(dout, need_input_grad=False)` skips the input gradient (a network's first layer
when nothing upstream trains); `need_param_grads=False` skips the weight gradients (D's
weights while G trains through it).
"""

from __future__ import annotations

import numpy as np

from core import functional as F


def glorot_uniform(rng: np.random.Generator, shape, fan_in, fan_out, dtype):
    """Keras's default kernel initializer: U(-l, l), l = sqrt(6 / (fan_in + fan_out))."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


class Layer:
    def __init__(self, name: str):
        self.name = name
        self.parameters: dict[str, np.ndarray] = {}
        self.gradients: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self._cache = None

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout, need_input_grad=True, need_param_grads=True):
        raise NotImplementedError

    def per_example_gradients(self, dout) -> dict[str, np.ndarray]:
        """Each example's gradients of the parameters, {key: (B, *shape)}, from the cache of the
        last forward pass and this layer's d loss / d output (what `backward` would sum over the
        batch). Layers whose gradients mix examples (batch norm) have none."""
        if self.parameters:
            raise NotImplementedError(f"{type(self).__name__} has no per-example gradients")
        return {}

    def _set_gradients(self, **grads):
        for key, grad in grads.items():
            if grad is not None:
                self.gradients[key] = grad

    def __repr__(self):
        shapes = {k: v.shape for k, v in {**self.parameters, **self.buffers}.items()}
        return f"{type(self).__name__}({self.name!r}, {shapes})"


class SpectralNormMixin:
    """Optional spectral normalisation of a layer's kernel (core.functional): the layer computes
    with kernel / sigma, and its buffer "sn_u" (units,) holds the power iteration's vector,
    starting from the unit vector of equal entries. `power_iteration()` refines it; the owner
    calls it once per D step, before the forward pass."""

    def _init_spectral_norm(self, spectral_norm: bool, units: int, dtype) -> None:
        self.spectral_norm = bool(spectral_norm)
        self._sn_cache = None
        if self.spectral_norm:
            self.buffers["sn_u"] = np.full(units, 1.0 / np.sqrt(units), dtype)

    def power_iteration(self) -> None:
        if self.spectral_norm:
            self.buffers["sn_u"][...] = F.spectral_power_iteration(self.parameters["kernel"], self.buffers["sn_u"])

    def _kernel(self) -> np.ndarray:
        """The kernel the layer computes with (normalised when spectral norm is on)."""
        if not self.spectral_norm:
            return self.parameters["kernel"]
        kernel, self._sn_cache = F.spectral_norm_forward(self.parameters["kernel"], self.buffers["sn_u"])
        return kernel

    def _kernel_gradient(self, dkernel):
        if dkernel is None or not self.spectral_norm:
            return dkernel
        return F.spectral_norm_backward(dkernel, self._sn_cache)

    def _per_example_kernel_gradient(self, dkernels):
        if not self.spectral_norm:
            return dkernels
        return F.spectral_norm_per_example_backward(dkernels, self._sn_cache)


class Dense(SpectralNormMixin, Layer):
    def __init__(self, name, in_features, units, rng, dtype=np.float32, spectral_norm=False):
        super().__init__(name)
        self.parameters = {
            "kernel": glorot_uniform(rng, (in_features, units), in_features, units, dtype),
            "bias": np.zeros(units, dtype),
        }
        self._init_spectral_norm(spectral_norm, units, dtype)

    def forward(self, x, training=True):
        out, self._cache = F.dense_forward(x, self._kernel(), self.parameters["bias"])
        return out

    def backward(self, dout, need_input_grad=True, need_param_grads=True):
        dx, dkernel, dbias = F.dense_backward(dout, self._cache, need_input_grad, need_param_grads)
        self._set_gradients(kernel=self._kernel_gradient(dkernel), bias=dbias)
        return dx

    def per_example_gradients(self, dout):
        dkernel, dbias = F.dense_per_example_grads(dout, self._cache)
        return {"kernel": self._per_example_kernel_gradient(dkernel), "bias": dbias}


class Conv2D(SpectralNormMixin, Layer):
    def __init__(
        self, name, in_channels, filters, kernel_size, stride=1, padding="same", rng=None, dtype=np.float32,
        spectral_norm=False,
    ):
        super().__init__(name)
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        self.stride, self.padding = stride, padding
        k = kernel_size
        self.parameters = {
            "kernel": glorot_uniform(rng, (k, k, in_channels, filters), k * k * in_channels, k * k * filters, dtype),
            "bias": np.zeros(filters, dtype),
        }
        self._init_spectral_norm(spectral_norm, filters, dtype)

    def forward(self, x, training=True):
        out, self._cache = F.conv2d_forward(x, self._kernel(), self.parameters["bias"], self.stride, self.padding)
        return out

    def backward(self, dout, need_input_grad=True, need_param_grads=True):
        dx, dkernel, dbias = F.conv2d_backward(dout, self._cache, need_input_grad, need_param_grads)
        self._set_gradients(kernel=self._kernel_gradient(dkernel), bias=dbias)
        return dx

    def per_example_gradients(self, dout):
        dkernel, dbias = F.conv2d_per_example_grads(dout, self._cache)
        return {"kernel": self._per_example_kernel_gradient(dkernel), "bias": dbias}


class UpSampleConv2D(Conv2D):
    """UpSampling2D(factor, nearest) then Conv2D(stride 1, 'same'), fused (see core.functional).
    It holds the convolution's weights, under the convolution's name."""

    def __init__(self, name, in_channels, filters, kernel_size, factor=2, rng=None, dtype=np.float32):
        super().__init__(name, in_channels, filters, kernel_size, 1, "same", rng, dtype)
        self.factor = factor

    def forward(self, x, training=True):
        p = self.parameters
        out, self._cache = F.upsample_conv2d_forward(x, p["kernel"], p["bias"], self.factor)
        return out

    def backward(self, dout, need_input_grad=True, need_param_grads=True):
        dx, dkernel, dbias = F.upsample_conv2d_backward(dout, self._cache, need_input_grad, need_param_grads)
        self._set_gradients(kernel=dkernel, bias=dbias)
        return dx


class UpSampling2D(Layer):
    """Keras's UpSampling2D: "nearest" by any factor, or "bilinear" by 2."""

    INTERPOLATIONS = ("nearest", "bilinear")

    def __init__(self, name, factor=2, interpolation="nearest"):
        super().__init__(name)
        if interpolation not in self.INTERPOLATIONS:
            raise ValueError(f"{name}: interpolation must be one of {', '.join(self.INTERPOLATIONS)}, got {interpolation!r}")
        if interpolation == "bilinear" and factor != 2:
            raise ValueError(f"{name}: bilinear upsampling is by a factor of 2 only, got {factor}")
        self.factor, self.interpolation = factor, interpolation

    def forward(self, x, training=True):
        if self.interpolation == "bilinear":
            return F.bilinear_upsample_forward(x)
        return F.upsample_forward(x, self.factor)

    def backward(self, dout, need_input_grad=True, need_param_grads=True):
        if not need_input_grad:
            return None
        if self.interpolation == "bilinear":
            return F.bilinear_upsample_backward(dout)
        return F.upsample_backward(dout, self.factor)


class BatchNormalization(Layer):
    def __init__(self, name, channels, momentum=0.99, epsilon=1e-3, dtype=np.float32):
        super().__init__(name)
        self.momentum, self.epsilon = momentum, epsilon
        self.parameters = {"gamma": np.ones(channels, dtype), "beta": np.zeros(channels, dtype)}
        self.buffers = {"moving_mean": np.zeros(channels, dtype), "moving_variance": np.ones(channels, dtype)}

    def forward(self, x, training=True):
        p, b = self.parameters, self.buffers
        if not training:
            z, scale = F.batchnorm_inference_forward(
                x, p["gamma"], p["beta"], b["moving_mean"], b["moving_variance"], self.epsilon
            )
            self._cache = ("inference", (scale, z))
            return self._activate(z)
        out, mean, var, cache = self._train_forward(x)
        for key, batch_value in (("moving_mean", mean), ("moving_variance", var)):
            b[key][...] = F.moving_average(b[key], batch_value, self.momentum)
        self._cache = ("train", cache)
        return out

    def backward(self, dout, need_input_grad=True, need_param_grads=True):
        mode, cache = self._cache
        if mode == "inference":  # an affine map with fixed statistics (then the activation, if any)
            scale, z = cache
            if not need_input_grad:
                return None
            return F.batchnorm_inference_backward(self._activation_gradient(dout, z), scale)
        dx, dgamma, dbeta = self._train_backward(dout, cache, need_input_grad)
        if need_param_grads:
            self._set_gradients(gamma=dgamma, beta=dbeta)
        return dx

    # What BatchNormActivation replaces: training-mode passes and the activation after the affine map.
    def _train_forward(self, x):
        return F.batchnorm_train_forward(x, self.parameters["gamma"], self.parameters["beta"], self.epsilon)

    def _train_backward(self, dout, cache, need_input_grad):
        return F.batchnorm_train_backward(dout, cache, need_input_grad)

    def _activate(self, z):
        return z

    def _activation_gradient(self, dout, z):
        return dout


class BatchNormActivation(BatchNormalization):
    """BatchNormalization then ReLU (slope 0) or LeakyReLU(slope), fused (core.functional): in
    training one Numba pass forward and one backward. It holds the batch norm's weights, under
    the batch norm's name."""

    def __init__(self, name, channels, momentum=0.99, epsilon=1e-3, slope=0.0, dtype=np.float32):
        super().__init__(name, channels, momentum, epsilon, dtype)
        if not 0.0 <= slope < 1.0:
            raise ValueError(f"activation slope must be in [0, 1), got {slope}")
        self.slope = slope

    def _train_forward(self, x):
        p = self.parameters
        return F.batchnorm_act_train_forward(x, p["gamma"], p["beta"], self.epsilon, self.slope)

    def _train_backward(self, dout, cache, need_input_grad):
        return F.batchnorm_act_train_backward(dout, cache, need_input_grad)

    def _activate(self, z):
        return F.activation(z, self.slope)

    def _activation_gradient(self, dout, z):
        return F.activation_gradient(dout, z, self.slope)


class ReLU(Layer):
    def forward(self, x, training=True):
        out, self._cache = F.relu_forward(x)
        return out

    def backward(self, dout, need_input_grad=True, need_param_grads=True):
        return F.relu_backward(dout, self._cache) if need_input_grad else None


class LeakyReLU(Layer):
    def __init__(self, name, slope=0.2):
        super().__init__(name)
        self.slope = slope

    def forward(self, x, training=True):
        out, self._cache = F.leaky_relu_forward(x, self.slope)
        return out

    def backward(self, dout, need_input_grad=True, need_param_grads=True):
        return F.leaky_relu_backward(dout, self._cache, self.slope) if need_input_grad else None


class Tanh(Layer):
    def forward(self, x, training=True):
        out, self._cache = F.tanh_forward(x)
        return out

    def backward(self, dout, need_input_grad=True, need_param_grads=True):
        return F.tanh_backward(dout, self._cache) if need_input_grad else None


class Dropout(Layer):
    """Inverted dropout in training, identity in inference; masks come from `rng`, a
    numpy Generator the owner seeds (and may swap, e.g. to replay a mask)."""

    def __init__(self, name, rate, rng: np.random.Generator):
        super().__init__(name)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate, self.rng = rate, rng

    def forward(self, x, training=True):
        if not training or self.rate == 0.0:
            self._cache = None
            return x
        uniform = F.dropout_uniform(self.rng, x.shape, x.dtype)
        out, self._cache = F.dropout_forward(x, uniform, self.rate)
        return out

    def backward(self, dout, need_input_grad=True, need_param_grads=True):
        if not need_input_grad:
            return None
        return dout if self._cache is None else F.dropout_backward(dout, self._cache)


class LeakyReLUDropout(Layer):
    """LeakyReLU(slope) then Dropout(rate), fused (core.functional): one Numba pass each way,
    the same masks from `rng` as the two layers would draw."""

    def __init__(self, name, slope, rate, rng: np.random.Generator):
        super().__init__(name)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.slope, self.rate, self.rng = slope, rate, rng

    def forward(self, x, training=True):
        if not training or self.rate == 0.0:
            out, x = F.leaky_relu_forward(x, self.slope)
            self._cache = ("plain", x)
            return out
        uniform = F.dropout_uniform(self.rng, x.shape, x.dtype)
        out, cache = F.leaky_dropout_forward(x, self.slope, uniform, self.rate)
        self._cache = ("dropout", cache)
        return out

    def backward(self, dout, need_input_grad=True, need_param_grads=True):
        if not need_input_grad:
            return None
        mode, cache = self._cache
        if mode == "plain":
            return F.leaky_relu_backward(dout, cache, self.slope)
        return F.leaky_dropout_backward(dout, cache)


class MinibatchStd(Layer):
    """Appends the minibatch standard-deviation channel (functional.minibatch_std_forward)."""

    def __init__(self, name, group):
        super().__init__(name)
        self.group = int(group)

    def forward(self, x, training=True):
        out, self._cache = F.minibatch_std_forward(x, self.group)
        return out

    def backward(self, dout, need_input_grad=True, need_param_grads=True):
        return F.minibatch_std_backward(dout, self._cache) if need_input_grad else None


class NoiseMaps:
    """The per-pixel noise maps of a network's current forward pass (StyleGAN's noise inputs),
    shared by its NoiseInputs layer, which sets `maps` from the input vector, and its
    NoiseInjection layers, which each read one and leave that map's gradient in `gradients` for
    NoiseInputs' backward pass. One per network: a Sequential passes one array from layer to
    layer, and the maps go to later layers beside it."""

    def __init__(self, count: int):
        self.maps: list = [None] * count
        self.gradients: list = [None] * count


class NoiseInputs(Layer):
    """Takes the noise maps out of the input vector [latent | maps | rest] into `context` and
    passes [latent | rest] on (functional.noise_inputs_split)."""

    def __init__(self, name, latent, sides, context: NoiseMaps):
        super().__init__(name)
        if len(sides) != len(context.maps):
            raise ValueError(f"{len(sides)} noise maps for a context of {len(context.maps)}")
        self.latent, self.sides, self.context = int(latent), tuple(sides), context

    def forward(self, x, training=True):
        out, self.context.maps[:] = F.noise_inputs_split(x, self.latent, self.sides)
        return out

    def backward(self, dout, need_input_grad=True, need_param_grads=True):
        if not need_input_grad:
            return None
        return F.noise_inputs_split_backward(dout, self.context.gradients, self.latent)


class NoiseInjection(Layer):
    """x + map * strength: map `index` of `context` (B, H, W, 1), one learned strength per
    channel, zero at the start (functional.noise_forward)."""

    def __init__(self, name, channels, index, context: NoiseMaps, dtype=np.float32):
        super().__init__(name)
        self.index, self.context = int(index), context
        self.parameters = {"strength": np.zeros(channels, dtype)}

    def forward(self, x, training=True):
        out, self._cache = F.noise_forward(x, self.context.maps[self.index], self.parameters["strength"])
        return out

    def backward(self, dout, need_input_grad=True, need_param_grads=True):
        # the map's gradient is one small product; it is always left for NoiseInputs
        dx, self.context.gradients[self.index], dstrength = F.noise_backward(dout, self._cache, need_param_grads)
        self._set_gradients(strength=dstrength)
        return dx if need_input_grad else None


class ClassCode:
    """The class code c (B, K) of a network's current forward pass, shared by the layer that
    takes it off the input (ClassInput, ClassSplit) and the layers that read it (ClassAffine,
    Projection); like NoiseMaps, it goes beside the one array a Sequential passes on."""

    def __init__(self):
        self.code = None


class _TakesClassCode(Layer):
    """A network's first layer that takes the class code off its input into `context` and passes
    the rest on; the code's gradient is zero (it is not trained)."""

    def __init__(self, name, classes, context: ClassCode):
        super().__init__(name)
        self.classes, self.context = int(classes), context

    def forward(self, x, training=True):
        out, self.context.code = self._split(x)
        return out

    def backward(self, dout, need_input_grad=True, need_param_grads=True):
        return self._split_backward(dout) if need_input_grad else None


class ClassInput(_TakesClassCode):
    """G's input vector [rest | c]: the code off its end (functional.class_input_split)."""

    def _split(self, x):
        return F.class_input_split(x, self.classes)

    def _split_backward(self, dout):
        return F.class_input_split_backward(dout, self.classes)


class ClassSplit(_TakesClassCode):
    """D's image and label planes: the code from the planes (functional.class_split)."""

    def __init__(self, name, channels, classes, context: ClassCode):
        super().__init__(name, classes, context)
        self.channels = int(channels)

    def _split(self, x):
        return F.class_split(x, self.channels)

    def _split_backward(self, dout):
        return F.class_split_backward(dout, self.classes)


class ClassAffine(Layer):
    """x * (1 + c @ gain) + c @ bias (class-conditional batch norm's class part, after a batch
    norm); gain and bias (K, channels) start at zero, so the layer starts as the identity."""

    def __init__(self, name, channels, classes, context: ClassCode, dtype=np.float32):
        super().__init__(name)
        self.context = context
        self.parameters = {"gain": np.zeros((classes, channels), dtype), "bias": np.zeros((classes, channels), dtype)}

    def forward(self, x, training=True):
        p = self.parameters
        out, self._cache = F.class_affine_forward(x, self.context.code, p["gain"], p["bias"])
        return out

    def backward(self, dout, need_input_grad=True, need_param_grads=True):
        dx, dgain, dbias = F.class_affine_backward(dout, self._cache, need_input_grad, need_param_grads)
        self._set_gradients(gain=dgain, bias=dbias)
        return dx


class Projection(Dense):
    """D's output with a projection of the class: h @ kernel + bias + sum(h * (c @ embedding))
    (Miyato & Koyama 2018); the embedding (K, in) starts at zero. Spectral norm, when on,
    applies to the kernel as in Dense."""

    def __init__(self, name, in_features, classes, context: ClassCode, rng, dtype=np.float32, spectral_norm=False,
                 units=1):
        super().__init__(name, in_features, units, rng, dtype, spectral_norm)
        self.context = context
        self.parameters["embedding"] = np.zeros((classes, in_features), dtype)

    def forward(self, x, training=True):
        p = self.parameters
        out, self._cache = F.projection_forward(x, self.context.code, self._kernel(), p["bias"], p["embedding"])
        return out

    def backward(self, dout, need_input_grad=True, need_param_grads=True):
        dx, dkernel, dbias, dembedding = F.projection_backward(dout, self._cache, need_input_grad, need_param_grads)
        self._set_gradients(kernel=self._kernel_gradient(dkernel), bias=dbias, embedding=dembedding)
        return dx

    def per_example_gradients(self, dout):
        dkernel, dbias, dembedding = F.projection_per_example_grads(dout, self._cache)
        return {"kernel": self._per_example_kernel_gradient(dkernel), "bias": dbias, "embedding": dembedding}


class Reshape(Layer):
    def __init__(self, name, shape):
        super().__init__(name)
        self.shape = tuple(shape)

    def forward(self, x, training=True):
        out, self._cache = F.reshape_forward(x, self.shape)
        return out

    def backward(self, dout, need_input_grad=True, need_param_grads=True):
        return F.reshape_backward(dout, self._cache) if need_input_grad else None


class Flatten(Reshape):
    def __init__(self, name):
        super().__init__(name, (-1,))
