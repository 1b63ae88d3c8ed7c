"""The numpy backend: the spec's DCGAN trained by `core`'s hand-written passes.

Semantics (backends.spec): every training-mode forward pass of G uses batch statistics and
updates its BN moving averages once; D's step sees [real; fake] as one batch with targets
[1 - label_smoothing; 0]; G's step goes through D in training mode (dropout on) with target 1.
With config.diffaugment, every image D sees in training (real and fake, D and G steps) is
augmented first (core.augment), G's gradient flowing back through the augmentation.
With config.spectral_norm, each D step starts with one power iteration of D's kernels.
With config.ema_kimg, the averaged generator (spec.ema_beta) follows G after every G step and
is the network `generate` runs.
`train_step` shares one G forward pass between the D update and the G update, the G update
running through the already-updated D. Dropout masks and augmentation draws come from one
numpy Generator seeded from config.seed; its state travels in checkpoints as "rng/numpy/...".

With config.dp_noise > 0 (differential privacy, backends.spec), D's update is DP-SGD's: per-example
gradients of the real half (core's backward_per_example), each clipped, their sum noised from a
second numpy Generator (state "rng/numpy/dp_noise/..."), which only private runs have.

`config.dtype == "float64"` runs everything in float64 (for gradient checks); weights and
optimizer state are returned in the backend's dtype.
"""

from __future__ import annotations

import numpy as np

import core
from core import augment
from backends import spec
from backends.base import Backend, check_groups, check_labels, check_weights, whole_groups_chunk
from backends.config import GANConfig
from backends.numpy.networks import build_network
from backends.rng_state import rng_to_arrays, set_rng_from_arrays

RNG_PREFIX = "rng/numpy/"
DP_RNG_PREFIX = "rng/numpy/dp_noise/"
INFERENCE_CHUNK = 64  # images per forward pass in generate/discriminate: bounds the im2col buffers


