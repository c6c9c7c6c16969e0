"""The authors' training step (github.com/mashijie1028/GenHancer, `Continuous/`), for timing.

Nothing of the reference is copied here: its modules are imported from an extracted copy named by
path (`--ref-src DIR` or $GENHANCER_SRC; the repository root or its Continuous/ folder), e.g.

    git --git-dir=<mirror of GenHancer> archive HEAD | tar -x -C /tmp/genhancer_ref

Used from it: `src.flux.model.Flux` (the DiT), `src.flux.modules.autoencoder.AutoEncoder` (the
FLUX autoencoder class; its `encode` samples the posterior and applies 0.3611 * (z - 0.1159)),
`clip_models.CLIP_bank.OpenAICLIP.forward` (global token + the two projector MLPs) and
`clip_models.sampling.prepare_clip`. Rebuilt, because the originals load from the authors' cluster
paths: `OpenAICLIP.__init__` (takes a random HF CLIPModel; the projectors are the same
LN-Linear-GELU-Linear stacks) and the loop body of `train_OpenAICLIP_stage{1,2_only}.py` as one
single-process step (AE encode without grad, prepare_clip, 2x2 packing, t = sigmoid(N(0,1)),
x_t = (1-t) x + t n, Flux with guidance 4, MSE to n - x, clip 1.0, AdamW). Stage 2 puts LoRA on
every linear layer of the whole CLIPModel, as the reference does. The shared harness
/work/shared/bench/reference_step.py (where it exists) documents the same choices.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import torch
from torch import nn

from .shapes import Shapes

__all__ = ["import_reference", "ReferenceStep"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def import_reference(ref_src: str | None) -> types.SimpleNamespace:
    """The reference's modules, imported from the extracted copy at `ref_src`."""
    if not ref_src:
        raise SystemExit("error: name the extracted GenHancer copy with --ref-src or GENHANCER_SRC")
    root = Path(ref_src).expanduser().resolve()
    folder = next(
        (c for c in (root / "Continuous", root) if (c / "src" / "flux" / "model.py").is_file()),
        None,
    )
    if folder is None:
        raise SystemExit(f"error: no src/flux/model.py under {root} or {root}/Continuous")
    sys.path.insert(0, str(folder))
    try:  # CLIP_bank imports OpenAI's `clip` package without using it
        import clip  # noqa: F401
    except ImportError:
        sys.modules["clip"] = types.ModuleType("clip")
    from clip_models.CLIP_bank import OpenAICLIP
    from clip_models.sampling import prepare_clip
    from src.flux.model import Flux, FluxParams
    from src.flux.modules.autoencoder import AutoEncoder, AutoEncoderParams

    return types.SimpleNamespace(
        Flux=Flux,
        FluxParams=FluxParams,
        AutoEncoder=AutoEncoder,
        AutoEncoderParams=AutoEncoderParams,
        OpenAICLIP=OpenAICLIP,
        prepare_clip=prepare_clip,
        folder=str(folder),
    )


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(d_in), nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out)
    )


class ReferenceStep:
    """One reference training step at `shapes`; `stage` is "1" or "2_only"."""

    def __init__(
        self, ref, shapes: Shapes, stage: str, device: str, dtype: torch.dtype, seed: int = 0
    ) -> None:
        from transformers import CLIPModel

        torch.manual_seed(seed)
        self.ref, self.shapes, self.device, self.dtype = ref, shapes, device, dtype
        s = shapes
        self.dit = ref.Flux(
            ref.FluxParams(
                in_channels=4 * s.latent_channels,
                vec_in_dim=s.pooled_dim,
                context_in_dim=s.context_dim,
                hidden_size=s.dit_width,
                mlp_ratio=4.0,
                num_heads=s.dit_heads,
                depth=s.double_blocks,
                depth_single_blocks=s.single_blocks,
                axes_dim=list(s.axes_dims_rope),
                theta=10_000,
                qkv_bias=True,
                guidance_embed=True,
            )
        )
        self.vae = ref.AutoEncoder(
            ref.AutoEncoderParams(
                resolution=s.image_size,
                in_channels=3,
                ch=s.ae_ch,
                out_ch=3,
                ch_mult=list(s.ae_ch_mult),
                num_res_blocks=s.ae_res_blocks,
                z_channels=s.latent_channels,
                scale_factor=0.3611,
                shift_factor=0.1159,
            )
        )
        clip_model = CLIPModel(s.clip_config())

        class Wrapper(ref.OpenAICLIP):  # the reference forward, without the cluster paths
            def __init__(self, model):
                nn.Module.__init__(self)
                d = s.global_dim
                self.project_clip, self.project_t5 = _mlp(d, s.pooled_dim), _mlp(d, s.context_dim)
                self.model = model

        self.clip = Wrapper(clip_model)
        if stage != "1":
            from peft import LoraConfig, get_peft_model

            self.clip.model = get_peft_model(
                self.clip.model,
                LoraConfig(
                    r=16,
                    lora_alpha=16,
                    target_modules="all-linear",
                    lora_dropout=0.1,
                    bias="lora_only",
                ),
            )
        self.vae.requires_grad_(False)
        self.dit.requires_grad_(stage == "1")
        for name, p in self.clip.named_parameters():
            projector = "project_clip" in name or "project_t5" in name
            p.requires_grad_(projector if stage == "1" else (not projector and p.requires_grad))
        for m in (self.dit, self.vae, self.clip):
            m.to(device)
        self.clip.train()
        self.dit.train()
        self.params = [p for m in (self.clip, self.dit) for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=1e-4 if stage == "1" else 1e-5,
            betas=(0.9, 0.999),
            eps=1e-8,
            weight_decay=0.01,
        )
        self.mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)

    def modules(self) -> list[nn.Module]:
        return [self.dit, self.vae, self.clip]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [0, 1] -> the loss (on the device)."""
        from einops import rearrange

        images = images.to(self.device)
        autocast = torch.autocast(
            torch.device(self.device).type, dtype=self.dtype, enabled=self.dtype != torch.float32
        )
        with autocast:
            with torch.no_grad():
                x_1 = self.vae.encode(images * 2 - 1)
            inp = self.ref.prepare_clip(
                clip=self.clip, original_img=(images - self.mean) / self.std, img=x_1
            )
            x_1 = rearrange(x_1, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2)
            b = images.shape[0]
            t = torch.sigmoid(torch.randn((b,), device=self.device))
            x_0 = torch.randn_like(x_1)
            x_t = (1 - t[:, None, None]) * x_1 + t[:, None, None] * x_0
            pred = self.dit(
                img=x_t,
                img_ids=inp["img_ids"],
                txt=inp["txt"],
                txt_ids=inp["txt_ids"],
                y=inp["vec"],
                timesteps=t,
                guidance=torch.full((b,), 4.0, device=self.device, dtype=x_t.dtype),
            )
            loss = nn.functional.mse_loss(pred.float(), (x_0 - x_1).float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.detach()


def default_ref_src() -> str | None:
    return os.environ.get("GENHANCER_SRC")
