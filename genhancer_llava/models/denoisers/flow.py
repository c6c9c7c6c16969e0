"""The continuous denoiser: a small, randomly initialised FLUX-style DiT trained with
rectified flow on target tokens, conditioned only through the projector's outputs.

The DiT is diffusers' `FluxTransformer2DModel` itself (paper: 2 double + 4 single blocks,
24 x 128 heads, about 1.31e9 parameters), so weights and kernels are the library's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...config import FlowDenoiserConfig
from ..timesteps import interpolate, sample_timesteps, shifted_schedule, velocity_target

__all__ = ["build_flow_transformer", "FlowDenoiser"]


def build_flow_transformer(
    cfg: FlowDenoiserConfig, in_channels: int, pooled_dim: int, context_dim: int
) -> nn.Module:
    """A randomly initialised `FluxTransformer2DModel` at the preset's shape.

    Args:
        cfg: depth, heads, RoPE axes, guidance.
        in_channels: width of one target token (64 for packed FLUX latents).
        pooled_dim: adaLN conditioning width (the projector's pooled output).
        context_dim: joint-attention width (the projector's context tokens).
    """
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=in_channels,
        num_layers=cfg.num_layers,
        num_single_layers=cfg.num_single_layers,
        attention_head_dim=cfg.attention_head_dim,
        num_attention_heads=cfg.num_attention_heads,
        joint_attention_dim=context_dim,
        pooled_projection_dim=pooled_dim,
        guidance_embeds=cfg.guidance is not None,
        axes_dims_rope=tuple(cfg.axes_dims_rope),
    )


class FlowDenoiser(nn.Module):
    """Rectified flow: x_t = (1 - t) x + t n, predict v = n - x, plain mean MSE."""

    def __init__(
        self,
        cfg: FlowDenoiserConfig,
        in_channels: int,
        pooled_dim: int,
        context_dim: int,
        grid: tuple[int, int],
    ) -> None:
        super().__init__()
        from ..targets import image_ids

        self.cfg = cfg
        self.grid = grid
        self.transformer = build_flow_transformer(cfg, in_channels, pooled_dim, context_dim)
        self.register_buffer("img_ids", image_ids(grid), persistent=False)  # (N, 3)

    def velocity(
        self, x_t: torch.Tensor, t: torch.Tensor, pooled: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        # x_t: (B, N, C); t: (B,) in (0, 1); pooled: (B, P); context: (B, T, D)
        dtype = self.transformer.dtype
        b = x_t.shape[0]
        guidance = None
        if self.cfg.guidance is not None:
            guidance = torch.full((b,), self.cfg.guidance, device=x_t.device, dtype=dtype)
        txt_ids = torch.zeros(context.shape[1], 3, device=x_t.device, dtype=self.img_ids.dtype)
        return self.transformer(
            hidden_states=x_t.to(dtype),
            encoder_hidden_states=context.to(dtype),
            pooled_projections=pooled.to(dtype),
            timestep=t.to(dtype),  # the DiT multiplies by 1000 itself
            img_ids=self.img_ids,
            txt_ids=txt_ids,
            guidance=guidance,
            return_dict=False,
        )[0]  # (B, N, C)

    def forward(
        self, target: torch.Tensor, pooled: torch.Tensor, context: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        # target: (B, N, C) clean tokens
        b = target.shape[0]
        t = sample_timesteps(
            b,
            self.cfg.timestep_sampling,
            self.cfg.logit_normal_scale,
            device=target.device,
            mean=self.cfg.logit_normal_mean,
        )
        noise = torch.randn_like(target)
        x_t = interpolate(target, noise, t)
        v = self.velocity(x_t, t, pooled, context)
        loss = F.mse_loss(v.float(), velocity_target(target, noise).float())
        return {"flow_loss": loss}

    @torch.no_grad()
    def sample(
        self,
        pooled: torch.Tensor,
        context: torch.Tensor,
        steps: int = 28,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Euler from t=1 (noise) to t=0 along FLUX's shifted schedule -> (B, N, C) tokens."""
        b = pooled.shape[0]
        n = self.img_ids.shape[0]
        c = self.transformer.config.in_channels
        x = torch.randn(b, n, c, device=pooled.device, generator=generator)
        ts = shifted_schedule(steps, n).to(pooled.device)
        for t_cur, t_next in zip(ts[:-1], ts[1:], strict=True):
            v = self.velocity(x, t_cur.expand(b), pooled, context).float()
            x = x + (t_next - t_cur) * v
        return x
