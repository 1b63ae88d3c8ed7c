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
    [("image_size", 48), ("noise", "cauchy"), ("dropout", 1.0), ("diffaugment", "flip"), ("batch_size", 0)],
)
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field.split("_")[0]):
        GANConfig(**{field: value})


def test_config_round_trips_through_dict():
    cfg = preset_config("default", image_size=32)
    assert GANConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown"):
        GANConfig.from_dict({"bogus": 1})
