"""The discrete denoiser: a small, randomly initialised Perceiver-style transformer that predicts
masked VQ-GAN token ids from the encoder's global token (the paper's second paradigm).

The paper writes the objective as the likelihood of the token grid given the condition,
p(x | g) = prod_i p(x_i | x_<i, g). Masked prediction (MaskGIT) realises it without a fixed
order: a random subset M of the positions is hidden, and the model maximises
sum_{i in M} log p(x_i | x_visible, g). Averaged over mask draws this trains every conditional
of every order-agnostic factorisation, and iterative decoding (unmask the most confident
positions first) samples from the product. The loss is cross-entropy on masked positions only:
visible positions carry their own answer and teach nothing.

The mask ratio follows a schedule of a timestep-like t in (0, 1): t is drawn like the flow
denoiser's (logit-normal with scale s, or uniform), and ratio = sin(pi t / 2) for the cosine
schedule (MaskGIT's cos(pi r / 2) with r = 1 - t) or ratio = t for the linear one. A larger s
pushes t to the ends: more nearly-all-masked (harder) and nearly-visible (easier) images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...config import MaskedDenoiserConfig
from ..timesteps import sample_timesteps

__all__ = ["MaskedDenoiser", "mask_ratio", "sample_mask", "masked_cross_entropy"]


def mask_ratio(t: torch.Tensor, schedule: str = "cosine") -> torch.Tensor:
    """Fraction of positions hidden at noise level t in [0, 1] (0: none, 1: all)."""
    if schedule == "cosine":
        return torch.sin(0.5 * math.pi * t)
    if schedule == "linear":
        return t
    raise ValueError(f"unknown mask schedule '{schedule}'; choose cosine or linear")


def sample_mask(
    ratio: torch.Tensor, num_tokens: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B, N) bool mask with ceil(ratio * N) (at least 1) random positions True per row."""
    b = ratio.shape[0]
    count = torch.clamp(torch.ceil(ratio * num_tokens), 1, num_tokens).long()  # (B,)
    scores = torch.rand(b, num_tokens, device=ratio.device, generator=generator)
    rank = scores.argsort(dim=1).argsort(dim=1)  # each position's rank in its row
    return rank < count[:, None]


def masked_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy over masked positions only. logits (B, N, V); targets, mask (B, N)."""
    return F.cross_entropy(logits[mask].float(), targets[mask])


class _Block(nn.Module):
    """Pre-LN: self-attention over tokens, cross-attention to the condition, MLP."""

    def __init__(self, width: int, heads: int, context_dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(
            width, heads, kdim=context_dim, vdim=context_dim, batch_first=True
        )
        self.norm3 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        # x: (B, N, D); context: (B, T, C)
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        x = x + self.cross_attn(self.norm2(x), context, context, need_weights=False)[0]
        return x + self.mlp(self.norm3(x))


class MaskedDenoiser(nn.Module):
    """Token ids with some replaced by [MASK] + condition -> logits over the codebook.

    Args:
        cfg: depth (num_layers), width (hidden_size), heads, MLP ratio, mask schedule.
        vocab_size: the VQ codebook size.
        context_dim: width of the projector's context tokens.
        grid: the token grid (h, w).
    """

    def __init__(
        self, cfg: MaskedDenoiserConfig, vocab_size: int, context_dim: int, grid: tuple[int, int]
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.grid = grid
        self.vocab_size = vocab_size
        self.mask_id = vocab_size  # one extra embedding row
        num_tokens = grid[0] * grid[1]
        width = cfg.hidden_size
        self.token_embedding = nn.Embedding(vocab_size + 1, width)
        self.position_embedding = nn.Parameter(torch.zeros(1, num_tokens, width))
        nn.init.trunc_normal_(self.position_embedding, std=0.02)
        self.blocks = nn.ModuleList(
            _Block(width, cfg.num_attention_heads, context_dim, cfg.mlp_ratio)
            for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)

    def logits(self, ids: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        # ids: (B, N) with mask_id at hidden positions; context: (B, T, C) -> (B, N, V)
        dtype = self.head.weight.dtype
        x = self.token_embedding(ids) + self.position_embedding.to(dtype)
        context = context.to(dtype)
        for block in self.blocks:
            x = block(x, context)
        return self.head(self.norm(x))

    def forward(
        self, target: torch.Tensor, pooled: torch.Tensor | None, context: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        # target: (B, N) token ids; pooled is unused (the condition enters by cross-attention)
        b, n = target.shape
        t = sample_timesteps(
            b,
            self.cfg.timestep_sampling,
            self.cfg.logit_normal_scale,
            device=target.device,
            mean=self.cfg.logit_normal_mean,
        )
        mask = sample_mask(mask_ratio(t, self.cfg.mask_schedule), n)
        inputs = target.masked_fill(mask, self.mask_id)
        return {"mask_loss": masked_cross_entropy(self.logits(inputs, context), target, mask)}

    @torch.no_grad()
    def sample(
        self,
        pooled: torch.Tensor | None,
        context: torch.Tensor,
        steps: int = 12,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """MaskGIT decoding: start all masked; each step predicts every hidden position, keeps the
        most confident ones and re-masks the rest along the schedule. -> (B, N) ids."""
        b = context.shape[0]
        n = self.grid[0] * self.grid[1]
        ids = torch.full((b, n), self.mask_id, dtype=torch.long, device=context.device)
        for step in range(steps):
            hidden = ids == self.mask_id
            probs = self.logits(ids, context).float().softmax(-1)  # (B, N, V)
            drawn = torch.multinomial(probs.view(b * n, -1), 1, generator=generator).view(b, n)
            confidence = probs.gather(-1, drawn[..., None]).squeeze(-1)
            confidence = confidence.masked_fill(~hidden, float("inf"))  # visible ones stay
            ids = torch.where(hidden, drawn, ids)
            t_next = torch.full((b,), 1.0 - (step + 1) / steps, device=context.device)
            remask = torch.floor(mask_ratio(t_next, self.cfg.mask_schedule) * n).long()  # (B,)
            order = confidence.argsort(dim=1)  # least confident first
            rank = order.argsort(dim=1)
            ids = ids.masked_fill(rank < remask[:, None], self.mask_id)
        return ids
