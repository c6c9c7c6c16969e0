"""Using an enhanced encoder in LLaVA: the vision-tower registry (names -> exported folders).

Also `swap` (an encoder into an existing llava-hf or original-format checkpoint) and `runner`
(load either format and answer prompts; what the lmms-eval model uses). Nothing here imports
LLaVA at import time; the hook that plugs the registry into the original LLaVA code lives in the
top-level `llava_patches` package.
"""

from .registry import (
    REGISTRY_ENV,
    TowerSpec,
    default_registry_file,
    is_genhancer_name,
    known_towers,
    resolve_tower,
)
from .swap import swap_checkpoint

__all__ = [
    "REGISTRY_ENV",
    "TowerSpec",
    "default_registry_file",
    "is_genhancer_name",
    "known_towers",
    "resolve_tower",
    "swap_checkpoint",
]
