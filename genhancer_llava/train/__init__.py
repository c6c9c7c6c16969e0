"""The training application: the only part of genhancer_llava that imports accelerate/DeepSpeed.

Run one stage of a run folder written by `genhancer enhance`:
    accelerate launch --config_file genhancer_llava/train/launch_configs/zero2.yaml \
        -m genhancer_llava.train --run_dir OUT --stage stage1
"""

import os
import warnings

import torch

# peft calls a transformers property that transformers 5 renamed; harmless, and once per stage.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
# DeepSpeed's ZeRO calls torch.distributed collectives that torch has renamed; harmless.
warnings.filterwarnings(
    "ignore", message=r"`torch\.distributed\.(reduce_scatter_tensor|all_gather_into_tensor)`"
)

if not torch.cuda.is_available():
    # DeepSpeed picks its accelerator at import; on a CPU-only machine say so before it looks.
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

__all__: list[str] = []
