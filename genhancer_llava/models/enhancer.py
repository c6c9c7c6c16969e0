"""The Enhancer (encoder + projector + denoiser, the one module training prepares) and
`apply_stage_policy`, which sets what a stage trains (the policy table is in
`genhancer_llava.stages`; tests assert it against what really trains).

Frozen parts stay in the graph: in `lora-only` the loss still flows through the frozen DiT and
projector into the LoRA weights.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import Config, LoraConfig
from ..errors import GenhancerError
from ..paths import required_path
from ..stages import STAGE_POLICIES, StagePolicy
from .denoisers import FlowDenoiser, MaskedDenoiser, build_denoiser
from .encoders import ENCODER_PATH_HINT, Encoder, load_encoder, pick_local
from .projector import Projector

__all__ = [
    "Enhancer",
    "build_enhancer",
    "apply_stage_policy",
    "add_lora",
    "trainable_parameter_table",
    "apply_speed_options",
]


class Enhancer(nn.Module):
    """Images + targets -> {"flow_loss": scalar} (flow) or {"mask_loss": scalar} (masked).

    Args:
        encoder: the vision encoder (global token, optional local tokens).
        projector: global token -> denoiser conditioning.
        denoiser: the flow denoiser, conditioned only on the projector's outputs.
    """

    def __init__(
        self, encoder: Encoder, projector: Projector, denoiser: FlowDenoiser | MaskedDenoiser
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.denoiser = denoiser

    def encoder_trainable(self) -> bool:
        return any(p.requires_grad for p in self.encoder.parameters())

    def condition(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # No decorator: whether the encoder builds a graph is decided by the stage policy.
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.encoder_trainable()):
            enc = self.encoder(pixel_values)
        return self.projector(enc.global_token, enc.local_tokens)  # (B, P), (B, T, D)

    def cached_condition(
        self, global_token: torch.Tensor, patch_tokens: torch.Tensor | None = None
    ):
        """The projector on the frozen encoder's pre-computed outputs (genhancer cache)."""
        if self.encoder_trainable():
            raise GenhancerError(
                "pre-computed encoder tokens need a frozen encoder (stage 1); "
                "a stage that trains the encoder reads the cached pixels"
            )
        dtype = next(self.projector.parameters()).dtype
        local = None
        if self.encoder.num_local_tokens:
            if patch_tokens is None:
                raise GenhancerError(
                    "encoder.local_token_ratio > 0 but the cache holds no patch "
                    "tokens; re-run genhancer cache with this config"
                )
            # the same random pick as the encoder's forward makes on the fly
            local = pick_local(
                patch_tokens, self.encoder.num_local_tokens, self.encoder.training
            ).to(dtype)
        return self.projector(global_token.to(dtype), local)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        global_token: torch.Tensor | None = None,
        patch_tokens: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        # pixel_values: (B, 3, H, W) encoder view; target: (B, N, C) clean target tokens;
        # or, instead of pixels, the frozen encoder's cached global (B, d) / patch tokens
        if global_token is not None:
            pooled, context = self.cached_condition(global_token, patch_tokens)
        else:
            pooled, context = self.condition(pixel_values)
        return self.denoiser(target, pooled, context)


def build_enhancer(cfg: Config, encoder: Encoder | None = None) -> Enhancer:
    """Encoder from `cfg.encoder.path` (unless given), fresh projector and denoiser.

    Args:
        cfg: the run config; `encoder.family` and `encoder.global_dim` are checked against the
            encoder.
        encoder: an encoder built elsewhere (tests build paper-sized ones on the meta device).
    """
    if encoder is None:
        # float32 whatever the folder stores: an fp16 export trained on the CPU (or as mixed
        # precision's master weights) would be silently wrong otherwise; autocast picks bf16.
        encoder = load_encoder(
            required_path(cfg.encoder.path, "encoder.path", ENCODER_PATH_HINT),
            cfg.encoder.image_size,
            cfg.encoder.local_token_ratio,
            dtype=torch.float32,
            family=cfg.encoder.family,
        )
    if encoder.family != cfg.encoder.family:
        raise GenhancerError(
            f"encoder.family={cfg.encoder.family} but the encoder is a {encoder.family} one; set "
            f"encoder.family={encoder.family} or use a {encoder.family} preset"
        )
    if cfg.encoder.global_dim is not None and cfg.encoder.global_dim != encoder.global_dim:
        raise GenhancerError(
            f"encoder.global_dim={cfg.encoder.global_dim} but the {encoder.family} encoder's "
            f"global token is {encoder.global_dim}-d; the folder is not this preset's backbone "
            f"(or set encoder.global_dim={encoder.global_dim})"
        )
    projector = Projector(
        encoder.global_dim,
        cfg.projector.pooled_dim,
        cfg.projector.context_dim,
        local_dim=encoder.local_dim if encoder.num_local_tokens else None,
    )
    denoiser = build_denoiser(cfg, cfg.target.grid(cfg.encoder.image_size))
    return Enhancer(encoder, projector, denoiser)


