"""The published config files of the paper's checkpoints (tests/fixtures/configs) hold the
project's facts about them: tower shapes, preset resolutions and widths, the FLUX autoencoder,
LLaVA-1.5's tower in both checkpoint formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import CLIPConfig, LlavaConfig, SiglipConfig

from genhancer_llava.config import load_config
from genhancer_llava.mllm import swap
from genhancer_llava.models.paper_towers import (
    PAPER_TOWERS,
    PRESET_CHECKPOINTS,
    preset_checkpoint,
    preset_tower,
)

FIXTURES = Path(__file__).parent / "fixtures" / "configs"
PRESETS = [p for base in PRESET_CHECKPOINTS for p in (base, base + "-masked")]


def fixture(name: str) -> dict:
    """A fixture by hub id ('openai/clip-vit-large-patch14') or file stem, without `_source`."""
    data = json.loads((FIXTURES / f"{name.replace('/', '-')}.json").read_text())
    return {k: v for k, v in data.items() if k != "_source"}


def full_config(checkpoint: str):
    data = fixture(checkpoint)
    return (SiglipConfig if data["model_type"] == "siglip" else CLIPConfig)(**data)


def test_every_fixture_says_where_it_was_read():
    files = sorted(FIXTURES.glob("*.json"))
    assert len(files) == 11  # 9 of the paper's checkpoints, 2 LLaVA families (issue 15)
    for path in files:
        source = json.loads(path.read_text())["_source"]
        assert isinstance(source, str) and len(source) > 40, path.name  # a sentence, not a tag


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_matches_its_checkpoints_config(preset):
    cfg = load_config(preset)
    config = full_config(preset_checkpoint(preset))
    vision = config.vision_config
    assert cfg.encoder.image_size == vision.image_size
    family = "siglip" if config.model_type == "siglip" else "clip"
    assert cfg.encoder.family == family
    # the global token: visual_projection's output (CLIP), the pooled 1152-d head (SigLIP)
    assert cfg.encoder.global_dim == (
        config.projection_dim if family == "clip" else vision.hidden_size
    )
    tower_family, shape = PAPER_TOWERS[preset_tower(preset)]
    assert tower_family == family
    for key, value in shape.items():
        read = config.projection_dim if key == "projection_dim" else getattr(vision, key)
        assert read == value, (preset, key)


def test_flux_autoencoder_matches_the_flow_presets():
    vae = fixture("flux1-vae")
    for preset in PRESET_CHECKPOINTS:
        target = load_config(preset).target
        assert target.kind == "flux_vae"
        assert target.latent_channels == vae["latent_channels"] == 16
        assert target.downsample == 2 ** (len(vae["block_out_channels"]) - 1) == 8
        assert (target.scaling_factor, target.shift_factor) == (
            vae["scaling_factor"],
            vae["shift_factor"],
        )


def test_llava_15_tower_is_clip_l14_336_in_both_formats():
    tower = full_config("openai/clip-vit-large-patch14-336").vision_config
    hf = LlavaConfig(**fixture("llava-hf/llava-1.5-7b-hf"))
    for key in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "patch_size",
        "image_size",
    ):
        assert getattr(hf.vision_config, key) == getattr(tower, key), key
    assert hf.vision_feature_layer == -2 and hf.vision_feature_select_strategy == "default"
    original = fixture("liuhaotian/llava-v1.5-7b")
    assert original["mm_hidden_size"] == tower.hidden_size
    assert original["mm_vision_select_layer"] == -2
    assert original["mm_vision_select_feature"] == "patch"
    # what swap knows of the released checkpoint's tower (it stores only the name)
    known = swap.geometry_of(*swap.KNOWN_TOWERS[original["mm_vision_tower"]])
    assert known == swap.geometry_of(
        "clip", tower.hidden_size, tower.patch_size, tower.image_size, tower.num_hidden_layers
    )
    assert known.grid == 24 and known.tokens == 576
    plain = full_config("openai/clip-vit-large-patch14").vision_config
    assert (
        swap.geometry_of(*swap.KNOWN_TOWERS["openai/clip-vit-large-patch14"]).grid
        == plain.image_size // plain.patch_size
        == 16
    )


def test_siglip_384_grid_is_27_patches_covering_378_px():
    vision = full_config("google/siglip-so400m-patch14-384").vision_config
    assert vision.image_size // vision.patch_size == 27
    assert 27 * vision.patch_size == 378 != vision.image_size
