"""The discrete denoiser: masked VQ-token prediction from the global token."""

import math

import pytest
import torch
from PIL import Image

from genhancer_llava.config import load_config
from genhancer_llava.errors import ConfigError, GenhancerError
from genhancer_llava.models.denoisers.masked import (
    MaskedDenoiser,
    mask_ratio,
    masked_cross_entropy,
    sample_mask,
)
from genhancer_llava.models.enhancer import apply_stage_policy, build_enhancer
from genhancer_llava.models.targets import build_target
from genhancer_llava.models.tiny import make_tiny_vq
from genhancer_llava.train.preview import grid_size

from .test_models import PAPER_BACKBONES, _meta_encoder, _mlp_params
from .test_pipeline import run_python_bash

# 6 blocks of width 1024 (16 heads, MLP 4x), a 16385-row token embedding ([MASK] included),
# 196 learned positions, a 16384-way head: the paper-scale masked preset at 224 px
MASKED_DENOISER_PARAMS_224 = 134_554_624


@pytest.fixture(scope="module")
def tiny_vq(tmp_path_factory):
    return make_tiny_vq(tmp_path_factory.mktemp("vq") / "vq", codebook_size=32, downsample=4)


@pytest.fixture
def masked_config(tiny_clip, tiny_vq, tmp_path):
    def build(*overrides):
        return load_config(
            "tiny-masked",
            overrides=[
                f"encoder.path={tiny_clip}",
                f"target.path={tiny_vq}",
                f"run.output_dir={tmp_path / 'run'}",
                *overrides,
            ],
        )

    return build


def test_loss_ignores_unmasked_positions():
    logits = torch.randn(2, 10, 7)
    targets = torch.randint(0, 7, (2, 10))
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, :3] = mask[1, 5:] = True
    loss = masked_cross_entropy(logits, targets, mask)
    changed = logits.clone()
    changed[~mask] = torch.randn_like(changed[~mask]) * 10
    assert torch.equal(masked_cross_entropy(changed, targets, mask), loss)
    changed[mask] += torch.randn_like(changed[mask])
    assert not torch.equal(masked_cross_entropy(changed, targets, mask), loss)
    expected = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
    assert torch.allclose(loss, expected)


def test_mask_ratios_follow_the_schedule():
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert torch.allclose(mask_ratio(t, "cosine"), torch.sin(math.pi / 2 * t))
    assert torch.equal(mask_ratio(t, "linear"), t)
    ratio = torch.tensor([0.0, 0.1, 0.5, 1.0])
    mask = sample_mask(ratio, 20)
    assert mask.sum(1).tolist() == [1, 2, 10, 20]  # ceil(ratio * N), at least one
    # uniform t through the cosine schedule: E[sin(pi U / 2)] = 2 / pi of the tokens hidden
    t = torch.rand(20_000, generator=torch.Generator().manual_seed(0))
    hidden = sample_mask(mask_ratio(t, "cosine"), 196).float().mean()
    assert abs(hidden.item() - 2 / math.pi) < 0.01


def test_vq_target_gives_token_grids(tiny_vq):
    cfg = load_config("tiny-masked", overrides=[f"target.path={tiny_vq}"]).target
    target = build_target(cfg)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    ids = target.encode(images)
    assert ids.shape == (2, 64) and ids.dtype == torch.long and ids.max() < 32
    assert target.decode(ids, (8, 8)).shape == (2, 3, 32, 32)


def test_bad_vq_folders_and_sizes_are_one_line_errors(tiny_vq, tmp_path):
    def target(*overrides):
        return build_target(
            load_config("tiny-masked", overrides=[f"target.path={tiny_vq}", *overrides]).target
        )

    with pytest.raises(
        GenhancerError,
        match="num_vq_embeddings=32 and 4x down-sampling, the "
        "config says 1024 and 4; set "
        "target.codebook_size=32",
    ):
        target("target.codebook_size=1024")
    with pytest.raises(GenhancerError, match="set target.codebook_size=32 target.downsample=4"):
        target("target.downsample=8")
    with pytest.raises(GenhancerError, match="does not exist; set target.path"):
        target(f"target.path={tmp_path / 'nope'}")
    with pytest.raises(
        ConfigError, match="encoder.image_size=30 is not a multiple of the target's token stride 4"
    ):
        load_config("tiny-masked", overrides=["encoder.image_size=30"])
    with pytest.raises(ConfigError, match="denoiser.kind=masked reconstructs vq targets"):
        load_config("tiny-masked", overrides=["target.kind=pixels"])


