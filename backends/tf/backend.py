"""The TensorFlow (Keras 3) backend: the spec's DCGAN with a fused, compiled training step.

Every step is one `tf.function` with a fixed input signature whose batch dimension is None,
so the last, smaller batch of an epoch runs the same trace. `train_step` runs G's forward
pass once and shares it: D takes an Adam step on [real; fake], then G takes one through the
updated D. With config.ema_kimg, the averaged generator (spec.ema_beta) follows G inside the
same compiled step after every G update, and `generate` runs it.
With config.dp_noise > 0, D's updates are DP-SGD's (backends.spec, "Differential privacy"):
each real example's gradient from its own forward and backward pass (tf.vectorized_map over
the batch, the batch's augmentation and dropout draws made once outside), clipped, summed,
plus noise from a checkpointed tf.random.Generator ("rng/tf/dp_noise/state").
"""

from __future__ import annotations

import warnings

import numpy as np

from backends.tf import runtime  # sets TF's start-up options and thread pools before TF starts

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from backends import spec  # noqa: E402
from backends.base import Backend, check_groups, check_labels, check_weights, whole_groups_chunk  # noqa: E402
from backends.config import GANConfig  # noqa: E402
from backends.tf.augment import diff_augment  # noqa: E402
from backends.tf.networks import (  # noqa: E402
    ClassSplit,
    Projection,
    SpectralNorm,
    build_network,
    dropout_seed_variables,
    weight_variables,
)

GENERATE_CHUNK = 256  # images per compiled call in generate/discriminate: bounds memory


def default_jit_compile() -> bool:
    """XLA where it helps: off on CPU, where bench/bench_tf.py measured the fused step slower
    with it (jit on/off side by side); on a GPU, Keras's own default (its "auto" turns XLA on
    there). `extra["jit_compile"]` in the config overrides."""
    return runtime.has_gpu()


def numpy_dtype(variable) -> np.dtype:
    """A Keras variable names its dtype as a string, a tf.Variable as a tf.DType."""
    return np.dtype(getattr(variable.dtype, "as_numpy_dtype", variable.dtype))


def bce_from_logits(logits, targets):
    """Mean binary cross-entropy, computed stably from logits."""
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits))


