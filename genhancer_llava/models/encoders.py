"""Vision encoders behind one small interface: global token, local tokens, preprocessing stats,
LoRA target names.

Two families, told apart by the folder's `config.json` `model_type` (what differs between them
is registered in `families.py`; a new family is one entry there, plus a wrapper here when its
global token is formed differently):

- clip: CLIPModel or CLIPVisionModelWithProjection folders (OpenAI, MetaCLIP, open_clip
  checkpoints converted by `genhancer convert-open-clip`). Global token:
  visual_projection(pooler_output), the post-LN CLS in the joint space.
- siglip: SiglipModel or SiglipVisionModel folders. Global token: pooler_output, the
  attention-pooling (MAP) head over the post-LN patch tokens (no CLS, no projection).

Only the vision tower (and, for CLIP, `visual_projection`) is loaded: the text tower never
enters training (the reference code loads the whole model and puts LoRA on the text tower too,
which never receives a gradient).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
from torch import nn
from transformers import CLIPVisionModelWithProjection, PretrainedConfig, SiglipVisionModel

from ..errors import GenhancerError
from ..utils import quiet_transformers
from .families import FAMILIES, get_family
from .folders import (
    ENCODER_PATH_HINT,
    check_resolution,
    folder_family,
    read_clip_vision_config,
    read_vision_config,
)

__all__ = [
    "FAMILIES",
    "EncoderOutput",
    "CLIPEncoder",
    "SiglipEncoder",
    "Encoder",
    "folder_family",
    "read_vision_config",
    "read_clip_vision_config",
    "check_resolution",
    "load_encoder",
    "ENCODER_PATH_HINT",
    "pick_local",
]


# how to set encoder.path (in "not set" errors)
@dataclass
class EncoderOutput:
    global_token: torch.Tensor  # (B, d_global)
    local_tokens: torch.Tensor | None  # (B, k, d_local) or None


def _image_stats(
    path: Path, default: tuple[tuple[float, ...], tuple[float, ...]]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    processor = path / "preprocessor_config.json"
    if processor.is_file():
        data = json.loads(processor.read_text())
        if "image_mean" in data and "image_std" in data:
            return tuple(data["image_mean"]), tuple(data["image_std"])
    return default


def pick_local(patches: torch.Tensor, k: int, training: bool) -> torch.Tensor:
    """k of the P patch tokens: random while training, evenly spread otherwise."""
    # patches: (B, P, d_local)
    if training:
        index = torch.randperm(patches.shape[1], device=patches.device)
    else:  # deterministic
        index = torch.linspace(0, patches.shape[1] - 1, patches.shape[1]).long()
    return patches[:, index[:k].to(patches.device)]  # (B, k, d_local)


class _TowerEncoder(nn.Module):
    """What both families share: the wrapped tower, its normalisation and token widths."""

    family: str

    def __init__(
        self,
        model: nn.Module,
        image_mean: tuple[float, ...] | None,
        image_std: tuple[float, ...] | None,
        local_token_ratio: float,
    ) -> None:
        super().__init__()
        self.model = model
        spec = get_family(self.family)  # its default normalisation when none is given
        self.image_mean = tuple(image_mean or spec.image_mean)
        self.image_std = tuple(image_std or spec.image_std)
        config = model.config
        self.global_dim: int = getattr(config, spec.global_dim_field)
        self.local_dim: int = config.hidden_size
        self.image_size: int = config.image_size
        num_patches = (config.image_size // config.patch_size) ** 2
        self.num_local_tokens = math.ceil(local_token_ratio * num_patches)


class CLIPEncoder(_TowerEncoder):
    """CLIP vision tower + visual_projection; the global token is the projected CLS (pooler).

    Args:
        model: the vision tower with its projection (possibly wrapped by peft for LoRA).
        image_mean / image_std: the normalisation the tower was trained with (default: the
            family's, OpenAI CLIP's).
        local_token_ratio: fraction of patch tokens also returned as local tokens (ablation).
    """

    family = "clip"

    def __init__(
        self,
        model: CLIPVisionModelWithProjection,
        image_mean: tuple[float, ...] | None = None,
        image_std: tuple[float, ...] | None = None,
        local_token_ratio: float = 0.0,
    ) -> None:
        super().__init__(model, image_mean, image_std, local_token_ratio)

    def lora_target_regex(
        self, modules: tuple[str, ...], include_projection: bool, head_attention: str = "full"
    ) -> str:
        """A peft `target_modules` regex that matches vision-tower layers only.

        `include_projection` adds `visual_projection` (the CLIP presets set it: the reference's
        all-linear LoRA adapts it); `head_attention` is SigLIP's and has no effect here.
        """
        names = "|".join(modules)
        pattern = rf".*vision_model\.encoder\.layers\.\d+\.(self_attn|mlp)\.({names})"
        if include_projection:
            pattern = rf"(?:{pattern}|.*visual_projection)"
        return pattern

    def forward(self, pixel_values: torch.Tensor) -> EncoderOutput:
        # pixel_values: (B, 3, H, W), normalised with image_mean / image_std
        if not self.num_local_tokens:
            pooled = self._pooled_cls_only(pixel_values)  # (B, d_local)
            return EncoderOutput(self.model.visual_projection(pooled), None)
        out = self.model.vision_model(pixel_values=pixel_values)
        global_token = self.model.visual_projection(out.pooler_output)  # (B, d_global)
        patches = out.last_hidden_state[:, 1:]  # (B, P, d_local), CLS dropped
        local = pick_local(patches, self.num_local_tokens, self.training)
        return EncoderOutput(global_token=global_token, local_tokens=local)

    def _pooled_cls_only(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`vision_model(pixel_values).pooler_output`, with the last layer run for CLS alone.

        The global token reads only the CLS position of the last layer, which needs keys and
        values of every token but queries, attention, out-projection, MLP and post-LN of CLS
        only: about one layer's work less, forward and backward, with the same result. Every
        layer's own (possibly LoRA-wrapped) submodules are called, so adapters train as in the
        plain forward; with LoRA dropout only the random draws differ (fewer rows are dropped).
        """
        vision = self.model.vision_model
        hidden = vision.pre_layrnorm(vision.embeddings(pixel_values))  # (B, T, D), T = 1 + P
        *layers, last = vision.encoder.layers
        for layer in layers:
            hidden = layer(hidden, None)
        # the last CLIPEncoderLayer (pre-LN, no attention mask), for the CLS query only
        attn = last.self_attn
        normed = last.layer_norm1(hidden)  # (B, T, D)
        b, t, d = normed.shape
        heads = (b, -1, attn.num_heads, attn.head_dim)
        query = attn.q_proj(normed[:, :1]).view(heads).transpose(1, 2)  # (B, h, 1, hd)
        key = attn.k_proj(normed).view(heads).transpose(1, 2)  # (B, h, T, hd)
        value = attn.v_proj(normed).view(heads).transpose(1, 2)  # (B, h, T, hd)
        attended = nn.functional.scaled_dot_product_attention(
            query, key, value, dropout_p=attn.dropout if attn.training else 0.0, scale=attn.scale
        )  # (B, h, 1, hd)
        cls = hidden[:, 0] + attn.out_proj(attended.reshape(b, d))  # (B, D)
        cls = cls + last.mlp(last.layer_norm2(cls))
        return vision.post_layernorm(cls)  # (B, D)


