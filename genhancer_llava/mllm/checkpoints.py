"""The LLaVA checkpoint families `genhancer swap` and the runner know, in one table.

A checkpoint's family is read from its config.json, never from its name:

- llava-hf checkpoints by `model_type`: `llava` (LLaVA-1.5, `LlavaForConditionalGeneration`),
  `llava_next` (LLaVA-NeXT / 1.6, anyres tiles, `LlavaNextForConditionalGeneration`),
  `llava_onevision` (LLaVA-OneVision, anyres_max_9 tiles,
  `LlavaOnevisionForConditionalGeneration`);
- original-format checkpoints (haotian-liu/LLaVA) by `mm_vision_tower`: LLaVA-1.5, or LLaVA-NeXT
  (`llava-v1.6-*`) when `image_aspect_ratio` is `anyres`; both load through the hook
  (`llava_patches`), which is the only code that imports the original LLaVA package.

What the table says of each family: the class that loads it, where its tower's weights live in
the stored files, which config keys hold the vision feature layer and select strategy (a swap
keeps both as the checkpoint has them), and how many of the encoder's last layers the
checkpoint's tower drops (LLaVA-OneVision keeps SigLIP SO400M's first 26 of 27 layers and reads
the last kept one; see `dropped_last_layers`). A new family is one entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GenhancerError

__all__ = [
    "CHECKPOINT_FAMILIES",
    "LlavaFamily",
    "checkpoint_family",
    "feature_selection",
    "read_checkpoint_config",
    "supported_families",
]


@dataclass(frozen=True)
class LlavaFamily:
    """One LLaVA checkpoint family.

    Args:
        name: how messages and provenance name it.
        format: "llava-hf" (transformers classes) or "original" (LLaVA's own code + the hook).
        model_type: config.json `model_type` of a llava-hf checkpoint (None: original format).
        model_class: the transformers class (llava-hf) or LLaVA class (original) that loads it.
        tower_prefixes: where the tower's weights live in the stored files, newest layout first
            (transformers >= 4.52 saves `model.vision_tower.`, older llava-hf uploads
            `vision_tower.`); keys below may or may not carry a `vision_model.` level.
        feature_layer_key / feature_strategy_key: the config keys holding the vision feature
            layer and the select strategy (kept as the checkpoint has them).
        dropped_last_layers: how many of its encoder's last layers the checkpoint's tower lacks;
            a swap then copies the encoder's first N layers (N = the tower's depth).
        tiling: how images become tower inputs (messages, provenance).
        example: a published checkpoint of the family.
    """

    name: str
    format: str
    model_type: str | None
    model_class: str
    tower_prefixes: tuple[str, ...]
    feature_layer_key: str
    feature_strategy_key: str
    dropped_last_layers: int
    tiling: str
    example: str

    def transformers_class(self):
        """The transformers class of a llava-hf family."""
        if self.format != "llava-hf":
            raise GenhancerError(
                f"{self.name} checkpoints load with LLaVA's own code "
                "(llava_patches), not a transformers class"
            )
        import transformers

        return getattr(transformers, self.model_class)


_HF_TOWER = ("model.vision_tower.", "vision_tower.")
_ORIGINAL_TOWER = ("model.vision_tower.vision_tower.",)

CHECKPOINT_FAMILIES: dict[str, LlavaFamily] = {
    family.name: family
    for family in (
        LlavaFamily(
            "LLaVA-1.5 (llava-hf)",
            "llava-hf",
            "llava",
            "LlavaForConditionalGeneration",
            _HF_TOWER,
            "vision_feature_layer",
            "vision_feature_select_strategy",
            0,
            "one image, one tile",
            "llava-hf/llava-1.5-7b-hf",
        ),
        LlavaFamily(
            "LLaVA-NeXT (llava-hf)",
            "llava-hf",
            "llava_next",
            "LlavaNextForConditionalGeneration",
            _HF_TOWER,
            "vision_feature_layer",
            "vision_feature_select_strategy",
            0,
            "anyres: a base view + tiles of image_grid_pinpoints",
            "llava-hf/llava-v1.6-vicuna-7b-hf",
        ),
        # The original LLaVA-OneVision code deletes SO400M's last layer and reads the new last
        # one; llava-hf stores that 26-layer tower with vision_feature_layer -1.
        LlavaFamily(
            "LLaVA-OneVision (llava-hf)",
            "llava-hf",
            "llava_onevision",
            "LlavaOnevisionForConditionalGeneration",
            _HF_TOWER,
            "vision_feature_layer",
            "vision_feature_select_strategy",
            1,
            "anyres_max_9: a base view + up to 9 tiles' worth of image_grid_pinpoints",
            "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
        ),
        LlavaFamily(
            "LLaVA-1.5 (original)",
            "original",
            None,
            "LlavaLlamaForCausalLM",
            _ORIGINAL_TOWER,
            "mm_vision_select_layer",
            "mm_vision_select_feature",
            0,
            "image_aspect_ratio pad/square",
            "liuhaotian/llava-v1.5-7b",
        ),
        LlavaFamily(
            "LLaVA-NeXT (original)",
            "original",
            None,
            "LlavaLlamaForCausalLM",
            _ORIGINAL_TOWER,
            "mm_vision_select_layer",
            "mm_vision_select_feature",
            0,
            "image_aspect_ratio anyres: a base view + tiles of image_grid_pinpoints",
            "liuhaotian/llava-v1.6-vicuna-7b",
        ),
    )
}


def supported_families() -> str:
    """'LLaVA-1.5 (llava-hf): model_type 'llava', ...' for errors that say what fits."""
    parts = [
        f"{f.name} (model_type {f.model_type!r})"
        for f in CHECKPOINT_FAMILIES.values()
        if f.format == "llava-hf"
    ]
    parts.append(
        "original-format LLaVA-1.5 / LLaVA-NeXT llava-v1.6-* (mm_vision_tower in config.json)"
    )
    return ", ".join(parts)


def read_checkpoint_config(ckpt: str | Path) -> dict[str, Any]:
    """A checkpoint folder's config.json; one-line errors for a missing folder, file or JSON."""
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise GenhancerError(f"LLaVA checkpoint {ckpt} does not exist (expected a folder)")
    config = ckpt / "config.json"
    if not config.is_file():
        raise GenhancerError(f"{ckpt} has no config.json; it is not a LLaVA checkpoint folder")
    try:
        return json.loads(config.read_text())
    except json.JSONDecodeError as exc:
        raise GenhancerError(f"{config} is not valid JSON ({exc})") from exc


