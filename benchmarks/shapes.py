"""The shapes both sides of a benchmark are built at (one place, so they cannot drift apart).

`scaled(size)`: the CPU comparison of issue 14: DiT width 256 (4 heads of 64), 2 double + 4
single blocks, context 1024, pooled 768; tiny CLIP (vision 128 wide, 4 layers, patch 8,
projection 128); autoencoder in the FLUX layout at channel width 32 (ch_mult 1,2,4,4, 2 residual
blocks, 16 latent channels).
`paper()`: the paper's shapes, read from where the project keeps them: OpenAI CLIP ViT-L/14 @224
(`PAPER_TOWERS["clip-l14"]`), the 1.31 B DiT and its projector (3072 wide, 24 heads of 128, 2+4
blocks, context 4096, pooled 768: the openai-clip-l14-224 preset) and the FLUX.1 autoencoder
(128, (1,2,4,4), 2 blocks, 16 channels; tests/test_benchmarks.py holds `autoencoder_config` to
the published vae/config.json in tests/fixtures/configs/flux1-vae.json).
`tiny()`: seconds on a CPU, for smoke runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Shapes", "scaled", "paper", "tiny", "by_name"]


@dataclass
class Shapes:
    name: str
    image_size: int
    batch: int = 8
    dit_width: int = 256
    dit_heads: int = 4
    double_blocks: int = 2
    single_blocks: int = 4
    axes_dims_rope: tuple[int, int, int] = (8, 28, 28)
    pooled_dim: int = 768
    context_dim: int = 1024
    ae_ch: int = 32
    ae_ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    ae_res_blocks: int = 2
    latent_channels: int = 16
    clip_vision: dict = field(
        default_factory=lambda: dict(
            hidden_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=512,
            patch_size=8,
        )
    )
    global_dim: int = 128  # CLIP projection_dim

    @property
    def head_dim(self) -> int:
        return self.dit_width // self.dit_heads

    def clip_config(self):
        """A CLIPConfig (text tower small: it only matters to the reference's stage-2 LoRA)."""
        from transformers import CLIPConfig

        return CLIPConfig(
            text_config=dict(
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=256,
                vocab_size=1000,
                max_position_embeddings=77,
                bos_token_id=0,
                eos_token_id=2,
                pad_token_id=1,
            ),
            vision_config=dict(self.clip_vision, image_size=self.image_size),
            projection_dim=self.global_dim,
        )

    def autoencoder_config(self) -> dict:
        """The autoencoder's AutoencoderKL arguments, in FLUX's vae/config.json layout."""
        from genhancer_llava.config import TargetConfig

        n, target = len(self.ae_ch_mult), TargetConfig()
        return dict(
            in_channels=3,
            out_channels=3,
            latent_channels=self.latent_channels,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=tuple(self.ae_ch * m for m in self.ae_ch_mult),
            layers_per_block=self.ae_res_blocks,
            norm_num_groups=32,
            use_quant_conv=False,
            use_post_quant_conv=False,
            scaling_factor=target.scaling_factor,
            shift_factor=target.shift_factor,
        )

    def autoencoder_kl(self):
        """The same autoencoder as a diffusers AutoencoderKL."""
        from diffusers import AutoencoderKL

        return AutoencoderKL(**self.autoencoder_config())

    def overrides(self) -> list[str]:
        """Config overrides that put our preset at these shapes."""
        return [
            f"encoder.image_size={self.image_size}",
            "encoder.global_dim=null",
            "target.kind=flux_vae",
            f"target.latent_channels={self.latent_channels}",
            f"projector.pooled_dim={self.pooled_dim}",
            f"projector.context_dim={self.context_dim}",
            f"denoiser.num_layers={self.double_blocks}",
            f"denoiser.num_single_layers={self.single_blocks}",
            f"denoiser.num_attention_heads={self.dit_heads}",
            f"denoiser.attention_head_dim={self.head_dim}",
            f"denoiser.axes_dims_rope=[{','.join(map(str, self.axes_dims_rope))}]",
            f"optim.per_device_batch_size={self.batch}",
            "optim.gradient_accumulation_steps=1",
        ]


def scaled(image_size: int, batch: int = 8) -> Shapes:
    return Shapes(f"scaled-{image_size}", image_size, batch)


def paper(batch: int = 16) -> Shapes:
    from genhancer_llava.config import load_config
    from genhancer_llava.models.paper_towers import PAPER_TOWERS

    cfg = load_config("openai-clip-l14-224")
    tower = dict(PAPER_TOWERS["clip-l14"][1])
    denoiser = cfg.denoiser
    return Shapes(
        "paper-224",
        cfg.encoder.image_size,
        batch,
        dit_width=denoiser.num_attention_heads * denoiser.attention_head_dim,
        dit_heads=denoiser.num_attention_heads,
        double_blocks=denoiser.num_layers,
        single_blocks=denoiser.num_single_layers,
        axes_dims_rope=tuple(denoiser.axes_dims_rope),
        pooled_dim=cfg.projector.pooled_dim,
        context_dim=cfg.projector.context_dim,
        ae_ch=128,
        latent_channels=cfg.target.latent_channels,
        global_dim=tower.pop("projection_dim"),
        clip_vision=dict(tower, hidden_act="quick_gelu"),  # OpenAI CLIP's activation
    )


def tiny(batch: int = 2) -> Shapes:
    return Shapes(
        "tiny-32",
        32,
        batch,
        dit_width=64,
        dit_heads=2,
        axes_dims_rope=(4, 14, 14),
        pooled_dim=32,
        context_dim=64,
        ae_ch=32,
        ae_res_blocks=1,
        clip_vision=dict(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            patch_size=8,
        ),
        global_dim=32,
    )


def by_name(name: str, batch: int | None = None) -> Shapes:
    kind, _, size = name.partition("-")
    if kind == "scaled":
        return scaled(int(size or 64), batch or 8)
    if kind == "paper":
        return paper(batch or 16)
    if kind == "tiny":
        return tiny(batch or 2)
    raise SystemExit(f"error: unknown shapes '{name}'; use scaled-64, scaled-224, paper, tiny")
