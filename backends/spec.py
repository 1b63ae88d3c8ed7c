"""The architecture as data, and the weight names both backends share.

`generator_spec(cfg)` and `discriminator_spec(cfg)` return a list of `Layer` records; each
backend turns the list into its own layers, in order. Parameterised layers carry a unique
`name`; a weight is called "<net>/<layer name>/<param>", e.g. "generator/conv_1/kernel".

Parameters per layer kind (shapes follow Keras):
  dense: kernel (in, units), bias (units,)
  conv:  kernel (k, k, cin, filters), bias (filters,)
  bn:    gamma, beta, moving_mean, moving_variance, each (channels,); the last two are not
         trainable (moving averages), but they are weights and travel in checkpoints.
  With `spectral_norm`, D's dense and conv layers also hold sn_u (units,) or (filters,), the
  power iteration's vector: not trainable, a weight that travels in checkpoints.
  noise: strength (channels,), trainable, initialised to zero (StyleGAN's noise strengths).
  projection: as dense, plus embedding (classes, in), initialised to zero.
  class_affine: gain (classes, channels), bias (classes, channels), initialised to zero.

Optimizer state: "opt/<net>/m/<weight name>", "opt/<net>/v/<weight name>" for each trainable
weight of <net>, and "opt/<net>/iterations" (int64 scalar).

Semantics both backends follow:
- G's input is z (plus the one-hot label when conditional); D's input is the image (plus the
  one-hot label broadcast to extra channels when conditional). D outputs one logit.
- With `noise_inputs` (StyleGAN's noise inputs), z is the latent then the per-pixel noise maps
  (GANConfig.z_size; backends.noise draws them). G's first layer, "noise_inputs", takes the
  maps out of its input vector [latent | maps | one-hot label] (map j: the next side_j * side_j
  values, row-major, as a (side_j, side_j, 1) image) and passes [latent | one-hot label] on to
  dense_0. In each upsampling block but the last, a "noise_<i>" layer right after the
  convolution (before the batch norm) adds map i-1 times its strength to every channel:
  out[b, y, x, c] = in[b, y, x, c] + map[b, y, x] * strength[c]. The maps are G's input, in
  training and in inference alike, so an image depends on its z alone.
- G's "upsample_<i>" layers double each side by `interpolation` ("nearest", or "bilinear":
  along each axis output 2i = 3/4 in[i] + 1/4 in[i - 1], output 2i + 1 = 3/4 in[i] + 1/4
  in[i + 1], indices clamped to the edge, rows then columns; Keras's bilinear UpSampling2D).
- Conditioning (num_classes K > 0). The backends join the class code c (K values: the
  one-hot label, times the ramp's strength in training, GANConfig.condition_ramp_kimg) to
  each network's input as above, whatever the mechanism; the mechanism is in the layers:
  with `g_conditioning` "cbn", G's "class_input" layer (after noise_inputs, if any) takes c
  off the end of its input [latent | c] and passes the latent on, and a "class_affine_<i>"
  layer after each batch norm computes x * (1 + c @ gain) + c @ bias, gain and bias (K,
  channels) starting at zero, broadcast over H and W (BigGAN's class-conditional batch
  norm). With `d_conditioning` "projection", D's "class_split" layer takes c from its input's
  label planes (pixel 0, 0) and passes the image channels on, and D's output layer
  "dense_out" (kind "projection") computes h @ kernel + bias + sum(h * (c @ embedding)) on
  the flattened features h, embedding (K, features) starting at zero (Miyato & Koyama 2018).
  With `class_loss` w > 0 (AC-GAN), D's output has 1 + K units: the real/fake logit (the
  projection adds to it alone), then K class logits. D's loss adds w times the mean softmax
  cross-entropy of the real images' class logits against their labels (the fakes' class logits
  take no loss in D); G's loss adds w times that of the fakes' class logits against the labels
  they were made for. `discriminate` returns the real/fake logit.
- With `pack` p > 1 (PacGAN, Lin et al. 2018), D's input is p consecutive images of the batch
  (each with its label planes) concatenated along channels, image j of a group taking
  channels j*C' .. (j+1)*C' - 1; D gives one logit per group. D's step packs real images with
  real and fakes with fakes (B is a multiple of p), so its targets are [1 - smoothing] * B/p
  then [0] * B/p.
- With `minibatch_std` g > 0 (Karras et al. 2018), D appends before its flatten one channel
  holding, for each group of g consecutive inputs, the standard deviation of every feature
  over the group (biased, plus 1e-8 under the root) averaged over H, W and C. D's step sees
  [real; fake], and B is a multiple of g, so no group mixes real and fake images; a batch
  D judges must split into whole groups.
- Every forward pass of G in training mode (d_step, g_step, train_step) uses batch statistics
  and updates G's BN moving averages once; `generate` runs in inference mode (moving
  averages), so an image depends on its own noise only.
- With `spectral_norm` (Miyato et al. 2018), each of D's dense and conv layers computes with
  kernel / sigma, where M = kernel.reshape(-1, units) and sigma = |M sn_u| with sn_u held
  constant (it is not differentiated). sn_u starts as the unit vector of equal entries; every
  D step (alone or in train_step, and in compute_gradients' D pass) first refines it by one
  power iteration, v = unit(M sn_u), sn_u = unit(M^T v), with unit(x) = x / (|x| + 1e-12).
  G's steps and inference use sn_u as it stands.
- D's step sees [real; fake] as one batch of 2B, targets [1 - label_smoothing; 0];
  G's step targets 1. Both losses are mean binary cross-entropy from logits.
- Differential privacy (config.dp_noise sigma > 0; Abadi et al. 2016). D's step (alone or in
  train_step) takes a real batch of any size R >= 0 (a Poisson sample) beside B = len(z) fakes,
  and the batch's labels may be a pair (real's, fakes'). D runs forward on [real; fake] as in
  an ordinary step (the same dropout and augmentation draws); each real example's gradient of
  its own term 0.5 * BCE(logit, 1 - smoothing) is clipped to L2 norm dp_clip over all of D's
  trainable weights jointly, the clipped gradients are summed, N(0, (sigma * dp_clip)^2) is
  added to every coordinate (from the backend's own checkpointed noise stream), and the sum
  is divided by config.batch_size (the expected R, not the drawn one); the fakes' gradient of
  0.5 * their mean BCE is added unclipped. Then Adam as usual. With R = B and a clip above
  every norm and no noise this is the ordinary step's gradient. The loss a private D step
  returns is its mean BCE on the fakes: the real images' loss is never released. G's steps
  are unchanged (they read D's weights only).
- With `ema_kimg` > 0 (generator weight averaging, as StyleGAN2-ADA's G_ema), a second copy
  of G's weights, "generator_ema/<layer>/<param>", starts equal to G's and after every G step
  (alone or in train_step) moves toward them: w_ema += (1 - beta) (w - w_ema), with beta =
  `ema_beta(cfg, images G had trained on before the step, the step's batch)`. Every weight of
  G is averaged, its BN moving mean and variance included: the average's BN statistics are
  the same average of G's statistics, which follow G's weights closely enough that the
  averaged network's own statistics are not re-measured. `generate` runs the averaged
  generator (inference mode); training, `compute_gradients` and D see G itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.config import GANConfig

NETS = ("generator", "discriminator")
# Batch normalisation as Keras's defaults, which the thesis's model used: moving averages with
# momentum 0.99, epsilon 1e-3 under the root; batch statistics (biased variance) in training.
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
EMA_NET = "generator_ema"  # the averaged generator's weights: G's layer names under this prefix


@dataclass(frozen=True)
class Layer:
    # dense conv upsample bn relu leaky_relu tanh dropout reshape flatten minibatch_std, and
    # with noise inputs noise_inputs (the split of G's input) and noise (a map's add), and for
    # conditioning class_input, class_affine (G) and class_split, projection (D)
    kind: str
    name: str
    args: dict = field(default_factory=dict)

    def __hash__(self):  # args is a dict; hash on kind and name, which are unique
        return hash((self.kind, self.name))


def _filters(cfg: GANConfig, level: int) -> int:
    """Filters at a level counted from the image side: level 0 is `width`, doubling up to max."""
    return min(cfg.width * 2**level, cfg.max_width)


def _d_filters(cfg: GANConfig, level: int) -> int:
    """D's filters: as `_filters` from `d_width` when it is set, the cap scaled with it."""
    if not cfg.d_width:
        return _filters(cfg, level)
    return min(cfg.d_width * 2**level, max(1, cfg.max_width * cfg.d_width // cfg.width))


def _bn_args(channels: int) -> dict:
    return {"channels": channels, "momentum": BN_MOMENTUM, "epsilon": BN_EPSILON}


def fuses_with_next(layers: list[Layer], index: int) -> bool:
    """Whether layer `index` is a 2x nearest upsampling straight into a stride-1 'same' conv:
    both backends compute that pair as one fused layer (the same function, with fewer
    multiply-adds; see backends/tf/networks.py UpSampleConv2D and core.UpSampleConv2D)."""
    layer = layers[index]
    if layer.kind != "upsample" or layer.args["factor"] != 2 or index + 1 >= len(layers):
        return False
    if layer.args.get("interpolation", "nearest") != "nearest":
        return False
    after = layers[index + 1]
    return after.kind == "conv" and after.args["stride"] == 1 and after.args["padding"] == "same"


NOISE_KINDS = ("noise_inputs", "noise")
CLASS_KINDS = ("class_input", "class_affine", "class_split", "projection")  # they read the class code
FUNCTIONAL_KINDS = NOISE_KINDS + CLASS_KINDS  # kinds with a second input: a functional model in Keras


def constructor_for(constructors: dict, layer: Layer, net: str, backend: str):
    """`constructors[layer.kind]`: a backend's function that makes its own layer for a spec layer
    (its table of layer kinds); a kind the table lacks is one error naming it."""
    if layer.kind not in constructors:
        known = ", ".join(sorted(constructors))
        raise ValueError(f"{net}/{layer.name}: the {backend} backend has no layer kind {layer.kind!r} (it has {known})")
    return constructors[layer.kind]


def generator_spec(cfg: GANConfig) -> list[Layer]:
    n = cfg.num_upsamplings
    s = cfg.base_size
    c0 = _filters(cfg, n - 1)
    layers = []
    if cfg.noise_inputs:
        args = {"latent": cfg.latent_dim, "sides": cfg.noise_map_sides, "classes": cfg.num_classes}
        layers.append(Layer("noise_inputs", "noise_inputs", args))
    cbn = cfg.num_classes > 0 and cfg.g_conditioning == "cbn"
    if cbn:
        layers.append(Layer("class_input", "class_input", {"classes": cfg.num_classes}))
    layers += [
        Layer("dense", "dense_0", {"units": c0 * s * s, "in": cfg.latent_dim + (0 if cbn else cfg.num_classes)}),
        Layer("bn", "bn_0", _bn_args(c0 * s * s)),
        *([Layer("class_affine", "class_affine_0", {"channels": c0 * s * s, "classes": cfg.num_classes})] if cbn else []),
        Layer("relu", "relu_0"),
        Layer("reshape", "reshape_0", {"shape": (s, s, c0)}),
    ]
    cin = c0
    for i in range(1, n + 1):
        last = i == n
        cout = cfg.channels if last else _filters(cfg, n - 1 - i)
        layers.append(Layer("upsample", f"upsample_{i}", {"factor": 2, "interpolation": cfg.upsample}))
        layers.append(
            Layer(
                "conv",
                f"conv_{i}",
                {"filters": cout, "in": cin, "kernel": cfg.kernel_size, "stride": 1, "padding": "same"},
            )
        )
        if last:
            layers.append(Layer("tanh", f"tanh_{i}"))
        else:
            if cfg.noise_inputs:  # map i-1 has this block's side, s * 2**i
                layers.append(Layer("noise", f"noise_{i}", {"channels": cout, "map": i - 1, "side": s * 2**i}))
            layers.append(Layer("bn", f"bn_{i}", _bn_args(cout)))
            if cbn:
                layers.append(Layer("class_affine", f"class_affine_{i}", {"channels": cout, "classes": cfg.num_classes}))
            layers.append(Layer("relu", f"relu_{i}"))
        cin = cout
    return layers


def discriminator_spec(cfg: GANConfig) -> list[Layer]:
    n = cfg.num_upsamplings
    layers = []
    projection = cfg.num_classes > 0 and cfg.d_conditioning == "projection"
    cin = (cfg.channels + cfg.num_classes) * cfg.pack
    if projection:
        layers.append(Layer("class_split", "class_split", {"channels": cfg.channels, "classes": cfg.num_classes}))
        cin = cfg.channels
    normed = {"spectral_norm": True} if cfg.spectral_norm else {}  # an arg of D's conv and dense layers
    for i in range(n):
        cout = _d_filters(cfg, i)
        args = {"filters": cout, "in": cin, "kernel": cfg.kernel_size, "stride": 2, "padding": "same", **normed}
        layers.append(Layer("conv", f"conv_{i}", args))
        layers.append(Layer("leaky_relu", f"leaky_relu_{i}", {"slope": cfg.leaky_slope}))
        layers.append(Layer("dropout", f"dropout_{i}", {"rate": cfg.dropout}))
        cin = cout
    side = cfg.image_size // 2**n
    if cfg.minibatch_std:
        layers.append(Layer("minibatch_std", "minibatch_std", {"group": cfg.minibatch_std}))
        cin += 1
    layers.append(Layer("flatten", "flatten"))
    units = 1 + cfg.class_outputs  # the real/fake logit, then the auxiliary class logits if any
    if projection:
        args = {"units": units, "in": side * side * cin, "classes": cfg.num_classes, **normed}
        layers.append(Layer("projection", "dense_out", args))
    else:
        layers.append(Layer("dense", "dense_out", {"units": units, "in": side * side * cin, **normed}))
    return layers


def net_spec(cfg: GANConfig, net: str) -> list[Layer]:
    if net == "generator":
        return generator_spec(cfg)
    if net == "discriminator":
        return discriminator_spec(cfg)
    raise ValueError(f"unknown network {net!r}")


def layer_param_shapes(layer: Layer) -> dict[str, tuple[int, ...]]:
    a = layer.args
    if layer.kind in ("dense", "conv", "projection"):
        units = a["filters"] if layer.kind == "conv" else a["units"]
        kernel = (a["kernel"], a["kernel"], a["in"], units) if layer.kind == "conv" else (a["in"], units)
        shapes = {"kernel": kernel, "bias": (units,)}
        if layer.kind == "projection":
            shapes["embedding"] = (a["classes"], a["in"])
        if a.get("spectral_norm"):
            shapes["sn_u"] = (units,)
        return shapes
    if layer.kind == "class_affine":
        return {"gain": (a["classes"], a["channels"]), "bias": (a["classes"], a["channels"])}
    if layer.kind == "bn":
        c = (a["channels"],)
        return {"gamma": c, "beta": c, "moving_mean": c, "moving_variance": c}
    if layer.kind == "noise":
        return {"strength": (a["channels"],)}
    return {}


NON_TRAINABLE = ("moving_mean", "moving_variance", "sn_u")


def weight_shapes(cfg: GANConfig) -> dict[str, tuple[int, ...]]:
    """Every weight of both networks, "<net>/<layer>/<param>" -> shape, in spec order, then the
    averaged generator's when `ema_kimg` > 0."""
    shapes = {}
    for net in NETS:
        for layer in net_spec(cfg, net):
            for param, shape in layer_param_shapes(layer).items():
                shapes[f"{net}/{layer.name}/{param}"] = shape
    if cfg.ema_kimg > 0:
        for name, shape in list(shapes.items()):
            if name.startswith("generator/"):
                shapes[ema_name(name)] = shape
    return shapes


def ema_name(generator_weight: str) -> str:
    """"generator/conv_1/kernel" -> "generator_ema/conv_1/kernel"."""
    return EMA_NET + generator_weight[len("generator") :]


def ema_beta(cfg: GANConfig, images_seen: float, batch: int) -> float:
    """How much of the average stays at a G step: 0.5 ** (batch / half-life in images), the
    half-life being ema_kimg * 1000 images, or during the ramp-up ema_rampup * images_seen
    when that is shorter (StyleGAN2-ADA's rule; the first step copies G)."""
    half_life = cfg.ema_kimg * 1000.0
    if cfg.ema_rampup > 0:
        half_life = min(half_life, images_seen * cfg.ema_rampup)
    return 0.5 ** (batch / max(half_life, 1e-8))


def is_trainable(weight_name: str) -> bool:
    return not weight_name.startswith(EMA_NET + "/") and weight_name.rsplit("/", 1)[-1] not in NON_TRAINABLE


def trainable_names(cfg: GANConfig, net: str) -> list[str]:
    return [n for n in weight_shapes(cfg) if n.startswith(net + "/") and is_trainable(n)]


def optimizer_state_shapes(cfg: GANConfig) -> dict[str, tuple[int, ...]]:
    shapes = {}
    all_shapes = weight_shapes(cfg)
    for net in NETS:
        for name in trainable_names(cfg, net):
            shapes[f"opt/{net}/m/{name}"] = all_shapes[name]
            shapes[f"opt/{net}/v/{name}"] = all_shapes[name]
        shapes[f"opt/{net}/iterations"] = ()
    return shapes


def count_parameters(cfg: GANConfig) -> dict[str, int]:
    counts = {net: 0 for net in NETS}
    for name, shape in weight_shapes(cfg).items():
        if is_trainable(name):
            size = 1
            for d in shape:
                size *= d
            counts[name.split("/", 1)[0]] += size
    return counts
