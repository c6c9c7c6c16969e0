"""Denoisers conditioned on the encoder's global token."""

from .flow import FlowDenoiser, build_flow_transformer

__all__ = ["FlowDenoiser", "build_flow_transformer"]
