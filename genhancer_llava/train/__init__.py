"""The training application: the only part of genhancer_llava that imports accelerate/DeepSpeed.

Run one stage of a run folder written by `genhancer enhance`:
    accelerate launch --config_file scripts/accelerate/zero2.yaml \
        -m genhancer_llava.train --run_dir OUT --stage stage1
"""

import os

import torch

if not torch.cuda.is_available():
    # DeepSpeed picks its accelerator at import; on a CPU-only machine say so before it looks.
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

__all__: list[str] = []
