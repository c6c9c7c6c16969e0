"""Images for enhancement: a deterministic, sharded, resumable stream.

Sources: an image folder, webdataset tar shards (as img2dataset writes them: `{key}.jpg|png|webp`
beside `.txt`/`.json`), or generated pictures. Every source becomes one `ImageStream`:

- **Sharding.** Rank r of W, dataloader worker w of K reads slot s = r * K + w of W * K. An epoch
  is a seeded permutation of the folder's files (each slot takes every (W*K)-th), or of the shard
  list (each slot takes whole shards; with fewer shards than slots, every (W*K)-th sample). Slots
  never share an image within an epoch and together cover the data.
- **Determinism.** Order and crops depend only on (seed, epoch, item): a crop's randomness is
  seeded per item, so a run resumed mid-epoch sees exactly the images, and crops, it would have.
- **Resume.** `start_batches=n` makes each worker skip what it produced for the first n batches
  (the DataLoader takes batches from workers round-robin), without decoding the skipped images.
- **Faults.** A corrupt, truncated, zero-byte or non-image member yields None; `collate` drops it
  and counts it. Training never crashes on one image.

`data.kind=cached` reads pre-computed targets (`genhancer_llava.cache`) through the same
sharding, resume and fault handling.

Each image is cropped ONCE (RandomResizedCrop(size, scale=(0.9, 1.0), bicubic), as the paper's
code) and normalised twice: with the encoder's mean/std, and to [-1, 1] for the target.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError
from torch.utils.data import IterableDataset, get_worker_info
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from .config import DataConfig
from .errors import GenhancerError
from .paths import FOLDER_HINT, IMAGE_EXTENSIONS, required_path
from .shards import expand_shards

__all__ = [
    "IMAGE_EXTENSIONS",
    "PairTransform",
    "Item",
    "FolderSource",
    "SyntheticSource",
    "ShardSource",
    "ImageStream",
    "build_source",
    "build_stream",
    "collate",
    "synthetic_image",
    "expand_shards",
    "worker_skip",
]

SHARD_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp")
DECODE_ERRORS = (
    OSError,
    UnidentifiedImageError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)


def _item_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from ints and strings (Python's hash() is salted per process)."""
    text = "/".join(str(p) for p in parts).encode()
    return zlib.crc32(text) | (zlib.adler32(text) << 32)


class PairTransform:
    """PIL image -> (encoder view, target view), both (3, size, size) from ONE crop."""

    def __init__(
        self,
        size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        crop_scale: tuple[float, float] = (0.9, 1.0),
    ) -> None:
        self.size = size
        self.scale = tuple(crop_scale)
        self.ratio = (3 / 4, 4 / 3)
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, image: Image.Image, seed: int | None = None):
        return self.views(self.crop(image, seed))

    def crop(self, image: Image.Image, seed: int | None = None) -> torch.Tensor:
        """The crop as (3, size, size) uint8: what a cache stores, losslessly."""
        image = image.convert("RGB")
        # torchvision's own crop sampler, on a private RNG seeded per item when a seed is given;
        # the CPU generator only (what the sampler draws from, and all fork_rng restores):
        # torch.manual_seed would also re-seed every accelerator's RNG, and costs a stack trace
        # per lazy device call when none is initialised
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.default_generator.manual_seed(seed)
            i, j, h, w = transforms.RandomResizedCrop.get_params(image, self.scale, self.ratio)
        crop = TF.resized_crop(image, i, j, h, w, [self.size, self.size], InterpolationMode.BICUBIC)
        return TF.pil_to_tensor(crop)

    def views(self, crop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 crop(s) (..., 3, H, W) -> (encoder view, target view in [-1, 1])."""
        pixels = crop.to(torch.float32).div(255)  # as TF.to_tensor: in [0, 1]
        return (pixels - self.mean) / self.std, pixels * 2.0 - 1.0


@dataclass
class Item:
    """One image of a source: a stable key and a loader (called only when not skipped)."""

    key: str
    load: Callable[[], Image.Image]


# ---- sources ---------------------------------------------------------------------------------


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(_item_seed(seed, epoch, "order"))
    return torch.randperm(n, generator=g).tolist()


def _open_image(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image


class FolderSource:
    """Every image file under `root` (recursive); keys are paths relative to it."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        if not root.is_dir():
            raise GenhancerError(f"data folder '{root}' does not exist; set data.path")
        self.root = root
        self.files = sorted(
            p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        if not self.files:
            raise GenhancerError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}; set data.path"
            )

    def __len__(self) -> int:
        return len(self.files)

    def item(self, index: int) -> Item:
        path = self.files[index]
        return Item(str(path.relative_to(self.root)), lambda: _open_image(path))

    def epoch(self, epoch: int, slot: int, slots: int, seed: int) -> Iterator[Item]:
        for index in _epoch_order(len(self.files), seed, epoch)[slot::slots]:
            yield self.item(index)


