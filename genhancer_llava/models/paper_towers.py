"""The vision-tower shapes of the paper's backbones (public HF configs), without weights.

Tests build every paper preset on the meta device with these towers; benchmarks time paper-sized
steps without downloading a checkpoint. Real runs read the shape from the folder's config.json.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PAPER_TOWERS", "preset_tower", "random_tower"]

# name -> (family, vision-config fields; image_size comes from the preset)
PAPER_TOWERS: dict[str, tuple[str, dict[str, Any]]] = {
    "clip-l14": ("clip", dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, patch_size=14, projection_dim=768)),
    "metaclip-h14": ("clip", dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                  num_attention_heads=16, patch_size=14, projection_dim=1024)),
    "siglip-so400m": ("siglip", dict(hidden_size=1152, intermediate_size=4304,
                                     num_hidden_layers=27, num_attention_heads=16,
                                     patch_size=14)),
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
