"""`genhancer toy pretrain-clip`: a small CLIP trained on the toy world, saved as a normal folder.

A Hugging Face `CLIPModel` (random init) is trained with a symmetric InfoNCE loss on generated
scenes and their captions; identical captions in a batch count as positives (soft targets), as
captions repeat often in this small language. The folder holds the weights, a CLIP image
processor (CLIP's mean/std at 32 px) and a word-level tokenizer (`tokenizer.json`), so
enhancement, export and the project's scorers read it like any CLIP checkpoint.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import GenhancerError
from .world import SIZE, caption, draw_scene, render, vocabulary

__all__ = [
    "PretrainConfig",
    "word_tokenizer",
    "pretrain_clip",
    "render_batch",
    "CLIP_MEAN",
    "CLIP_STD",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PROMPT = "a photo of "
MAX_LEN = 24
SPECIALS = ("<|unk|>", "<|startoftext|>", "<|endoftext|>")


@dataclass
class PretrainConfig:
    steps: int = 600
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    num_images: int = 40_000
    fine_p: float = 0.3  # probability that a caption names one fine attribute
    width: int = 128
    vision_layers: int = 4
    text_layers: int = 2
    projection_dim: int = 64
    patch_size: int = 8
    # std of the vision position embeddings at init; HF's 0.02 leaves cell position nearly
    # unrepresentable in the base (toy-study.md)
    position_init_std: float = 0.3
    seed: int = 0

    def check(self) -> None:
        for key in ("steps", "batch_size", "lr", "num_images", "width", "projection_dim"):
            if getattr(self, key) <= 0:
                raise GenhancerError(f"pretrain-clip: --{key} must be > 0")
        if not 0 <= self.fine_p <= 1:
            raise GenhancerError("pretrain-clip: --fine_p must be in [0, 1]")


def word_tokenizer():
    """A word-level fast tokenizer for the toy language: <bos> words <eos>, pad = eos."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = [*vocabulary(), "."]
    vocab = {w: i for i, w in enumerate(words)}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tok = Tokenizer(WordLevel(vocab, unk_token="<|unk|>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|unk|>",
        model_max_length=MAX_LEN,
    )


def render_batch(scenes) -> torch.Tensor:
    """Scenes -> (B, 3, 32, 32) float in [0, 1]."""
    arr = np.stack([np.asarray(render(s)) for s in scenes])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def _build_model(cfg: PretrainConfig, vocab_size: int, bos: int, eos: int):
    from transformers import CLIPConfig, CLIPModel

    heads = max(1, cfg.width // 32)
    common = dict(hidden_size=cfg.width, intermediate_size=cfg.width * 4, num_attention_heads=heads)
    config = CLIPConfig(
        text_config=dict(
            common,
            num_hidden_layers=cfg.text_layers,
            vocab_size=vocab_size,
            max_position_embeddings=MAX_LEN,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        ),
        vision_config=dict(
            common, num_hidden_layers=cfg.vision_layers, image_size=SIZE, patch_size=cfg.patch_size
        ),
        projection_dim=cfg.projection_dim,
    )
    torch.manual_seed(cfg.seed)
    model = CLIPModel(config)
    with torch.no_grad():
        model.vision_model.embeddings.position_embedding.weight.normal_(0.0, cfg.position_init_std)
    return model


def pretrain_clip(out: str | Path, cfg: PretrainConfig | None = None, log_every: int = 50) -> Path:
    """Train the toy CLIP and write it to `out` (a CLIPModel folder); returns the folder."""
    from transformers import CLIPImageProcessor

    cfg = cfg or PretrainConfig()
    cfg.check()
    out = Path(out)
    tokenizer = word_tokenizer()
    rng = random.Random(cfg.seed)
    tic = time.perf_counter()
    scenes = [draw_scene(rng) for _ in range(cfg.num_images)]
    images = (render_batch(scenes) * 255).to(torch.uint8)
    print(
        f"pretrain-clip: {cfg.num_images} scenes drawn in {time.perf_counter() - tic:.1f} s",
        flush=True,
    )
    model = _build_model(cfg, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embedding" not in n)]
    optim = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": other, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    warmup = max(1, cfg.steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, cfg.steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, schedule)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    losses = []
    for step in range(cfg.steps):
        idx = torch.randint(0, cfg.num_images, (cfg.batch_size,), generator=gen)
        texts = [PROMPT + caption(scenes[i], rng, cfg.fine_p) for i in idx.tolist()]
        tokens = tokenizer(
            texts, padding="max_length", truncation=True, max_length=MAX_LEN, return_tensors="pt"
        )
        pixels = _normalise(images[idx].float() / 255.0)
        out_ = model(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            pixel_values=pixels,
        )
        logits = out_.logits_per_image  # (B, B), scaled
        same = torch.tensor([[a == b for b in texts] for a in texts], dtype=torch.float32)
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
            recent = sum(losses[-log_every:]) / len(losses[-log_every:])
            print(
                f"pretrain-clip: step {step + 1}/{cfg.steps} loss {recent:.4f} "
                f"({time.perf_counter() - tic:.0f} s)",
                flush=True,
            )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    CLIPImageProcessor(
        size={"shortest_edge": SIZE},
        crop_size={"height": SIZE, "width": SIZE},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    ).save_pretrained(out)
    (out / "toy_pretrain.json").write_text(
        json.dumps(
            {
                **asdict(cfg),
                "loss_first": losses[0],
                "loss_last": losses[-1],
                "seconds": round(time.perf_counter() - tic, 1),
            },
            indent=2,
        )
    )
    return out
