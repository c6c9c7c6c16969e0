"""The family registry: a third family is one entry, and every lookup then uses it.

The throwaway third family is MetaCLIP 2 (`metaclip_2` in transformers): a CLIP-architecture
model with its own classes and model types, so no module can reach it by a "clip" branch.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import transformers
from PIL import Image

from genhancer_llava.config import load_config
from genhancer_llava.errors import ConfigError, GenhancerError
from genhancer_llava.evaluation.scorer import HFScorer, read_family
from genhancer_llava.export import _full_model
from genhancer_llava.mllm.registry import resolve_tower, tower_kind
from genhancer_llava.mllm.swap import encoder_geometry, llava_hf_geometry, load_encoder_tower
from genhancer_llava.models.encoders import (
    CLIPEncoder,
    SiglipEncoder,
    folder_family,
    load_encoder,
    read_vision_config,
)
from genhancer_llava.models.families import (
    FAMILIES,
    Family,
    family_of_model_type,
    get_family,
    register_family,
)
from genhancer_llava.models.tiny import byte_level_clip_tokenizer

METACLIP2 = Family(
    name="metaclip2",
    full_model="MetaClip2Model",
    full_config="MetaClip2Config",
    vision_model="MetaClip2VisionModel",
    encoder_model="MetaClip2VisionModelWithProjection",
    vision_config="MetaClip2VisionConfig",
    image_processor="CLIPImageProcessor",
    encoder="CLIPEncoder",  # same global token as CLIP: visual_projection(pooler_output)
    has_cls_token=True,
    image_mean=(0.25, 0.5, 0.75),  # made up, so the default is visibly this entry's
    image_std=(0.5, 0.5, 0.5),
    patch_multiple=True,
    global_token="visual_projection(pooler_output)",
    global_dim_field="projection_dim",
    weights_hint="the vision tower and visual_projection (a MetaClip2Model folder)",
    presets="none",
    text_pad_to_max_length=False,
    text_attention_mask=True,
)


@pytest.fixture()
def third_family():
    register_family(METACLIP2)
    yield METACLIP2
    FAMILIES.pop(METACLIP2.name)


@pytest.fixture(scope="module")
def metaclip2_folder(tmp_path_factory):
    """A tiny random MetaClip2Model folder with a byte-level tokenizer and no image processor."""
    folder = tmp_path_factory.mktemp("metaclip2") / "tiny-metaclip2"
    tokenizer = byte_level_clip_tokenizer(folder)
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = transformers.MetaClip2Config(
        text_config=dict(
            common,
            vocab_size=len(tokenizer),
            max_position_embeddings=16,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(common, image_size=16, patch_size=8),
        projection_dim=24,
    )
    torch.manual_seed(0)
    transformers.MetaClip2Model(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_builtin_families_and_unknown_names():
    assert list(FAMILIES)[:2] == ["clip", "siglip"]
    assert family_of_model_type("clip_vision_model") == (FAMILIES["clip"], False)
    assert family_of_model_type("siglip") == (FAMILIES["siglip"], True)
    assert family_of_model_type("llama") is None
    assert FAMILIES["clip"].has_cls_token and not FAMILIES["siglip"].has_cls_token
    assert FAMILIES["siglip"].cls("encoder") is SiglipEncoder
    with pytest.raises(GenhancerError, match="unknown encoder family 'eva'; known: clip, siglip"):
        get_family("eva")


def test_a_family_cannot_claim_another_familys_model_types():
    clash = Family(**{**METACLIP2.__dict__, "name": "clip2", "full_config": "CLIPConfig"})
    with pytest.raises(GenhancerError, match="family 'clip' already reads"):
        register_family(clash)
    assert "clip2" not in FAMILIES


def test_unregistered_family_is_refused(metaclip2_folder):
    with pytest.raises(GenhancerError, match="holds a 'metaclip_2' model, not CLIP or SigLIP"):
        folder_family(metaclip2_folder)
    with pytest.raises(ConfigError, match="encoder.family='metaclip2' is invalid"):
        load_config("tiny", overrides=["encoder.family=metaclip2"])


def test_third_family_is_one_entry(third_family, metaclip2_folder, tmp_path):
    folder = metaclip2_folder
    # config validation and folder reading
    assert load_config("tiny", overrides=["encoder.family=metaclip2"]).encoder.family == (
        "metaclip2"
    )
    assert folder_family(folder) == ("metaclip2", "metaclip_2")
    vision, model_type, family = read_vision_config(folder, family="metaclip2")
    assert (model_type, family, vision.projection_dim) == ("metaclip_2", "metaclip2", 24)
    with pytest.raises(GenhancerError, match="encoder.family=clip but .* holds a MetaClip2Model"):
        read_vision_config(folder, family="clip")

    # the encoder: the entry's classes, wrapper and default normalisation
    encoder = load_encoder(folder, image_size=16, family="metaclip2")
    assert isinstance(encoder, CLIPEncoder)
    assert isinstance(encoder.model, transformers.MetaClip2VisionModelWithProjection)
    assert encoder.image_mean == (0.25, 0.5, 0.75) and encoder.global_dim == 24
    out = encoder(torch.randn(2, 3, 16, 16))
    assert out.global_token.shape == (2, 24)

    # export: a full base comes back as the entry's full model class with the tower's weights
    full = _full_model(folder, encoder.model)
    assert isinstance(full, transformers.MetaClip2Model)
    assert torch.equal(full.visual_projection.weight, encoder.model.visual_projection.weight)

    # the tower registry, swap and the LLaVA tower (these read the folder's processor)
    transformers.CLIPImageProcessor(
        size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}
    ).save_pretrained(folder)
    spec = resolve_tower(f"genhancer:{folder}")
    assert tower_kind(folder, "x") == "metaclip2" and spec.has_cls_token
    assert encoder_geometry(folder).family == "metaclip2"
    tower = load_encoder_tower(folder)
    assert isinstance(tower, transformers.MetaClip2VisionModel)
    hf = SimpleNamespace(
        vision_config=transformers.MetaClip2VisionConfig(
            hidden_size=32, patch_size=8, image_size=16, num_hidden_layers=2, num_attention_heads=2
        )
    )
    assert llava_hf_geometry(hf, "ckpt").family == "metaclip2"
    from llava_patches.towers import build_tower

    llava_tower = build_tower(
        f"genhancer:{folder}",
        SimpleNamespace(mm_vision_select_layer=-2, mm_vision_select_feature="patch"),
    )
    assert isinstance(llava_tower.vision_tower, transformers.MetaClip2VisionModel)
    assert llava_tower(torch.randn(1, 3, 16, 16)).shape == (1, 4, 32)  # CLS dropped

    # the scorer: the entry's full class and text handling
    assert read_family(folder) == "metaclip2"
    Image.new("RGB", (16, 16), "red").save(tmp_path / "red.png")
    scorer = HFScorer(folder, device="cpu")
    assert isinstance(scorer.model, transformers.MetaClip2Model)
    assert scorer.text_inputs == ("input_ids", "attention_mask")
    logits = scorer.logits_per_text(
        scorer.encode_texts(["a", "b c"]), scorer.encode_images([tmp_path / "red.png"])
    )
    assert logits.shape == (2, 1)
