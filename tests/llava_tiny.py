"""Tiny LLaVA ingredients built in code: SentencePiece tokenizer, random Llama, encoders, data.

Shared by the LLaVA tests; nothing here is downloaded.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from PIL import Image

from genhancer_llava.models.tiny import make_tiny_clip

WORDS = (
    "red blue green small large cat dog car tree house sky left right top bottom image "
    "shows what is the colour of object in a an there one two three yes no"
).split()


# Vicuna-v1's system prompt (LLaVA's `--version v1` template): in the corpus so it tokenizes short.
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def _sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))).capitalize() + "."
        for _ in range(n)
    ]


def make_sp_tokenizer(folder: Path, vocab_size: int = 200) -> Path:
    """Train a tiny SentencePiece BPE model and save it as a Llama tokenizer folder."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "corpus.txt"
    text.write_text("\n".join(_sentences(400) + [SYSTEM, "USER: ASSISTANT: </s> <image> ?"] * 20))
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(folder / "tokenizer"),
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    text.unlink()
    (folder / "tokenizer.vocab").unlink()
    # transformers 5 converts the SentencePiece model into its tokenizer when loading.
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "LlamaTokenizer",
                "legacy": False,
                "add_bos_token": True,
                "add_eos_token": False,
            }
        )
    )
    AutoTokenizer.from_pretrained(folder).save_pretrained(folder)
    return folder


def make_tiny_llama(folder: Path, vocab_size: int = 200, seed: int = 0) -> Path:
    """A tiny random Llama (hidden 32, 2 layers) with the SentencePiece tokenizer beside it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    make_sp_tokenizer(folder, vocab_size)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def make_exported_encoder(folder: Path, seed: int = 0) -> Path:
    """A tiny CLIP folder in the export format (CLIPModel + processor + genhancer.json)."""
    make_tiny_clip(folder, seed=seed)
    (folder / "genhancer.json").write_text(
        json.dumps(
            {
                "genhancer_llava_version": "0.1.0",
                "family": "clip",
                "base_model": "tiny-random",
                "global_token": "visual_projection(pooler_output)",
                "stages": {},
                "config": {},
            }
        )
    )
    return folder


def make_tiny_siglip(folder: Path, seed: int = 0) -> Path:
    """A tiny random SiglipModel folder with its image processor (no CLS token)."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    folder.mkdir(parents=True, exist_ok=True)
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = SiglipConfig(
        text_config=dict(common, vocab_size=64),
        vision_config=dict(common, image_size=32, patch_size=8),
    )
    torch.manual_seed(seed)
    SiglipModel(config).save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def make_llava_data(
    folder: Path, n: int = 8, seed: int = 0, text_only: bool = True
) -> tuple[Path, Path]:
    """Conversation data in LLaVA's JSON format and its image folder.

    With `text_only`, every fourth record has no image, as in LLaVA-1.5's instruction data
    (mix665k): LLaVA's dataset then feeds a zero image of the processor's `crop_size`. Pretrain
    data (LCS-558K, the `plain` template) is image-caption only: pass text_only=False.
    """
    rng = random.Random(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    answers = _sentences(n, seed + 1)
    for i in range(n):
        if text_only and i % 4 == 3:
            records.append(
                {
                    "id": f"{i:03d}",
                    "conversations": [
                        {"from": "human", "value": "What colour is the sky?"},
                        {"from": "gpt", "value": answers[i]},
                    ],
                }
            )
            continue
        colour = tuple(rng.randrange(256) for _ in range(3))
        size = (rng.randint(24, 48), rng.randint(24, 48))  # non-square: exercises `pad`
        Image.new("RGB", size, colour).save(images / f"{i:03d}.png")
        records.append(
            {
                "id": f"{i:03d}",
                "image": f"{i:03d}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat is the colour of the image?"},
                    {"from": "gpt", "value": answers[i]},
                ],
            }
        )
    data = folder / "data.json"
    data.write_text(json.dumps(records, indent=1))
    return data, images


def model_args(vision_tower: str, **overrides):
    """LLaVA's ModelArguments for `initialize_vision_modules` (LLaVA-1.5's tower settings)."""
    from llava.train.train import ModelArguments

    defaults = dict(
        vision_tower=vision_tower,
        mm_vision_select_layer=-2,
        mm_projector_type="mlp2x_gelu",
        mm_use_im_patch_token=False,
    )
    return ModelArguments(**{**defaults, **overrides})


def tiny_llava(llm: Path, vision_tower: str, **overrides):
    """A LLaVA-Llama model on the tiny LLM with `vision_tower`, built as LLaVA's train() does."""
    from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM

    model = LlavaLlamaForCausalLM.from_pretrained(llm)
    model.get_model().initialize_vision_modules(model_args(vision_tower, **overrides))
    return model


# Vicuna-v1 single-image prompt of LLaVA-1.5 (what llava-hf's processors carry as chat template).
VICUNA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    " {% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def make_tiny_llava_hf(folder: Path, llm: Path, tower: Path, seed: int = 0) -> Path:
    """A tiny random llava-hf checkpoint (LlavaForConditionalGeneration + LlavaProcessor).

    Its vision tower has the tiny CLIP geometry (hidden 64, 2 layers, 32 px, patch 8) with the
    weights of the CLIP folder `tower` (the "old" encoder); projector and LLM are random.
    """
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionModel,
        LlamaForCausalLM,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = AutoTokenizer.from_pretrained(llm)
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    vision = CLIPVisionModel.from_pretrained(tower)
    text = LlamaForCausalLM.from_pretrained(llm).config
    text.vocab_size = len(tokenizer)
    config = LlavaConfig(
        vision_config=vision.config.to_dict(),
        text_config=text.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(vision.state_dict())
    model.save_pretrained(folder)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VICUNA_TEMPLATE,
    )
    processor.save_pretrained(folder)
    return folder


def make_tiny_llava_original(
    folder: Path, llm: Path, tower: str, strip_tower: bool = False
) -> Path:
    """A tiny original-format LLaVA checkpoint (LLaVA's own classes) on `tower`.

    `strip_tower=True` drops the stored tower weights, as in released checkpoints
    (liuhaotian/llava-v1.5-7b stores only the tower's name).
    """
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    model = tiny_llava(llm, tower)
    model.config.image_aspect_ratio = "pad"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(llm).save_pretrained(folder)
    if strip_tower:
        weights = folder / "model.safetensors"
        state = {k: v for k, v in load_file(weights).items() if ".vision_tower." not in k}
        save_file(state, weights, metadata={"format": "pt"})
    return folder
