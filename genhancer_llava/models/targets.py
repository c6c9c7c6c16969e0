"""Frozen target producers: what the denoiser learns to reconstruct.

They live outside the trained module (never passed to `accelerator.prepare`), hold no trainable
parameters and run without gradients, as diffusers' training scripts keep their VAE.

- `FluxAutoencoderTarget`: the FLUX autoencoder (diffusers `AutoencoderKL`, 16 channels, 8x down);
  z is SAMPLED from the posterior, scaled as 0.3611 * (z - 0.1159) and packed 2x2 into 64-dim
  tokens, exactly as the paper's code.
- `PixelTarget`: packed pixel patches in [-1, 1], for tiny and demo runs without an autoencoder.
- `VQTarget`: VQ-GAN token ids (diffusers `VQModel`), row-major over the latent grid, for the
  masked denoiser.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..config import TargetConfig
from ..errors import GenhancerError
from ..paths import required_path

__all__ = [
    "pack",
    "unpack",
    "PixelTarget",
    "FluxAutoencoderTarget",
    "VQTarget",
    "build_target",
    "check_target",
    "image_ids",
]


def pack(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, C * p * p), row-major over the token grid (FLUX order)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def unpack(tokens: torch.Tensor, grid: tuple[int, int], p: int) -> torch.Tensor:
    """Inverse of `pack`: (B, gh * gw, C * p * p) -> (B, C, gh * p, gw * p)."""
    b, _, d = tokens.shape
    gh, gw = grid
    c = d // (p * p)
    x = tokens.view(b, gh, gw, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, gh * p, gw * p)


def image_ids(grid: tuple[int, int]) -> torch.Tensor:
    """FLUX RoPE positions of the image tokens: (gh * gw, 3) with (0, row, col)."""
    gh, gw = grid
    ids = torch.zeros(gh, gw, 3)
    ids[..., 1] = torch.arange(gh)[:, None]
    ids[..., 2] = torch.arange(gw)[None, :]
    return ids.view(gh * gw, 3)


class PixelTarget(nn.Module):
    """Images in [-1, 1] packed into p x p patches: (B, N, 3 * p * p)."""

    def __init__(self, pack_size: int) -> None:
        super().__init__()
        self.p = pack_size

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        # images: (B, 3, H, W) in [-1, 1]
        return pack(images, self.p)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return unpack(tokens, grid, self.p).clamp(-1, 1)


class FluxAutoencoderTarget(nn.Module):
    """Sampled, shifted and scaled autoencoder latents, packed into tokens."""

    def __init__(self, vae: nn.Module, cfg: TargetConfig) -> None:
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.p = cfg.pack
        self.scale = cfg.scaling_factor
        self.shift = cfg.shift_factor
        self.sample = cfg.sample_posterior

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        # images: (B, 3, H, W) in [-1, 1] -> (B, H/16 * W/16, 64) for FLUX
        return self.tokens_from_posterior(self.posterior_parameters(images))

    @torch.no_grad()
    def posterior_parameters(self, images: torch.Tensor) -> torch.Tensor:
        """The posterior's (mean | logvar): (B, 2 * C, H/8, W/8); what a cache stores."""
        dtype = next(self.vae.parameters()).dtype
        return self.vae.encode(images.to(dtype)).latent_dist.parameters

    @torch.no_grad()
    def tokens_from_posterior(self, parameters: torch.Tensor) -> torch.Tensor:
        """Sample (or take the mode of) the posterior, shift, scale and pack into tokens."""
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        posterior = DiagonalGaussianDistribution(parameters)
        z = posterior.sample() if self.sample else posterior.mode()
        return pack((z.float() - self.shift) * self.scale, self.p)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        dtype = next(self.vae.parameters()).dtype
        z = unpack(tokens.float(), grid, self.p) / self.scale + self.shift
        return self.vae.decode(z.to(dtype)).sample.float().clamp(-1, 1)


