"""The encoder families we know, in one registry: what differs between CLIP and SigLIP.

Every module that once branched on "clip" vs "siglip" asks this registry instead: the
encoder loader (classes, default normalisation, the wrapper that yields the global token and
names the LoRA targets), the scorer (text padding), export (the full model class), the LLaVA
tower registry and swap (vision class, CLS token or not). A folder's family is read from its
`config.json` `model_type`, never guessed from a name.

A new family (SigLIP 2, EVA-CLIP, MetaCLIP 2, ...) is one `Family` entry passed to
`register_family`. Class names are looked up in `transformers` when first used, so importing
this module stays cheap (the LLaVA launcher and the config loader use it).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GenhancerError

__all__ = [
    "Family",
    "FAMILIES",
    "register_family",
    "get_family",
    "family_of_model_type",
    "read_folder_family",
    "known_model_types",
]


@dataclass(frozen=True)
class Family:
    """What one encoder family needs, by name.

    Args:
        name: the `encoder.family` value ("clip", "siglip").
        full_model: transformers class of an image-text folder (scoring, export of full bases).
        full_config: its config class (its `model_type` identifies full folders).
        vision_model: the bare vision tower class (what LLaVA's tower and swap load).
        encoder_model: the tower enhancement trains (CLIP: with `visual_projection`).
        vision_config: the vision config class (its `model_type` identifies vision folders).
        image_processor: the processor class of the family's folders.
        encoder: the wrapper in `genhancer_llava.models.encoders` (global token, local tokens,
            LoRA target names), or "module:Class" for one defined elsewhere.
        has_cls_token: whether the tower's first token is a CLS token (LLaVA's 'patch' feature
            drops it; without one every token is a patch).
        image_mean / image_std: normalisation when a folder has no preprocessor_config.json.
        patch_multiple: whether the image size must be a multiple of the patch (CLIP's
            embeddings demand it; SigLIP's patch convolution drops the remainder).
        global_token: how the global token is formed (recorded in export provenance).
        global_dim_field: the vision config field that is the global token's width.
        weights_hint: what an encoder folder must hold (in missing-weights errors).
        presets: preset names of this family (in mismatch errors).
        text_pad_to_max_length: the scorer pads texts to the tokenizer's max length.
        text_attention_mask: the scorer passes the text attention mask.
    """

    name: str
    full_model: str
    full_config: str
    vision_model: str
    encoder_model: str
    vision_config: str
    image_processor: str
    encoder: str
    has_cls_token: bool
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    patch_multiple: bool
    global_token: str
    global_dim_field: str
    weights_hint: str
    presets: str
    text_pad_to_max_length: bool
    text_attention_mask: bool

    # ---- classes, looked up on first use ----------------------------------------------------

    def cls(self, field: str) -> Any:
        """The class a field names: `transformers.<name>`, an encoder wrapper, or module:Class."""
        name = getattr(self, field)
        if ":" in name:
            module, attr = name.split(":")
            return getattr(importlib.import_module(module), attr)
        if field == "encoder":
            return getattr(importlib.import_module("genhancer_llava.models.encoders"), name)
        import transformers

        return getattr(transformers, name)

    @property
    def full_model_type(self) -> str:
        return self.cls("full_config").model_type

    @property
    def vision_model_type(self) -> str:
        return self.cls("vision_config").model_type

    def model_types(self) -> dict[str, str]:
        """config.json `model_type` -> the class a folder of that type is read as."""
        return {self.full_model_type: self.full_model, self.vision_model_type: self.encoder_model}

    def random_encoder(self, vision_fields: dict[str, Any]):
        """The encoder wrapper around a randomly initialised tower (shapes, benchmarks).

        Args:
            vision_fields: keyword arguments of the family's vision config.
        """
        config = self.cls("vision_config")(**vision_fields)
        return self.cls("encoder")(self.cls("encoder_model")(config))


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add (or replace) a family; its model types must not belong to another family."""
    for other in FAMILIES.values():
        if other.name != family.name and set(other.model_types()) & set(family.model_types()):
            raise GenhancerError(
                f"family {family.name!r} claims model types {sorted(family.model_types())} that "
                f"family {other.name!r} already reads"
            )
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    """The registered family of that name; a one-line error listing the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise GenhancerError(
            f"unknown encoder family {name!r}; known: {', '.join(FAMILIES)}"
        ) from None


def family_of_model_type(model_type: str | None) -> tuple[Family, bool] | None:
    """(family, is a full image-text model) for a config.json `model_type`, or None."""
    for family in FAMILIES.values():
        if model_type == family.full_model_type:
            return family, True
        if model_type == family.vision_model_type:
            return family, False
    return None


def known_model_types() -> str:
    """'clip (CLIPModel), clip_vision_model (CLIPVisionModelWithProjection), ...' for errors."""
    return ", ".join(f"{t} ({c})" for f in FAMILIES.values() for t, c in f.model_types().items())


def read_folder_family(path: str | Path) -> tuple[Family, str]:
    """(family, model_type) of a local Hugging Face folder, from its config.json.

    Raises GenhancerError for a missing folder or config.json, invalid JSON, or a model type no
    family reads (the caller words its own error for the last case by catching it, if needed).
    """
    path = Path(path)
    if not path.is_dir():
        raise GenhancerError(f"model folder {path} does not exist")
    config = path / "config.json"
    if not config.is_file():
        raise GenhancerError(f"{path} has no config.json; it is not a Hugging Face model folder")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except json.JSONDecodeError as exc:
        raise GenhancerError(f"{config} is not valid JSON ({exc})") from exc
    found = family_of_model_type(model_type)
    if found is None:
        raise GenhancerError(
            f"{path} holds a '{model_type}' model; known encoder model types: {known_model_types()}"
        )
    return found[0], model_type


# The built-in entries (a new family: one more `register_family(Family(...))`).
FAMILIES["clip"] = Family(
    name="clip",
    full_model="CLIPModel",
    full_config="CLIPConfig",
    vision_model="CLIPVisionModel",
    encoder_model="CLIPVisionModelWithProjection",
    vision_config="CLIPVisionConfig",
    image_processor="CLIPImageProcessor",
    encoder="CLIPEncoder",
    has_cls_token=True,
    image_mean=(0.48145466, 0.4578275, 0.40821073),  # OpenAI CLIP's
    image_std=(0.26862954, 0.26130258, 0.27577711),
    patch_multiple=True,
    global_token="visual_projection(pooler_output): the post-LN CLS in the joint space",
    global_dim_field="projection_dim",
    weights_hint="the vision tower and visual_projection (a CLIPModel or "
    "CLIPVisionModelWithProjection)",
    presets="openai-clip-* or metaclip-*",
    text_pad_to_max_length=False,  # padded to the longest text, EOS-pooled with its mask
    text_attention_mask=True,
)

FAMILIES["siglip"] = Family(
    name="siglip",
    full_model="SiglipModel",
    full_config="SiglipConfig",
    vision_model="SiglipVisionModel",
    encoder_model="SiglipVisionModel",
    vision_config="SiglipVisionConfig",
    image_processor="SiglipImageProcessor",
    encoder="SiglipEncoder",
    has_cls_token=False,
    image_mean=(0.5, 0.5, 0.5),  # [-1, 1]
    image_std=(0.5, 0.5, 0.5),
    patch_multiple=False,
    global_token="pooler_output: the attention-pooling head over the post-LN patch tokens",
    global_dim_field="hidden_size",
    weights_hint="the vision tower with its pooling head (a SiglipModel or SiglipVisionModel "
    "folder)",
    presets="siglip-so400m-*",
    text_pad_to_max_length=True,  # as SigLIP was trained: max_length, no mask, last position
    text_attention_mask=False,
)
