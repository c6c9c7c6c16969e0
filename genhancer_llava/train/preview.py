"""Reconstruction previews: what the denoiser rebuilds from the encoder's global token alone.

A labelled grid PNG, one column per image, three rows:
  1. input: the (cropped) images;
  2. reconstruction from its own global token: the denoiser sampled (Euler on FLUX's shifted
     schedule, or MaskGIT decoding) and decoded by the target producer;
  3. reconstruction from the next image's global token: the same noise, the condition taken
     from the next column's image (shifted by one within the batch). Rows 2 and 3 differing is
     what shows the denoiser reads the condition; alike, it ignores it.
Small images are enlarged (nearest neighbour) to at least `MIN_TILE` pixels a side.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..cache import record_errors
from ..data import PairTransform, build_source
from ..models.enhancer import Enhancer

__all__ = [
    "preview_batch",
    "reconstruct",
    "preview_grid",
    "render_grid",
    "save_grid",
    "grid_size",
    "preview_run",
    "ROW_LABELS",
    "MIN_TILE",
    "LABEL_WIDTH",
]

MIN_TILE = 128  # pixels a side, at least, per image in the grid
LABEL_WIDTH = 150  # the row-label column
TITLE_HEIGHT = 24
ROW_GAP = 4
ROW_LABELS = (
    "input",
    "reconstruction from its own global token",
    "reconstruction from the next image's global token (same noise)",
)


def preview_batch(cfg, enhancer: Enhancer, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` images of the data source, cropped deterministically.

    Returns (encoder views (N, 3, H, W), target views in [-1, 1] (N, 3, H, W)).
    """
    source = build_source(cfg.data, cfg.encoder.image_size, cfg.run.seed)
    transform = PairTransform(
        cfg.encoder.image_size,
        enhancer.encoder.image_mean,
        enhancer.encoder.image_std,
        cfg.data.crop_scale,
    )
    cached = cfg.data.kind == "cached"
    views = []
    for item in source.epoch(0, 0, 1, cfg.run.seed):
        try:  # a cache holds the crops: its first one
            views.append(
                transform.views(item.load()["pixels"][0])
                if cached
                else transform(item.load(), seed=0)
            )
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


def _to_image(batch: torch.Tensor, tile: int) -> Image.Image:
    """(N, 3, H, W) in [-1, 1] -> one row image, each image enlarged to tile x tile."""
    row = torch.cat(list(batch.float().cpu()), dim=2)  # (3, H, N*W)
    array = ((row.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    image = Image.fromarray(np.ascontiguousarray(array))
    n = batch.shape[0]
    return image.resize((tile * n, tile), Image.Resampling.NEAREST)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line] if line else lines


def _tile(image_size: int, min_tile: int = MIN_TILE) -> int:
    return image_size * max(1, math.ceil(min_tile / image_size))  # a whole enlargement factor


def grid_size(
    images: int, image_size: int, rows: int = 3, title: bool = True, min_tile: int = MIN_TILE
) -> tuple[int, int]:
    """(width, height) of the grid `render_grid` draws for `images` columns of `rows` rows."""
    tile = _tile(image_size, min_tile)
    return (
        LABEL_WIDTH + images * tile,
        (TITLE_HEIGHT if title else 0) + rows * tile + (rows - 1) * ROW_GAP,
    )


def render_grid(
    rows: list[tuple[str, torch.Tensor]], title: str | None = None, min_tile: int = MIN_TILE
) -> Image.Image:
    """Labelled rows of images: each (label, (N, 3, H, W) in [-1, 1]); returns the picture.

    Images are enlarged by a whole factor (nearest neighbour, pixels stay visible) to at least
    `min_tile` a side; the label of each row is written to its left, a title above.
    """
    n, size = rows[0][1].shape[0], rows[0][1].shape[-1]
    tile = _tile(size, min_tile)
    font = ImageFont.load_default(size=13)
    title_h, gap = (TITLE_HEIGHT if title else 0), ROW_GAP
    canvas = Image.new("RGB", grid_size(n, size, len(rows), bool(title), min_tile), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((6, 5), title, fill="black", font=font)
    for i, (label, batch) in enumerate(rows):
        top = title_h + i * (tile + gap)
        canvas.paste(_to_image(batch, tile), (LABEL_WIDTH, top))
        lines = _wrap(draw, label, font, LABEL_WIDTH - 12)
        y = top + (tile - 16 * len(lines)) // 2
        for line in lines:
            draw.text((6, y), line, fill="black", font=font)
            y += 16
    return canvas


def preview_grid(
    enhancer: Enhancer,
    target,
    pixel_values: torch.Tensor,
    target_pixels: torch.Tensor,
    steps: int,
    seed: int = 0,
    path: str | Path | None = None,
    title: str | None = None,
) -> Image.Image:
    """The labelled preview of one batch (see the module docstring); written to `path` if given.

    Args:
        enhancer: the model (its encoder, projector and denoiser are used; nothing is trained).
        target: the frozen target producer that decodes the denoiser's samples.
        pixel_values: (N, 3, H, W) encoder views.
        target_pixels: (N, 3, H, W) the same crops in [-1, 1] (the "input" row).
        steps: sampler steps.
        seed: the sampling noise (the same for both reconstruction rows).
        path: PNG to write.
        title: a line above the grid (e.g. the stage and step).

    Collective under ZeRO-3 (every rank must call it); only the caller's rank writes.
    """
    rows = [
        (ROW_LABELS[0], target_pixels),
        (ROW_LABELS[1], reconstruct(enhancer, target, pixel_values, steps, seed)),
    ]
    if pixel_values.shape[0] > 1:  # with one image there is no other condition to show
        other = reconstruct(enhancer, target, pixel_values.roll(-1, dims=0), steps, seed)
        rows.append((ROW_LABELS[2], other))
    image = render_grid(rows, title)
    if path is not None:
        save_grid(image, path)
    return image


def save_grid(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def preview_run(
    path: str | Path,
    output: str | Path | None = None,
    images: int | None = None,
    steps: int | None = None,
) -> Path:
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

        enhancer.encoder.model = PeftModel.from_pretrained(
            enhancer.encoder.model, final / "adapter"
        )
    target = build_target(cfg.target)
    encoder_views, target_views = preview_batch(cfg, enhancer, images or cfg.run.preview_images)
    path = Path(output or final / "preview.png")
    preview_grid(
        enhancer,
        target,
        encoder_views,
        target_views,
        steps or cfg.run.preview_sample_steps,
        seed=cfg.run.seed,
        path=path,
        title=f"{final.parent.name} (final)",
    )
    return path
