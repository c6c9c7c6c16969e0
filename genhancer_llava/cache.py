"""Pre-computed targets: the frozen producers' outputs, computed once per image and crop.

`genhancer cache` encodes a dataset into webdataset shards; `data.kind=cached data.path=DIR`
trains from them through the same sharding, resume and fault handling as image shards
(`genhancer_llava.data`). A step then runs only what is trained (stage 1: projector + DiT; stage
2: the encoder with LoRA + the frozen DiT); the autoencoder never runs while training.

One tar sample per source image: `key.txt` (the source's key) and `cache.safetensors` with, for
its K crops,

    pixels     (K, 3, S, S) uint8   the crops (the encoder's input in stage 2, previews, pixel
                                    targets); lossless, so both views are exactly as on the fly
    posterior  (K, 2C, h, w)        target.kind=flux_vae: the autoencoder posterior's parameters
                                    (mean | logvar, the producer's dtype); the latent is SAMPLED
                                    from them at train time, exactly as on the fly
    ids        (K, N) int32         target.kind=vq: the VQ-GAN ids
    global     (K, d) fp32          the frozen encoder's global token (stage 1)
    patches    (K, P, d_local) fp32 its patch tokens, only when encoder.local_token_ratio > 0 (the
                                    random pick of local tokens is made at train time, as on the
                                    fly)

Crops: crop c of an image is the crop on-the-fly training draws for it in epoch c (seeded by
(run.seed, c, key)); training reads crop e % K in epoch e. With K >= the number of epochs a run
makes, training on the cache sees exactly the crops on-the-fly training would.

Order: a source of shards gives one cache shard per source shard, same name and member order, so
the cached stream visits images in the on-the-fly order; a folder or synthetic source is written
in index order, `--per_shard` records per shard. An unreadable source image becomes a record
without `cache.safetensors`; training skips and counts it where on-the-fly training would.
`cache.json` records what the cache was made from; a run whose encoder, target or image size
differ is refused with one line.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import torch

from .data import (
    DECODE_ERRORS,
    ImageStream,
    Item,
    PairTransform,
    ShardSource,
    _item_seed,
    build_source,
)
from .errors import GenhancerError

__all__ = [
    "MANIFEST",
    "write_cache",
    "read_manifest",
    "check_cache",
    "CachedSource",
    "CachedStream",
    "model_inputs",
    "encode_record_batch",
    "record_errors",
]

MANIFEST = "cache.json"
FORMAT = 1
RECORD = "cache.safetensors"


def record_errors() -> tuple[type[BaseException], ...]:
    from safetensors import SafetensorError

    return (SafetensorError, KeyError, ValueError, OSError, IndexError, RuntimeError)


# ---- what a cache is made from -------------------------------------------------------------


def _identity(cfg) -> dict:
    """The settings the cached tensors depend on (checked against a training run's)."""
    target = {"kind": cfg.target.kind}
    if cfg.target.kind != "pixels":
        target.update(
            path=str(Path(cfg.target.path).resolve()),
            latent_channels=cfg.target.latent_channels,
            downsample=cfg.target.downsample,
        )
    return {
        "image_size": cfg.encoder.image_size,
        "encoder": str(Path(cfg.encoder.path).resolve()),
        "family": cfg.encoder.family,
        "local_tokens": cfg.encoder.local_token_ratio > 0,
        "target": target,
    }


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise GenhancerError(
            f"data.path={folder} holds no {MANIFEST}; data.kind=cached reads a "
            "folder written by `genhancer cache`"
        )
    return json.loads(path.read_text())


def check_cache(cfg) -> dict:
    """The cache's manifest, after checking it was made for this run's encoder and target."""
    manifest = read_manifest(cfg.data.path)
    made, wanted = manifest["made_from"], _identity(cfg)
    for key, value in wanted.items():
        if made.get(key) != value:
            raise GenhancerError(
                f"the cache at {cfg.data.path} was made with {key}={made.get(key)!r}, this run "
                f"has {value!r}; re-run genhancer cache with this run's config"
            )
    if tuple(manifest["crop_scale"]) != tuple(cfg.data.crop_scale):
        raise GenhancerError(
            f"the cache at {cfg.data.path} holds crops of scale {manifest['crop_scale']}, this "
            f"run asks for data.crop_scale={list(cfg.data.crop_scale)}; set it or re-run "
            "genhancer cache"
        )
    return manifest


# ---- writing -------------------------------------------------------------------------------


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@torch.no_grad()
def encode_record_batch(encoder, target, crops: torch.Tensor, views) -> dict[str, torch.Tensor]:
    """The frozen producers on a batch of uint8 crops (n, 3, S, S) -> tensors by record name."""
    encoder_view, target_view = views(crops)
    device = next(encoder.parameters()).device
    out = {"pixels": crops}
    local = encoder.num_local_tokens
    if local:  # every patch token, in order (the eval-mode pick of all P of them)
        grid = encoder.image_size // encoder.model.config.patch_size
        encoder.num_local_tokens = grid * grid
    try:
        enc = encoder(encoder_view.to(device))
    finally:
        encoder.num_local_tokens = local
    out["global"] = enc.global_token.float().cpu()
    if local:
        out["patches"] = enc.local_tokens.float().cpu()
    if hasattr(target, "posterior_parameters"):
        out["posterior"] = target.posterior_parameters(target_view.to(device)).cpu()
    elif hasattr(target, "vq"):
        out["ids"] = target.encode(target_view.to(device)).to(torch.int32).cpu()
    return out


def _write_records(tar: tarfile.TarFile, pending: list, encoder, target, views) -> None:
    """Encode the pending images' crops in one batch and append one record per image."""
    from safetensors.torch import save

    good = [crops for _, _, crops in pending if crops is not None]
    tensors = encode_record_batch(encoder, target, torch.cat(good), views) if good else {}
    row = 0
    for name, key, image_crops in pending:
        _tar_add(tar, f"{name}.key.txt", key.encode())
        if image_crops is None:
            _tar_add(tar, f"{name}.error.txt", b"unreadable source image")
            continue
        k = image_crops.shape[0]
        _tar_add(
            tar,
            f"{name}.{RECORD}",
            save({n: v[row : row + k].contiguous() for n, v in tensors.items()}),
        )
        row += k


def _source_groups(source, per_shard: int) -> Iterator[tuple[str, Iterator[tuple[str, Item]]]]:
    """(shard name, (sample name, item) ...) in the source's own order."""
    if isinstance(source, ShardSource):
        for shard in source.shards:
            yield shard.name, ((s["__key__"], source._item(s)) for s in source._samples([shard]))
        return
    n = len(source)
    for start in range(0, n, per_shard):
        yield (
            f"{start // per_shard:05d}.tar",
            ((f"{i:09d}", source.item(i)) for i in range(start, min(n, start + per_shard))),
        )


def write_cache(
    cfg,
    output: str | Path,
    crops: int = 1,
    batch_size: int = 16,
    per_shard: int = 1000,
    device: str | None = None,
    overwrite: bool = False,
    log=print,
) -> Path:
    """Encode `cfg.data` once into a cache folder at `output` (see the module docstring).

    Args:
        cfg: a run config: data source, encoder, target, run.seed and data.crop_scale.
        output: the folder to write (written as OUTPUT.tmp, renamed when complete).
        crops: K, crops per image (training reads crop epoch % K).
        batch_size: images per forward of the frozen producers.
        per_shard: records per shard for folder / synthetic sources.
        device: where the producers run (default: this process's GPU, else CPU).
        overwrite: replace an existing cache at `output`.
    """
    output = Path(output)
    if crops < 1:
        raise GenhancerError(f"--crops {crops}: need at least one crop per image")
    if cfg.data.kind == "cached":
        raise GenhancerError("data.kind=cached is already a cache; point data at the images")
    if output.exists() and not overwrite:
        raise GenhancerError(f"{output} exists; pass --overwrite to replace it")
    from .models.encoders import load_encoder
    from .models.targets import build_target
    from .utils import default_device, default_dtype

    device = device or default_device()
    encoder = load_encoder(
        cfg.encoder.path,
        cfg.encoder.image_size,
        cfg.encoder.local_token_ratio,
        family=cfg.encoder.family,
    )
    encoder.eval().requires_grad_(False).to(device)
    target = build_target(cfg.target, device, default_dtype(device))
    transform = PairTransform(
        cfg.encoder.image_size, encoder.image_mean, encoder.image_std, cfg.data.crop_scale
    )
    source = build_source(cfg.data, cfg.encoder.image_size, cfg.run.seed)
    tmp = output.with_name(output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards, records, skipped = [], 0, 0
    for shard_name, samples in _source_groups(source, per_shard):
        with tarfile.open(tmp / shard_name, "w") as tar:
            pending: list[tuple[str, str, torch.Tensor | None]] = []
            for name, item in samples:
                try:
                    image = item.load()
                    image_crops = torch.stack(
                        [
                            transform.crop(image, seed=_item_seed(cfg.run.seed, c, item.key))
                            for c in range(crops)
                        ]
                    )
                except DECODE_ERRORS:
                    image_crops = None
                    skipped += 1
                records += 1
                pending.append((name, item.key, image_crops))
                if len(pending) * crops >= batch_size:
                    _write_records(tar, pending, encoder, target, transform.views)
                    pending = []
            _write_records(tar, pending, encoder, target, transform.views)
        shards.append(shard_name)
        log(f"[cache] {shard_name}: {records} images so far, {skipped} unreadable")
    manifest = {
        "format": FORMAT,
        "crops": crops,
        "seed": cfg.run.seed,
        "crop_scale": list(cfg.data.crop_scale),
        "made_from": _identity(cfg),
        "source": {"kind": cfg.data.kind, "path": cfg.data.path},
        "shards": shards,
        "images": records,
        "unreadable": skipped,
        "stored": sorted(
            ["pixels", "global"]
            + (["patches"] if cfg.encoder.local_token_ratio > 0 else [])
            + (["posterior"] if cfg.target.kind == "flux_vae" else [])
            + (["ids"] if cfg.target.kind == "vq" else [])
        ),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(output, ignore_errors=True)
    tmp.rename(output)
    return output


# ---- reading -------------------------------------------------------------------------------


def _no_record() -> dict:
    raise ValueError("the source image was unreadable when the cache was made")


def _load_record(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(data)


class CachedSource(ShardSource):
    """A cache folder's shards, in the order and slots of `ShardSource`."""

    def __init__(self, folder: str | Path, shuffle_buffer: int = 0) -> None:
        folder = Path(folder)
        self.manifest = read_manifest(folder)
        self.shards = [folder / name for name in self.manifest["shards"]]
        missing = [str(s) for s in self.shards if not s.is_file()]
        if missing:
            raise GenhancerError(
                f"{len(missing)} of {len(self.shards)} cache shards are missing "
                f"(first: {missing[0]}); re-run genhancer cache"
            )
        self.shuffle_buffer = shuffle_buffer

    def _item(self, sample: dict) -> Item:
        key = sample.get("key.txt", sample["__key__"].encode())
        key = key.decode() if isinstance(key, bytes) else str(key)
        data = sample.get(RECORD)
        if data is None:
            return Item(key, _no_record)
        return Item(key, lambda: _load_record(data))


class CachedStream(ImageStream):
    """`ImageStream` over cached records: yields dicts of one crop's tensors, or None."""

    def _load(self, item: Item, epoch: int):
        try:
            record = item.load()
            crop = epoch % record["pixels"].shape[0]
            encoder_view, target_view = self.transform.views(record["pixels"][crop])
            out = {"key": item.key, "pixel_values": encoder_view, "target_pixels": target_view}
            for name in ("posterior", "ids", "global", "patches"):
                if name in record:
                    out[name] = record[name][crop]
        except record_errors():
            return None  # skipped and counted by `collate`
        return out


def model_inputs(target, batch: dict, device, cached_condition: bool) -> dict[str, torch.Tensor]:
    """A batch (on-the-fly or cached) -> the Enhancer's keyword inputs on `device`.

    Args:
        target: the frozen target producer (encodes pixels, or samples a cached posterior).
        batch: what `collate` gives.
        cached_condition: use the cached global token instead of running the (frozen) encoder.
    """
    if "posterior" in batch:
        tokens = target.tokens_from_posterior(batch["posterior"].to(device))
    elif "ids" in batch:
        tokens = batch["ids"].to(device).long()
    else:
        tokens = target.encode(batch["target_pixels"].to(device))
    inputs = {"target": tokens}
    if cached_condition and "global" in batch:
        inputs["global_token"] = batch["global"].to(device)
        if "patches" in batch:
            inputs["patch_tokens"] = batch["patches"].to(device)
    else:
        inputs["pixel_values"] = batch["pixel_values"].to(device)
    return inputs