def _family_of_config(config: dict[str, Any]) -> LlavaFamily | None:
    if "mm_vision_tower" in config:
        anyres = str(config.get("image_aspect_ratio") or "").startswith("anyres")
        return CHECKPOINT_FAMILIES["LLaVA-NeXT (original)" if anyres else "LLaVA-1.5 (original)"]
    if "vision_config" not in config:
        return None
    return next(
        (
            f
            for f in CHECKPOINT_FAMILIES.values()
            if f.model_type is not None and f.model_type == config.get("model_type")
        ),
        None,
    )


def checkpoint_family(
    ckpt: str | Path, config: dict[str, Any] | None = None
) -> tuple[LlavaFamily, dict[str, Any]]:
    """(family, config.json) of a checkpoint folder; a one-line error naming what fits.

    Args:
        ckpt: the checkpoint folder.
        config: its config.json when already read.
    """
    config = read_checkpoint_config(ckpt) if config is None else config
    family = _family_of_config(config)
    if family is None:
        raise GenhancerError(
            f"{ckpt} is neither a llava-hf checkpoint of a known family nor an original-format "
            f"LLaVA checkpoint: its config says model_type {config.get('model_type')!r}; what "
            f"fits: {supported_families()}"
        )
    return family, config


def feature_selection(family: LlavaFamily, config: dict[str, Any]) -> dict[str, Any]:
    """The vision feature layer and select strategy the checkpoint uses (as stored)."""
    return {
        family.feature_layer_key: config.get(family.feature_layer_key),
        family.feature_strategy_key: config.get(family.feature_strategy_key),
    }
