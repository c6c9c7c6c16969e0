"""Images for enhancement: folders and a synthetic generator, one crop, two normalisations.

Each image is cropped ONCE (RandomResizedCrop(size, scale=(0.9, 1.0), bicubic), as the paper's
code) and the same pixels are normalised twice: with the encoder's mean/std for the encoder
view, and to [-1, 1] for the target view (autoencoder or pixel targets).

Unreadable images are skipped and counted, never a crash: the dataset returns None for them and
`collate` drops them and reports how many it dropped.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from .config import DataConfig
from .errors import GenhancerError

__all__ = [
    "IMAGE_EXTENSIONS",
    "PairTransform",
    "ImageFolderDataset",
    "SyntheticImages",
    "build_dataset",
    "collate",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class PairTransform:
    """PIL image -> (encoder view, target view), both (3, size, size) from one crop."""

    def __init__(
        self,
        size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        crop_scale: tuple[float, float] = (0.9, 1.0),
    ) -> None:
        self.crop = transforms.RandomResizedCrop(
            size, scale=crop_scale, interpolation=InterpolationMode.BICUBIC
        )
        self.to_tensor = transforms.ToTensor()
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.to_tensor(self.crop(image.convert("RGB"))).clamp(0, 1)  # (3, H, W) in [0, 1]
        return (pixels - self.mean) / self.std, pixels * 2.0 - 1.0


class ImageFolderDataset(Dataset):
    """Every image file under `root` (recursive, sorted), each returned through `transform`."""

    def __init__(self, root: str | Path, transform: PairTransform) -> None:
        root = Path(root)
        if not root.is_dir():
            raise GenhancerError(f"data folder '{root}' does not exist; set data.path")
        self.files = sorted(
            p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        if not self.files:
            raise GenhancerError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}; set data.path"
            )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        try:
            with Image.open(self.files[index]) as image:
                image.load()
                return self.transform(image)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
            return None  # corrupt or truncated: skipped and counted by `collate`


def synthetic_image(index: int, size: int, seed: int = 0) -> Image.Image:
    """A deterministic picture of 1-4 coloured shapes on a coloured background.

    Shapes differ in colour, count, position and orientation: the kinds of detail the
    enhancement is meant to make the encoder see.
    """
    rng = np.random.default_rng([seed, index])
    background = tuple(int(c) for c in rng.integers(0, 256, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 5))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cx, cy = rng.uniform(0.2, 0.8, 2) * size
        r = rng.uniform(0.08, 0.3) * size
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        else:
            corners = 3 if kind == 1 else 4
            angle = rng.uniform(0, 2 * math.pi)
            points = [
                (cx + r * math.cos(angle + 2 * math.pi * k / corners),
                 cy + r * math.sin(angle + 2 * math.pi * k / corners))
                for k in range(corners)
            ]
            draw.polygon(points, fill=colour)
    return image


class SyntheticImages(Dataset):
    """`num_images` generated pictures (see `synthetic_image`); for demos and tests."""

    def __init__(self, num_images: int, size: int, transform: PairTransform, seed: int = 0):
        self.num_images = num_images
        self.size = size
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(synthetic_image(index, self.size, self.seed))


def build_dataset(
    cfg: DataConfig, image_size: int, mean: tuple[float, ...], std: tuple[float, ...],
    seed: int = 0,
) -> Dataset:
    transform = PairTransform(image_size, mean, std, cfg.crop_scale)
    if cfg.kind == "synthetic":
        # drawn at a larger size so the crop + bicubic resize behaves as on photographs
        return SyntheticImages(cfg.num_images, image_size * 2, transform, seed)
    return ImageFolderDataset(cfg.path, transform)


def collate(
    items: list[tuple[torch.Tensor, torch.Tensor] | None],
) -> dict[str, torch.Tensor | int]:
    """Stack the readable items; `skipped` counts the unreadable ones in this batch."""
    good = [item for item in items if item is not None]
    batch: dict[str, torch.Tensor | int] = {"skipped": len(items) - len(good)}
    if good:
        batch["pixel_values"] = torch.stack([g[0] for g in good])
        batch["target_pixels"] = torch.stack([g[1] for g in good])
    return batch
