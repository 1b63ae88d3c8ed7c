import pytest

from backends import spec
from backends.config import ConfigError, GANConfig
from backends.presets import preset_config


def test_seed_preset_is_the_thesis_architecture_at_64():
    cfg = preset_config("seed", image_size=64)
    g = [l for l in spec.generator_spec(cfg) if l.kind in ("dense", "conv")]
    assert g[0].args["units"] == 1024 * 4 * 4
    assert [l.args["filters"] for l in g[1:]] == [512, 256, 128, 3]
    d = [l for l in spec.discriminator_spec(cfg) if l.kind in ("dense", "conv")]
    assert [l.args["filters"] for l in d[:-1]] == [128, 256, 512, 1024]
    assert all(l.args["stride"] == 2 for l in d[:-1])
    assert d[-1].args == {"units": 1, "in": 4 * 4 * 1024}
    assert cfg.beta_1 == 0.0005 and cfg.lr_g == 2e-4 and cfg.noise == "uniform"


@pytest.mark.parametrize("size,blocks,base", [(32, 4, 2), (64, 4, 4), (128, 5, 4), (256, 6, 4)])
def test_sizes_add_blocks(size, blocks, base):
    cfg = GANConfig(image_size=size, width=8, max_width=64)
    assert cfg.num_upsamplings == blocks and cfg.base_size == base
    ups = [l for l in spec.generator_spec(cfg) if l.kind == "upsample"]
    assert base * 2 ** len(ups) == size


@pytest.mark.parametrize("size,side,blocks", [(32, 4, 3), (64, 8, 3), (64, 2, 5), (128, 8, 4)])
def test_base_side_sets_the_first_and_last_feature_maps(size, side, blocks):
    cfg = GANConfig(image_size=size, width=8, max_width=64, base_side=side, minibatch_std=2, batch_size=4)
    assert cfg.num_upsamplings == blocks and cfg.base_size == side
    g = spec.generator_spec(cfg)
    assert next(l for l in g if l.kind == "reshape").args["shape"][:2] == (side, side)
    assert side * 2 ** sum(l.kind == "upsample" for l in g) == size
    d = spec.discriminator_spec(cfg)
    assert sum(l.kind == "conv" for l in d) == blocks
    last_filters = [l for l in d if l.kind == "conv"][-1].args["filters"]
    assert d[-1].args["in"] == side * side * (last_filters + 1)


@pytest.mark.parametrize("side", [1, 3, 12, 16, 64])
def test_base_side_must_be_a_power_of_two_at_most_a_quarter_of_the_image(side):
    with pytest.raises(ConfigError, match="base_side must be 0"):
        GANConfig(image_size=32, base_side=side)


def test_a_config_saved_before_base_side_existed_keeps_its_architecture():
    saved = preset_config("default", image_size=32).to_dict()
    del saved["base_side"]  # run directories written before the field existed
    cfg = GANConfig.from_dict(saved)
    assert cfg.base_side == 0 and cfg.num_upsamplings == 4 and cfg.base_size == 2
    assert preset_config("default", image_size=32).base_size == 4


def test_a_conditional_default_changes_from_64x64_up_and_an_override_still_wins():
    """The unconditional `default` is one recipe at every size; a conditional one adds noise
    inputs and G's rate at 5e-4 from 64x64 up (backends/presets.py, docs/presets.md)."""
    for size in (32, 64, 128):
        plain = preset_config("default", image_size=size)
        assert (plain.noise_inputs, plain.lr_g, plain.lr_d) == (False, 1e-3, 1e-3)
    small, large = (preset_config("default", image_size=size, num_classes=2) for size in (32, 64))
    assert (small.noise_inputs, small.lr_g, small.lr_d) == (False, 1e-3, 1e-3)
    assert (large.noise_inputs, large.lr_g, large.lr_d) == (True, 5e-4, 1e-3)
    assert preset_config("default", image_size=128, num_classes=3).lr_g == 5e-4
    assert preset_config("dp", image_size=64, num_classes=2).noise_inputs
    assert preset_config("default", image_size=64, num_classes=2, lr_g=2e-4, noise_inputs=False).lr_g == 2e-4
    assert not preset_config("default", image_size=64, num_classes=2, noise_inputs=False).noise_inputs


def test_conditional_widens_inputs():
    cfg = GANConfig(image_size=32, width=8, num_classes=3)
    shapes = spec.weight_shapes(cfg)
    assert shapes["generator/dense_0/kernel"][0] == cfg.latent_dim + 3
    assert shapes["discriminator/conv_0/kernel"][2] == 3 + 3


