"""Shapes at the paper's settings (meta device) and the flow objective on tiny ones."""

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    CLIPVisionModelWithProjection,
)

from genhancer_llava.config import load_config
from genhancer_llava.errors import GenhancerError
from genhancer_llava.models.encoders import load_encoder
from genhancer_llava.models.enhancer import apply_stage_policy, build_enhancer
from genhancer_llava.models.paper_towers import PAPER_TOWERS, preset_tower, random_tower
from genhancer_llava.models.targets import image_ids
from genhancer_llava.models.timesteps import sample_timesteps

FLUX_DENOISER_PARAMS = 1_310_154_816  # 2 double + 4 single FLUX blocks, 24 x 128 heads


def _meta_encoder(tower: str, image_size: int):
    """A paper backbone's vision tower on the meta device (no weights, no memory)."""
    with torch.device("meta"):
        return random_tower(tower, image_size)


def _mlp_params(d_in: int, d_out: int) -> int:
    return 2 * d_in + (d_in * d_out + d_out) + (d_out * d_out + d_out)  # LN, Linear, Linear


# (preset, family, tower, size, latent tokens, global-token width) for the six backbones
PAPER_BACKBONES = [
    ("openai-clip-l14-224", "clip", "clip-l14", 224, 196, 768),
    ("openai-clip-l14-336", "clip", "clip-l14", 336, 441, 768),
    ("metaclip-l14-224", "clip", "clip-l14", 224, 196, 768),
    ("metaclip-h14-224", "clip", "metaclip-h14", 224, 196, 1024),
    ("siglip-so400m-224", "siglip", "siglip-so400m", 224, 196, 1152),
    ("siglip-so400m-384", "siglip", "siglip-so400m", 384, 576, 1152),
]


@pytest.mark.parametrize(
    "preset,family,tower,size,tokens,width", PAPER_BACKBONES, ids=[b[0] for b in PAPER_BACKBONES]
)
def test_paper_presets_build_at_paper_shapes_on_meta(preset, family, tower, size, tokens, width):
    cfg = load_config(preset)
    assert (cfg.encoder.family, cfg.encoder.image_size, cfg.encoder.global_dim) == (
        family,
        size,
        width,
    )
    assert preset_tower(preset) == tower and PAPER_TOWERS[tower][0] == family
    with torch.device("meta"):
        enhancer = build_enhancer(cfg, encoder=_meta_encoder(tower, size))
    denoiser = enhancer.denoiser.transformer
    assert sum(p.numel() for p in denoiser.parameters()) == FLUX_DENOISER_PARAMS
    assert len(denoiser.transformer_blocks) == 2 and len(denoiser.single_transformer_blocks) == 4
    # the target token count: the autoencoder's latents of this resolution, packed 2x2
    assert enhancer.denoiser.img_ids.shape == (tokens, 3)
    # the projector: d -> 768 (adaLN path) and d -> 4096 (one context token), d = global width
    assert enhancer.encoder.global_dim == width
    pooled, context = enhancer.projector.pooled, enhancer.projector.context
    assert (pooled[1].in_features, pooled[1].out_features, pooled[3].out_features) == (
        width,
        768,
        768,
    )
    assert (context[1].in_features, context[1].out_features, context[3].out_features) == (
        width,
        4096,
        4096,
    )
    projector_params = sum(p.numel() for p in enhancer.projector.parameters())
    assert projector_params == _mlp_params(width, 768) + _mlp_params(width, 4096)
    if width == 768:
        assert 21e6 < projector_params < 23e6  # the paper's "about 21-23 M"
    assert denoiser.config.pooled_projection_dim == 768
    assert denoiser.config.joint_attention_dim == 4096
    assert denoiser.config.in_channels == 64 and denoiser.config.guidance_embeds


def test_preset_with_another_backbone_is_refused():
    cfg = load_config("metaclip-h14-224")  # expects a 1024-d global token
    with pytest.raises(
        GenhancerError, match="encoder.global_dim=1024 but the clip encoder's global token is 768-d"
    ):
        build_enhancer(cfg, encoder=_meta_encoder("clip-l14", 224))
    with pytest.raises(GenhancerError, match="encoder.family=siglip but the encoder is a clip"):
        build_enhancer(load_config("siglip-so400m-224"), encoder=_meta_encoder("clip-l14", 224))


def test_encoder_global_token_is_projected_pooler_and_text_tower_absent(tiny_clip):
    encoder = load_encoder(tiny_clip, 32).eval()
    assert not any("text" in name for name, _ in encoder.named_parameters())
    x = torch.randn(2, 3, 32, 32)
    out = encoder(x)
    reference = CLIPVisionModelWithProjection.from_pretrained(
        tiny_clip, config=encoder.model.config
    ).eval()
    assert torch.allclose(out.global_token, reference(pixel_values=x).image_embeds, atol=1e-6)
    assert out.global_token.shape == (2, 32) and out.local_tokens is None


