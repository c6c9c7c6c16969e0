"""What each stage trains: the policy table, and what really changes after optimiser steps."""

import pytest
import torch

from genhancer_llava.config import load_config
from genhancer_llava.models.enhancer import (
    apply_stage_policy,
    build_enhancer,
    trainable_parameter_table,
)
from genhancer_llava.stages import STAGE_POLICIES


def _tiny(tiny_config, *overrides):
    cfg = tiny_config(*overrides)
    return cfg, build_enhancer(cfg)


def _lora_bias_count(enhancer):
    adapted = {n.split(".lora_")[0] for n, _ in enhancer.encoder.named_parameters() if "lora_" in n}
    return sum(
        p.numel()
        for n, p in enhancer.encoder.named_parameters()
        if n.endswith(".base_layer.bias") and n.rsplit(".base_layer", 1)[0] in adapted
    )


def test_policy_table():
    assert STAGE_POLICIES["stage1"].encoder_lora is False
    assert {
        k: (v.encoder_lora, v.projector, v.denoiser, v.from_stage1)
        for k, v in STAGE_POLICIES.items()
    } == {
        "stage1": (False, True, True, False),
        "lora-only": (True, False, False, True),
        "all": (True, True, True, True),
        "end-to-end": (True, True, True, False),
    }


@pytest.mark.parametrize("policy", list(STAGE_POLICIES))
def test_trainable_parameter_table_per_policy(tiny_config, policy):
    cfg, enhancer = _tiny(tiny_config)
    apply_stage_policy(enhancer, policy, cfg.lora)
    table = trainable_parameter_table(enhancer)
    rule = STAGE_POLICIES[policy]
    for part in ("projector", "denoiser"):
        expected = table[part]["total"] if getattr(rule, part) else 0
        assert table[part]["trainable"] == expected
    if rule.encoder_lora:
        assert table["encoder.lora"]["trainable"] == table["encoder.lora"]["total"] > 0
        # bias="lora_only": the adapted layers' biases, nothing else of the base tower
        assert table["encoder"]["trainable"] == _lora_bias_count(enhancer) > 0
        # r=4 adapters on q/k/v/out (64x64) and fc1/fc2 (64x256) in 2 layers, and on
        # visual_projection (64 -> 32): the CLIP presets adapt the global token's layer
        assert table["encoder.lora"]["total"] == (
            2 * (4 * 4 * (64 + 64) + 2 * 4 * (64 + 256)) + 4 * (64 + 32)
        )
    else:
        assert "encoder.lora" not in table and table["encoder"]["trainable"] == 0


@pytest.mark.parametrize(
    "preset",
    [
        "openai-clip-l14-224",
        "openai-clip-l14-336",
        "metaclip-l14-224",
        "metaclip-h14-224",
        "openai-clip-l14-224-masked",
        "metaclip-h14-224-masked",
        "tiny",
    ],
)
def test_clip_presets_adapt_visual_projection(preset):
    """The reference's all-linear LoRA covers visual_projection, the global token's layer."""
    assert load_config(preset).lora.include_projection is True


def test_stage2_adapts_and_updates_visual_projection(tiny_config):
    cfg, enhancer = _tiny(tiny_config)  # the preset's default, no override
    apply_stage_policy(enhancer, "lora-only", cfg.lora)
    projection = {
        n: p for n, p in enhancer.encoder.named_parameters() if "visual_projection.lora_" in n
    }
    assert len(projection) == 2 and all(p.requires_grad for p in projection.values())
    before = {n: p.detach().clone() for n, p in projection.items()}
    _train(enhancer.train(), 2, 1e-3)  # lora_B starts at 0: step 1 moves B, step 2 moves A too
    assert all(not torch.equal(p, before[n]) for n, p in projection.items())


def test_lora_targets_only_vision_layers_and_optionally_the_projection(tiny_config):
    cfg, enhancer = _tiny(tiny_config)
    apply_stage_policy(enhancer, "lora-only", cfg.lora)
    adapted = {
        n.split(".lora_")[0].split("base_model.model.")[-1]
        for n, _ in enhancer.encoder.named_parameters()
        if "lora_" in n
    }
    assert "visual_projection" in adapted
    assert len(adapted) == 2 * 6 + 1
    layers = adapted - {"visual_projection"}
    assert all(a.startswith("vision_model.encoder.layers.") for a in layers)


def _train(enhancer, steps, lr, fixed_draws=False):
    params = [p for p in enhancer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    pixels, target = torch.randn(4, 3, 32, 32, generator=g), torch.randn(4, 64, 48, generator=g)
    losses = []
    for _ in range(steps):
        if fixed_draws:
            torch.manual_seed(0)  # same t and noise every step: a fixed objective to overfit
        loss = enhancer(pixels, target)["flow_loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_stage1_loss_falls_when_overfitting_one_batch(tiny_config):
    cfg, enhancer = _tiny(tiny_config)
    apply_stage_policy(enhancer, "stage1", cfg.lora)
    losses = _train(enhancer.train(), 80, 3e-3, fixed_draws=True)
    assert losses[-1] < 0.3 * losses[0]


def test_stage1_builds_no_graph_through_the_frozen_encoder(tiny_config):
    cfg, enhancer = _tiny(tiny_config)
    apply_stage_policy(enhancer, "stage1", cfg.lora)
    pooled, _ = enhancer.condition(torch.randn(1, 3, 32, 32))
    assert pooled.grad_fn is not None  # the projector trains
    assert enhancer.encoder(torch.randn(1, 3, 32, 32)).global_token.requires_grad is False


@pytest.mark.parametrize("policy", ["lora-only", "all"])
def test_stage2_changes_only_what_the_policy_trains(tiny_config, policy):
    cfg, enhancer = _tiny(tiny_config)
    apply_stage_policy(enhancer, policy, cfg.lora)
    # LoRA B starts at zero; give it a value so that every adapter weight gets a gradient
    for name, p in enhancer.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=1e-2)
    before = {n: p.detach().clone() for n, p in enhancer.named_parameters()}
    _train(enhancer.train(), 3, 1e-3)
    changed = {n for n, p in enhancer.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in enhancer.named_parameters() if p.requires_grad}
    assert changed == trainable
    lora = {n for n in trainable if "lora_" in n}
    assert lora and all(n.startswith("encoder.") for n in lora)
    encoder_changed = {n for n in changed if n.startswith("encoder.")}
    assert all("lora_" in n or n.endswith("base_layer.bias") for n in encoder_changed)
    others = {n for n in changed if not n.startswith("encoder.")}
    if policy == "lora-only":
        assert not others
    else:
        assert any(n.startswith("projector.") for n in others)
        assert any(n.startswith("denoiser.") for n in others)


def test_fp16_encoder_folder_is_trained_in_fp32(tiny_clip, tmp_path):
    """An fp16 folder handed to a CPU run is converted to float32 explicitly, not trained in
    half precision."""
    import shutil

    from transformers import CLIPModel

    from genhancer_llava.config import load_config as load

    folder = shutil.copytree(tiny_clip, tmp_path / "fp16")
    CLIPModel.from_pretrained(tiny_clip).half().save_pretrained(folder)
    cfg = load("tiny", overrides=[f"encoder.path={folder}", f"run.output_dir={tmp_path / 'r'}"])
    enhancer = build_enhancer(cfg)
    assert {p.dtype for p in enhancer.parameters()} == {torch.float32}
    apply_stage_policy(enhancer, "lora-only", cfg.lora)
    assert torch.isfinite(torch.tensor(_train(enhancer.train(), 1, 1e-3))).all()
