"""Denoisers conditioned on the encoder's global token: continuous (flow) and discrete (masked)."""

from .flow import FlowDenoiser, build_flow_transformer
from .masked import MaskedDenoiser

__all__ = ["FlowDenoiser", "MaskedDenoiser", "build_flow_transformer", "build_denoiser"]


def build_denoiser(cfg, grid: tuple[int, int]):
    """The denoiser `cfg.denoiser.kind` names, sized by the target and the projector.

    Args:
        cfg: the whole run config (denoiser, target and projector sections are read).
        grid: the target token grid (h, w).
    """
    if cfg.denoiser.kind == "masked":
        return MaskedDenoiser(
            cfg.denoiser,
            vocab_size=cfg.target.codebook_size,
            context_dim=cfg.projector.context_dim,
            grid=grid,
        )
    return FlowDenoiser(
        cfg.denoiser,
        in_channels=cfg.target.token_dim,
        pooled_dim=cfg.projector.pooled_dim,
        context_dim=cfg.projector.context_dim,
        grid=grid,
    )
