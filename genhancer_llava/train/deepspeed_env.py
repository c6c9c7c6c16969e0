"""Import before accelerate / DeepSpeed: DeepSpeed picks its accelerator when it is imported, so
on a CPU-only machine say so first."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