class SiglipEncoder(_TowerEncoder):
    """SigLIP vision tower; the global token is its pooler output.

    SigLIP has no CLS token and no projection: `pooler_output` is the multihead attention-pooling
    (MAP) head applied to the post-LayerNorm patch tokens, the vector SigLIP's contrastive loss
    uses (1152-d for SO400M). Local tokens are drawn from all patch tokens.

    Args:
        model: a `SiglipVisionModel` with its pooling head (possibly wrapped by peft).
        image_mean / image_std: the normalisation the tower was trained with (default: the
            family's, 0.5 / 0.5).
        local_token_ratio: fraction of patch tokens also returned as local tokens (ablation).
    """

    family = "siglip"

    def __init__(
        self,
        model: SiglipVisionModel,
        image_mean: tuple[float, ...] | None = None,
        image_std: tuple[float, ...] | None = None,
        local_token_ratio: float = 0.0,
    ) -> None:
        super().__init__(model, image_mean, image_std, local_token_ratio)

    def lora_target_regex(
        self, modules: tuple[str, ...], include_projection: bool, head_attention: str = "full"
    ) -> str:
        """A peft `target_modules` regex over the tower's layers and its pooling head.

        The encoder layers' q/k/v/out_proj and fc1/fc2 and the pooling head's MLP, as the
        paper's code. The head's attention is a `torch.nn.MultiheadAttention`, whose forward
        reads `out_proj.weight` directly:

        - head_attention="full" (default) targets the whole module: peft's MultiheadAttention
          LoRA adapts its fused in-projection and its out-projection. This trains more than the
          paper's code does (a deliberate choice: the head forms the global token).
        - head_attention="reference" targets `head.attention.out_proj` alone, as the paper's code
          (`target_modules` naming out_proj): that LoRA is bypassed by the module's forward, so
          in effect only the out-projection's bias trains there.
        """
        if include_projection:
            raise GenhancerError(
                "lora.include_projection=true adapts CLIP's visual_projection; SigLIP has none "
                "(its pooling head is adapted already); set lora.include_projection=false"
            )
        names = "|".join(modules)
        parts = [rf"encoder\.layers\.\d+\.(?:self_attn|mlp)\.(?:{names})"]
        if head_attention == "reference":
            if "out_proj" in modules:
                parts.append(r"head\.attention\.out_proj")
        elif any(m in modules for m in ("q_proj", "k_proj", "v_proj", "out_proj")):
            parts.append(r"head\.attention")
        head_mlp = [m for m in ("fc1", "fc2") if m in modules]
        if head_mlp:
            parts.append(rf"head\.mlp\.(?:{'|'.join(head_mlp)})")
        return rf"(?:.*\.)?(?:{'|'.join(parts)})"

    def forward(self, pixel_values: torch.Tensor) -> EncoderOutput:
        # pixel_values: (B, 3, H, W), normalised with image_mean / image_std
        out = self.model(pixel_values=pixel_values)
        global_token = out.pooler_output  # (B, d), MAP head over post-LN tokens
        local = None
        if self.num_local_tokens:
            # (B, P, d_local): every token is a patch token (no CLS)
            local = pick_local(out.last_hidden_state, self.num_local_tokens, self.training)
        return EncoderOutput(global_token=global_token, local_tokens=local)


