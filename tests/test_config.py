import pytest

from genhancer_llava.config import available_presets, load_config
from genhancer_llava.errors import ConfigError

# the six backbones of the paper: (preset, family, resolution, latent tokens, global width)
PAPER_SETTINGS = [
    ("openai-clip-l14-224", "clip", 224, 196, 768),
    ("openai-clip-l14-336", "clip", 336, 441, 768),
    ("metaclip-l14-224", "clip", 224, 196, 768),
    ("metaclip-h14-224", "clip", 224, 196, 1024),
    ("siglip-so400m-224", "siglip", 224, 196, 1152),
    ("siglip-so400m-384", "siglip", 384, 576, 1152),
]
PAPER = [p[0] for p in PAPER_SETTINGS]


@pytest.mark.parametrize("name", available_presets())
def test_every_preset_loads_and_round_trips(name, tmp_path):
    cfg = load_config(name)
    cfg.save(tmp_path / "c.yaml")
    assert load_config(config_file=tmp_path / "c.yaml").to_dict() == cfg.to_dict()


def test_shipped_presets_include_paper_tiny_and_demo():
    assert {*PAPER, "tiny", "tiny-siglip", "demo"} <= set(available_presets())


@pytest.mark.parametrize("name,family,size,tokens,width", PAPER_SETTINGS, ids=PAPER)
def test_paper_presets_hold_the_paper_settings(name, family, size, tokens, width):
    cfg = load_config(name)
    assert (cfg.encoder.family, cfg.encoder.image_size, cfg.encoder.global_dim) == (
        family,
        size,
        width,
    )
    gh, gw = cfg.target.grid(size)
    assert gh * gw == tokens and cfg.target.token_dim == 64
    assert (cfg.target.scaling_factor, cfg.target.shift_factor) == (0.3611, 0.1159)
    assert cfg.target.sample_posterior
    d = cfg.denoiser
    assert (d.num_layers, d.num_single_layers, d.num_attention_heads, d.attention_head_dim) == (
        2,
        4,
        24,
        128,
    )
    assert d.axes_dims_rope == (16, 56, 56) and d.guidance == 4.0
    assert d.timestep_sampling == "logit_normal" and d.logit_normal_scale == 1.0
    assert (cfg.projector.pooled_dim, cfg.projector.context_dim) == (768, 4096)
    assert (cfg.stage1.steps, cfg.stage1.lr) == (100_000, 1e-4)
    assert (cfg.stage2.steps, cfg.stage2.lr, cfg.stage2.mode) == (10_000, 1e-5, "lora-only")
    lora = cfg.lora
    assert (lora.r, lora.alpha, lora.dropout, lora.bias) == (16, 16, 0.1, "lora_only")
    o = cfg.optim
    assert (o.per_device_batch_size, o.gradient_accumulation_steps) == (16, 2)
    assert (o.betas, o.eps, o.weight_decay, o.grad_clip) == ((0.9, 0.999), 1e-8, 0.01, 1.0)


def test_overrides_parse_values_by_type():
    cfg = load_config(
        "tiny",
        overrides=[
            "stage1.lr=2e-3",
            "data.crop_scale=[0.5, 1.0]",
            "denoiser.guidance=null",
            "lora.include_projection=true",
            "stage2.mode=all",
        ],
    )
    assert cfg.stage1.lr == 2e-3 and isinstance(cfg.stage1.lr, float)
    assert cfg.data.crop_scale == (0.5, 1.0)
    assert cfg.denoiser.guidance is None
    assert cfg.lora.include_projection is True
    assert cfg.stage2.mode == "all"


@pytest.mark.parametrize(
    "override,needle",
    [
        ("stage1.lr=0", "stage1.lr=0"),
        ("stage2.lr=-1e-5", "stage2.lr=-1e-05"),
        ("optim.per_device_batch_size=0", "optim.per_device_batch_size=0"),
        ("optim.per_device_batch_size=-4", "optim.per_device_batch_size=-4"),
        ("stage2.mode=everything", "stage2.mode='everything'"),
        ("encoder.image_size=30", "encoder.image_size=30"),
        ("denoiser.axes_dims_rope=[4,4,4]", "denoiser.axes_dims_rope"),
        ("encoder.nonsense=1", "unknown config key 'encoder.nonsense'"),
        ("encoder.family=dino", "encoder.family='dino'"),
        ("encoder.global_dim=0", "encoder.global_dim=0"),
        ("stage1.steps=ten", "stage1.steps='ten'"),
    ],
)
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", overrides=[override])
    message = str(err.value)
    assert needle in message and "\n" not in message


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown preset 'nope'; known presets: .*tiny"):
        load_config("nope")


def test_config_file_inherits_a_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("inherit: openai-clip-l14-224\nstage1:\n  steps: 7\n")
    cfg = load_config(config_file=path)
    assert cfg.stage1.steps == 7 and cfg.stage1.lr == 1e-4 and cfg.encoder.image_size == 224
