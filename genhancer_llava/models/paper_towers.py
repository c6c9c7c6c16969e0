"""The vision-tower shapes of the paper's backbones (public HF configs), without weights.

Tests build every paper preset on the meta device with these towers; benchmarks time paper-sized
steps without downloading a checkpoint. Real runs read the shape from the folder's config.json.
The published config files these numbers were read from are kept, with where each was read, in
the repository's tests/fixtures/configs/ (named after `PRESET_CHECKPOINTS`); a test holds
`PAPER_TOWERS` to them.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "PAPER_TOWERS",
    "PRESET_CHECKPOINTS",
    "preset_checkpoint",
    "preset_tower",
    "random_tower",
]

# name -> (family, vision-config fields; image_size comes from the preset)
PAPER_TOWERS: dict[str, tuple[str, dict[str, Any]]] = {
    "clip-l14": (
        "clip",
        dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            patch_size=14,
            projection_dim=768,
        ),
    ),
    "metaclip-h14": (
        "clip",
        dict(
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=16,
            patch_size=14,
            projection_dim=1024,
        ),
    ),
    "siglip-so400m": (
        "siglip",
        dict(
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=27,
            num_attention_heads=16,
            patch_size=14,
        ),
    ),
}
# paper preset (its -masked twin too) -> the public checkpoint it enhances
PRESET_CHECKPOINTS = {
    "openai-clip-l14-224": "openai/clip-vit-large-patch14",
    "openai-clip-l14-336": "openai/clip-vit-large-patch14-336",
    "metaclip-l14-224": "facebook/metaclip-l14-fullcc2.5b",
    "metaclip-h14-224": "facebook/metaclip-h14-fullcc2.5b",
    "siglip-so400m-224": "google/siglip-so400m-patch14-224",
    "siglip-so400m-384": "google/siglip-so400m-patch14-384",
}
# preset name prefix -> its backbone's tower (OpenAI CLIP and MetaCLIP L/14 share a shape)
_PRESET_PREFIXES = {
    "openai-clip-l14": "clip-l14",
    "metaclip-l14": "clip-l14",
    "metaclip-h14": "metaclip-h14",
    "siglip-so400m": "siglip-so400m",
}


def preset_tower(preset: str) -> str | None:
    """The paper tower of a preset name (e.g. 'siglip-so400m-384' -> 'siglip-so400m'), or None."""
    for prefix, tower in _PRESET_PREFIXES.items():
        if preset.startswith(prefix):
            return tower
    return None


def preset_checkpoint(preset: str) -> str | None:
    """The public checkpoint a paper preset enhances ('...-masked' shares its twin's)."""
    return PRESET_CHECKPOINTS.get(preset.removesuffix("-masked"))


def random_tower(name: str, image_size: int):
    """A paper tower with random weights behind the encoder interface.

    Build it under `torch.device("meta")` for shapes only (no memory), or on a real device to
    time it.

    Args:
        name: a key of `PAPER_TOWERS`.
        image_size: the preset's resolution.
    """
    from .families import get_family

    family, shape = PAPER_TOWERS[name]
    return get_family(family).random_encoder(dict(shape, image_size=image_size))
