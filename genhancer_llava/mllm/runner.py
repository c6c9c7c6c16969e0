"""Load a LLaVA checkpoint and answer (images, question) prompts; what the lmms-eval model uses.

Checkpoint formats and families (told apart by config.json, `checkpoints.checkpoint_family`):

- llava-hf, here: LLaVA-1.5, LLaVA-NeXT and LLaVA-OneVision, each loaded with its transformers
  class from the family table and its own processor, whose image processing (anyres tiles for
  NeXT and OneVision) and chat template build the inputs (LLaVA-1.5's Vicuna format when the
  processor has no template);
- any other format is a plug-in: a `LlavaRunner` subclass registered under the entry point group
  `genhancer_llava.llava_formats`, named after the format. This distribution registers
  `original = llava_patches.runner:OriginalRunner` (haotian-liu/LLaVA checkpoints, LLaVA-1.5 and
  LLaVA-NeXT llava-v1.6-*, loaded with LLaVA's own classes).

Why an entry point and not an import: loading an original-format checkpoint needs the original
LLaVA code, and everything that touches it lives in `llava_patches`, which imports this package.
Importing `llava_patches` from here (even lazily) would make the two packages import each other.
Looking the runner up by group name keeps imports flowing one way (`llava_patches` ->
`genhancer_llava`), keeps the lmms-eval model (`genhancer_llava.lmms`, which needs nothing from
LLaVA for llava-hf checkpoints) in the library, and lets another package add a format with one
entry point instead of an edit here.

`vision_tower=DIR` swaps an encoder in at load time, with the same checks as `genhancer swap`.
The same code runs on CPU (fp32) and GPU (bf16 by default); nothing names "cuda" except the
default device choice. No lmms_eval here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..errors import GenhancerError
from ..utils import default_device, default_dtype
from .checkpoints import LlavaFamily, checkpoint_family
from .swap import resolve_encoder, swap_llava_hf_tower

__all__ = [
    "FORMAT_GROUP",
    "GenerationSettings",
    "HFRunner",
    "LlavaRunner",
    "apply_until",
    "clean_gen_kwargs",
    "load_llava",
    "resolve_device",
    "resolve_dtype",
    "rgb_images",
    "runner_class",
]

# Entry point group of the runners for checkpoint formats other than llava-hf.
FORMAT_GROUP = "genhancer_llava.llava_formats"

# LLaVA-1.5's prompt (Vicuna v1), for llava-hf processors without a chat template.
_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
# Generation arguments passed through to HF generate when a task sets them.
_PASSED = ("repetition_penalty", "length_penalty", "min_new_tokens", "no_repeat_ngram_size")


@dataclass
class GenerationSettings:
    """What HF `generate` gets, and the stop strings applied to the decoded text."""

    kwargs: dict[str, Any]
    until: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def clean_gen_kwargs(
    gen_kwargs: dict[str, Any] | None, default_max_new_tokens: int = 1024
) -> GenerationSettings:
    """lmms-eval's task generation kwargs -> HF generate kwargs + stop strings.

    `until` (lmms-eval's stop strings) is removed and applied to the text afterwards; a
    temperature of 0 (or none, without `do_sample`) means greedy decoding, and then the sampling
    knobs (`temperature`, `top_p`, `top_k`) are not passed (HF warns on them, and
    `top_p: 0` in POPE's yaml is invalid for sampling); keys generate does not take
    (e.g. `image_sizes`) are dropped and listed.
    """
    g = dict(gen_kwargs or {})
    until = g.pop("until", None)
    if until is None:
        until = []
    elif isinstance(until, str):
        until = [until]
    elif not isinstance(until, (list, tuple)):
        raise GenhancerError(f"gen_kwargs 'until' must be a string or a list, got {until!r}")
    temperature = g.pop("temperature", None)
    do_sample = g.pop("do_sample", None)
    top_p, top_k = g.pop("top_p", None), g.pop("top_k", None)
    if do_sample is None:
        do_sample = bool(temperature) and float(temperature) > 0
    if temperature is not None and float(temperature) == 0:
        do_sample = False
    kwargs: dict[str, Any] = {
        "max_new_tokens": int(g.pop("max_new_tokens", default_max_new_tokens)),
        "do_sample": bool(do_sample),
        "num_beams": int(g.pop("num_beams", 1) or 1),
    }
    if do_sample:
        if temperature is not None:
            kwargs["temperature"] = float(temperature)
        if top_p is not None and 0 < float(top_p) <= 1:
            kwargs["top_p"] = float(top_p)
        if top_k is not None:
            kwargs["top_k"] = int(top_k)
    for key in _PASSED:
        if key in g:
            kwargs[key] = g.pop(key)
    return GenerationSettings(kwargs=kwargs, until=[s for s in until if s], dropped=sorted(g))


def apply_until(text: str, until: Sequence[str]) -> str:
    """Cut the text at the first stop string."""
    cut = len(text)
    for stop in until:
        at = text.find(stop)
        if at != -1:
            cut = min(cut, at)
    return text[:cut]


def resolve_device(device: str | None) -> str:
    """The device to run on: as given, else this process's GPU (LOCAL_RANK) or the CPU."""
    return default_device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """'auto' (default): bfloat16 on GPU, float32 on CPU; else the named torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        return default_dtype(device)
    value = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(value, torch.dtype):
        raise GenhancerError(f"dtype={dtype!r} is not a torch dtype (float32, bfloat16, float16)")
    return value


def rgb_images(images: Sequence[Image.Image]) -> list[Image.Image]:
    """The images as RGB (what every LLaVA image processor expects)."""
    return [im.convert("RGB") for im in images]


class LlavaRunner(ABC):
    """A loaded LLaVA that answers one (images, text) prompt at a time.

    Subclasses are constructed as `cls(path, vision_tower, device, dtype, device_map=...,
    conv_template=..., attn_implementation=...)` and ignore the options their format has no use
    for; `format` names the checkpoint format (`checkpoints.LlavaFamily.format`), and `family`
    is the checkpoint's family (set by `load_llava`).
    """

    format: str = ""
    family: LlavaFamily | None = None

    def __init__(self, model, device: str, dtype: torch.dtype) -> None:
        self.model = model.eval()
        self.dtype = dtype
        self.device = torch.device(device)

    @property
    def input_device(self) -> torch.device:
        """Where inputs go (the first parameter's device: right for device_map='auto' too)."""
        return next(self.model.parameters()).device

    @abstractmethod
    def prompt(self, num_images: int, text: str) -> str:
        """The model's prompt for `text` with `num_images` image placeholders."""

    @abstractmethod
    def answer(
        self, images: Sequence[Image.Image], text: str, gen_kwargs: dict[str, Any] | None = None
    ) -> str:
        """Generate the reply to one prompt."""


class HFRunner(LlavaRunner):
    """A llava-hf checkpoint of any family in the table (its transformers class + processor).

    Args:
        path: the checkpoint folder.
        vision_tower: an encoder folder or `genhancer[:NAME|:PATH]` to swap in at load time.
        device: where to run.
        dtype: the model's dtype.
        device_map: passed to `from_pretrained` (default: the device).
        conv_template: not used (the processor's chat template builds the prompt).
        attn_implementation: e.g. 'sdpa' or 'flash_attention_2'.
    """

    format = "llava-hf"

    def __init__(
        self,
        path: Path,
        vision_tower: str | None,
        device: str,
        dtype: torch.dtype,
        device_map: str | dict | None = None,
        conv_template: str | None = None,
        attn_implementation: str | None = None,
    ) -> None:
        from transformers import AutoProcessor

        family, _ = checkpoint_family(path)
        kwargs = {"dtype": dtype, "device_map": device_map or device}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        model = family.transformers_class().from_pretrained(path, **kwargs)
        if vision_tower:
            folder, _ = resolve_encoder(vision_tower)
            swap_llava_hf_tower(model, folder, f"{family.name} checkpoint {path}", family)
        super().__init__(model, device, dtype)
        self.processor = AutoProcessor.from_pretrained(path)
        self.tokenizer = self.processor.tokenizer

    def prompt(self, num_images: int, text: str) -> str:
        if getattr(self.processor, "chat_template", None):
            content = [{"type": "image"}] * num_images + [{"type": "text", "text": text}]
            return self.processor.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True
            )
        return f"{_SYSTEM} USER: {'<image>' * num_images}\n{text} ASSISTANT:"

    def answer(self, images, text, gen_kwargs=None) -> str:
        settings = clean_gen_kwargs(gen_kwargs)
        images = rgb_images(images)
        inputs = self.processor(
            images=images or None, text=self.prompt(len(images), text), return_tensors="pt"
        ).to(self.input_device)
        if "pixel_values" in inputs:  # (images, 3, H, W), or (images, tiles, 3, H, W) for anyres
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        pad = self.tokenizer.pad_token_id
        pad = self.tokenizer.eos_token_id if pad is None else pad
        with torch.inference_mode():
            out = self.model.generate(**inputs, **settings.kwargs, pad_token_id=pad)
        new = out[0, inputs["input_ids"].shape[1] :]
        return apply_until(
            self.tokenizer.decode(new, skip_special_tokens=True).strip(), settings.until
        )


def load_llava(
    pretrained: str | Path,
    vision_tower: str | None = None,
    device: str | None = None,
    dtype: str | torch.dtype | None = "auto",
    device_map: str | dict | None = None,
    conv_template: str = "vicuna_v1",
    attn_implementation: str | None = None,
) -> LlavaRunner:
    """Load a LLaVA checkpoint of a known family (read from config.json).

    Args:
        pretrained: the checkpoint folder.
        vision_tower: an encoder folder or `genhancer[:NAME|:PATH]` to swap in at load time.
        device: where to run (default: this process's GPU, else CPU).
        dtype: 'auto' (bf16 on GPU, fp32 on CPU) or a torch dtype name.
        device_map: passed to `from_pretrained` (default: the device; 'auto' spreads layers).
        conv_template: LLaVA's conversation template (original format only).
        attn_implementation: e.g. 'sdpa' or 'flash_attention_2' (llava-hf only).
    """
    path = Path(pretrained)
    family, _ = checkpoint_family(path)
    cls = runner_class(family.format)
    device = resolve_device(device)
    runner = cls(
        path,
        vision_tower,
        device,
        resolve_dtype(dtype, device),
        device_map=device_map,
        conv_template=conv_template,
        attn_implementation=attn_implementation,
    )
    runner.family = family
    return runner


def runner_class(fmt: str) -> type[LlavaRunner]:
    """The runner for checkpoint format `fmt`: llava-hf here, others from FORMAT_GROUP.

    When several installed distributions register the same name, the first on sys.path wins
    (as for imports).
    """
    if fmt == HFRunner.format:
        return HFRunner
    found = entry_points(group=FORMAT_GROUP, name=fmt)
    if not found:
        raise GenhancerError(
            f"no runner for {fmt}-format LLaVA checkpoints: none is registered under the entry "
            f"point group {FORMAT_GROUP!r}; install genhancer-llava with pip (its metadata "
            "registers `original`; a bare checkout on PYTHONPATH has none)"
        )
    cls = next(iter(found)).load()
    if not (isinstance(cls, type) and issubclass(cls, LlavaRunner)):
        raise GenhancerError(
            f"entry point {fmt!r} in {FORMAT_GROUP!r} is {cls!r}, not a LlavaRunner subclass"
        )
    return cls