def test_optimizer_state_names_cover_trainable_weights_only():
    cfg = GANConfig(image_size=32, width=8)
    opt = spec.optimizer_state_shapes(cfg)
    assert "opt/generator/m/generator/bn_1/gamma" in opt
    assert not any("moving_mean" in k for k in opt)
    assert opt["opt/discriminator/iterations"] == ()


@pytest.mark.parametrize(
    "field,value",
    [
        ("image_size", 48),
        ("noise", "cauchy"),
        ("dropout", 1.0),
        ("diffaugment", "flip"),
        ("batch_size", 0),
        ("spectral_norm", "yes"),
        ("noise_inputs", "yes"),
        ("d_width", -1),
        ("upsample", "bicubic"),
    ],
)
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field.split("_")[0]):
        GANConfig(**{field: value})


def test_config_round_trips_through_dict():
    cfg = preset_config("default", image_size=32)
    assert GANConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown"):
        GANConfig.from_dict({"bogus": 1})


def test_pack_and_minibatch_std_widen_the_discriminator():
    plain = spec.weight_shapes(GANConfig(image_size=32, width=4, max_width=16, batch_size=8))
    both = spec.weight_shapes(GANConfig(image_size=32, width=4, max_width=16, batch_size=8, pack=2, minibatch_std=2))
    assert plain["discriminator/conv_0/kernel"][2] == 3 and both["discriminator/conv_0/kernel"][2] == 6
    # one extra feature plane of side 2 before the flatten: 4 more inputs to the logit
    assert both["discriminator/dense_out/kernel"][0] == plain["discriminator/dense_out/kernel"][0] + 2 * 2
    assert {n: s for n, s in both.items() if n.startswith("generator/")} == {
        n: s for n, s in plain.items() if n.startswith("generator/")
    }


def test_d_width_widens_the_discriminator_alone_with_its_cap():
    plain = spec.weight_shapes(GANConfig(image_size=32, width=4, max_width=8))
    wide = spec.weight_shapes(GANConfig(image_size=32, width=4, max_width=8, d_width=8))
    filters = lambda shapes: [shapes[f"discriminator/conv_{i}/kernel"][3] for i in range(3)]
    assert filters(plain) == [4, 8, 8] and filters(wide) == [8, 16, 16]
    assert {n: s for n, s in wide.items() if n.startswith("generator/")} == {
        n: s for n, s in plain.items() if n.startswith("generator/")
    }
    assert spec.weight_shapes(GANConfig(image_size=32, width=4, max_width=8, d_width=4)) == plain


def test_a_d_width_below_width_narrows_the_discriminator_alone_with_its_cap():
    plain = spec.weight_shapes(GANConfig(image_size=32, width=4, max_width=8))
    narrow = spec.weight_shapes(GANConfig(image_size=32, width=4, max_width=8, d_width=2))
    filters = lambda shapes: [shapes[f"discriminator/conv_{i}/kernel"][3] for i in range(3)]
    assert filters(narrow) == [2, 4, 4]  # the cap scaled alike: 8 * 2 / 4
    assert {n: s for n, s in narrow.items() if n.startswith("generator/")} == {
        n: s for n, s in plain.items() if n.startswith("generator/")
    }


def test_spectral_norm_adds_an_untrained_vector_to_each_discriminator_kernel():
    plain = GANConfig(image_size=32, width=4, max_width=16)
    normed = spec.weight_shapes(plain.replace(spectral_norm=True))
    added = {n: s for n, s in normed.items() if n not in spec.weight_shapes(plain)}
    kernels = [n for n in normed if n.startswith("discriminator/") and n.endswith("/kernel")]
    assert sorted(added) == sorted(n.replace("/kernel", "/sn_u") for n in kernels)
    assert all(added[n.replace("/kernel", "/sn_u")] == (normed[n][-1],) for n in kernels)
    assert not any(spec.is_trainable(n) for n in added)
    assert spec.count_parameters(plain.replace(spectral_norm=True)) == spec.count_parameters(plain)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(pack=0), "pack must be"),
        (dict(batch_size=6, pack=4), r"batch_size \(6\) must be a multiple of pack"),
        (dict(minibatch_std=1), "minibatch_std must be"),
        (dict(batch_size=12, pack=2, minibatch_std=4), r"batch_size / pack \(6\) must be a multiple of minibatch_std"),
        (dict(batch_size=30, minibatch_std=4), r"batch_size \(30\) must be a multiple of minibatch_std \(4\)"),
    ],
)
def test_pack_and_minibatch_std_need_whole_groups(changes, message):
    with pytest.raises(ConfigError, match=message):
        GANConfig(**changes)