def _lora_tower_and_hf_global(tiny_config, *overrides):
    """The tiny CLIP with the paper's LoRA (dropout off, adapters non-zero) in training mode,
    and a function giving the plain HF forward's global token (every token, every layer)."""
    cfg = tiny_config("lora.dropout=0.0", *overrides)
    enhancer = build_enhancer(cfg)
    apply_stage_policy(enhancer, "lora-only", cfg.lora)
    encoder = enhancer.encoder.train()
    with torch.no_grad():  # LoRA B starts at zero: make the adapters matter
        for name, param in encoder.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)

    def hf_global(x):
        return encoder.model.visual_projection(
            encoder.model.vision_model(pixel_values=x).pooler_output
        )

    return encoder, hf_global


def _lora_grads(encoder, token):
    encoder.zero_grad()
    token.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
    assert any("lora_A" in n for n in grads) and any("lora_B" in n for n in grads)
    return grads


def test_clip_global_token_runs_last_layer_for_cls_only_and_matches_hf(tiny_config):
    encoder, hf_global = _lora_tower_and_hf_global(tiny_config)
    assert encoder.num_local_tokens == 0
    last_mlp = encoder.model.vision_model.encoder.layers[-1].mlp.fc1
    rows = []
    handle = last_mlp.register_forward_hook(lambda m, args, out: rows.append(args[0].shape))
    x = torch.randn(3, 3, 32, 32)
    fast = encoder(x).global_token
    handle.remove()
    assert rows == [(3, 64)]  # the last layer's MLP saw CLS only: (B, D), no tokens
    fast_grads = _lora_grads(encoder, fast)
    full = hf_global(x)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    full_grads = _lora_grads(encoder, full)
    assert fast_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():  # every LoRA weight and bias, the last layer's too
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_clip_with_local_tokens_keeps_the_full_forward(tiny_config):
    encoder, hf_global = _lora_tower_and_hf_global(tiny_config, "encoder.local_token_ratio=0.5")
    last_mlp = encoder.model.vision_model.encoder.layers[-1].mlp.fc1
    rows = []
    handle = last_mlp.register_forward_hook(lambda m, args, out: rows.append(args[0].shape))
    x = torch.randn(2, 3, 32, 32)
    out = encoder(x)
    handle.remove()
    assert rows == [(2, 1 + 16, 64)]  # every token through the last layer
    assert out.local_tokens.shape == (2, 8, 64)
    torch.testing.assert_close(out.global_token, hf_global(x), rtol=1e-5, atol=1e-6)


def test_local_token_ratio_appends_patch_tokens(tiny_config):
    cfg = tiny_config("encoder.local_token_ratio=0.5")
    enhancer = build_enhancer(cfg).eval()
    assert enhancer.encoder.num_local_tokens == 8  # half of 4x4 patches
    pooled, context = enhancer.condition(torch.randn(2, 3, 32, 32))
    assert pooled.shape == (2, 32) and context.shape == (2, 1 + 8, 64)


def test_encoder_errors_name_the_fix(tiny_clip, tmp_path):
    with pytest.raises(GenhancerError, match="set encoder.image_size=32"):
        load_encoder(tiny_clip, 64)
    with pytest.raises(GenhancerError, match="does not exist"):
        load_encoder(tmp_path / "nope", 32)


def test_flow_loss_is_mse_to_noise_minus_x(tiny_config):
    enhancer = build_enhancer(tiny_config()).eval()
    pixels, target = torch.randn(2, 3, 32, 32), torch.randn(2, 64, 48)
    torch.manual_seed(7)
    loss = enhancer(pixels, target)["flow_loss"]
    # the same draws by hand: t = sigmoid(N(0,1)), n ~ N(0, I), x_t = (1-t)x + tn
    torch.manual_seed(7)
    t = sample_timesteps(2, "logit_normal", 1.0)
    noise = torch.randn_like(target)
    x_t = (1 - t[:, None, None]) * target + t[:, None, None] * noise
    pooled, context = enhancer.condition(pixels)
    v = enhancer.denoiser.transformer(
        hidden_states=x_t,
        encoder_hidden_states=context,
        pooled_projections=pooled,
        timestep=t,
        img_ids=image_ids((8, 8)),
        txt_ids=torch.zeros(1, 3),
        guidance=torch.full((2,), 4.0),
        return_dict=False,
    )[0]
    assert torch.allclose(loss, F.mse_loss(v, noise - target), atol=1e-6)


def test_denoiser_sees_the_global_token_through_both_paths(tiny_config):
    enhancer = build_enhancer(tiny_config()).eval()
    den = enhancer.denoiser
    x_t, t = torch.randn(1, 64, 48), torch.tensor([0.5])
    pooled, context = torch.randn(1, 32), torch.randn(1, 1, 64)
    base = den.velocity(x_t, t, pooled, context)
    assert not torch.allclose(base, den.velocity(x_t, t, pooled + 1, context))
    assert not torch.allclose(base, den.velocity(x_t, t, pooled, context + 1))


def test_sampler_returns_target_shaped_tokens(tiny_config):
    enhancer = build_enhancer(tiny_config()).eval()
    pooled, context = enhancer.condition(torch.randn(2, 3, 32, 32))
    assert enhancer.denoiser.sample(pooled, context, steps=3).shape == (2, 64, 48)
