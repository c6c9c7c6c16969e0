"""Using an enhanced encoder in LLaVA: the vision-tower registry (names -> exported folders).

Also `checkpoints` (the LLaVA checkpoint families: LLaVA-1.5, LLaVA-NeXT and LLaVA-OneVision in
llava-hf format, LLaVA-1.5 and LLaVA-NeXT in the original format), `swap` (an encoder into a
checkpoint of any of them) and `runner` (load a checkpoint and answer prompts; what the
lmms-eval model uses). Nothing here imports the original LLaVA code or `llava_patches`: the
hook that plugs the registry into LLaVA and the runner for original-format checkpoints live in
the top-level `llava_patches` package, which `runner` finds through an entry point.
"""

from .checkpoints import CHECKPOINT_FAMILIES, LlavaFamily, checkpoint_family
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
    "CHECKPOINT_FAMILIES",
    "LlavaFamily",
    "checkpoint_family",
    "REGISTRY_ENV",
    "TowerSpec",
    "default_registry_file",
    "is_genhancer_name",
    "known_towers",
    "resolve_tower",
    "swap_checkpoint",
]
