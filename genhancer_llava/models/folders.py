"""Encoder folders read without torch: family, vision config and resolution checks.

Kept apart from `encoders` (which builds the towers) so that the command line can refuse a bad
folder before importing torch; transformers (for `AutoConfig`) is imported only once the folder
has been found and identified.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import GenhancerError
from .families import family_of_model_type, get_family, known_model_types

if TYPE_CHECKING:
    from transformers import PretrainedConfig

ENCODER_PATH_HINT = (
    "pass encoder.path=DIR, a local CLIP or SigLIP folder (`genhancer "
    "make-tiny-clip DIR` writes a tiny one)"
)

__all__ = [
    "ENCODER_PATH_HINT",
    "check_encoder_folder",
    "folder_family",
    "read_vision_config",
    "read_clip_vision_config",
    "check_resolution",
]


def check_encoder_folder(path: str | Path) -> Path:
    """The encoder folder exists and has a config.json (no transformers, no torch)."""
    path = Path(path)
    if not path.is_dir():
        raise GenhancerError(
            f"encoder folder {path} does not exist; set encoder.path to a local CLIP or SigLIP "
            "folder"
        )
    if not (path / "config.json").is_file():
        raise GenhancerError(f"{path} has no config.json; it is not a Hugging Face model folder")
    return path


def folder_family(path: str | Path) -> tuple[str, str]:
    """(family, model_type) of a local Hugging Face folder; a one-line error otherwise."""
    path = check_encoder_folder(path)
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    found = family_of_model_type(model_type)
    if found is not None:
        return found[0].name, model_type
    raise GenhancerError(
        f"{path} holds a '{model_type}' model, not CLIP or SigLIP; encoder.path takes "
        f"model_type {known_model_types()} (open_clip checkpoints: `genhancer convert-open-clip` "
        "first)"
    )


def read_vision_config(
    path: str | Path, family: str | None = None
) -> tuple[PretrainedConfig, str, str]:
    """The vision config of an encoder folder, and the folder's (model_type, family).

    Args:
        path: a full image-text model folder or a vision-tower folder of a registered family
            (CLIPModel / CLIPVisionModelWithProjection / SiglipModel / SiglipVisionModel).
        family: the family the config expects (`encoder.family`); a mismatch is an error.

    Returns (vision_config, model_type, family). For a full model folder whose config carries the
    joint-space width (`projection_dim`, CLIP), the vision config carries it too.
    """
    path = Path(path)
    found, model_type = folder_family(path)
    spec = get_family(found)
    if family is not None and family != found:
        raise GenhancerError(
            f"encoder.family={family} but {path} holds a {spec.model_types()[model_type]} "
            f"(family {found}); use a {found} preset ({spec.presets}) or set "
            f"encoder.family={found}"
        )
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    if model_type == spec.full_model_type:
        vision = config.vision_config
        if hasattr(config, "projection_dim"):
            # The joint-space width lives on the full config; the nested vision config carries a
            # default (512) that would silently re-initialise visual_projection at the wrong size.
            vision.projection_dim = config.projection_dim
        return vision, model_type, found
    return config, model_type, found


def read_clip_vision_config(path: str | Path) -> tuple[PretrainedConfig, str]:
    """(vision_config, model_type) of a CLIP folder (kept for callers of the CLIP-only API)."""
    vision, model_type, _ = read_vision_config(path, family="clip")
    return vision, model_type


def check_resolution(path: str | Path, image_size: int, vision: PretrainedConfig) -> None:
    """The tower's position embeddings cover exactly its own resolution: demand it.

    Families with `patch_multiple` (CLIP) also need the size to be a multiple of the patch;
    SigLIP's patch convolution drops the remainder (SO400M/14 at 384 px sees 27 x 27 patches),
    as its own processor does.
    """
    if image_size != vision.image_size:
        raise GenhancerError(
            f"encoder.image_size={image_size} but the tower at {path} has position embeddings for "
            f"{vision.image_size} px only; set encoder.image_size={vision.image_size} (or use a "
            f"preset of that resolution)"
        )
    found = family_of_model_type(getattr(vision, "model_type", None))
    if found is not None and found[0].patch_multiple and image_size % vision.patch_size:
        raise GenhancerError(
            f"encoder.image_size={image_size} is not a multiple of the patch size "
            f"{vision.patch_size}"
        )
