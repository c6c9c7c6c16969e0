"""The optimiser of every stage (no accelerate import: benchmarks build it too)."""

from __future__ import annotations

import torch

__all__ = ["build_optimizer", "use_fused_adamw"]


def use_fused_adamw(device: torch.device | str | None) -> bool:
    """torch's fused AdamW (one kernel per step instead of a loop over tensors) where training
    runs on CUDA; elsewhere the default foreach implementation."""
    return device is not None and torch.device(device).type == "cuda"


def build_optimizer(
    cfg, model: torch.nn.Module, lr: float, device: torch.device | str | None = None
):
    """AdamW over the trainable parameters and a constant schedule (no warmup, as the paper).

    torch's AdamW, not DeepSpeed's: identical maths, and nothing to compile on first use.

    Args:
        cfg: the run config (optim.betas, eps, weight_decay).
        model: its parameters that require grad are optimised.
        lr: the stage's learning rate.
        device: where training runs (the parameters may still be on the CPU here).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=lr,
        betas=cfg.optim.betas,
        eps=cfg.optim.eps,
        weight_decay=cfg.optim.weight_decay,
        fused=True if use_fused_adamw(device) else None,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return optimizer, scheduler
