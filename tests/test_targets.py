import json

import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline

from genhancer_llava.config import TargetConfig
from genhancer_llava.errors import GenhancerError
from genhancer_llava.models.targets import build_target, image_ids, pack, unpack


def test_pack_matches_diffusers_flux_packing_and_unpacks():
    latents = torch.randn(2, 16, 28, 28)
    ours = pack(latents, 2)
    reference = FluxPipeline._pack_latents(latents, 2, 16, 28, 28)
    assert ours.shape == (2, 196, 64)
    assert torch.equal(ours, reference)
    assert torch.equal(unpack(ours, (14, 14), 2), latents)


def test_image_ids_are_row_col_positions():
    ids = image_ids((3, 4))
    assert ids.shape == (12, 3)
    assert ids[5].tolist() == [0.0, 1.0, 1.0] and ids[-1].tolist() == [0.0, 2.0, 3.0]


def test_pixel_target_round_trips():
    target = build_target(TargetConfig(kind="pixels", pack=4))
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    tokens = target.encode(images)
    assert tokens.shape == (2, 64, 48)
    assert torch.allclose(target.decode(tokens, (8, 8)), images)


def test_flux_target_scales_shifts_and_packs_latents(tiny_vae):
    cfg = TargetConfig(kind="flux_vae", path=str(tiny_vae), sample_posterior=False)
    target = build_target(cfg)
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    tokens = target.encode(images)
    assert tokens.shape == (2, 16, 64)  # 64 px -> 8x8 latents -> 4x4 tokens
    vae = AutoencoderKL.from_pretrained(tiny_vae)
    z = vae.encode(images).latent_dist.mode()
    assert torch.allclose(tokens, pack(0.3611 * (z - 0.1159), 2), atol=1e-5)
    assert target.decode(tokens, (4, 4)).shape == (2, 3, 64, 64)
    assert not any(p.requires_grad for p in target.parameters())


def test_flux_target_samples_the_posterior(tiny_vae):
    target = build_target(TargetConfig(kind="flux_vae", path=str(tiny_vae)))
    images = torch.rand(1, 3, 64, 64) * 2 - 1
    assert not torch.equal(target.encode(images), target.encode(images))


def test_mismatched_autoencoder_is_a_one_line_error(tiny_vae, tmp_path):
    with pytest.raises(
        GenhancerError, match="latent_channels=16 and 8x down-sampling.*target.latent_channels=16"
    ):
        build_target(TargetConfig(kind="flux_vae", path=str(tiny_vae), latent_channels=4))
    with pytest.raises(GenhancerError, match="does not exist; set target.path"):
        build_target(TargetConfig(kind="flux_vae", path=str(tmp_path / "missing")))
    other = tmp_path / "unet"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(
        GenhancerError, match="holds a UNet2DModel; target.kind=flux_vae needs an? AutoencoderKL"
    ):
        build_target(TargetConfig(kind="flux_vae", path=str(other)))
