"""Vision towers for LLaVA built from exported encoder folders (CLIP with CLS, SigLIP without;
the vision class and CLS token of each family come from `genhancer_llava.models.families`).

They follow the interface LLaVA's `LlavaMetaModel` expects of a tower (`load_model`,
`forward(images)`, `image_processor`, `hidden_size`, `num_patches_per_side`, `is_loaded`,
`config`, `dtype`, `device`, `dummy_feature`), and are our own code: nothing here imports LLaVA.

Gradients. LLaVA's CLIPVisionTower runs `forward` under `@torch.no_grad()`, which silently
blocks training the tower. The LLaVA-1.5 recipe keeps the tower frozen (`load_model` calls
`requires_grad_(False)`, as here), so these towers track gradients exactly when some tower
parameter requires them: with the recipe's frozen tower that is no_grad (same memory and
results as LLaVA); a user who unfreezes the tower gets real gradients instead of none.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoImageProcessor

from genhancer_llava.errors import GenhancerError
from genhancer_llava.mllm.registry import TowerSpec, resolve_tower
from genhancer_llava.models.families import get_family
from genhancer_llava.utils import quiet_transformers

__all__ = ["GenhancerCLIPTower", "GenhancerSiglipTower", "build_tower", "with_crop_size"]

SELECT_FEATURES = ("patch", "cls_patch")


def with_crop_size(processor, image_size: int):
    """Give the processor a `crop_size` when it has none (SigLIP's processors resize without
    cropping): LLaVA's dataset makes the zero image of a text-only sample from
    `crop_size['height']`, and crashes on None. It is the size the processor outputs."""
    if getattr(processor, "crop_size", None) is None:
        size = getattr(processor, "size", None) or {}
        height = size.get("height", image_size) if isinstance(size, dict) else image_size
        width = size.get("width", image_size) if isinstance(size, dict) else image_size
        processor.crop_size = {"height": height, "width": width}
    return processor


class _ExportedTower(nn.Module):
    """A tower of any registered family: its vision class and CLS token come from the family."""

    def __init__(self, spec: TowerSpec, args, delay_load: bool = False) -> None:
        super().__init__()
        self.is_loaded = False
        self.spec = spec
        family = get_family(spec.kind)
        self.model_class = family.cls("vision_model")
        self.has_cls_token = family.has_cls_token
        self.vision_tower_name = spec.name
        self.select_layer = getattr(args, "mm_vision_select_layer", -2)
        self.select_feature = getattr(args, "mm_vision_select_feature", "patch") or "patch"
        if self.select_feature not in SELECT_FEATURES:
            raise GenhancerError(
                f"mm_vision_select_feature={self.select_feature!r} is not one of "
                f"{', '.join(SELECT_FEATURES)}"
            )
        if self.select_feature == "patch" and not self.has_cls_token:
            raise GenhancerError(
                f"vision tower {spec.name!r} is a {spec.kind} encoder without a CLS token: "
                "mm_vision_select_feature 'patch' would drop a real image token; pass "
                "--mm_vision_select_feature cls_patch (keeps every token)"
            )
        if not delay_load or getattr(args, "unfreeze_mm_vision_tower", False):
            self.load_model()
        else:
            self.cfg_only = self._vision_config()

    def _vision_config(self):
        config = AutoConfig.from_pretrained(self.spec.path)
        return getattr(config, "vision_config", config)

    def load_model(self, device_map=None) -> None:
        """Load the encoder's vision tower and image processor from the exported folder."""
        if self.is_loaded:
            return
        self.image_processor = with_crop_size(
            AutoImageProcessor.from_pretrained(self.spec.path), self._vision_config().image_size
        )
        with quiet_transformers():  # a full CLIPModel folder has text weights
            self.vision_tower = self.model_class.from_pretrained(
                self.spec.path, device_map=device_map
            )
        self.vision_tower.requires_grad_(False)
        self.is_loaded = True

    def feature_select(self, outputs) -> torch.Tensor:
        features = outputs.hidden_states[self.select_layer]  # (B, T, D)
        if self.select_feature == "patch":
            features = features[:, 1:]  # (B, T-1, D): CLS dropped
        return features

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        # images: (B, 3, H, W) -> (B, T, D)
        outputs = self.vision_tower(
            images.to(device=self.device, dtype=self.dtype), output_hidden_states=True
        )
        return self.feature_select(outputs).to(images.dtype)

    def forward(self, images):
        trainable = any(p.requires_grad for p in self.vision_tower.parameters())
        with torch.set_grad_enabled(trainable and torch.is_grad_enabled()):
            if isinstance(images, list):  # LLaVA passes a list for variable-size images
                return [self._encode(image.unsqueeze(0)) for image in images]
            return self._encode(images)

    @property
    def dummy_feature(self) -> torch.Tensor:
        return torch.zeros(1, self.hidden_size, device=self.device, dtype=self.dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_tower.dtype

    @property
    def device(self) -> torch.device:
        return self.vision_tower.device

    @property
    def config(self):
        return self.vision_tower.config if self.is_loaded else self.cfg_only

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_patches_per_side(self) -> int:
        return self.config.image_size // self.config.patch_size

    @property
    def num_patches(self) -> int:
        return self.num_patches_per_side**2


class GenhancerCLIPTower(_ExportedTower):
    """A CLIP (or MetaCLIP) export as a LLaVA tower: `patch` drops CLS, `cls_patch` keeps it.

    Args:
        spec: the resolved tower (name, folder, kind).
        args: LLaVA's model args or model config (mm_vision_select_layer/_feature).
        delay_load: read only the config now; weights come with `load_model()`.
    """


class GenhancerSiglipTower(_ExportedTower):
    """A SigLIP export as a LLaVA tower. SigLIP has no CLS token: only `cls_patch` is allowed.

    Args:
        spec: the resolved tower (name, folder, kind).
        args: LLaVA's model args or model config (mm_vision_select_layer/_feature).
        delay_load: read only the config now; weights come with `load_model()`.
    """


# Named classes for the built-in families (readable reprs, isinstance checks); any other
# registered family gets the shared class, which reads everything from the family entry.
TOWER_CLASSES = {"clip": GenhancerCLIPTower, "siglip": GenhancerSiglipTower}


def build_tower(name: str, args, delay_load: bool = False) -> _ExportedTower:
    """The tower for a genhancer name (see `genhancer_llava.mllm.registry`)."""
    spec = resolve_tower(name)
    return TOWER_CLASSES.get(spec.kind, _ExportedTower)(spec, args, delay_load=delay_load)
