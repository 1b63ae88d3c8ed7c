"""The thesis's training recipe in Keras 3: the baseline the fused step is measured against
(bench_tf.py on CPU, gpu_check.py on a GPU). Not collected by pytest."""

from __future__ import annotations

import numpy as np

import backends.tf  # noqa: F401  (before TensorFlow itself: it sets TF start-up options)

import keras  # noqa: E402

from backends.config import GANConfig  # noqa: E402
from backends.tf.networks import build_network  # noqa: E402


class ThesisRecipe:
    """The thesis's training recipe (its GAN.py) in Keras 3, as the baseline the fused step is measured against.

    Per batch: `generator.predict(z)`, then `discriminator.train_on_batch([real; fake], [1; 0])`,
    then `combined.train_on_batch(z, 1)` on the "generator containing discriminator" model with
    D frozen. G's forward pass runs twice per step (predict, then inside the combined model).
    The networks are built from the same spec with the stock Keras layers the thesis used
    (UpSampling2D then Conv2D, not the backend's UpSampleConv2D); D outputs logits and
    the loss is binary cross-entropy from logits (the thesis put a sigmoid in D and used
    'binary_crossentropy': the same function). Compiled with Keras's defaults, as the thesis did.
    """

    def __init__(self, config: GANConfig):
        stock = config.replace(extra={"fuse_upsample_conv": False})  # UpSampling2D + Conv2D, as the thesis
        self.generator = build_network(stock, "generator")
        self.discriminator = build_network(stock, "discriminator")
        self.combined = keras.Sequential([self.generator, self.discriminator], name="generator_containing_discriminator")

        def adam(learning_rate):
            return keras.optimizers.Adam(learning_rate, beta_1=config.beta_1, beta_2=config.beta_2, epsilon=config.epsilon)

        loss = keras.losses.BinaryCrossentropy(from_logits=True)
        self.discriminator.trainable = False
        self.combined.compile(loss=loss, optimizer=adam(config.lr_g))
        self.discriminator.trainable = True
        self.discriminator.compile(loss=loss, optimizer=adam(config.lr_d))

    def train_step(self, real: np.ndarray, z: np.ndarray) -> tuple[float, float]:
        batch = len(real)
        fake = self.generator.predict(z, verbose=0)  # as GAN.py: Keras's default batch_size (32)
        targets = np.concatenate([np.ones(batch), np.zeros(batch)]).astype(np.float32)
        self.discriminator.trainable = True
        d_loss = self.discriminator.train_on_batch(np.concatenate([real, fake]), targets)
        self.discriminator.trainable = False  # Keras 2 froze D at compile time; Keras 3 reads the flag
        g_loss = self.combined.train_on_batch(z, np.ones(batch, np.float32))
        return float(d_loss), float(g_loss)