def test_generator_averaging_adds_an_untrained_copy_of_every_generator_weight():
    config = GANConfig(image_size=32, width=4, max_width=8, ema_kimg=10)
    shapes, plain = spec.weight_shapes(config), spec.weight_shapes(config.replace(ema_kimg=0))
    averaged = {n: s for n, s in shapes.items() if n.startswith("generator_ema/")}
    assert averaged == {spec.ema_name(n): s for n, s in plain.items() if n.startswith("generator/")}
    assert not any(spec.is_trainable(n) for n in averaged)
    assert spec.optimizer_state_shapes(config) == spec.optimizer_state_shapes(config.replace(ema_kimg=0))
    assert spec.count_parameters(config) == spec.count_parameters(config.replace(ema_kimg=0))


def test_noise_inputs_add_a_trained_zero_started_strength_per_channel_after_each_inner_block():
    config = preset_config("default", image_size=64, noise_inputs=True)  # as a screen's override sets it
    plain = config.replace(noise_inputs=False)
    shapes = spec.weight_shapes(config)
    added = {n: s for n, s in shapes.items() if n not in spec.weight_shapes(plain)}
    # blocks 1-3 end in a batch norm (8x8, 16x16, 32x32: 64, 32, 16 channels); the output block has none
    assert config.noise_map_sides == (8, 16, 32) and config.z_size == 100 + 8 * 8 + 16 * 16 + 32 * 32
    assert {n: s for n, s in added.items() if n.startswith("generator/")} == {
        "generator/noise_1/strength": (64,), "generator/noise_2/strength": (32,), "generator/noise_3/strength": (16,)
    }
    assert sorted(added) == sorted([*(n for n in added if n.startswith("generator/")),
                                    *(spec.ema_name(n) for n in added if n.startswith("generator/"))])
    assert all(shapes[n] == s for n, s in spec.weight_shapes(plain).items())  # nothing else changes
    assert "opt/generator/m/generator/noise_3/strength" in spec.optimizer_state_shapes(config)
    assert spec.count_parameters(config)["generator"] == spec.count_parameters(plain)["generator"] + 64 + 32 + 16
    layers = [l.name for l in spec.generator_spec(config)]
    assert layers[0] == "noise_inputs"
    assert layers[layers.index("conv_2") + 1] == "noise_2" and layers[layers.index("noise_2") + 1] == "bn_2"
    assert spec.generator_spec(config)[layers.index("dense_0")].args["in"] == 100  # the maps bypass dense_0
    assert plain.z_size == plain.latent_dim and plain.noise_map_sides == ()


def test_a_config_saved_before_upsample_existed_keeps_nearest_upsampling_fused():
    saved = preset_config("seed", image_size=32).to_dict()
    del saved["upsample"]
    config = GANConfig.from_dict(saved)
    layers = spec.generator_spec(config)
    assert config.upsample == "nearest"
    assert {layer.args["interpolation"] for layer in layers if layer.kind == "upsample"} == {"nearest"}
    assert all(spec.fuses_with_next(layers, i) for i, layer in enumerate(layers) if layer.kind == "upsample")


def test_bilinear_upsampling_is_never_fused_with_the_convolution():
    layers = spec.generator_spec(GANConfig(image_size=32, upsample="bilinear"))
    ups = [i for i, layer in enumerate(layers) if layer.kind == "upsample"]
    assert ups and all(layers[i].args["interpolation"] == "bilinear" and not spec.fuses_with_next(layers, i) for i in ups)


def test_a_config_saved_before_noise_inputs_existed_has_them_off():
    saved = preset_config("default", image_size=32).to_dict()
    del saved["noise_inputs"]
    assert GANConfig.from_dict(saved).noise_inputs is False


def test_a_conditional_default_reads_the_class_as_screened_and_an_unconditional_one_is_unchanged():
    conditional = preset_config("default", image_size=64, num_classes=2)
    assert (conditional.d_conditioning, conditional.g_conditioning) == ("projection", "cbn")
    assert conditional.condition_ramp_kimg == 16.0 and conditional.class_balanced and conditional.class_loss == 1.0
    plain = preset_config("default", image_size=64)
    assert (plain.d_conditioning, plain.g_conditioning, plain.condition_ramp_kimg, plain.class_balanced) == \
        ("concat", "concat", 0.0, False)
    # explicit choices win over the preset's
    assert preset_config("default", image_size=64, num_classes=2, d_conditioning="concat").d_conditioning == "concat"
    assert preset_config("seed", image_size=64, num_classes=2).d_conditioning == "concat"  # the thesis's model as it was
    private = preset_config("dp", image_size=64, num_classes=2)
    assert private.d_conditioning == "projection" and not private.class_balanced and private.class_loss == 0.0
