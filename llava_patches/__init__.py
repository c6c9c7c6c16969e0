"""Everything that touches the original LLaVA package (haotian-liu/LLaVA, `llava-torch`).

`llava_patches.apply()` installs, once per process:

- the builder hook: `--vision_tower genhancer[:NAME|:PATH]` (and any folder holding a
  `genhancer.json`) builds a tower from an exported encoder through the registry in
  `genhancer_llava.mllm.registry`; every other name goes to LLaVA's own builder;
- the tower switch: continuing from a LLaVA checkpoint with another `--vision_tower` loads the
  new tower (LLaVA alone keeps the old weights under the new name);
- the shims that make llava-torch 1.2.2.post1 run on transformers 5 (`llava_patches.shims`).

Any process that loads a checkpoint whose `mm_vision_tower` is a genhancer name must call it
before loading (`import llava_patches; llava_patches.apply()`). This package imports without
LLaVA installed; `apply()` then says how to install it.

Imports flow one way: this package imports `genhancer_llava`, never the reverse. Where the
library needs LLaVA's code (original-format checkpoints in `load_llava`, hence in lmms-eval), it
finds `llava_patches.runner.OriginalRunner` through the `genhancer_llava.llava_formats` entry
point.
"""

from __future__ import annotations

__all__ = ["apply", "is_applied"]

_APPLIED = False


def apply() -> None:
    """Install the builder hook, the tower switch and the transformers-5 shims (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    try:
        import llava  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "llava_patches needs the original LLaVA package: "
            "pip install --no-deps llava-torch==1.2.2.post1 (or `make` in this repository)"
        ) from exc
    from . import hook, shims

    shims.apply_all()
    hook.install_builder()
    hook.install_tower_switch()
    _APPLIED = True


def is_applied() -> bool:
    """Whether `apply()` has run in this process."""
    return _APPLIED
