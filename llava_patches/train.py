"""`python -m llava_patches.train`: LLaVA's own `train()` with the hook and shims installed.

It takes LLaVA's flags unchanged (`--model_name_or_path --version --data_path --image_folder
--vision_tower --deepspeed ...`); `--evaluation_strategy` and `--warmup_ratio` are translated
for transformers 5.
Launch it like LLaVA's `llava/train/train_mem.py` (deepspeed or torchrun, one process per
device); `scripts/llava_finetune.sh` runs the LLaVA-1.5 recipe through it.
"""

from __future__ import annotations

import sys

from genhancer_llava.errors import GenhancerError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run LLaVA's `train()` on `argv` (default: sys.argv[1:]) with `llava_patches.apply()`."""
    from . import apply
    from .shims import translate_legacy_flags

    apply()
    from llava.train.train import train

    args = translate_legacy_flags(list(sys.argv[1:] if argv is None else argv))
    sys.argv = [sys.argv[0], *args]  # LLaVA's train() parses sys.argv itself
    try:
        train()
    except GenhancerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
