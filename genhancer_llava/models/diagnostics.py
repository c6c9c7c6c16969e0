"""Does the denoiser listen to its condition? The shuffle gap.

The stage-1 loss is computed twice on the same images, noise and timesteps: once with each
image's own condition, once with the conditions shuffled within the batch (a cyclic shift, so
no image keeps its own). The gap is the relative rise, (shuffled - true) / true. A denoiser that
ignores its condition scores 0; one that reads it scores > 0. Stage 2 can only teach the encoder
through what the denoiser reads, so a gap near 0 means stage 2 has little to say.

For a flow denoiser the gap is also reported at fixed t (the global token matters mostly at high
noise, where the image itself says little).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .timesteps import interpolate, velocity_target

__all__ = ["shuffle_gap", "FIXED_T"]

FIXED_T = (0.25, 0.5, 0.75, 0.95)


def _shift(x: torch.Tensor | None) -> torch.Tensor | None:
    """The batch rolled by one; None (a denoiser without a context sequence) stays None."""
    return None if x is None else torch.roll(x, shifts=1, dims=0)


@torch.no_grad()
def shuffle_gap(
    enhancer: nn.Module,
    pixel_values: torch.Tensor,
    target: torch.Tensor,
    repeats: int = 4,
    seed: int = 0,
) -> dict[str, float]:
    """Losses with true and shuffled conditions, and the relative gap (overall and per t).

    Args:
        enhancer: an `Enhancer` (unwrapped); its denoiser draws t and noise from torch's RNG.
        pixel_values: (B, 3, H, W) encoder views, B >= 2.
        target: (B, N, C) clean target tokens (ids for a masked denoiser).
        repeats: draws of noise and timesteps averaged per image.
        seed: the RNG seed of those draws (the caller's RNG state is left as it was).
    """
    if pixel_values.shape[0] < 2:
        raise ValueError("the shuffle gap needs a batch of at least 2 images")
    was_training = enhancer.training
    enhancer.eval()
    pooled, context = enhancer.condition(pixel_values)
    denoiser = enhancer.denoiser
    true_loss = shuffled_loss = 0.0
    with torch.random.fork_rng(devices=[]):
        for r in range(repeats):
            torch.manual_seed(seed + r)
            true_loss += sum(denoiser(target, pooled, context).values()).item()
            torch.manual_seed(seed + r)  # the same t, noise (and masks) again
            shuffled_loss += sum(denoiser(target, _shift(pooled), _shift(context)).values()).item()
        result = {"loss_true": true_loss / repeats, "loss_shuffled": shuffled_loss / repeats}
        result["gap"] = (shuffled_loss - true_loss) / max(true_loss, 1e-12)
        if hasattr(denoiser, "velocity"):  # flow: the gap at fixed noise levels
            gen = torch.Generator(device=target.device).manual_seed(seed)
            noise = torch.randn(
                target.shape, generator=gen, device=target.device, dtype=target.dtype
            )
            v_true = velocity_target(target, noise).float()
            for t_value in FIXED_T:
                t = torch.full((target.shape[0],), t_value, device=target.device)
                x_t = interpolate(target, noise, t)
                a = F.mse_loss(denoiser.velocity(x_t, t, pooled, context).float(), v_true).item()
                b = F.mse_loss(
                    denoiser.velocity(x_t, t, _shift(pooled), _shift(context)).float(), v_true
                ).item()
                result[f"gap_t{t_value}"] = (b - a) / max(a, 1e-12)
    enhancer.train(was_training)
    return {k: round(v, 6) for k, v in result.items()}