def add_lora(encoder: Encoder, cfg: LoraConfig) -> None:
    """Wrap the encoder's vision tower with peft LoRA adapters (in place)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_config = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        bias=cfg.bias,
        target_modules=encoder.lora_target_regex(
            cfg.target_modules, cfg.include_projection, cfg.head_attention
        ),
    )
    encoder.model = get_peft_model(encoder.model, peft_config)


def _is_lora_param(name: str) -> bool:
    return "lora_" in name


def apply_stage_policy(enhancer: Enhancer, policy: str, lora: LoraConfig) -> StagePolicy:
    """Set `requires_grad` on every parameter for `policy` (adding LoRA when it needs it).

    This is the single place that decides what a stage trains.
    """
    if policy not in STAGE_POLICIES:
        raise ValueError(f"unknown stage policy '{policy}'; known: {', '.join(STAGE_POLICIES)}")
    rule = STAGE_POLICIES[policy]
    has_lora = any(_is_lora_param(n) for n, _ in enhancer.encoder.named_parameters())
    if rule.encoder_lora and not has_lora:
        add_lora(enhancer.encoder, lora)
    enhancer.encoder.requires_grad_(False)
    if rule.encoder_lora:
        lora_modules = set()
        for name, param in enhancer.encoder.named_parameters():
            if _is_lora_param(name):
                param.requires_grad_(True)
                lora_modules.add(name.split(".lora_")[0])
        # bias="lora_only" (the paper's setting): biases of adapted layers train too.
        if lora.bias == "lora_only":
            for name, param in enhancer.encoder.named_parameters():
                if name.endswith(".bias") and name.rsplit(".base_layer", 1)[0] in lora_modules:
                    param.requires_grad_(True)
        elif lora.bias == "all":
            for name, param in enhancer.encoder.named_parameters():
                if name.endswith(".bias"):
                    param.requires_grad_(True)
    enhancer.projector.requires_grad_(rule.projector)
    enhancer.denoiser.requires_grad_(rule.denoiser)
    return rule


def trainable_parameter_table(enhancer: Enhancer) -> dict[str, dict[str, int]]:
    """{"encoder"/"encoder.lora"/"projector"/"denoiser": {"trainable": n, "total": n}}."""
    table: dict[str, dict[str, int]] = {}

    def add(group: str, param: nn.Parameter) -> None:
        row = table.setdefault(group, {"trainable": 0, "total": 0})
        row["total"] += param.numel()
        row["trainable"] += param.numel() if param.requires_grad else 0

    for name, param in enhancer.named_parameters():
        part = name.split(".", 1)[0]
        if part == "encoder" and _is_lora_param(name):
            add("encoder.lora", param)
        else:
            add(part, param)
    return table


def apply_speed_options(
    enhancer: Enhancer, compile_denoiser: bool = False, activation_checkpointing: bool = False
) -> None:
    """Optional speed / memory trade-offs on the denoiser, in place.

    Args:
        compile_denoiser: `torch.compile` the denoiser's network (nn.Module.compile: parameters
            and state-dict keys stay as they are, so checkpoints and exports are unchanged).
        activation_checkpointing: the DiT recomputes each block's activations in backward
            (diffusers' gradient checkpointing): bigger per-device batches for ~1/3 more compute.
    """
    if activation_checkpointing:
        enhancer.denoiser.transformer.enable_gradient_checkpointing()
    if compile_denoiser:  # flow: the DiT only (t and noise drawn eagerly); masked: all of it
        network = getattr(enhancer.denoiser, "transformer", None) or enhancer.denoiser
        network.compile()