def test_stage1_loss_falls_when_overfitting_a_batch(masked_config, tiny_vq):
    cfg = masked_config()
    enhancer = build_enhancer(cfg)
    apply_stage_policy(enhancer, "stage1", cfg.lora)
    params = [p for p in enhancer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3)
    pixels = torch.randn(4, 3, 32, 32)
    ids = torch.randint(0, 32, (4, 64), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(80):
        torch.manual_seed(0)  # same mask every step: a fixed objective
        loss = enhancer(pixels, ids)["mask_loss"]
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[0] > 3.0  # about log(32) at random init
    assert losses[-1] < 0.3 * losses[0]


def test_stage2_lora_only_changes_only_lora(masked_config):
    cfg = masked_config()
    enhancer = build_enhancer(cfg)
    apply_stage_policy(enhancer, "lora-only", cfg.lora)
    for name, p in enhancer.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=1e-2)
    before = {n: p.detach().clone() for n, p in enhancer.named_parameters()}
    opt = torch.optim.AdamW([p for p in enhancer.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(2):
        enhancer(torch.randn(2, 3, 32, 32), torch.randint(0, 32, (2, 64)))["mask_loss"].backward()
        opt.step()
        opt.zero_grad()
    changed = {n for n, p in enhancer.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("encoder.") for n in changed)
    assert all("lora_" in n or n.endswith("base_layer.bias") for n in changed)


def test_maskgit_sampling_fills_every_position(masked_config):
    enhancer = build_enhancer(masked_config()).eval()
    _, context = enhancer.condition(torch.randn(2, 3, 32, 32))
    ids = enhancer.denoiser.sample(
        None, context, steps=4, generator=torch.Generator().manual_seed(0)
    )
    assert ids.shape == (2, 64) and (ids < 32).all() and (ids >= 0).all()


MASKED = [(p + "-masked", *rest) for p, *rest in PAPER_BACKBONES]


@pytest.mark.parametrize(
    "preset,family,tower,size,tokens,width", MASKED, ids=[b[0] for b in MASKED]
)
def test_paper_masked_presets_build_at_paper_shapes_on_meta(
    preset, family, tower, size, tokens, width
):
    cfg = load_config(preset)
    with torch.device("meta"):
        enhancer = build_enhancer(cfg, encoder=_meta_encoder(tower, size))
    denoiser = enhancer.denoiser
    assert isinstance(denoiser, MaskedDenoiser) and len(denoiser.blocks) == 6
    assert denoiser.position_embedding.shape == (1, tokens, 1024)  # the VQ token grid
    assert denoiser.head.out_features == 16384
    count = sum(p.numel() for p in denoiser.parameters())
    assert count == MASKED_DENOISER_PARAMS_224 + (tokens - 196) * 1024
    print(f"{preset}: masked denoiser {count:,} parameters")
    # projector: the global token (d = width) -> one 1024-d context token, no adaLN path
    assert enhancer.projector.pooled is None
    assert enhancer.projector.context[1].in_features == width
    assert sum(p.numel() for p in enhancer.projector.parameters()) == _mlp_params(width, 1024)


@pytest.mark.slow
def test_enhance_clip_sh_tiny_masked_runs_both_stages_and_exports(tiny_clip, tiny_vq, tmp_path):
    from transformers import CLIPModel

    out = tmp_path / "run"
    proc = run_python_bash(
        "scripts/enhance_clip.sh",
        "--preset",
        "tiny-masked",
        "--output",
        str(out),
        f"encoder.path={tiny_clip}",
        f"target.path={tiny_vq}",
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "mask_loss" in proc.stdout
    CLIPModel.from_pretrained(out / "encoder")
    import json

    for stage in ("stage1", "stage2"):
        summary = json.loads((out / stage / "final" / "summary.json").read_text())
        assert summary["loss"] == "mask_loss" and summary["distributed"]["zero_stage"] == 2
        with Image.open(out / stage / "previews" / "final.png") as grid:
            assert grid.size == grid_size(2, 32, rows=3)  # MaskGIT samples decoded by the VQ


def test_make_tiny_vq_command_fits_the_tiny_masked_presets(tmp_path, capsys):
    """`genhancer make-tiny-vq DIR` (as make-tiny-clip / make-tiny-siglip) makes the folder the
    tiny masked presets need as target.path, with their defaults."""
    from genhancer_llava.cli.main import main
    from genhancer_llava.models.targets import check_target

    folder = tmp_path / "vq"
    main(["make-tiny-vq", str(folder)])
    assert str(folder) in capsys.readouterr().out
    for preset in ("tiny-masked", "tiny-siglip-masked"):
        cfg = load_config(preset, overrides=[f"target.path={folder}"])
        assert check_target(cfg.target) == folder
        ids = build_target(cfg.target).encode(torch.rand(2, 3, 32, 32) * 2 - 1)
        assert ids.shape == (2, 64) and int(ids.max()) < cfg.target.codebook_size
    with pytest.raises(SystemExit) as exit_info:
        main(["make-tiny-vq", str(tmp_path / "bad"), "--downsample", "3"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --downsample 3 must be a power of two"
