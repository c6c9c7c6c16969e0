"""Tiny llava-hf LLaVA-NeXT and LLaVA-OneVision checkpoints on the published configs.

Each checkpoint takes its published config (tests/fixtures/configs/, sources in `_source`):
the anyres fields (image_grid_pinpoints, vision_aspect_ratio), the vision feature layer and
select strategy, and the vision tower's family, image size, patch size (so the token grid:
24 x 24 at 336 px, 27 x 27 at 384 px) and depth (24; 26 for OneVision) as published. Only
widths shrink (32 wide, 1 head) and the language model is tiny, so CPU tests stay fast; the
full published widths are checked on the meta device in test_llava_families.py. Encoders match
the same geometry: CLIP 336/14 with 24 layers, SigLIP 384/14 with SO400M's 27 layers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from genhancer_llava.models.tiny import make_tiny_clip, make_tiny_siglip

from .llava_tiny import VICUNA_TEMPLATE, make_sp_tokenizer

# one folder for every published config the tests use (files named after the hub id)
CONFIGS = Path(__file__).parent / "fixtures" / "configs"
NEXT = "llava-v1.6-vicuna-7b-hf"
ONEVISION = "llava-onevision-qwen2-0.5b-ov-hf"
# Tiny widths (what make_tiny_clip / make_tiny_siglip give a 32-wide tower).
WIDTH = dict(hidden_size=32, intermediate_size=128, num_attention_heads=1)
SO400M_LAYERS = 27  # google/siglip-so400m-patch14-384 (PAPER_TOWERS["siglip-so400m"])

# Qwen2's chat format (what the OneVision processors ship), images first.
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def published_config(name: str) -> dict[str, Any]:
    """The published config (without `_source`)."""
    config = json.loads((CONFIGS / f"llava-hf-{name}.json").read_text())
    config.pop("_source")
    return config


def make_next_encoder(folder: Path, seed: int = 1) -> Path:
    """A CLIP encoder folder with the NeXT tower's geometry (336 px, patch 14, 24 layers)."""
    vision = published_config(NEXT)["vision_config"]
    return make_tiny_clip(
        folder,
        image_size=vision["image_size"],
        patch_size=vision["patch_size"],
        hidden_size=WIDTH["hidden_size"],
        num_layers=vision["num_hidden_layers"],
        seed=seed,
    )


def make_onevision_encoder(folder: Path, seed: int = 1, image_size: int | None = None) -> Path:
    """A SigLIP encoder folder shaped like SO400M/14@384 (27 layers) at tiny width."""
    vision = published_config(ONEVISION)["vision_config"]
    return make_tiny_siglip(
        folder,
        image_size=image_size or vision["image_size"],
        patch_size=vision["patch_size"],
        hidden_size=WIDTH["hidden_size"],
        num_layers=SO400M_LAYERS,
        seed=seed,
    )


def _tokenizer(folder: Path, extra: list[str]):
    from transformers import AutoTokenizer

    make_sp_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_tokens(extra, special_tokens=True)
    return tokenizer


def _text_config(model_type: str, vocab_size: int) -> dict[str, Any]:
    # Long enough for a 9-tile OneVision image (27 * 3 rows of 27 * 3 tokens + the base view).
    return dict(
        model_type=model_type,
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=16384,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def _model_config(name: str, text_type: str, tokenizer, **ids: int):
    from transformers import AutoConfig

    config = published_config(name)
    config["vision_config"].update(WIDTH)
    config["vision_config"].pop("projection_dim", None)
    config["text_config"] = _text_config(text_type, len(tokenizer))
    config.update(ids, vocab_size=len(tokenizer))
    model_type = config.pop("model_type")
    config.pop("architectures")
    return AutoConfig.for_model(model_type, **config)


def _save_model(config, folder: Path, seed: int) -> None:
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    AutoModelForImageTextToText.from_config(config).save_pretrained(folder)


def make_tiny_next(folder: Path, seed: int = 0) -> Path:
    """A tiny llava-hf LLaVA-NeXT checkpoint (LlavaNextForConditionalGeneration + processor)."""
    from transformers import LlavaNextImageProcessor, LlavaNextProcessor

    tokenizer = _tokenizer(folder, ["<image>"])
    config = _model_config(
        NEXT, "llama", tokenizer, image_token_index=tokenizer.convert_tokens_to_ids("<image>")
    )
    _save_model(config, folder, seed)
    size = config.vision_config.image_size
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_grid_pinpoints=config.image_grid_pinpoints,
    )
    LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,
        chat_template=VICUNA_TEMPLATE,
    ).save_pretrained(folder)
    return folder


def make_tiny_onevision(folder: Path, seed: int = 0) -> Path:
    """A tiny llava-hf LLaVA-OneVision checkpoint (LlavaOnevisionForConditionalGeneration)."""
    from transformers import (
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    tokenizer = _tokenizer(folder, ["<image>", "<video>", "<|im_start|>", "<|im_end|>"])
    config = _model_config(
        ONEVISION,
        "qwen2",
        tokenizer,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
    )
    _save_model(config, folder, seed)
    size = config.vision_config.image_size
    grid = size // config.vision_config.patch_size
    LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size={"height": size, "width": size}, image_grid_pinpoints=config.image_grid_pinpoints
        ),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(),
        num_image_tokens=grid * grid,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        vision_aspect_ratio=config.vision_aspect_ratio,
        chat_template=QWEN_TEMPLATE,
    ).save_pretrained(folder)
    return folder
