"""Using an enhanced encoder in LLaVA: the vision-tower registry (names -> exported folders).

Nothing here imports LLaVA; the hook that plugs the registry into the original LLaVA code lives
in the top-level `llava_patches` package.
"""

from .registry import (
    REGISTRY_ENV,
    TowerSpec,
    default_registry_file,
    is_genhancer_name,
    known_towers,
    resolve_tower,
)

__all__ = [
    "REGISTRY_ENV",
    "TowerSpec",
    "default_registry_file",
    "is_genhancer_name",
    "known_towers",
    "resolve_tower",
]