class SyntheticSource:
    """`num_images` generated pictures (see `synthetic_image`), keys `synthetic-<i>`."""

    def __init__(self, num_images: int, size: int, seed: int = 0) -> None:
        self.num_images, self.size, self.seed = num_images, size, seed

    def __len__(self) -> int:
        return self.num_images

    def item(self, index: int) -> Item:
        return Item(f"synthetic-{index:06d}", lambda: synthetic_image(index, self.size, self.seed))

    def epoch(self, epoch: int, slot: int, slots: int, seed: int) -> Iterator[Item]:
        for index in _epoch_order(self.num_images, seed, epoch)[slot::slots]:
            yield self.item(index)


def _decode_member(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image


def _not_an_image() -> Image.Image:
    raise ValueError("sample has no image member")


class ShardSource:
    """webdataset tar shards; each sample's image is its jpg/png/webp member."""

    def __init__(self, spec: str, shuffle_buffer: int = 0) -> None:
        self.shards = expand_shards(spec)
        self.shuffle_buffer = shuffle_buffer

    def _samples(self, shards: list[Path]) -> Iterator[dict]:
        from webdataset.tariterators import tarfile_samples

        # tar-level damage (not member-level) ends that shard, with a warning, not the run
        yield from tarfile_samples(({"url": str(s)} for s in shards), handler=_warn_and_continue)

    def _item(self, sample: dict) -> Item:
        key = f"{Path(sample.get('__url__', '')).name}/{sample['__key__']}"
        data = next((sample[ext] for ext in SHARD_IMAGE_KEYS if ext in sample), None)
        if data is None:
            return Item(key, _not_an_image)
        return Item(key, lambda: _decode_member(data))

    def epoch(self, epoch: int, slot: int, slots: int, seed: int) -> Iterator[Item]:
        order = [self.shards[i] for i in _epoch_order(len(self.shards), seed, epoch)]
        if len(order) >= slots:
            items = (self._item(s) for s in self._samples(order[slot::slots]))
        else:  # fewer shards than slots: every slot reads all, keeps every slots-th sample
            items = (self._item(s) for i, s in enumerate(self._samples(order)) if i % slots == slot)
        if self.shuffle_buffer > 1:
            items = _buffer_shuffle(
                items, self.shuffle_buffer, np.random.default_rng(_item_seed(seed, epoch, slot))
            )
        yield from items


def _warn_and_continue(exc: Exception) -> bool:
    import warnings

    warnings.warn(f"skipping the rest of a damaged shard: {exc!r}", stacklevel=2)
    return True


def _buffer_shuffle(items: Iterator[Item], size: int, rng: np.random.Generator):
    buffer: list[Item] = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= size:
            yield buffer.pop(int(rng.integers(len(buffer))))
    while buffer:
        yield buffer.pop(int(rng.integers(len(buffer))))


# ---- the stream ------------------------------------------------------------------------------


def worker_skip(start_batches: int, worker: int, num_workers: int) -> int:
    """How many of the first `start_batches` batches came from `worker` (round-robin)."""
    if start_batches <= worker:
        return 0
    return (start_batches - worker + num_workers - 1) // num_workers


class ImageStream(IterableDataset):
    """An endless, sharded, deterministic stream of (encoder view, target view, key) or None.

    Args:
        source: FolderSource, SyntheticSource or ShardSource.
        transform: the crop + two normalisations.
        rank / world_size: this process's data-parallel position.
        batch_size: items per batch (to turn `start_batches` into items to skip).
        seed: the run's seed (epoch order and per-item crops).
        start_batches: batches already consumed in this stage (resume).
    """

    def __init__(
        self,
        source,
        transform: PairTransform,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int = 1,
        seed: int = 0,
        start_batches: int = 0,
    ) -> None:
        self.source = source
        self.transform = transform
        self.rank, self.world_size = rank, world_size
        self.batch_size, self.seed, self.start_batches = batch_size, seed, start_batches

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        # A DataLoader takes batch i from worker i % K. A resumed loader starts again at worker
        # 0, so worker w takes the place of the worker that produced batch start_batches + w.
        role = (worker + self.start_batches) % num_workers
        slot = self.rank * num_workers + role
        slots = self.world_size * num_workers
        if hasattr(self.source, "__len__") and len(self.source) < slots:
            raise GenhancerError(
                f"{len(self.source)} images cannot feed {self.world_size} ranks x "
                f"{num_workers} workers; add images or lower data.num_workers"
            )
        skip = worker_skip(self.start_batches, role, num_workers) * self.batch_size
        epoch = 0
        while True:
            produced = 0
            for item in self.source.epoch(epoch, slot, slots, self.seed):
                produced += 1
                if skip:
                    skip -= 1
                    continue
                yield self._load(item, epoch)
            if produced == 0:
                raise GenhancerError(f"data slot {slot} of {slots} received no images")
            epoch += 1

    def _load(self, item: Item, epoch: int):
        try:
            image = item.load()
            views = self.transform(image, seed=_item_seed(self.seed, epoch, item.key))
        except DECODE_ERRORS:
            return None  # skipped and counted by `collate`
        return (*views, item.key)


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
                (
                    cx + r * math.cos(angle + 2 * math.pi * k / corners),
                    cy + r * math.sin(angle + 2 * math.pi * k / corners),
                )
                for k in range(corners)
            ]
            draw.polygon(points, fill=colour)
    return image


