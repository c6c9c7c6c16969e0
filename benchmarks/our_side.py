"""Our training step at a benchmark's shapes, from the cache (default) or on the fly.

From the cache, a step is what the trainer does with `data.kind=cached`: the records of one batch
are decoded (safetensors bytes, as read from a shard) and collated (`CachedStream`, `collate`),
`model_inputs` samples the latent from the cached posterior and, in stage 1, hands the cached
global token to the projector; then the Enhancer's forward, backward, gradient clipping and
AdamW (`build_optimizer`, fused on CUDA). The records are written beforehand by the same function
`genhancer cache` uses (`encode_record_batch`). On the fly, the autoencoder and (stage 1) the
frozen encoder run inside the step instead.
"""

from __future__ import annotations

import torch
from torch import nn

from .shapes import Shapes

__all__ = ["OurStep"]


class OurStep:
    """One of our training steps at `shapes`; `stage` is "1" or "2_only" (LoRA only)."""

    def __init__(
        self,
        shapes: Shapes,
        stage: str,
        device: str,
        dtype: torch.dtype,
        from_cache: bool = True,
        seed: int = 0,
    ) -> None:
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        from genhancer_llava.config import load_config
        from genhancer_llava.data import PairTransform
        from genhancer_llava.models.encoders import CLIPEncoder
        from genhancer_llava.models.enhancer import apply_stage_policy, build_enhancer
        from genhancer_llava.models.targets import FluxAutoencoderTarget
        from genhancer_llava.train.optim import build_optimizer

        torch.manual_seed(seed)
        self.device, self.dtype, self.from_cache, self.stage = device, dtype, from_cache, stage
        cfg = load_config("openai-clip-l14-224", overrides=shapes.overrides())
        tower = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                **shapes.clip_vision, image_size=shapes.image_size, projection_dim=shapes.global_dim
            )
        )
        self.enhancer = build_enhancer(cfg, encoder=CLIPEncoder(tower))
        apply_stage_policy(self.enhancer, "stage1" if stage == "1" else "lora-only", cfg.lora)
        self.enhancer.to(device)
        # the trainer keeps the autoencoder in bf16 on GPU; it runs only for previews from a cache
        self.target = FluxAutoencoderTarget(shapes.autoencoder_kl(), cfg.target).to(
            device, torch.float32 if dtype == torch.float32 else dtype
        )
        self.transform = PairTransform(
            shapes.image_size, self.enhancer.encoder.image_mean, self.enhancer.encoder.image_std
        )
        self.optimizer, _ = build_optimizer(
            cfg, self.enhancer, 1e-4 if stage == "1" else 1e-5, device
        )
        self.params = [p for p in self.enhancer.parameters() if p.requires_grad]
        self.enhancer.train()

    def modules(self) -> list[nn.Module]:
        return [self.enhancer, self.target]

    def prepare(self, images: torch.Tensor):
        """uint8 crops (B, 3, S, S) -> what one step reads: cached records, or the crops."""
        if not self.from_cache:
            return images
        from safetensors.torch import save

        from genhancer_llava.cache import encode_record_batch

        self.enhancer.eval()
        tensors = encode_record_batch(
            self.enhancer.encoder, self.target, images, self.transform.views
        )
        self.enhancer.train()
        return [
            save({k: v[i : i + 1].contiguous() for k, v in tensors.items()})
            for i in range(images.shape[0])
        ]

    def _batch(self, prepared) -> dict:
        from genhancer_llava.cache import CachedStream, _load_record
        from genhancer_llava.data import Item, collate

        if not self.from_cache:
            encoder_view, target_view = self.transform.views(prepared)
            return {"pixel_values": encoder_view, "target_pixels": target_view}
        load = CachedStream._load  # the stream's own record -> crop path
        stream = CachedStream.__new__(CachedStream)
        stream.transform = self.transform
        return collate(
            [
                load(stream, Item(str(i), lambda d=data: _load_record(d)), 0)
                for i, data in enumerate(prepared)
            ]
        )

    def __call__(self, prepared) -> torch.Tensor:
        from genhancer_llava.cache import model_inputs

        batch = self._batch(prepared)
        autocast = torch.autocast(
            torch.device(self.device).type, dtype=self.dtype, enabled=self.dtype != torch.float32
        )
        with autocast:
            inputs = model_inputs(
                self.target, batch, self.device, cached_condition=self.stage == "1"
            )
            loss = self.enhancer(**inputs)["flow_loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.detach()
