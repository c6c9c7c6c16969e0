"""h_omega: maps the encoder's global token into the two inputs of the denoiser.

As in the paper's code, the global token g enters twice:
  1. the adaLN path: LN -> Linear(d, P) -> GELU -> Linear(P, P), summed by the DiT with the
     timestep and guidance embeddings (P = pooled_projection_dim, 768 for FLUX);
  2. one context token for joint attention: LN -> Linear(d, D) -> GELU -> Linear(D, D)
     (D = joint_attention_dim, 4096 for FLUX).
Optional local (patch) tokens get their own context MLP from the tower's hidden width.
The masked denoiser takes the condition by cross-attention only: pooled_dim=0 drops path 1.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Projector", "mlp"]


def mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim)
    )


class Projector(nn.Module):
    """Global token -> (pooled vector, context tokens).

    Args:
        global_dim: width of the global token (CLIP projection_dim).
        pooled_dim: the denoiser's adaLN conditioning width (0: no pooled output).
        context_dim: the denoiser's joint-attention width.
        local_dim: width of local tokens, or None when only the global token is used.
    """

    def __init__(
        self, global_dim: int, pooled_dim: int, context_dim: int, local_dim: int | None = None
    ) -> None:
        super().__init__()
        self.pooled = mlp(global_dim, pooled_dim) if pooled_dim else None
        self.context = mlp(global_dim, context_dim)
        self.local_context = mlp(local_dim, context_dim) if local_dim else None

    def forward(
        self, global_token: torch.Tensor, local_tokens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        # global_token: (B, d); local_tokens: (B, k, d_local) or None
        pooled = self.pooled(global_token) if self.pooled is not None else None  # (B, P)
        context = self.context(global_token).unsqueeze(1)  # (B, 1, D)
        if local_tokens is not None:
            if self.local_context is None:
                raise ValueError("local tokens given but the projector was built without them")
            context = torch.cat([context, self.local_context(local_tokens)], dim=1)  # (B, 1+k, D)
        return pooled, context