class VQTarget(nn.Module):
    """Images -> VQ-GAN codebook ids (B, H/f * W/f); ids -> images."""

    def __init__(self, vq: nn.Module) -> None:
        super().__init__()
        self.vq = vq.eval().requires_grad_(False)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        # images: (B, 3, H, W) in [-1, 1] -> (B, N) long
        dtype = next(self.vq.parameters()).dtype
        latents = self.vq.encode(images.to(dtype)).latents  # (B, C, h, w), before quantisation
        _, _, (_, _, ids) = self.vq.quantize(latents)
        return ids.reshape(latents.shape[0], -1)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b = ids.shape[0]
        channels = self.vq.quantize.embedding.weight.shape[1]
        z = self.vq.quantize.get_codebook_entry(ids.reshape(-1), (b, *grid, channels))
        return self.vq.decode(z, force_not_quantize=True).sample.float().clamp(-1, 1)


def _read_model_config(path: Path, what: str, setting: str, hint: str) -> dict:
    if not path.is_dir():
        raise GenhancerError(f"{what} folder '{path}' does not exist; set {setting}{hint}")
    if not (path / "config.json").is_file():
        raise GenhancerError(
            f"{setting}={path} has no config.json; it is not a diffusers model "
            f"folder; set {setting}{hint}"
        )
    return json.loads((path / "config.json").read_text())


# what each target kind loads: (diffusers class, what, size key, config setting, how to set it)
_TARGET_FOLDERS = {
    "vq": (
        "VQModel",
        "VQ-GAN",
        "num_vq_embeddings",
        "codebook_size",
        " to a local VQModel folder (`genhancer make-tiny-vq DIR` writes a tiny one)",
    ),
    "flux_vae": (
        "AutoencoderKL",
        "autoencoder",
        "latent_channels",
        "latent_channels",
        " to a local AutoencoderKL folder (the FLUX.1 'vae' sub-folder) or use target.kind=pixels",
    ),
}


def check_target(cfg: TargetConfig) -> Path | None:
    """target.path's folder checked against the config (class, factor, one size), without
    loading weights; None for targets that need no folder (pixels)."""
    if cfg.kind not in _TARGET_FOLDERS:
        return None
    class_name, what, size_key, size_setting, hint = _TARGET_FOLDERS[cfg.kind]
    path = required_path(cfg.path, "target.path", f"set target.path{hint}")
    config = _read_model_config(path, what, "target.path", hint)
    if config.get("_class_name") not in (None, class_name):
        raise GenhancerError(
            f"{path} holds a {config.get('_class_name')}; target.kind={cfg.kind} needs a "
            f"{class_name}: point target.path at the {what}"
        )
    size = config.get(size_key)
    wanted = getattr(cfg, size_setting)
    downsample = 2 ** (len(config.get("block_out_channels", [])) - 1)
    if size != wanted or downsample != cfg.downsample:
        raise GenhancerError(
            f"the {what} at {path} has {size_key}={size} and {downsample}x down-sampling, the "
            f"config says {wanted} and {cfg.downsample}; set target.{size_setting}={size} "
            f"target.downsample={downsample}"
        )
    return path


def _load_checked(cfg: TargetConfig, dtype: torch.dtype | None) -> nn.Module:
    """The diffusers model at target.path, after `check_target`."""
    import diffusers

    path = check_target(cfg)
    return getattr(diffusers, _TARGET_FOLDERS[cfg.kind][0]).from_pretrained(path, torch_dtype=dtype)


def build_target(
    cfg: TargetConfig, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> nn.Module:
    """The frozen target producer for `cfg` on `device`.

    Args:
        cfg: the target config.
        device: where encoding runs (the training device).
        dtype: autoencoder / VQ-GAN weights' dtype (bf16 on GPU; the reference kept its VAE in
            fp32).
    """
    if cfg.kind == "pixels":
        return PixelTarget(cfg.pack).to(device)
    if cfg.kind == "vq":
        return VQTarget(_load_checked(cfg, dtype)).to(device)
    return FluxAutoencoderTarget(_load_checked(cfg, dtype), cfg).to(device)
