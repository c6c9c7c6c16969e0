"""Tiny random CLIP and SigLIP folders built in code, for tests and the demo (no hub, no
downloads).

The CLIP folder is a standard Hugging Face `CLIPModel` folder: weights, image processor and a
byte-level tokenizer (every character a token), so everything downstream (enhancement, export,
`CLIPModel.from_pretrained`) runs on it exactly as on a real checkpoint. The SigLIP folder is a
standard `SiglipModel` folder with its image processor (0.5 / 0.5) but no tokenizer: SigLIP's is
a sentencepiece model, and nothing on the vision path reads it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTokenizer,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)

from ..errors import GenhancerError

__all__ = [
    "make_tiny_clip",
    "make_tiny_siglip",
    "make_tiny_vq",
    "byte_level_clip_tokenizer",
]


def _byte_characters() -> list[str]:
    """The 256 printable characters byte-level BPE uses for the 256 byte values (GPT-2 scheme)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    extra = (b for b in range(256) if b not in printable)
    mapping = {b: chr(b) for b in printable}
    mapping.update({b: chr(256 + i) for i, b in enumerate(extra)})
    return [mapping[b] for b in range(256)]


def byte_level_clip_tokenizer(folder: str | Path) -> CLIPTokenizer:
    """A CLIP tokenizer with the 256 byte characters (plain and `</w>`) and no merges."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_characters()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + len(chars) for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(vocab=vocab, merges=[])


def _tower_dims(hidden_size: int, num_layers: int) -> dict[str, int]:
    """Widths shared by the vision and text towers of the tiny models."""
    return dict(
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 32),
    )


def make_tiny_clip(
    folder: str | Path,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    projection_dim: int = 32,
    seed: int = 0,
) -> Path:
    """Write a tiny random `CLIPModel` folder (vision + text towers, processor, tokenizer).

    Args:
        folder: where to write; created if missing.
        image_size: vision input resolution (a multiple of `patch_size`).
        patch_size: ViT patch size.
        hidden_size: width of both towers.
        num_layers: depth of both towers.
        projection_dim: width of the joint image-text space (the global token).
        seed: torch seed for the random weights.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = byte_level_clip_tokenizer(folder)
    common = _tower_dims(hidden_size, num_layers)
    config = CLIPConfig(
        text_config=dict(
            common,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(common, image_size=image_size, patch_size=patch_size),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    ).save_pretrained(folder)
    return folder


def make_tiny_siglip(
    folder: str | Path,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_only: bool = False,
    seed: int = 0,
) -> Path:
    """Write a tiny random `SiglipModel` (or `SiglipVisionModel`) folder with its image processor.

    Args:
        folder: where to write; created if missing.
        image_size: vision input resolution.
        patch_size: ViT patch size.
        hidden_size: width of both towers (the global token is `hidden_size`-d).
        num_layers: depth of both towers.
        vision_only: write a `SiglipVisionModel` folder (no text tower) instead.
        seed: torch seed for the random weights.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    common = _tower_dims(hidden_size, num_layers)
    config = SiglipConfig(
        text_config=dict(
            common,
            vocab_size=256,
            max_position_embeddings=16,
            pad_token_id=1,
            bos_token_id=None,
            eos_token_id=2,
        ),
        vision_config=dict(common, image_size=image_size, patch_size=patch_size),
    )
    torch.manual_seed(seed)
    model = SiglipModel(config)
    (model.vision_model if vision_only else model).save_pretrained(folder)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def make_tiny_vq(
    folder: str | Path,
    codebook_size: int = 32,
    downsample: int = 4,
    latent_channels: int = 4,
    seed: int = 0,
) -> Path:
    """Write a tiny random diffusers `VQModel` folder (a stand-in VQ-GAN tokenizer).

    Args:
        folder: where to write.
        codebook_size: number of codebook entries.
        downsample: spatial factor (a power of two).
        latent_channels: codebook vector width.
        seed: torch seed for the random weights.
    """
    from diffusers import VQModel

    levels = int(math.log2(downsample)) + 1
    if downsample < 1 or 2 ** (levels - 1) != downsample:
        raise GenhancerError(f"--downsample {downsample} must be a power of two")
    torch.manual_seed(seed)
    VQModel(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=(8,) * levels,
        layers_per_block=1,
        norm_num_groups=4,
        num_vq_embeddings=codebook_size,
        vq_embed_dim=latent_channels,
    ).save_pretrained(folder)
    return Path(folder)
