"""Original-format LLaVA checkpoints (haotian-liu/LLaVA, `mm_vision_tower`) for `load_llava`.

`genhancer_llava.mllm.runner.load_llava` knows llava-hf checkpoints itself; it finds the runner
for original-format checkpoints through the `genhancer_llava.llava_formats` entry point named
`original` (pyproject.toml), which points here. This module loads LLaVA's own classes after
`llava_patches.apply()` (the genhancer tower hook and the transformers-5 shims), and uses
LLaVA's conversation template (`vicuna_v1` by default) and image preprocessing
(`image_aspect_ratio`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from genhancer_llava.errors import GenhancerError
from genhancer_llava.mllm.runner import LlavaRunner, apply_until, clean_gen_kwargs, rgb_images
from genhancer_llava.mllm.swap import (
    check_original_fits,
    resolve_encoder,
    stored_tower_state,
    tower_key,
    warn_projector_once,
)

from . import apply

__all__ = ["OriginalRunner"]


def _load_stored_tower(tower, path: Path) -> None:
    """The checkpoint's own (fine-tuned) tower weights, as LLaVA loads them for a checkpoint with
    `unfreeze_mm_vision_tower` (llava-v1.6-*); the tower was built deferred (hook.py)."""
    stored = stored_tower_state(path)
    if not stored:
        return
    module = tower.vision_tower
    names = {tower_key(k): k for k in module.state_dict()}
    missing = sorted(set(names) ^ set(stored))
    if missing:
        raise GenhancerError(
            f"the tower weights stored in {path} do not match its vision tower (e.g. {missing[:3]})"
        )
    module.load_state_dict({names[k]: v for k, v in stored.items()}, strict=True)


class OriginalRunner(LlavaRunner):
    """An original-format LLaVA checkpoint, loaded with LLaVA's `LlavaLlamaForCausalLM`.

    Args:
        path: the checkpoint folder (`mm_vision_tower` in its config.json).
        vision_tower: an encoder folder or `genhancer[:NAME|:PATH]` to swap in at load time.
        device: where to run.
        dtype: the model's dtype.
        device_map: passed to `from_pretrained` (default: the device).
        conv_template: LLaVA's conversation template.
        attn_implementation: not used (LLaVA's classes pick their own attention).
    """

    format = "original"

    def __init__(
        self,
        path: Path,
        vision_tower: str | None,
        device: str,
        dtype: torch.dtype,
        device_map: str | dict | None = None,
        conv_template: str = "vicuna_v1",
        attn_implementation: str | None = None,
    ) -> None:
        apply()
        from llava.conversation import conv_templates
        from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
        from transformers import AutoTokenizer

        if conv_template not in conv_templates:
            raise GenhancerError(
                f"conv_template={conv_template!r} is not one of LLaVA's: "
                f"{', '.join(sorted(conv_templates))}"
            )
        self.conv = conv_templates[conv_template]
        config = LlavaConfig.from_pretrained(path)
        if vision_tower:
            folder, name = resolve_encoder(vision_tower)
            check_original_fits(path, config.to_dict(), folder)
            config.mm_vision_tower = name
            warn_projector_once()
        model = LlavaLlamaForCausalLM.from_pretrained(
            path, config=config, dtype=dtype, device_map=device_map or device
        )
        tower = model.get_vision_tower()
        if not tower.is_loaded:
            tower.load_model(device_map=device_map or device)
            if not vision_tower and getattr(config, "unfreeze_mm_vision_tower", False):
                _load_stored_tower(tower, path)
        tower.to(device=next(model.parameters()).device, dtype=dtype)
        super().__init__(model, device, dtype)
        self.image_processor = tower.image_processor
        self.tokenizer = AutoTokenizer.from_pretrained(path)

    def prompt(self, num_images: int, text: str) -> str:
        conv = self.conv.copy()
        conv.append_message(conv.roles[0], "<image>\n" * num_images + text)
        conv.append_message(conv.roles[1], None)
        return conv.get_prompt()

    def answer(self, images, text, gen_kwargs=None) -> str:
        from llava.constants import IMAGE_TOKEN_INDEX
        from llava.mm_utils import process_images, tokenizer_image_token

        settings = clean_gen_kwargs(gen_kwargs)
        images = rgb_images(images)
        device = self.input_device
        ids = tokenizer_image_token(
            self.prompt(len(images), text), self.tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt"
        ).unsqueeze(0)
        extra = {}
        if images:
            pixels = process_images(images, self.image_processor, self.model.config)
            extra = {
                "images": pixels.to(device=device, dtype=self.dtype),
                "image_sizes": [im.size for im in images],
            }
        pad = self.tokenizer.pad_token_id
        pad = self.tokenizer.eos_token_id if pad is None else pad
        with torch.inference_mode():
            out = self.model.generate(ids.to(device), **extra, **settings.kwargs, pad_token_id=pad)
        # LLaVA generates from inputs_embeds: the output holds only the new tokens.
        return apply_until(
            self.tokenizer.decode(out[0], skip_special_tokens=True).strip(), settings.until
        )