class NumpyBackend(Backend):
    name = "numpy"

    def __init__(self, config: GANConfig):
        super().__init__(config)
        self.dtype = np.dtype(config.dtype)
        init_seed, dropout_seed = np.random.SeedSequence(config.seed).spawn(2)
        init_rng = np.random.default_rng(init_seed)
        self.rng = np.random.default_rng(dropout_seed)
        self.generator = build_network(config, "generator", init_rng, self.rng)
        self.discriminator = build_network(config, "discriminator", init_rng, self.rng)
        self.generator_ema = None
        if config.ema_kimg > 0:  # built last, so G's and D's initial weights do not depend on it
            self.generator_ema = build_network(config, "generator", init_rng, self.rng, prefix=f"{spec.EMA_NET}/")
            self._ema_pairs = [
                (self.generator_ema.weights()[spec.ema_name(name)], value)
                for name, value in self.generator.weights().items()
            ]
            for average, value in self._ema_pairs:
                average[...] = value
        self.optimizers = {
            "generator": core.Adam(config.lr_g, config.beta_1, config.beta_2, config.epsilon),
            "discriminator": core.Adam(config.lr_d, config.beta_1, config.beta_2, config.epsilon),
        }
        self.optimizers["generator"].build(self.generator.parameters())
        self.optimizers["discriminator"].build(self.discriminator.parameters())
        self.condition_strength = 1.0  # the class code's scale in training (set_condition_strength)
        self.dp_rng = None
        self.dp_noise = float(config.dp_noise)  # set_dp_noise; the config holds the run's
        if config.private:  # the third child of the seed: init and dropout streams stay as they were
            self.dp_rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(2,)))
        self._weight_shapes = spec.weight_shapes(config)
        self._optimizer_shapes = spec.optimizer_state_shapes(config)

    # --- inputs ---
    def _labels(self, labels, count: int):
        return check_labels(labels, count, self.config.num_classes)

    def _one_hot(self, labels, strength: float = 1.0) -> np.ndarray:
        """The class code: the one-hot label times `strength` (backends.spec)."""
        code = np.eye(self.config.num_classes, dtype=self.dtype)[labels]
        return code if strength == 1.0 else code * self.dtype.type(strength)

    def _generator_input(self, z, labels, training: bool = True) -> np.ndarray:
        z = np.asarray(z, dtype=self.dtype)
        if z.ndim != 2 or z.shape[1] != self.config.z_size:
            raise ValueError(f"z must have shape (batch, {self.config.z_size}), got {z.shape}")
        labels = self._labels(labels, z.shape[0])
        if labels is None:
            return z
        return np.concatenate([z, self._one_hot(labels, self.condition_strength if training else 1.0)], axis=1)

    def _images(self, images) -> np.ndarray:
        c = self.config
        images = np.asarray(images, dtype=self.dtype)
        expected = (c.image_size, c.image_size, c.channels)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"images must have shape (batch, {', '.join(map(str, expected))}), got {images.shape}")
        return images

    def _discriminator_input(self, images, labels, training: bool = True) -> np.ndarray:
        c = self.config
        images = self._images(images)
        labels = self._labels(labels, images.shape[0])
        if labels is None:
            return self._pack(images)
        code = self._one_hot(labels, self.condition_strength if training else 1.0)
        planes = np.broadcast_to(code[:, None, None, :], images.shape[:3] + (c.num_classes,))
        return self._pack(np.concatenate([images, planes], axis=3))

    def _pack(self, inputs) -> np.ndarray:
        """(N, H, W, C') -> (N/p, H, W, p*C'): each group of `pack` consecutive images side by
        side along channels (spec.py); the identity when pack is 1."""
        p = self.config.pack
        if p == 1:
            return inputs
        n, h, w, c = inputs.shape
        return np.ascontiguousarray(inputs.reshape(n // p, p, h, w, c).transpose(0, 2, 3, 1, 4)).reshape(n // p, h, w, p * c)

    def _unpack(self, grads) -> np.ndarray:
        """The inverse of `_pack`, for gradients flowing back to D's input images."""
        p = self.config.pack
        if p == 1:
            return grads
        groups, h, w, pc = grads.shape
        c = pc // p
        return grads.reshape(groups, h, w, p, c).transpose(0, 3, 1, 2, 4).reshape(groups * p, h, w, c)

    def _augment(self, images):
        """DiffAugment (config.diffaugment) of images D is about to see; returns the images
        and the drawn operations (for the backward pass); a no-op without a policy."""
        policy = self.config.diffaugment_policy
        if not policy:
            return images, []
        ops = augment.draw_augmentations(self.rng, policy, *images.shape[:3])
        return augment.augment_forward(images, ops), ops

    # --- the two updates, on a G output already computed in training mode ---
    def _discriminator_loss_and_grads(self, real, fake, labels) -> float:
        """D forward on [real; fake] in training mode, backward into D's gradients (after one
        power iteration of each spectrally normalised layer, as every D step starts)."""
        for layer in self.discriminator.layers:
            if isinstance(layer, core.SpectralNormMixin):
                layer.power_iteration()  # a no-op where the layer's spectral norm is off
        batch = np.concatenate([real, fake], axis=0)
        both_labels = None if labels is None else np.concatenate([labels, labels])
        batch, _ = self._augment(batch)
        logits = self.discriminator.forward(self._discriminator_input(batch, both_labels), training=True)
        groups = len(real) // self.config.pack  # D's step packs real with real, fake with fake
        targets = np.concatenate(
            [np.full(groups, 1.0 - self.config.label_smoothing), np.zeros(groups)]
        ).astype(self.dtype)
        loss, dlogits = self._loss(logits, targets, labels, classified=len(real))
        self.discriminator.backward(dlogits, need_input_grad=False)
        return loss

    def _loss(self, outputs, targets, labels, classified: int):
        """(loss, d loss / d outputs) of D's outputs (N, 1 + class logits): the real/fake BCE of
        the first column against `targets`, plus, with the auxiliary class loss, its weight
        times the class logits' cross-entropy against `labels` for the first `classified` rows
        (backends.spec)."""
        loss, dadversarial = core.bce_from_logits(outputs[:, 0], targets)
        if not self.config.class_outputs:
            return loss, dadversarial.reshape(outputs.shape)
        weight = self.config.class_loss
        class_loss, dclass = core.functional.softmax_cross_entropy(outputs[:classified, 1:], labels[:classified])
        doutputs = np.zeros_like(outputs)
        doutputs[:, 0] = dadversarial
        doutputs[:classified, 1:] = weight * dclass
        return loss + weight * class_loss, doutputs

    def _private_discriminator_grads(self, real, fake, labels, noise: bool = True) -> tuple[float, dict]:
        """DP-SGD's gradient of D (backends.spec, "Differential privacy"): D forward on [real;
        fake] in training mode as in an ordinary step; each real example's gradient of its own
        term clipped to norm dp_clip over all of D's weights, summed, plus N(0, (dp_noise *
        dp_clip)^2) per coordinate, over batch_size; the fakes' gradient added as it is. Returns
        (D's mean loss on the fakes, {weight name: gradient})."""
        for layer in self.discriminator.layers:
            if isinstance(layer, core.SpectralNormMixin):
                layer.power_iteration()
        c = self.config
        real_count, fake_count = len(real), len(fake)
        batch = np.concatenate([real, fake], axis=0)
        if labels is None:
            both_labels = None
        else:
            real_labels, fake_labels = labels
            both_labels = np.concatenate([real_labels, fake_labels])
        batch, _ = self._augment(batch)
        logits = self.discriminator.forward(self._discriminator_input(batch, both_labels), training=True).reshape(-1)
        targets = np.concatenate([np.full(real_count, 1.0 - c.label_smoothing), np.zeros(fake_count)]).astype(self.dtype)
        # each real example's term weighs 1/2 (the real half of the batch mean, over batch_size);
        # the fakes' terms their share of the fake half's mean
        weights = np.concatenate([np.full(real_count, 0.5), np.full(fake_count, 0.5 / fake_count)]).astype(self.dtype)
        dlogits = (core.functional.sigmoid(logits) - targets) * weights
        per_example = self.discriminator.backward_per_example(dlogits.reshape(-1, 1))
        real_grads = {name: g[:real_count] for name, g in per_example.items()}
        noise_std = self.dp_noise * c.dp_clip if noise else 0.0
        summed = clipped_sum(real_grads, c.dp_clip, self.dp_rng if noise_std else None, noise_std)
        scale = self.dtype.type(1.0 / c.batch_size)
        grads = {name: summed[name] * scale + g[real_count:].sum(axis=0) for name, g in per_example.items()}
        fake_loss = core.bce_from_logits(logits[real_count:], targets[real_count:])[0]
        return fake_loss, grads

    def _generator_loss_and_grads(self, fake, labels) -> float:
        """D forward on fake in training mode, target 1; backward through D (its weights'
        gradients are not needed) into G, whose caches hold the forward pass that made `fake`."""
        augmented, ops = self._augment(fake)
        logits = self.discriminator.forward(self._discriminator_input(augmented, labels), training=True)
        loss, dlogits = self._loss(logits, np.ones(len(logits), self.dtype), labels, classified=len(logits))
        dinput = self._unpack(self.discriminator.backward(dlogits, need_param_grads=False))
        dfake = augment.augment_backward(dinput[..., : self.config.channels], ops)
        self.generator.backward(np.ascontiguousarray(dfake), need_input_grad=False)
        return loss

    def _apply(self, net: str, batch: int, gradients: dict | None = None) -> None:
        """Adam on `net`'s gradients (its layers' own unless given); after G's update, the
        averaged generator follows it."""
        model = self.generator if net == "generator" else self.discriminator
        self.optimizers[net].step(model.parameters(), model.gradients() if gradients is None else gradients)
        if net == "generator" and self.generator_ema is not None:
            self._update_average(batch)

    def _update_average(self, batch: int) -> None:
        """The averaged generator's step toward G (spec.ema_beta), after G's update."""
        images_seen = (self.optimizers["generator"].iterations - 1) * batch
        rate = 1.0 - spec.ema_beta(self.config, images_seen, batch)
        for average, value in self._ema_pairs:
            average += rate * (value - average)

    def _real_batch(self, real, z) -> np.ndarray:
        real = self._images(real)
        if len(real) != len(z):
            raise ValueError(f"real and z must have the same batch size, got {len(real)} and {len(z)}")
        check_groups(len(real), self.config)
        return real

    def _private_labels(self, real, z, labels):
        """A private step's labels: (real's, the fakes'); None for an unconditional model."""
        if self.config.num_classes == 0:
            return None
        real_labels, fake_labels = labels if isinstance(labels, tuple) else (labels, labels)
        return self._labels(real_labels, len(real)), self._labels(fake_labels, len(z))

    def _private_d_update(self, real, z, labels) -> tuple[float, np.ndarray]:
        """A private D step; returns (D's loss on the fakes, the fakes for G's step)."""
        real = self._images(real)
        check_groups(len(z), self.config)
        labels = self._private_labels(real, z, labels)
        fake_labels = None if labels is None else labels[1]
        fake = self.generator.forward(self._generator_input(z, fake_labels), training=True)
        loss, grads = self._private_discriminator_grads(real, fake, labels)
        self._apply("discriminator", len(z), grads)
        return loss, fake

    # --- training ---
    def d_step(self, real, z, labels=None) -> float:
        if self.config.private:
            return self._private_d_update(real, z, labels)[0]
        real = self._real_batch(real, z)
        fake = self.generator.forward(self._generator_input(z, labels), training=True)
        loss = self._discriminator_loss_and_grads(real, fake, labels)
        self._apply("discriminator", len(z))
        return loss

    def g_step(self, z, labels=None) -> float:
        check_groups(len(z), self.config)
        fake = self.generator.forward(self._generator_input(z, labels), training=True)
        loss = self._generator_loss_and_grads(fake, labels)
        self._apply("generator", len(z))
        return loss

    def train_step(self, real, z, labels=None) -> tuple[float, float]:
        if self.config.private:
            d_loss, fake = self._private_d_update(real, z, labels)
            fake_labels = None if self.config.num_classes == 0 else self._private_labels(real, z, labels)[1]
            g_loss = self._generator_loss_and_grads(fake, fake_labels)
            self._apply("generator", len(z))
            return d_loss, g_loss
        real = self._real_batch(real, z)
        fake = self.generator.forward(self._generator_input(z, labels), training=True)
        d_loss = self._discriminator_loss_and_grads(real, fake, labels)
        self._apply("discriminator", len(z))
        g_loss = self._generator_loss_and_grads(fake, labels)
        self._apply("generator", len(z))
        return d_loss, g_loss

    # --- inference ---
    # In inference mode every image is computed on its own (moving BN statistics, no
    # dropout), so chunking a large request changes nothing but peak memory.
    def generate(self, z, labels=None) -> np.ndarray:
        """Images from the averaged generator when the run has one, else from G."""
        inputs = self._generator_input(z, labels, training=False)
        network = self.generator if self.generator_ema is None else self.generator_ema
        chunks = [
            network.forward(inputs[start : start + INFERENCE_CHUNK], training=False).astype(np.float32)
            for start in range(0, len(inputs), INFERENCE_CHUNK)
        ]
        c = self.config
        return np.concatenate(chunks) if chunks else np.zeros((0, c.image_size, c.image_size, c.channels), np.float32)

    def discriminate(self, images, labels=None) -> np.ndarray:
        """D's logits, one per group of `pack` consecutive images."""
        check_groups(len(images), self.config)
        inputs = self._discriminator_input(images, labels, training=False)
        # the inputs are packed already: a chunk holds whole minibatch-std groups of them
        step = whole_groups_chunk(INFERENCE_CHUNK, max(self.config.minibatch_std, 1))
        chunks = [
            self.discriminator.forward(inputs[start : start + step], training=False)[:, 0]
            for start in range(0, len(inputs), step)
        ]
        return np.concatenate(chunks) if chunks else np.zeros(0, self.dtype)

    def compute_gradients(self, real, z, labels=None) -> dict:
        real = self._real_batch(real, z)
        saved_weights, saved_rng = self.get_weights(), self.get_rng_state()
        try:
            fake = self.generator.forward(self._generator_input(z, labels), training=True)
            d_loss = self._discriminator_loss_and_grads(real, fake, labels)
            grads = {name: g.copy() for name, g in self.discriminator.gradients().items()}
            g_loss = self._generator_loss_and_grads(fake, labels)
            grads.update({name: g.copy() for name, g in self.generator.gradients().items()})
        finally:  # G's forward moved the BN moving averages and dropout drew from the RNG
            self.set_weights(saved_weights)
            self.set_rng_state(saved_rng)
        return {"d_loss": d_loss, "g_loss": g_loss, "grads": grads}

    def compute_private_gradients(self, real, z, labels=None, noise: bool = True) -> dict:
        """D's private gradient at the current weights, changing nothing but the noise stream:
        {"d_loss": D's loss on the fakes, "grads": {D's weight name: array}}."""
        if not self.config.private:
            raise ValueError("compute_private_gradients needs a private config (dp_noise > 0)")
        real = self._images(real)
        labels = self._private_labels(real, z, labels)
        saved_weights, saved_rng = self.get_weights(), rng_to_arrays(self.rng, RNG_PREFIX)
        try:
            fake = self.generator.forward(self._generator_input(z, None if labels is None else labels[1]), training=True)
            d_loss, grads = self._private_discriminator_grads(real, fake, labels, noise)
        finally:
            self.set_weights(saved_weights)
            set_rng_from_arrays(self.rng, saved_rng, RNG_PREFIX)
        return {"d_loss": d_loss, "grads": grads}

    def set_dp_noise(self, multiplier: float) -> None:
        self.dp_noise = float(multiplier)

    # --- state ---
    def _all_weights(self) -> dict[str, np.ndarray]:
        averaged = {} if self.generator_ema is None else self.generator_ema.weights()
        return {**self.generator.weights(), **self.discriminator.weights(), **averaged}

    def get_weights(self) -> dict[str, np.ndarray]:
        live = self._all_weights()
        return {name: live[name].copy() for name in self._weight_shapes}

    def set_weights(self, weights) -> None:
        check_weights(self._weight_shapes, weights, "weights")
        live = self._all_weights()
        for name in self._weight_shapes:
            live[name][...] = np.asarray(weights[name], dtype=self.dtype)

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        state = {}
        for net in spec.NETS:
            optimizer = self.optimizers[net]
            for name in spec.trainable_names(self.config, net):
                state[f"opt/{net}/m/{name}"] = optimizer.m[name].copy()
                state[f"opt/{net}/v/{name}"] = optimizer.v[name].copy()
            state[f"opt/{net}/iterations"] = np.array(optimizer.iterations, dtype=np.int64)
        return state

    def set_optimizer_state(self, state) -> None:
        check_weights(self._optimizer_shapes, state, "optimizer state")
        for net in spec.NETS:
            optimizer = self.optimizers[net]
            for name in spec.trainable_names(self.config, net):
                optimizer.m[name][...] = np.asarray(state[f"opt/{net}/m/{name}"], dtype=self.dtype)
                optimizer.v[name][...] = np.asarray(state[f"opt/{net}/v/{name}"], dtype=self.dtype)
            optimizer.iterations = int(state[f"opt/{net}/iterations"])

    def get_rng_state(self) -> dict[str, np.ndarray]:
        state = rng_to_arrays(self.rng, RNG_PREFIX)
        if self.dp_rng is not None:
            state.update(rng_to_arrays(self.dp_rng, DP_RNG_PREFIX))
        return state

    def set_rng_state(self, state) -> None:
        set_rng_from_arrays(self.rng, state, RNG_PREFIX)
        if self.dp_rng is not None:
            set_rng_from_arrays(self.dp_rng, state, DP_RNG_PREFIX)

    def set_condition_strength(self, strength: float) -> None:
        self.condition_strength = float(strength)

    def set_learning_rate_scale(self, scale: float) -> None:
        self.optimizers["generator"].learning_rate = self.config.lr_g * float(scale)
        self.optimizers["discriminator"].learning_rate = self.config.lr_d * float(scale)


def clipped_sum(per_example: dict, clip: float, rng: np.random.Generator | None = None, noise_std: float = 0.0) -> dict:
    """DP-SGD's sum (Abadi et al. 2016): each example's gradients {name: (B, *shape)} scaled
    by min(1, clip / |g_b|), |g_b| the L2 norm over all names jointly, summed over the
    examples, plus N(0, noise_std^2) per coordinate drawn from `rng` (in name order)."""
    count = next(iter(per_example.values())).shape[0]
    flat = [g.reshape(count, int(np.prod(g.shape[1:]))) for g in per_example.values()]
    squares = sum(np.einsum("bi,bi->b", g, g) for g in flat)
    norms = np.sqrt(squares)
    factors = np.minimum(1.0, clip / np.maximum(norms, np.finfo(norms.dtype).tiny)).astype(norms.dtype)
    summed = {name: np.tensordot(factors, g, axes=(0, 0)) for name, g in per_example.items()}
    if noise_std:
        for name, value in summed.items():
            value += (noise_std * rng.standard_normal(value.shape, dtype=value.dtype)).astype(value.dtype)
    return summed
