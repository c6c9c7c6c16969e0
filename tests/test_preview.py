"""Previews that teach: labelled rows (input, reconstruction from its own global token, from
the next image's), images enlarged to a readable size, labels drawn in the picture."""

from __future__ import annotations

import numpy as np
import torch

from genhancer_llava.models.enhancer import build_enhancer
from genhancer_llava.models.targets import build_target
from genhancer_llava.train.preview import (
    LABEL_WIDTH,
    MIN_TILE,
    TITLE_HEIGHT,
    grid_size,
    preview_grid,
    reconstruct,
    render_grid,
)


def _dark_pixels(image, box) -> int:
    return int((np.asarray(image.crop(box).convert("L")) < 100).sum())


def test_small_images_are_enlarged_with_nearest_and_rows_are_labelled():
    torch.manual_seed(0)
    rows = [(f"row {i}", torch.rand(2, 3, 32, 32) * 2 - 1) for i in range(3)]
    image = render_grid(rows, title="stage1, step 4 of 6")
    tile = 128  # 32 px enlarged 4x to reach MIN_TILE
    assert MIN_TILE == 128 and image.size == grid_size(2, 32, rows=3) == (
        LABEL_WIDTH + 2 * tile,
        TITLE_HEIGHT + 3 * tile + 2 * 4,
    )
    pixels = np.asarray(image)
    first = ((rows[0][1][0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    block = pixels[TITLE_HEIGHT : TITLE_HEIGHT + tile, LABEL_WIDTH : LABEL_WIDTH + tile]
    assert np.array_equal(block[::4, ::4], first)  # each source pixel is a 4x4 block
    assert np.array_equal(block[3::4, 3::4], first)
    for i in range(3):  # a label (dark text) left of every row, and the title above
        top = TITLE_HEIGHT + i * (tile + 4)
        assert _dark_pixels(image, (0, top, LABEL_WIDTH, top + tile)) > 20
    assert _dark_pixels(image, (0, 0, image.size[0], TITLE_HEIGHT)) > 20
    big = render_grid([("input", torch.zeros(1, 3, 224, 224))], title=None)
    assert big.size == (LABEL_WIDTH + 224, 224)  # large images are left as they are


def test_preview_rows_are_input_own_and_next_condition(tiny_config, tmp_path):
    cfg = tiny_config()
    torch.manual_seed(0)
    enhancer = build_enhancer(cfg)
    target = build_target(cfg.target)
    pixels = torch.randn(3, 3, 32, 32)
    target_pixels = torch.rand(3, 3, 32, 32) * 2 - 1
    path = tmp_path / "p.png"
    image = preview_grid(enhancer, target, pixels, target_pixels, steps=2, path=path)
    assert path.is_file() and image.size == grid_size(3, 32, rows=3, title=False)
    own = reconstruct(enhancer, target, pixels, 2)
    other = reconstruct(enhancer, target, pixels.roll(-1, dims=0), 2)
    assert not torch.allclose(own, other)  # the condition reaches the denoiser
    array, tile = np.asarray(image), 128

    def tile_at(row: int, col: int) -> np.ndarray:
        top, left = row * (tile + 4), LABEL_WIDTH + col * tile
        return array[top : top + tile : 4, left : left + tile : 4]

    def as_pixels(batch: torch.Tensor, col: int) -> np.ndarray:
        return ((batch[col].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()

    for col in range(3):
        assert np.array_equal(tile_at(0, col), as_pixels(target_pixels, col))
        assert np.array_equal(tile_at(1, col), as_pixels(own, col))
        assert np.array_equal(tile_at(2, col), as_pixels(other, col))
    one = preview_grid(enhancer, target, pixels[:1], target_pixels[:1], steps=2)
    assert one.size == grid_size(1, 32, rows=2, title=False)  # no other image to borrow from