class TFBackend(Backend):
    name = "tf"

    def __init__(self, config: GANConfig):
        super().__init__(config)
        if config.mixed_precision and not runtime.native_bfloat16():
            warnings.warn("mixed_precision: this machine has no native bfloat16 (GPU, AVX512-BF16 or AMX); "
                          "TensorFlow emulates it, expect it slower than float32", stacklevel=2)
        self.float_dtype = tf.float64 if config.dtype == "float64" else tf.float32
        self.device_kind = "gpu" if runtime.has_gpu() else "cpu"
        self.conditional = config.num_classes > 0
        self.jit_compile = bool(config.extra.get("jit_compile", default_jit_compile()))
        self.generator = build_network(config, "generator")
        self.discriminator = build_network(config, "discriminator")
        self.weights = {
            **weight_variables(config, "generator", self.generator),
            **weight_variables(config, "discriminator", self.discriminator),
        }
        self.generator_ema, self.ema_pairs = None, []
        if config.ema_kimg > 0:
            self.generator_ema = build_network(config, "generator", name=spec.EMA_NET)
            for name, variable in weight_variables(config, "generator", self.generator_ema).items():
                variable.assign(self.weights[name])
                self.weights[spec.ema_name(name)] = variable
                self.ema_pairs.append((variable, self.weights[name]))
        self.trainable = {
            net: [self.weights[n] for n in spec.trainable_names(config, net)] for net in spec.NETS
        }
        # Adam's state as plain variables named by the spec; the update is TF's own ApplyAdam
        # kernel (see _apply_adam), so no optimizer object and none of its private slots.
        self.optimizer_state = self._optimizer_state_variables()
        # set_learning_rate_scale's factor: float64, so a float64 run's rates are not rounded
        self.learning_rate_scale = tf.Variable(1.0, dtype=tf.float64, trainable=False, name="lr_scale")
        # set_condition_strength's factor on the class code in training (inference reads it whole)
        self.condition_strength = tf.Variable(1.0, dtype=tf.float64, trainable=False, name="condition_strength")
        self.rng_state = {
            **dropout_seed_variables(config, "generator", self.generator),
            **dropout_seed_variables(config, "discriminator", self.discriminator),
        }
        # the private steps' noise multiplier (set_dp_noise; read by the compiled steps) and stream
        self.dp_noise = tf.Variable(float(config.dp_noise), dtype=tf.float64, trainable=False, name="dp_noise")
        if config.private:
            self.dp_generator = tf.random.Generator.from_seed(config.seed * 10007 + 3000)
            self.rng_state["rng/tf/dp_noise/state"] = self.dp_generator.state
        self.augment_policy = config.diffaugment_policy
        if self.augment_policy:  # DiffAugment's random transforms: one generator, checkpointed
            self.augment_generator = tf.random.Generator.from_seed(config.seed * 10007 + 2000)
            self.rng_state["rng/tf/diffaugment/state"] = self.augment_generator.state
        self._compile_steps()

    # --- construction ---
    def _apply_adam(self, net: str, grads) -> None:
        """One Adam update of `net`, Keras 3's formula (alpha = lr * sqrt(1 - beta_2^t) /
        (1 - beta_1^t); m += (g - m)(1 - beta_1); v += (g^2 - v)(1 - beta_2);
        w -= alpha m / (sqrt(v) + eps)), which is exactly TensorFlow's ApplyAdam kernel: one
        fused kernel per variable instead of a dozen ops (faster to run and to trace).
        """
        c = self.config
        variables = self.trainable[net]
        dtype = variables[0].dtype
        iterations = self.optimizer_state[f"opt/{net}/iterations"]
        step = tf.cast(iterations + 1, dtype)
        beta_1, beta_2 = tf.constant(c.beta_1, dtype), tf.constant(c.beta_2, dtype)
        beta_1_power, beta_2_power = tf.pow(beta_1, step), tf.pow(beta_2, step)
        epsilon = tf.constant(c.epsilon, dtype)
        # the configured rate in the variables' dtype (a float64 run's rate is not rounded to
        # float32), times the schedule's current factor
        rate = c.lr_g if net == "generator" else c.lr_d
        learning_rate = tf.cast(tf.constant(rate, tf.float64) * self.learning_rate_scale, dtype)
        for name, variable, grad in zip(spec.trainable_names(c, net), variables, grads):
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle,
                m=self.optimizer_state[f"opt/{net}/m/{name}"].handle,
                v=self.optimizer_state[f"opt/{net}/v/{name}"].handle,
                beta1_power=beta_1_power,
                beta2_power=beta_2_power,
                lr=learning_rate,
                beta1=beta_1,
                beta2=beta_2,
                epsilon=epsilon,
                grad=tf.cast(grad, dtype),
            )
        iterations.assign_add(1)

    def _apply_generator(self, grads, batch) -> None:
        """G's Adam update, then the averaged generator's step toward G (spec.ema_beta; the
        NumPy backend's _update_average)."""
        self._apply_adam("generator", grads)
        if not self.ema_pairs:
            return
        c = self.config
        batch = tf.cast(batch, tf.float64)
        images_seen = tf.cast(self.optimizer_state["opt/generator/iterations"] - 1, tf.float64) * batch
        half_life = tf.constant(c.ema_kimg * 1000.0, tf.float64)
        if c.ema_rampup > 0:
            half_life = tf.minimum(half_life, images_seen * c.ema_rampup)
        beta = tf.pow(tf.constant(0.5, tf.float64), batch / tf.maximum(half_life, 1e-8))
        for average, variable in self.ema_pairs:
            average.assign_add(tf.cast(1.0 - beta, average.dtype) * (variable - average))

    def _optimizer_state_variables(self) -> dict:
        """"opt/<net>/m|v/<weight>" (zeros like the weight) and "opt/<net>/iterations"."""
        state = {}
        for net in spec.NETS:
            for name in spec.trainable_names(self.config, net):
                weight = self.weights[name]
                for slot in ("m", "v"):
                    state[f"opt/{net}/{slot}/{name}"] = tf.Variable(
                        tf.zeros(weight.shape, weight.dtype), trainable=False, name=f"{slot}_{name.replace('/', '_')}"
                    )
            state[f"opt/{net}/iterations"] = tf.Variable(0, dtype=tf.int64, trainable=False, name=f"iterations_{net}")
        return state

    def _signature(self, *parts: str, label_pair: bool = False) -> list:
        c = self.config
        specs = {
            "images": tf.TensorSpec([None, c.image_size, c.image_size, c.channels], self.float_dtype),
            "z": tf.TensorSpec([None, c.z_size], self.float_dtype),
        }
        signature = [specs[p] for p in parts]
        if self.conditional:
            signature.append(tf.TensorSpec([None], tf.int32))
            if label_pair:  # a private step's: the real images' labels, then the fakes'
                signature.append(tf.TensorSpec([None], tf.int32))
        return signature

    def _compile_steps(self) -> None:
        def compiled(fn, *parts, jit=self.jit_compile, label_pair=False):
            signature = self._signature(*parts, label_pair=label_pair)
            return tf.function(fn, input_signature=signature, jit_compile=jit, autograph=False)

        if self.config.private:
            self._train_step_fn = compiled(self._private_train_step_graph, "images", "z", label_pair=True)
            self._d_step_fn = compiled(self._private_d_step_graph, "images", "z", label_pair=True)
            self._private_gradients_fn = {
                noise: compiled(lambda *a, noise=noise: self._private_d_grads_graph(*a, noise=noise), "images", "z",
                                label_pair=True)
                for noise in (False, True)
            }
        else:
            self._train_step_fn = compiled(self._train_step_graph, "images", "z")
            self._d_step_fn = compiled(self._d_step_graph, "images", "z")
            # the margin loop's two scalars: margin (float64) and the cap (int32)
            limits = [tf.TensorSpec([], tf.float64), tf.TensorSpec([], tf.int32)]
            self._rebalanced_step_fn = tf.function(
                self._rebalanced_step_graph,
                input_signature=limits + self._signature("images", "z"), jit_compile=self.jit_compile, autograph=False,
            )
            self._limits: dict[tuple[float, int], tuple] = {}
        self._g_step_fn = compiled(self._g_step_graph, "z")
        self._gradients_fn = compiled(self._gradients_graph, "images", "z")
        self._generate_fn = compiled(self._generate_graph, "z")
        self._discriminate_fn = compiled(self._discriminate_graph, "images")

    # --- graph pieces (traced once each) ---
    def _class_code(self, labels, dtype, training):
        """The one-hot label, times the ramp's strength in training (backends.spec)."""
        code = tf.one_hot(labels, self.config.num_classes, dtype=dtype)
        return code * tf.cast(self.condition_strength, dtype) if training else code

    def _g_forward(self, z, labels, training, network=None):
        if self.conditional:
            z = tf.concat([z, self._class_code(labels, z.dtype, training)], axis=-1)
        return tf.cast((network or self.generator)(z, training=training), self.float_dtype)

    def _d_forward(self, images, labels, training, augment=False):
        """D's real/fake logits, one per group of `pack` images."""
        return self._d_outputs(images, labels, training, augment)[:, 0]

    def _d_outputs(self, images, labels, training, augment=False):
        """D's outputs (groups, 1 + class logits): the real/fake logit, then the auxiliary class
        logits when the run has the class loss."""
        images = self._d_inputs(images, labels, training, augment)
        pack = self.config.pack
        if pack > 1:  # groups of `pack` consecutive images side by side along channels
            shape = tf.shape(images)
            images = tf.reshape(images, [-1, pack, shape[1], shape[2], shape[3]])
            images = tf.reshape(tf.transpose(images, [0, 2, 3, 1, 4]), [-1, shape[1], shape[2], pack * shape[3]])
        outputs = self.discriminator(images, training=training)
        return tf.cast(tf.reshape(outputs, [-1, 1 + self.config.class_outputs]), self.float_dtype)

    def _d_targets(self, batch):
        batch = batch // self.config.pack
        real = tf.fill([batch], tf.constant(1.0 - self.config.label_smoothing, self.float_dtype))
        return tf.concat([real, tf.zeros([batch], self.float_dtype)], axis=0)

    def _d_loss_and_grads(self, real, fake, labels):
        """D's loss on [real; fake] (fake held constant) and its gradients, after one power
        iteration of each spectrally normalised layer, as every D step starts."""
        for layer in self.discriminator.layers:
            if isinstance(layer, SpectralNorm):
                layer.power_iteration()
        both = tf.concat([real, tf.stop_gradient(fake)], axis=0)
        both_labels = tf.concat([labels, labels], axis=0) if self.conditional else None
        with tf.GradientTape() as tape:
            outputs = self._d_outputs(both, both_labels, training=True, augment=True)
            loss = self._loss(outputs, self._d_targets(tf.shape(real)[0]), labels)
        return loss, tape.gradient(loss, self.trainable["discriminator"])

    def _loss(self, outputs, targets, labels):
        """The real/fake BCE of outputs[:, 0], plus, with the auxiliary class loss, its weight
        times the mean cross-entropy of the class logits of the first len(labels) rows (backends.spec)."""
        loss = bce_from_logits(outputs[:, 0], targets)
        if not self.config.class_outputs:
            return loss
        classified = outputs[: tf.shape(labels)[0], 1:]
        cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=classified)
        return loss + tf.constant(self.config.class_loss, loss.dtype) * tf.reduce_mean(cross_entropy)

    def _private_d_loss_and_grads(self, real, fake, real_labels, fake_labels, noise=True):
        """A private D step's gradient (backends.spec; the NumPy backend's
        _private_discriminator_grads): per-example gradients of the real terms, clipped jointly
        over D's weights, summed, noised, over batch_size; plus the fakes'.

        The batch's random draws (augmentation, then each Dropout layer's mask) are made once
        for [real; fake], as in an ordinary step; each real image's gradient is then its own
        forward and backward pass under tf.vectorized_map, so the cost is about one batch's
        backward pass (a Jacobian of the whole batch's terms repeats it per image)."""
        c = self.config
        for layer in self.discriminator.layers:
            if isinstance(layer, SpectralNorm):
                layer.power_iteration()
        both = tf.concat([real, tf.stop_gradient(fake)], axis=0)
        both_labels = tf.concat([real_labels, fake_labels], axis=0) if self.conditional else None
        real_count = tf.shape(real)[0]
        dtype = self.float_dtype
        variables = self.trainable["discriminator"]
        inputs = self._d_inputs(both, both_labels, training=True, augment=True)
        masks = self._dropout_masks(tf.shape(inputs)[0])
        real_target = tf.constant(1.0 - c.label_smoothing, dtype)

        def one_image(args):
            image, *image_masks = args
            with tf.GradientTape() as tape:
                logit = self._d_chain(image[None], [m[None] for m in image_masks])[0]
                term = 0.5 * tf.nn.sigmoid_cross_entropy_with_logits(labels=real_target, logits=logit)
            grads = tape.gradient(term, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return [tf.cast(g, dtype) for g in grads]

        # one row more (a fake's, dropped after): the vectorised loop must not be empty when no
        # real image was drawn
        rows = real_count + 1
        per_example = tf.vectorized_map(one_image, (inputs[:rows], *[m[:rows] for m in masks]))
        per_example = [j[:real_count] for j in per_example]
        with tf.GradientTape() as tape:
            logits = self._d_chain(inputs[real_count:], [m[real_count:] for m in masks])
            fake_loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.zeros_like(logits),
                                                                               logits=logits))
            fake_half = 0.5 * fake_loss
        fake_grads = tape.gradient(fake_half, variables)
        squares = tf.add_n([tf.reduce_sum(tf.reshape(tf.square(j), [real_count, -1]), axis=1) for j in per_example])
        norms = tf.sqrt(squares)
        clip = tf.constant(c.dp_clip, dtype)
        factors = tf.minimum(tf.constant(1.0, dtype), clip / tf.maximum(norms, tf.constant(np.finfo(dtype.as_numpy_dtype).tiny, dtype)))
        grads = []
        for j, fake_grad, variable in zip(per_example, fake_grads, variables):
            summed = tf.tensordot(factors, j, axes=[[0], [0]])
            if noise:
                std = tf.cast(self.dp_noise * c.dp_clip, dtype)
                summed += std * tf.cast(self.dp_generator.normal(tf.shape(variable), dtype=tf.float32 if dtype == tf.float32 else tf.float64), dtype)
            grads.append(summed / tf.constant(float(c.batch_size), dtype) + tf.cast(fake_grad, dtype))
        return fake_loss, grads

    def _d_inputs(self, images, labels, training, augment=False):
        """What D's first layer reads before packing: the images augmented, with the class planes
        when the model is conditional."""
        if augment and self.augment_policy:
            images = diff_augment(images, self.augment_policy, self.augment_generator)
        if self.conditional:
            one_hot = self._class_code(labels, images.dtype, training)
            size = self.config.image_size
            planes = tf.broadcast_to(one_hot[:, None, None, :], [tf.shape(images)[0], size, size, self.config.num_classes])
            images = tf.concat([images, planes], axis=-1)
        return images

    def _dropout_masks(self, batch):
        """Each active Dropout layer's multiplier (0 or 1 / (1 - rate)) for a batch of `batch`
        inputs, drawn by the layer itself in D's layer order: the draws its forward pass on that
        batch would make."""
        masks = []
        for layer in self.discriminator.layers:
            if isinstance(layer, keras.layers.Dropout) and layer.rate > 0:
                shape = tf.concat([[batch], tf.constant(layer.output.shape[1:], tf.int32)], axis=0)
                masks.append(layer(tf.ones(shape, layer.compute_dtype), training=True))
        return masks

    def _d_chain(self, inputs, masks):
        """D's real/fake logits on prepared inputs (_d_inputs), layer by layer with the given
        dropout multipliers (_dropout_masks) in place of fresh draws. D is a chain: its class
        split (projection) hands the class code to its last layer."""
        masks, code, x = list(masks), None, inputs
        for layer in self.discriminator.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if isinstance(layer, ClassSplit):
                x, code = layer(x)
            elif isinstance(layer, Projection):
                x = layer([x, code])
            elif isinstance(layer, keras.layers.Dropout):
                x = x * masks.pop(0) if layer.rate > 0 else x
            else:
                x = layer(x, training=True)
        return tf.cast(tf.reshape(x, [-1]), self.float_dtype)

    def _private_train_step_graph(self, real, z, real_labels=None, fake_labels=None):
        with tf.GradientTape() as g_tape:
            fake = self._g_forward(z, fake_labels, True)
            with g_tape.stop_recording():
                d_loss, d_grads = self._private_d_loss_and_grads(real, fake, real_labels, fake_labels)
                self._apply_adam("discriminator", d_grads)
            g_loss = self._g_loss(fake, fake_labels)
        g_grads = g_tape.gradient(g_loss, self.trainable["generator"])
        self._apply_generator(g_grads, tf.shape(z)[0])
        return d_loss, g_loss

    def _private_d_step_graph(self, real, z, real_labels=None, fake_labels=None):
        fake = self._g_forward(z, fake_labels, True)
        d_loss, d_grads = self._private_d_loss_and_grads(real, fake, real_labels, fake_labels)
        self._apply_adam("discriminator", d_grads)
        return d_loss

    def _private_d_grads_graph(self, real, z, real_labels=None, fake_labels=None, noise=True):
        fake = self._g_forward(z, fake_labels, True)
        return self._private_d_loss_and_grads(real, fake, real_labels, fake_labels, noise)

    def _g_loss(self, fake, labels):
        outputs = self._d_outputs(fake, labels, training=True, augment=True)
        return self._loss(outputs, tf.ones_like(outputs[:, 0]), labels)

    def _train_step_graph(self, real, z, labels=None):
        with tf.GradientTape() as g_tape:
            fake = self._g_forward(z, labels, True)  # the one G forward of the step
            with g_tape.stop_recording():
                d_loss, d_grads = self._d_loss_and_grads(real, fake, labels)
                self._apply_adam("discriminator", d_grads)
            g_loss = self._g_loss(fake, labels)  # through the updated D
        g_grads = g_tape.gradient(g_loss, self.trainable["generator"])
        self._apply_generator(g_grads, tf.shape(z)[0])
        return d_loss, g_loss

    def _rebalanced_step_graph(self, margin, max_steps, real, z, labels=None):
        """train_step, then service.trainer.rebalance's loop on the device: while
        |d_loss - g_loss| > margin and fewer than max_steps extra steps were taken, retrain the
        model whose loss was higher after the batch's step (a D step regenerates G(z) with the
        current G, as d_step) and stop once its loss drops below the other's. The comparisons
        run in float64 on the float32 losses, as Python's floats do in `rebalance`, so the
        decisions are the same; a NaN loss fails every comparison and ends the loop.
        Returns float64 [d_loss, g_loss, extra_d, extra_g]."""
        d_loss, g_loss = (tf.cast(loss, tf.float64) for loss in self._train_step_graph(real, z, labels))
        retrain_d = d_loss > g_loss  # fixed for the batch
        zero, false = tf.constant(0, tf.int32), tf.constant(False)

        def more(d, g, extra_d, extra_g, flipped):
            return tf.logical_and(
                tf.logical_and(tf.logical_not(flipped), tf.abs(d - g) > margin), extra_d + extra_g < max_steps
            )

        def again(d, g, extra_d, extra_g, flipped):
            def d_again():
                new_d = tf.cast(self._d_step_graph(real, z, labels), tf.float64)
                return new_d, g, extra_d + 1, extra_g, new_d < g

            def g_again():
                new_g = tf.cast(self._g_step_graph(z, labels), tf.float64)
                return d, new_g, extra_d, extra_g + 1, new_g < d

            return tf.cond(retrain_d, d_again, g_again)

        d_loss, g_loss, extra_d, extra_g, _ = tf.while_loop(
            more, again, [d_loss, g_loss, zero, zero, false], parallel_iterations=1
        )
        return tf.stack([d_loss, g_loss, tf.cast(extra_d, tf.float64), tf.cast(extra_g, tf.float64)])

    def _d_step_graph(self, real, z, labels=None):
        fake = self._g_forward(z, labels, True)
        d_loss, d_grads = self._d_loss_and_grads(real, fake, labels)
        self._apply_adam("discriminator", d_grads)
        return d_loss

    def _g_step_graph(self, z, labels=None):
        with tf.GradientTape() as tape:
            g_loss = self._g_loss(self._g_forward(z, labels, True), labels)
        grads = tape.gradient(g_loss, self.trainable["generator"])
        self._apply_generator(grads, tf.shape(z)[0])
        return g_loss

    def _gradients_graph(self, real, z, labels=None):
        with tf.GradientTape() as g_tape:
            fake = self._g_forward(z, labels, True)
            with g_tape.stop_recording():
                d_loss, d_grads = self._d_loss_and_grads(real, fake, labels)
            g_loss = self._g_loss(fake, labels)
        g_grads = g_tape.gradient(g_loss, self.trainable["generator"])
        return d_loss, g_loss, d_grads, g_grads

    def _generate_graph(self, z, labels=None):
        """The averaged generator when the run has one, else G; inference mode."""
        return self._g_forward(z, labels, False, self.generator_ema)

    def _discriminate_graph(self, images, labels=None):
        return self._d_forward(images, labels, False)

    # --- arguments across the seam ---
    def _args(self, *arrays, labels=None) -> list:
        tensors = [tf.convert_to_tensor(np.asarray(a), dtype=self.float_dtype) for a in arrays]
        labels = check_labels(labels, tensors[-1].shape[0], self.config.num_classes)
        if labels is None:
            return tensors
        tensors.append(tf.convert_to_tensor(labels, dtype=tf.int32))
        return tensors

    # --- training ---
    def _check_pair(self, real, z) -> None:
        if len(real) != len(z):
            raise ValueError(f"real batch ({len(real)}) and noise batch ({len(z)}) differ in size")
        check_groups(len(z), self.config)

    def _private_args(self, real, z, labels) -> list:
        """A private step's arguments: real images (any count), z, and when conditional the real
        images' labels then the fakes' (`labels` a pair, or one array when the counts agree)."""
        check_groups(len(z), self.config)
        tensors = [tf.convert_to_tensor(np.asarray(a), dtype=self.float_dtype) for a in (real, z)]
        if not self.conditional:
            return tensors
        real_labels, fake_labels = labels if isinstance(labels, tuple) else (labels, labels)
        for values, count in ((real_labels, len(real)), (fake_labels, len(z))):
            values = check_labels(values, count, self.config.num_classes)
            tensors.append(tf.convert_to_tensor(values, dtype=tf.int32))
        return tensors

    def compute_private_gradients(self, real, z, labels=None, noise: bool = True) -> dict:
        if not self.config.private:
            raise ValueError("compute_private_gradients needs a private config (dp_noise > 0)")
        saved = [(v, v.numpy()) for v in self._side_effect_variables() if v is not self.rng_state["rng/tf/dp_noise/state"]]
        d_loss, grads = self._private_gradients_fn[bool(noise)](*self._private_args(real, z, labels))
        for variable, value in saved:
            variable.assign(value)
        names = spec.trainable_names(self.config, "discriminator")
        return {"d_loss": float(d_loss), "grads": {n: g.numpy() for n, g in zip(names, grads)}}

    def set_dp_noise(self, multiplier: float) -> None:
        self.dp_noise.assign(float(multiplier))

    def train_step(self, real, z, labels=None):
        if self.config.private:
            d_loss, g_loss = self._train_step_fn(*self._private_args(real, z, labels))
            return float(d_loss), float(g_loss)
        self._check_pair(real, z)
        d_loss, g_loss = self._train_step_fn(*self._args(real, z, labels=labels))
        return float(d_loss), float(g_loss)

    def train_step_rebalanced(self, real, z, labels=None, margin: float | None = None,
                              max_steps: int | None = None) -> tuple[float, float, int, int]:
        """train_step and the margin-balancing loop of service.trainer.rebalance in one compiled
        call (the loop stays on the device: no loss read back per decision; the same decisions,
        tests/test_tf_fused_rebalance.py): (d_loss, g_loss, extra_d, extra_g). margin and
        max_steps default to the config's. Not for a private run, whose extra D steps each
        draw a fresh real sample and are counted by the accountant (the trainer's loop)."""
        if self.config.private:
            raise ValueError("a private run rebalances in the trainer: each extra D step samples afresh")
        self._check_pair(real, z)
        margin = self.config.margin if margin is None else float(margin)
        max_steps = self.config.max_rebalance_steps if max_steps is None else int(max_steps)
        limits = self._limits.get((margin, max_steps))
        if limits is None:  # the scalars as tensors once, not on every step
            limits = self._limits[(margin, max_steps)] = (tf.constant(margin, tf.float64), tf.constant(max_steps, tf.int32))
        d_loss, g_loss, extra_d, extra_g = self._rebalanced_step_fn(*limits, *self._args(real, z, labels=labels)).numpy()
        return float(d_loss), float(g_loss), int(extra_d), int(extra_g)

    def d_step(self, real, z, labels=None):
        if self.config.private:
            return float(self._d_step_fn(*self._private_args(real, z, labels)))
        self._check_pair(real, z)
        return float(self._d_step_fn(*self._args(real, z, labels=labels)))

    def g_step(self, z, labels=None):
        check_groups(len(z), self.config)
        return float(self._g_step_fn(*self._args(z, labels=labels)))

    # --- inference ---
    def _in_chunks(self, fn, inputs, labels):
        outputs = []
        chunk = whole_groups_chunk(GENERATE_CHUNK, self.config.d_group_size)
        for start in range(0, max(len(inputs), 1), chunk):
            part_labels = None if labels is None else np.asarray(labels)[start : start + chunk]
            outputs.append(fn(*self._args(inputs[start : start + chunk], labels=part_labels)).numpy())
        return np.concatenate(outputs)

    def generate(self, z, labels=None):
        return self._in_chunks(self._generate_fn, np.asarray(z), labels).astype(np.float32, copy=False)

    def discriminate(self, images, labels=None):
        """Logits in the backend's dtype (float64 in float64 runs, for parity checks); one per
        group of `pack` consecutive images."""
        check_groups(len(images), self.config)
        return self._in_chunks(self._discriminate_fn, np.asarray(images), labels)

    def compute_gradients(self, real, z, labels=None):
        # G's training-mode forward moves BN statistics; dropout and DiffAugment draw random
        # numbers: put all of them back.
        saved = [(v, v.numpy()) for v in self._side_effect_variables()]
        d_loss, g_loss, d_grads, g_grads = self._gradients_fn(*self._args(real, z, labels=labels))
        for variable, value in saved:
            variable.assign(value)
        grads = {}
        for net, net_grads in (("discriminator", d_grads), ("generator", g_grads)):
            for name, grad in zip(spec.trainable_names(self.config, net), net_grads):
                grads[name] = grad.numpy()
        return {"d_loss": float(d_loss), "g_loss": float(g_loss), "grads": grads}

    def _side_effect_variables(self) -> list:
        moving = [v for n, v in self.weights.items() if not spec.is_trainable(n)]
        return moving + list(self.rng_state.values())

    # --- state ---
    def get_weights(self):
        return {name: v.numpy() for name, v in self.weights.items()}

    def set_weights(self, weights):
        check_weights(spec.weight_shapes(self.config), weights, "weights")
        for name, variable in self.weights.items():
            variable.assign(np.asarray(weights[name], dtype=numpy_dtype(variable)))

    def get_optimizer_state(self):
        return {name: np.asarray(v.numpy()) for name, v in self.optimizer_state.items()}

    def set_optimizer_state(self, state):
        check_weights(spec.optimizer_state_shapes(self.config), state, "optimizer state")
        for name, variable in self.optimizer_state.items():
            variable.assign(np.asarray(state[name], dtype=numpy_dtype(variable)))

    def get_rng_state(self):
        return {name: v.numpy() for name, v in self.rng_state.items()}

    def set_rng_state(self, state):
        """Restores this backend's entries ("rng/tf/..."); other backends' entries are ignored."""
        own = {k: v for k, v in state.items() if k.startswith("rng/tf/")}
        check_weights({n: tuple(v.shape) for n, v in self.rng_state.items()}, own, "rng state")
        for name, variable in self.rng_state.items():
            variable.assign(np.asarray(own[name], dtype=numpy_dtype(variable)))

    def set_learning_rate_scale(self, scale: float) -> None:
        self.learning_rate_scale.assign(float(scale))  # read by the compiled steps: no retrace

    def set_condition_strength(self, strength: float) -> None:
        self.condition_strength.assign(float(strength))

    # --- inspection ---
    def trace_counts(self) -> dict[str, int]:
        """How many times each compiled step has been traced (1 after use means no retracing)."""
        return {
            "train_step": self._train_step_fn.experimental_get_tracing_count(),
            **({} if self.config.private else
               {"train_step_rebalanced": self._rebalanced_step_fn.experimental_get_tracing_count()}),
            "d_step": self._d_step_fn.experimental_get_tracing_count(),
            "g_step": self._g_step_fn.experimental_get_tracing_count(),
            "generate": self._generate_fn.experimental_get_tracing_count(),
            "discriminate": self._discriminate_fn.experimental_get_tracing_count(),
            "compute_gradients": self._gradients_fn.experimental_get_tracing_count(),
        }
