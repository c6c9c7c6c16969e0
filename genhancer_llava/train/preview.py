"""Reconstruction previews: what the denoiser rebuilds from the encoder's global token alone.

A grid PNG: the top row holds the (cropped) inputs, the bottom row the reconstructions sampled
with the Euler sampler on FLUX's shifted schedule and decoded by the target producer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..cache import record_errors
from ..data import PairTransform, build_source
from ..models.enhancer import Enhancer

__all__ = ["preview_batch", "reconstruct", "save_grid", "preview_run"]


def preview_batch(cfg, enhancer: Enhancer, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` images of the data source, cropped deterministically.

    Returns (encoder views (N, 3, H, W), target views in [-1, 1] (N, 3, H, W)).
    """
    source = build_source(cfg.data, cfg.encoder.image_size, cfg.run.seed)
    transform = PairTransform(cfg.encoder.image_size, enhancer.encoder.image_mean,
                              enhancer.encoder.image_std, cfg.data.crop_scale)
    cached = cfg.data.kind == "cached"
    views = []
    for item in source.epoch(0, 0, 1, cfg.run.seed):
        try:  # a cache holds the crops: its first one
            views.append(transform.views(item.load()["pixels"][0]) if cached
                         else transform(item.load(), seed=0))
        except (OSError, ValueError, SyntaxError, KeyError, *record_errors()):
            continue
        if len(views) == count:
            break
    return torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])


@torch.no_grad()
def reconstruct(
    enhancer: Enhancer, target, pixel_values: torch.Tensor, steps: int, seed: int = 0
) -> torch.Tensor:
    """Images in [-1, 1] rebuilt from the global token: (N, 3, H, W)."""
    device = next(enhancer.parameters()).device
    was_training = enhancer.training
    enhancer.eval()
    try:
        pooled, context = enhancer.condition(pixel_values.to(device))
        generator = torch.Generator(device=device).manual_seed(seed)
        tokens = enhancer.denoiser.sample(pooled, context, steps=steps, generator=generator)
        images = target.decode(tokens, enhancer.denoiser.grid)
    finally:
        enhancer.train(was_training)
    return images.float().cpu()


def save_grid(inputs: torch.Tensor, outputs: torch.Tensor, path: str | Path) -> Path:
    """Inputs on top, reconstructions below; both (N, 3, H, W) in [-1, 1]."""
    rows = [torch.cat(list(batch), dim=2) for batch in (inputs, outputs)]  # (3, H, N*W)
    grid = torch.cat(rows, dim=1)  # (3, 2H, N*W)
    array = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path)
    return path


def preview_run(path: str | Path, output: str | Path | None = None, images: int | None = None,
                steps: int | None = None) -> Path:
    """`genhancer preview`: reconstructions from a finished stage of a run.

    Args:
        path: a run folder (its last finished stage is used) or a stage's `final` folder.
        output: the PNG to write; default `<final>/preview.png`.
        images: how many images (default run.preview_images).
        steps: Euler steps (default run.preview_sample_steps).
    """
    from ..errors import GenhancerError
    from ..models.enhancer import build_enhancer
    from ..models.targets import build_target
    from ..stages import STAGE_NAMES
    from .run_dir import RunDir, load_module

    path = Path(path)
    if (path / "config.yaml").is_file():
        run = RunDir(path)
        done = [s for s in STAGE_NAMES if (run.final(s) / "denoiser.safetensors").is_file()]
        if not done:
            raise GenhancerError(f"{path} has no finished stage yet; nothing to preview")
        final = run.final(done[-1])
    elif (path / "denoiser.safetensors").is_file():
        final, run = path, RunDir(path.parent.parent)
    else:
        raise GenhancerError(
            f"{path} is neither a run folder nor a stage's final folder (denoiser.safetensors)"
        )
    cfg = run.load_config()
    enhancer = build_enhancer(cfg)
    load_module(enhancer.projector, final / "projector.safetensors")
    load_module(enhancer.denoiser, final / "denoiser.safetensors")
    if (final / "adapter").is_dir():
        from peft import PeftModel

        enhancer.encoder.model = PeftModel.from_pretrained(enhancer.encoder.model,
                                                           final / "adapter")
    target = build_target(cfg.target)
    encoder_views, target_views = preview_batch(cfg, enhancer, images or cfg.run.preview_images)
    recon = reconstruct(enhancer, target, encoder_views, steps or cfg.run.preview_sample_steps,
                        seed=cfg.run.seed)
    return save_grid(target_views, recon, output or final / "preview.png")