def build_source(cfg: DataConfig, image_size: int, seed: int = 0):
    if cfg.kind == "cached":
        from .cache import CachedSource

        return CachedSource(cfg.path, cfg.shuffle_buffer)
    if cfg.kind == "synthetic":
        # drawn at twice the size so the crop + bicubic resize behaves as on photographs
        return SyntheticSource(cfg.num_images, image_size * 2, seed)
    if cfg.kind == "shards":
        return ShardSource(cfg.path, cfg.shuffle_buffer)
    return FolderSource(required_path(cfg.path, "data.path", FOLDER_HINT))


def build_stream(
    cfg: DataConfig,
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 1,
    start_batches: int = 0,
) -> ImageStream:
    stream = ImageStream
    if cfg.kind == "cached":  # pre-computed targets (genhancer cache): same stream, cached records
        from .cache import CachedStream

        stream = CachedStream
    return stream(
        build_source(cfg, image_size, seed),
        PairTransform(image_size, mean, std, cfg.crop_scale),
        rank=rank,
        world_size=world_size,
        batch_size=batch_size,
        seed=seed,
        start_batches=start_batches,
    )


def collate(items: list) -> dict:
    """Stack the readable items; `skipped` counts the unreadable ones in this batch."""
    good = [item for item in items if item is not None]
    if good and isinstance(good[0], dict):  # cached records: every tensor stacked by name
        batch = {"skipped": len(items) - len(good), "keys": [g["key"] for g in good]}
        batch.update(
            {name: torch.stack([g[name] for g in good]) for name in good[0] if name != "key"}
        )
        return batch
    batch: dict = {"skipped": len(items) - len(good), "keys": [g[2] for g in good]}
    if good:
        batch["pixel_values"] = torch.stack([g[0] for g in good])
        batch["target_pixels"] = torch.stack([g[1] for g in good])
    return batch
