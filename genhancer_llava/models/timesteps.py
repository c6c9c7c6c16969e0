"""Pure maths of the rectified-flow objective: timestep sampling, interpolation, schedules."""

from __future__ import annotations

import math

import torch

__all__ = [
    "sample_timesteps",
    "logit_normal_quantile",
    "interpolate",
    "velocity_target",
    "shifted_schedule",
]


def sample_timesteps(
    n: int,
    kind: str = "logit_normal",
    scale: float = 1.0,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    mean: float = 0.0,
) -> torch.Tensor:
    """t in (0, 1): sigmoid(mean + scale * N(0, 1)) ("scaled logit-normal") or uniform.

    A larger scale pushes t towards 0 and 1; the paper uses scale 1.0 and mean 0. A positive
    mean shifts mass to high t (more noise), where the denoiser must lean on its condition.
    """
    if kind == "logit_normal":
        z = torch.randn(n, device=device, generator=generator)
        return torch.sigmoid(mean + scale * z)
    if kind == "uniform":
        return torch.rand(n, device=device, generator=generator)
    raise ValueError(f"unknown timestep sampling '{kind}'; choose logit_normal or uniform")


def logit_normal_quantile(q: float, scale: float = 1.0, mean: float = 0.0) -> float:
    """The q-quantile of sigmoid(mean + scale * N(0, 1)) (sigmoid is monotonic)."""
    z = math.sqrt(2.0) * torch.erfinv(torch.tensor(2.0 * q - 1.0, dtype=torch.float64)).item()
    return 1.0 / (1.0 + math.exp(-(mean + scale * z)))


def interpolate(x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) * x + t * noise, t broadcast over all but the batch dimension."""
    t = t.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    return (1.0 - t) * x + t * noise


def velocity_target(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """d x_t / d t = noise - x."""
    return noise - x


def shifted_schedule(
    steps: int, num_tokens: int, base_shift: float = 0.5, max_shift: float = 1.15
) -> torch.Tensor:
    """FLUX's sampling schedule: t from 1 to 0, shifted towards 1 for longer sequences.

    mu is linear in the token count between 256 (base_shift) and 4096 tokens (max_shift);
    t' = e^mu / (e^mu + (1/t - 1)). Returns steps + 1 values, the last one 0.
    """
    mu = base_shift + (max_shift - base_shift) * (num_tokens - 256) / (4096 - 256)
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    shifted = torch.zeros_like(t)
    inner = t > 0
    shifted[inner] = math.exp(mu) / (math.exp(mu) + (1.0 / t[inner] - 1.0))
    return shifted.float()
