"""The builder hook: `genhancer[:NAME|:PATH]` towers in the original LLaVA code.

LLaVA builds towers with `llava.model.multimodal_encoder.builder.build_vision_tower`, and
`llava.model.llava_arch` imports that function by name, so both attributes are replaced.
Every other name goes to LLaVA's own builder, unchanged, except for one thing: a checkpoint
with `unfreeze_mm_vision_tower: true` (LLaVA-NeXT's llava-v1.6-*) makes a tower load its
weights while the model is constructed, and transformers 5 constructs models on the meta
device, where `from_pretrained` refuses to run. There the tower is built as with `delay_load`
(config only) for either builder, and loads when `load_model()` is called after
`from_pretrained` (what LLaVA's loader and `llava_patches.runner` do), which then applies the
checkpoint's stored tower weights as LLaVA did.
"""

from __future__ import annotations

import functools

import torch

from genhancer_llava.errors import GenhancerError
from genhancer_llava.mllm.registry import is_genhancer_name

from .towers import build_tower

__all__ = [
    "build_vision_tower",
    "install_builder",
    "install_tower_switch",
    "meta_init",
    "tower_name",
]

_ORIGINAL: dict[str, object] = {}


def tower_name(cfg) -> str | None:
    """The tower name LLaVA reads: `mm_vision_tower` (model config) or `vision_tower` (args)."""
    return getattr(cfg, "mm_vision_tower", getattr(cfg, "vision_tower", None))


def meta_init() -> bool:
    """Whether tensors are being created on the meta device (transformers 5's model init)."""
    return torch.empty(()).device.type == "meta"


class _Deferred:
    """A tower config that reads as `unfreeze_mm_vision_tower: false` (see the module doc)."""

    unfreeze_mm_vision_tower = False

    def __init__(self, cfg) -> None:
        self._cfg = cfg

    def __getattr__(self, name: str):
        return getattr(self._cfg, name)


def build_vision_tower(vision_tower_cfg, **kwargs):
    """LLaVA's `build_vision_tower`, plus the genhancer names (resolved by the registry)."""
    name = tower_name(vision_tower_cfg)
    if (
        kwargs.get("delay_load")
        and getattr(vision_tower_cfg, "unfreeze_mm_vision_tower", False)
        and meta_init()
    ):
        vision_tower_cfg = _Deferred(vision_tower_cfg)
    if is_genhancer_name(name):
        return build_tower(name, vision_tower_cfg, **kwargs)
    return _ORIGINAL["build_vision_tower"](vision_tower_cfg, **kwargs)


def install_builder() -> None:
    """Replace `build_vision_tower` in LLaVA's builder module and in `llava_arch` (idempotent)."""
    import llava.model.llava_arch as arch
    import llava.model.multimodal_encoder.builder as builder

    if builder.build_vision_tower is not build_vision_tower:
        _ORIGINAL.setdefault("build_vision_tower", builder.build_vision_tower)
    builder.build_vision_tower = build_vision_tower
    arch.build_vision_tower = build_vision_tower


def _loaded_name(tower) -> str | None:
    return getattr(tower, "vision_tower_name", None)


def install_tower_switch() -> None:
    """Make `initialize_vision_modules` load the tower it is asked for (the checkpoint pitfall).

    LLaVA builds the tower named in a checkpoint's config when the model is constructed; when
    training then continues with another `--vision_tower`, `initialize_vision_modules` writes
    the new name into the config but calls `load_model()` on the OLD tower: the old weights
    train and ship under the new name. Here a different name builds the new tower first; when
    the projector already in the checkpoint does not fit the new tower's width, it stops with
    a one-line error.
    """
    from llava.model.llava_arch import LlavaMetaModel

    original = LlavaMetaModel.initialize_vision_modules
    if getattr(original, "_genhancer_switch", False):
        return

    @functools.wraps(original)
    def initialize_vision_modules(self, model_args, fsdp=None):
        current = self.get_vision_tower()
        wanted = getattr(model_args, "vision_tower", None)
        if current is not None and wanted is not None and _loaded_name(current) != wanted:
            new_tower = build_vision_tower(model_args)
            projector = getattr(self, "mm_projector", None)
            old_width = getattr(self.config, "mm_hidden_size", None)
            if projector is not None and old_width not in (None, new_tower.hidden_size):
                raise GenhancerError(
                    f"the checkpoint's projector takes {old_width}-wide features from "
                    f"{_loaded_name(current)!r}, but --vision_tower {wanted!r} gives "
                    f"{new_tower.hidden_size}; start from the base LLM (stage 1) instead"
                )
            print(
                f"[llava_patches] vision tower {_loaded_name(current)!r} -> {wanted!r}: "
                "loading the new tower's weights"
            )
            if fsdp is not None and len(fsdp) > 0:
                self.vision_tower = [new_tower]
            else:
                self.vision_tower = new_tower
        return original(self, model_args, fsdp=fsdp)

    initialize_vision_modules._genhancer_switch = True
    LlavaMetaModel.initialize_vision_modules = initialize_vision_modules