Encoder = Union[CLIPEncoder, SiglipEncoder]  # noqa: UP007 (a runtime alias)


def _from_pretrained(cls, path: Path, config: PretrainedConfig, dtype: torch.dtype | None):
    with quiet_transformers():  # the text-tower keys are skipped on purpose
        return cls.from_pretrained(path, config=config, dtype=dtype, output_loading_info=True)


def load_encoder(
    path: str | Path,
    image_size: int,
    local_token_ratio: float = 0.0,
    dtype: torch.dtype | None = None,
    family: str | None = None,
) -> Encoder:
    """Load a CLIP or SigLIP vision tower from a local folder, without the text tower.

    Args:
        path: a CLIPModel, CLIPVisionModelWithProjection, SiglipModel or SiglipVisionModel folder.
        image_size: the resolution training will feed; must equal the tower's.
        local_token_ratio: see `CLIPEncoder` / `SiglipEncoder`.
        dtype: parameter dtype (None keeps the stored one).
        family: `encoder.family` ("clip" | "siglip"); checked against the folder when given.
    """
    path = Path(path)
    vision, _, found = read_vision_config(path, family)
    check_resolution(path, image_size, vision)
    spec = get_family(found)
    if not getattr(vision, "vision_use_head", True):
        raise GenhancerError(
            f"the SigLIP at {path} has no attention-pooling head (vision_use_head=false); "
            "GenHancer's SigLIP global token is that head's output"
        )
    model, info = _from_pretrained(spec.cls("encoder_model"), path, vision, dtype)
    if info["missing_keys"]:
        # e.g. a CLIPVisionModel folder has no visual_projection: it would be random here.
        missing = sorted(info["missing_keys"])
        raise GenhancerError(
            f"{path} lacks {len(missing)} {spec.name} encoder weights (first: {missing[0]}); it "
            f"needs {spec.weights_hint}"
        )
    mean, std = _image_stats(path, (spec.image_mean, spec.image_std))
    return spec.cls("encoder")(model, mean, std, local_token_ratio)
