"""Vision encoders behind one small interface: global token, local tokens, preprocessing stats.

For CLIP-family folders only the vision tower and `visual_projection` are loaded: the text
tower never enters training (the reference code loads the whole CLIPModel and puts LoRA on the
text tower too, which never receives a gradient).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import AutoConfig, CLIPVisionConfig, CLIPVisionModelWithProjection

from .errors import GenhancerError

__all__ = ["EncoderOutput", "CLIPEncoder", "load_encoder", "read_clip_vision_config"]

# OpenAI CLIP's normalisation, used when a folder has no preprocessor_config.json.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class EncoderOutput:
    global_token: torch.Tensor  # (B, d_global)
    local_tokens: torch.Tensor | None  # (B, k, d_local) or None


def read_clip_vision_config(path: str | Path) -> tuple[CLIPVisionConfig, str]:
    """The vision config of a CLIP folder, with the joint-space width, and the folder's kind.

    Returns (vision_config, model_type) where model_type is "clip" for a full CLIPModel folder
    and "clip_vision_model" for a vision-only one.
    """
    path = Path(path)
    if not path.is_dir():
        raise GenhancerError(
            f"encoder folder {path} does not exist; set encoder.path to a local CLIP folder"
        )
    if not (path / "config.json").is_file():
        raise GenhancerError(f"{path} has no config.json; it is not a Hugging Face model folder")
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type not in ("clip", "clip_vision_model"):
        raise GenhancerError(
            f"{path} holds a '{model_type}' model, not CLIP; point encoder.path at a CLIPModel "
            "or CLIPVisionModelWithProjection folder"
        )
    config = AutoConfig.from_pretrained(path)
    if model_type == "clip":
        # The joint-space width lives on CLIPConfig; the nested vision config carries a default
        # (512) that would silently re-initialise visual_projection at the wrong size.
        vision = config.vision_config
        vision.projection_dim = config.projection_dim
        return vision, model_type
    return config, model_type


def _image_stats(path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    processor = path / "preprocessor_config.json"
    if processor.is_file():
        data = json.loads(processor.read_text())
        if "image_mean" in data and "image_std" in data:
            return tuple(data["image_mean"]), tuple(data["image_std"])
    return OPENAI_MEAN, OPENAI_STD


class CLIPEncoder(nn.Module):
    """CLIP vision tower + visual_projection; the global token is the projected CLS (pooler).

    Args:
        model: the vision tower with its projection (possibly wrapped by peft for LoRA).
        image_mean / image_std: the normalisation the tower was trained with.
        local_token_ratio: fraction of patch tokens also returned as local tokens (ablation).
    """

    family = "clip"

    def __init__(
        self,
        model: CLIPVisionModelWithProjection,
        image_mean: tuple[float, ...] = OPENAI_MEAN,
        image_std: tuple[float, ...] = OPENAI_STD,
        local_token_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        config = model.config
        self.global_dim: int = config.projection_dim
        self.local_dim: int = config.hidden_size
        self.image_size: int = config.image_size
        num_patches = (config.image_size // config.patch_size) ** 2
        self.num_local_tokens = math.ceil(local_token_ratio * num_patches)

    def lora_target_regex(self, modules: tuple[str, ...], include_projection: bool) -> str:
        """A peft `target_modules` regex that matches vision-tower layers only."""
        names = "|".join(modules)
        pattern = rf".*vision_model\.encoder\.layers\.\d+\.(self_attn|mlp)\.({names})"
        if include_projection:
            pattern = rf"(?:{pattern}|.*visual_projection)"
        return pattern

    def forward(self, pixel_values: torch.Tensor) -> EncoderOutput:
        # pixel_values: (B, 3, H, W), normalised with image_mean / image_std
        out = self.model.vision_model(pixel_values=pixel_values)
        global_token = self.model.visual_projection(out.pooler_output)  # (B, d_global)
        local = None
        if self.num_local_tokens:
            patches = out.last_hidden_state[:, 1:]  # (B, P, d_local), CLS dropped
            if self.training:
                index = torch.randperm(patches.shape[1], device=patches.device)
            else:  # evenly spread, deterministic
                index = torch.linspace(0, patches.shape[1] - 1, patches.shape[1]).long()
            index = index[: self.num_local_tokens].to(patches.device)
            local = patches[:, index]  # (B, k, d_local)
        return EncoderOutput(global_token=global_token, local_tokens=local)


def load_encoder(
    path: str | Path,
    image_size: int,
    local_token_ratio: float = 0.0,
    dtype: torch.dtype | None = None,
) -> CLIPEncoder:
    """Load a CLIP vision tower + projection from a local folder, without the text tower.

    Args:
        path: a CLIPModel or CLIPVisionModelWithProjection folder.
        image_size: the resolution training will feed; must equal the tower's.
        local_token_ratio: see `CLIPEncoder`.
        dtype: parameter dtype (None keeps the stored one).
    """
    path = Path(path)
    vision_config, _ = read_clip_vision_config(path)
    if image_size != vision_config.image_size:
        raise GenhancerError(
            f"encoder.image_size={image_size} but the CLIP at {path} takes "
            f"{vision_config.image_size} px; set encoder.image_size={vision_config.image_size}"
        )
    if image_size % vision_config.patch_size:
        raise GenhancerError(
            f"encoder.image_size={image_size} is not a multiple of the patch size "
            f"{vision_config.patch_size}"
        )
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the text-tower keys are skipped on purpose
    try:
        model, info = CLIPVisionModelWithProjection.from_pretrained(
            path, config=vision_config, dtype=dtype, output_loading_info=True
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    if info["missing_keys"]:
        # A CLIPVisionModel folder has no visual_projection: it would be random here.
        missing = sorted(info["missing_keys"])
        raise GenhancerError(
            f"{path} lacks {len(missing)} encoder weights (first: {missing[0]}); it needs the "
            "vision tower and visual_projection (a CLIPModel or CLIPVisionModelWithProjection)"
        )
    mean, std = _image_stats(path)
    return CLIPEncoder(model, mean, std, local_token_ratio)
