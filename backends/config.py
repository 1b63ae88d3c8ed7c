"""The one configuration both backends and the service read.

A `GANConfig` fixes the model (architecture spec inputs), the optimiser, the loss options and
the training-loop knobs. It round-trips through JSON (`to_dict` / `from_dict`) so a run
directory's config.json rebuilds the same model in either backend.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

SUPPORTED_IMAGE_SIZES = (32, 64, 128, 256)
D_CONDITIONING = ("concat", "projection")
UPSAMPLE = ("nearest", "bilinear")
G_CONDITIONING = ("concat", "cbn")


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the field."""


@dataclass
class GANConfig:
    # --- architecture (see backends.spec) ---
    image_size: int = 64
    latent_dim: int = 100
    width: int = 128  # filters of the narrowest hidden conv layer; the thesis uses 128
    max_width: int = 1024  # cap on any layer's filters; the thesis's widest layer is 1024
    # D's narrowest conv filters when D should be wider or narrower than G; 0: `width`. D's cap
    # scales with it (max_width * d_width / width), so D keeps its shape at another capacity.
    d_width: int = 0
    kernel_size: int = 4
    channels: int = 3
    # How G doubles its maps before each convolution: "nearest" (the thesis's UpSampling2D) or
    # "bilinear" (each new pixel 3/4 of its nearest source and 1/4 of the next, edges clamped:
    # Keras's UpSampling2D(interpolation="bilinear")); nearest copies leave each coarse map's
    # block edges at fixed places in every image (docs/presets.md, "the lattice")
    upsample: str = "nearest"
    num_classes: int = 0  # 0: unconditional; else conditional on this many classes (ISIC 2017: 3)
    # How a conditional D reads the class (backends.spec): "concat", one-hot planes joined to its
    # input (the thesis's); "projection", the inner product of a learned class embedding with
    # D's last features added to its logit (Miyato & Koyama 2018)
    d_conditioning: str = "concat"
    # How a conditional G reads the class: "concat", the one-hot joined to z; "cbn",
    # class-conditional batch norm as well: after each of G's batch norms a per-class gain and
    # bias (BigGAN's), x * (1 + gain[y]) + bias[y], both starting at zero
    g_conditioning: str = "concat"
    dropout: float = 0.2  # discriminator dropout rate; 0 turns it off
    leaky_slope: float = 0.2
    pack: int = 1  # PacGAN: D judges groups of this many images stacked along channels; 1: off
    minibatch_std: int = 0  # D's minibatch-stddev feature over groups of this many inputs; 0: off
    # side of G's first feature map (and of D's last); 0: the thesis's rule (`base_size`)
    base_side: int = 0
    spectral_norm: bool = False  # D's kernels divided by their largest singular value (Miyato et al. 2018)
    # G adds a per-pixel noise map, scaled by a learned per-channel strength, after the
    # convolution of each upsampling block but the last (StyleGAN's noise inputs; backends.spec)
    noise_inputs: bool = False
    # --- noise ---
    noise: str = "uniform"  # "uniform" in [-1, 1] (the thesis) or "normal"
    # --- optimiser: Adam, Keras 3 semantics ---
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta_1: float = 0.0005  # as the thesis prints it
    beta_2: float = 0.999
    epsilon: float = 1e-8  # the thesis's Adam(epsilon=1e-08)
    # both rates fall linearly to 0 over the planned training (epochs or time budget), starting
    # at this fraction of it; 1.0 keeps them constant (service.trainer.lr_scale)
    lr_decay_from: float = 1.0
    # --- generator weight averaging (spec.ema_beta) ---
    # half-life of the average of G's weights, in thousands of images G has trained on (as
    # StyleGAN2-ADA's ema_kimg); 0 turns it off. generate, sample grids and validation use the
    # average when it is on.
    ema_kimg: float = 0.0
    # early in training the half-life is at most this share of the images seen so far (0: none)
    ema_rampup: float = 0.05
    # --- conditioning schedule (service.trainer) ---
    # Transitional conditioning (Shahbazi et al. 2022): in training, the one-hot class code both
    # networks read is scaled by min(1, images seen / (condition_ramp_kimg * 1000)), so a run
    # starts unconditional and fades the class in; 0: conditional from the start. Inference
    # always reads the whole code.
    condition_ramp_kimg: float = 0.0
    # real batches drawn with equal weight per class (with replacement, an epoch's worth per
    # epoch) instead of a plain shuffle; the fakes take the same labels
    class_balanced: bool = False
    # An auxiliary class loss (AC-GAN, Odena et al. 2017) of this weight: D has K more outputs,
    # class logits trained by cross-entropy on the real images' classes, and G is trained to
    # make images D's classifier puts in their class; 0: off
    class_loss: float = 0.0
    # --- differential privacy (DP-SGD on D's gradients from real images; service.privacy) ---
    # noise multiplier sigma: each real example's gradient of D's loss is clipped to L2 norm
    # dp_clip over all of D's trainable weights, and N(0, (sigma * dp_clip)^2) noise is added to
    # their sum; 0: off (an ordinary run)
    dp_noise: float = 0.0
    dp_clip: float = 1.0  # C, the per-example gradient norm bound
    dp_delta: float = 1e-5  # the guarantee's delta; must be below 1/N for the N training images
    dp_epsilon: float = 0.0  # budget: training stops before it would spend more; 0: no budget
    # --- loss ---
    label_smoothing: float = 0.0  # one-sided: real target is 1 - label_smoothing
    diffaugment: str = ""  # comma list of "color", "translation", "cutout"; empty: off
    # --- training loop (service.trainer) ---
    batch_size: int = 100
    margin: float = 0.1
    max_rebalance_steps: int = 10
    # --- numerics and randomness ---
    dtype: str = "float32"  # "float64" only for gradient checks in the numpy backend
    mixed_precision: bool = False  # tf backend only: bfloat16 compute where supported
    seed: int = 0
    preset: str = "custom"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.image_size not in SUPPORTED_IMAGE_SIZES:
            raise ConfigError(
                f"image_size must be one of {', '.join(map(str, SUPPORTED_IMAGE_SIZES))}, "
                f"got {self.image_size}"
            )
        for name in ("latent_dim", "width", "max_width", "kernel_size", "channels", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.upsample not in UPSAMPLE:
            raise ConfigError(f"upsample must be one of {', '.join(UPSAMPLE)}, got {self.upsample!r}")
        if int(self.d_width) < 0:
            raise ConfigError(f"d_width must be 0 (as width) or a positive integer, got {self.d_width}")
        if int(self.pack) < 1:
            raise ConfigError(f"pack must be a positive integer, got {self.pack}")
        if self.batch_size % self.pack:
            raise ConfigError(f"batch_size ({self.batch_size}) must be a multiple of pack ({self.pack})")
        if int(self.minibatch_std) < 0 or int(self.minibatch_std) == 1:
            raise ConfigError(f"minibatch_std must be 0 (off) or a group size >= 2, got {self.minibatch_std}")
        if self.minibatch_std and (self.batch_size // self.pack) % self.minibatch_std:
            per = f"batch_size / pack ({self.batch_size // self.pack})" if self.pack > 1 else f"batch_size ({self.batch_size})"
            raise ConfigError(
                f"{per} must be a multiple of minibatch_std ({self.minibatch_std}), the group of images "
                "D's minibatch standard deviation compares"
            )
        side = int(self.base_side)
        if side and (side < 2 or side & (side - 1) or self.image_size // side < 4):
            raise ConfigError(
                f"base_side must be 0 (the thesis's rule) or a power of two >= 2 at most a quarter "
                f"of image_size ({self.image_size}), got {self.base_side}"
            )
        for name in ("spectral_norm", "noise_inputs"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.d_conditioning not in D_CONDITIONING:
            raise ConfigError(f"d_conditioning must be one of {', '.join(D_CONDITIONING)}, got {self.d_conditioning!r}")
        if self.g_conditioning not in G_CONDITIONING:
            raise ConfigError(f"g_conditioning must be one of {', '.join(G_CONDITIONING)}, got {self.g_conditioning!r}")
        if self.d_conditioning == "projection" and self.pack > 1:
            raise ConfigError("d_conditioning 'projection' needs pack 1: a packed input holds several images' classes")
        if not self.condition_ramp_kimg >= 0:
            raise ConfigError(f"condition_ramp_kimg must be >= 0, got {self.condition_ramp_kimg}")
        if not isinstance(self.class_balanced, bool):
            raise ConfigError(f"class_balanced must be true or false, got {self.class_balanced!r}")
        if not self.class_loss >= 0:
            raise ConfigError(f"class_loss must be >= 0 (0: off), got {self.class_loss}")
        if self.class_loss > 0 and self.num_classes > 0 and self.pack > 1:
            raise ConfigError("class_loss needs pack 1: a packed input holds several images' classes")
        self._validate_privacy()
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.noise not in ("uniform", "normal"):
            raise ConfigError(f"noise must be 'uniform' or 'normal', got {self.noise!r}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        for part in self.diffaugment_policy:
            if part not in ("color", "translation", "cutout"):
                raise ConfigError(
                    f"diffaugment takes color, translation, cutout; got {part!r}"
                )
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.margin < 0 or self.max_rebalance_steps < 0:
            raise ConfigError("margin and max_rebalance_steps must be >= 0")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be in [0, 2^63), got {self.seed!r}")
        for name in ("lr_g", "lr_d", "epsilon"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0")
        for name in ("ema_kimg", "ema_rampup"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.lr_decay_from <= 1.0:
            raise ConfigError(f"lr_decay_from must be in [0, 1] (1: constant rates), got {self.lr_decay_from}")
        for name in ("beta_1", "beta_2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1)")

    def _validate_privacy(self) -> None:
        if not self.dp_noise >= 0:
            raise ConfigError(f"dp_noise must be >= 0 (0: no differential privacy), got {self.dp_noise}")
        if not self.dp_clip > 0:
            raise ConfigError(f"dp_clip must be > 0, got {self.dp_clip}")
        if not 0.0 < self.dp_delta < 1.0:
            raise ConfigError(f"dp_delta must be in (0, 1) (and below 1/N at training time), got {self.dp_delta}")
        if not self.dp_epsilon >= 0:
            raise ConfigError(f"dp_epsilon must be >= 0 (0: no budget), got {self.dp_epsilon}")
        if not self.private:
            if self.dp_epsilon:
                raise ConfigError("dp_epsilon needs dp_noise > 0: a budget is spent by noisy steps only")
            return
        # a private D judges each example on its own: no statistic over the batch, no mixing
        if self.minibatch_std:
            raise ConfigError("dp_noise needs minibatch_std 0: D's minibatch statistic mixes examples")
        if self.pack > 1:
            raise ConfigError("dp_noise needs pack 1: a packed input mixes examples")
        if self.class_balanced:
            raise ConfigError("dp_noise needs class_balanced false: private real batches are Poisson samples")
        if self.class_loss > 0 and self.num_classes > 0:
            raise ConfigError("dp_noise with class_loss is not supported: the class loss's real-image gradients "
                              "would need clipping too")

    @property
    def private(self) -> bool:
        """Whether D trains with differential privacy (dp_noise > 0)."""
        return self.dp_noise > 0

    @property
    def class_outputs(self) -> int:
        """D's class logits beside its real/fake logit: K with the auxiliary class loss, else 0."""
        return self.num_classes if self.class_loss > 0 else 0

    @property
    def diffaugment_policy(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.diffaugment.split(",") if p.strip())

    @property
    def d_group_size(self) -> int:
        """Images D judges together: `pack` per input, `minibatch_std` inputs per statistic. Any
        batch D sees must be a multiple of it."""
        return self.pack * max(self.minibatch_std, 1)

    @property
    def num_upsamplings(self) -> int:
        """Upsampling blocks in G (= stride-2 conv blocks in D). The thesis's rule: 4 up to 64x64,
        then one per doubling; with `base_side`, as many as take that side to the image size."""
        if self.base_side:
            return int(math.log2(self.image_size // self.base_side))
        return max(4, int(math.log2(self.image_size // 4)))

    @property
    def base_size(self) -> int:
        """Side of G's first feature map (the thesis: 4 at 64x64, 2 at 32x32; else `base_side`)."""
        return self.image_size // (2**self.num_upsamplings)

    @property
    def noise_map_sides(self) -> tuple[int, ...]:
        """Sides of G's per-pixel noise maps, one per upsampling block that ends in a batch norm
        (every block but the output one), coarse to fine; () without noise inputs."""
        if not self.noise_inputs:
            return ()
        return tuple(self.base_size * 2**block for block in range(1, self.num_upsamplings))

    @property
    def noise_map_size(self) -> int:
        """Numbers in all of G's noise maps together (0 without noise inputs)."""
        return sum(side * side for side in self.noise_map_sides)

    @property
    def z_size(self) -> int:
        """Width of G's noise vector z: the latent, then the noise maps (backends.noise)."""
        return self.latent_dim + self.noise_map_size

    def replace(self, **changes) -> "GANConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GANConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**values)
