"""The training application: the only part of genhancer_llava that imports accelerate/DeepSpeed.

Run one stage of a run folder written by `genhancer enhance`:
    accelerate launch --config_file genhancer_llava/train/launch_configs/zero2.yaml \
        -m genhancer_llava.train --run_dir OUT --stage stage1
"""

import warnings

# peft calls a transformers property that transformers 5 renamed; harmless, and once per stage.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
# DeepSpeed's ZeRO calls torch.distributed collectives that torch has renamed; harmless.
warnings.filterwarnings(
    "ignore", message=r"`torch\.distributed\.(reduce_scatter_tensor|all_gather_into_tensor)`"
)

# DS_ACCELERATOR is set by `deepspeed_env` (imported before accelerate): importing this package
# (e.g. the launcher, the CLI's checks) does not import torch.

__all__: list[str] = []
