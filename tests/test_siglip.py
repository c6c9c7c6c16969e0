"""SigLIP behind the encoder interface: the pooled head output is the global token, LoRA reaches
the pooling head, both stages and the export run, and family / resolution mistakes are one-line
errors."""

import json
import shutil
import textwrap

import pytest
import torch
import yaml
from peft import PeftModel
from transformers import SiglipModel, SiglipVisionModel

from genhancer_llava.cli.main import main
from genhancer_llava.config import load_config
from genhancer_llava.errors import GenhancerError
from genhancer_llava.export import export_encoder
from genhancer_llava.models.encoders import SiglipEncoder, load_encoder
from genhancer_llava.models.enhancer import apply_stage_policy, build_enhancer
from genhancer_llava.models.tiny import make_tiny_siglip
from genhancer_llava.train.launch import prepare_run_dir
from genhancer_llava.train.run_dir import RunDir

from .conftest import run_python


@pytest.fixture
def siglip_config(tiny_siglip, tmp_path):
    def build(*overrides: str):
        return load_config(
            "tiny-siglip",
            overrides=[
                f"encoder.path={tiny_siglip}",
                f"run.output_dir={tmp_path / 'run'}",
                *overrides,
            ],
        )

    return build


@pytest.mark.parametrize("vision_only", [False, True])
def test_global_token_is_the_pooler_output(tiny_siglip, tmp_path, vision_only):
    folder = make_tiny_siglip(tmp_path / "vis", vision_only=True) if vision_only else tiny_siglip
    encoder = load_encoder(folder, 32).eval()
    assert isinstance(encoder, SiglipEncoder) and encoder.family == "siglip"
    assert not any("text" in name for name, _ in encoder.named_parameters())
    assert encoder.image_mean == encoder.image_std == (0.5, 0.5, 0.5)
    reference = SiglipVisionModel.from_pretrained(folder).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out, ref = encoder(x), reference(pixel_values=x)
    assert torch.equal(out.global_token, ref.pooler_output)
    assert out.global_token.shape == (2, 64) and out.local_tokens is None
    assert encoder.global_dim == 64


def test_local_tokens_come_from_all_patch_tokens(siglip_config):
    enhancer = build_enhancer(siglip_config("encoder.local_token_ratio=0.5")).eval()
    assert enhancer.encoder.num_local_tokens == 8  # half of 4x4 patches, no CLS to drop
    pooled, context = enhancer.condition(torch.randn(2, 3, 32, 32))
    assert pooled.shape == (2, 32) and context.shape == (2, 1 + 8, 64)


def test_lora_reaches_layers_and_the_pooling_head(siglip_config):
    cfg = siglip_config()
    enhancer = build_enhancer(cfg)
    apply_stage_policy(enhancer, "lora-only", cfg.lora)
    adapted = {
        n.split(".lora_")[0].replace("base_model.model.", "").replace("model.", "", 1)
        for n, p in enhancer.encoder.named_parameters()
        if "lora_" in n
    }
    for i in range(2):
        for name in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.out_proj",
            "mlp.fc1",
            "mlp.fc2",
        ):
            assert f"encoder.layers.{i}.{name}" in adapted
    # the head's MultiheadAttention (fused in-projection and out_proj) and its MLP
    assert {
        "head.attention",
        "head.attention.base_layer.out_proj",
        "head.mlp.fc1",
        "head.mlp.fc2",
    } <= adapted
    assert all(p.requires_grad for n, p in enhancer.encoder.named_parameters() if "lora_" in n)
    # a loss on the global token reaches every adapter
    for name, param in enhancer.encoder.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    enhancer.encoder(torch.randn(2, 3, 32, 32)).global_token.square().sum().backward()
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0
        for n, p in enhancer.encoder.named_parameters()
        if "lora_A" in n
    )


def _tower_name(name: str) -> str:
    """A parameter's name inside the vision tower (no peft wrapper, no `vision_model.` level)."""
    name = name.split("base_model.model.")[-1]
    return name[len("vision_model.") :] if name.startswith("vision_model.") else name


def _vision_trainable(model, full: bool = False) -> set[str]:
    """Trainable parameter names of the vision tower (of a full SiglipModel when `full`)."""
    return {
        _tower_name(n)
        for n, p in model.named_parameters()
        if p.requires_grad
        and (not full or n.split("base_model.model.")[-1].startswith("vision_model."))
    }


def test_reference_head_attention_reproduces_the_reference_trainable_set(
    siglip_config, tiny_siglip
):
    """lora.head_attention=reference trains what the paper's peft config trains on SigLIP's
    vision side; the head's out_proj LoRA is bypassed by nn.MultiheadAttention (no gradient),
    so only its bias learns there."""
    from peft import LoraConfig, get_peft_model

    cfg = siglip_config("lora.head_attention=reference")
    enhancer = build_enhancer(cfg)
    apply_stage_policy(enhancer, "lora-only", cfg.lora)
    ours = _vision_trainable(enhancer.encoder.model)

    # the paper's stage-2 LoRA on the whole SiglipModel: module names, bias "lora_only"
    reference = get_peft_model(
        SiglipModel.from_pretrained(tiny_siglip),
        LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            bias="lora_only",
            target_modules=list(cfg.lora.target_modules),
        ),
    )
    assert ours == _vision_trainable(reference, full=True)
    assert "head.attention.out_proj.lora_A.default.weight" in ours
    assert not any("in_proj" in n for n in ours)

    for name, param in enhancer.encoder.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    enhancer.encoder(torch.randn(2, 3, 32, 32)).global_token.square().sum().backward()
    grads = {
        _tower_name(n): p.grad
        for n, p in enhancer.encoder.model.named_parameters()
        if "head.attention" in n and p.requires_grad
    }
    assert grads["head.attention.out_proj.lora_A.default.weight"] is None  # bypassed
    assert grads["head.attention.out_proj.base_layer.bias"].abs().sum() > 0


def test_full_head_attention_trains_more_than_the_reference(siglip_config):
    trainable = {}
    for mode in ("full", "reference"):
        cfg = siglip_config(f"lora.head_attention={mode}")
        enhancer = build_enhancer(cfg)
        apply_stage_policy(enhancer, "lora-only", cfg.lora)
        trainable[mode] = _vision_trainable(enhancer.encoder.model)
    assert trainable["reference"] - trainable["full"] <= {
        n for n in trainable["reference"] if n.startswith("head.attention.out_proj")
    }
    assert any("head.attention.lora_A" in n for n in trainable["full"])  # fused in-projection
    assert load_config("siglip-so400m-384").lora.head_attention == "full"


def test_family_mismatch_is_a_one_line_error_both_ways(tiny_siglip, tiny_clip):
    with pytest.raises(GenhancerError) as err:
        load_encoder(tiny_siglip, 32, family="clip")
    assert "encoder.family=clip but" in str(err.value) and "SiglipModel" in str(err.value)
    assert "set encoder.family=siglip" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(GenhancerError) as err:
        load_encoder(tiny_clip, 32, family="siglip")
    assert "encoder.family=siglip but" in str(err.value) and "CLIPModel" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("preset,folder", [("tiny", "tiny_siglip"), ("tiny-siglip", "tiny_clip")])
def test_cli_names_the_family_mismatch(capsys, request, tmp_path, preset, folder):
    path = request.getfixturevalue(folder)
    with pytest.raises(SystemExit):
        main(
            ["enhance", "--preset", preset, f"encoder.path={path}", "--output", str(tmp_path / "o")]
        )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: encoder.family=") and "\n" not in err, err
    assert not (tmp_path / "o").exists()


def test_resolution_the_position_embeddings_do_not_cover(tiny_siglip):
    with pytest.raises(GenhancerError) as err:
        load_encoder(tiny_siglip, 64)
    message = str(err.value)
    assert "position embeddings for 32 px" in message and "set encoder.image_size=32" in message
    assert "\n" not in message


def test_global_dim_of_the_preset_is_checked(siglip_config):
    with pytest.raises(
        GenhancerError,
        match="encoder.global_dim=1152 but the siglip encoder's global token is 64-d",
    ):
        build_enhancer(siglip_config("encoder.global_dim=1152"))


def test_siglip_has_no_projection_to_adapt(siglip_config):
    cfg = siglip_config("lora.include_projection=true")
    with pytest.raises(GenhancerError, match="SigLIP has none"):
        apply_stage_policy(build_enhancer(cfg), "lora-only", cfg.lora)


# ---- stage 1 + stage 2 + export on a tiny SigLIP ------------------------------------------


@pytest.fixture(scope="module")
def siglip_run(tiny_siglip, tmp_path_factory):
    out = tmp_path_factory.mktemp("siglip-pipeline") / "run"
    cfg = load_config(
        "tiny-siglip",
        overrides=[f"encoder.path={tiny_siglip}", f"run.output_dir={out}", "stage2.lr=1e-3"],
    )
    run = prepare_run_dir(cfg, overwrite=False, resume=False)
    for stage in ("stage1", "stage2"):
        proc = run_python("-m", "genhancer_llava.train", "--run_dir", str(out), "--stage", stage)
        assert proc.returncode == 0, proc.stderr[-3000:]
    export_encoder(out)
    return run


def test_siglip_stages_run_and_export_loads_as_siglip_model(siglip_run, tiny_siglip):
    run = siglip_run
    s1, s2 = run.summary("stage1"), run.summary("stage2")
    assert (s1["steps"], s2["steps"], s2["policy"]) == (6, 4, "lora-only")
    assert s1["parameters"]["encoder"]["trainable"] == 0
    assert s2["parameters"]["encoder.lora"]["trainable"] > 0

    exported = run.encoder_dir
    full = SiglipModel.from_pretrained(exported).eval()
    vision = SiglipVisionModel.from_pretrained(exported).eval()
    base = load_encoder(tiny_siglip, 32).model.eval()
    lora = PeftModel.from_pretrained(
        load_encoder(tiny_siglip, 32).model, run.final("stage2") / "adapter"
    ).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        lora_pooled = lora(pixel_values=x).pooler_output
        full_pooled = full.vision_model(pixel_values=x).pooler_output
        vision_pooled = vision(pixel_values=x).pooler_output
        base_pooled = base(pixel_values=x).pooler_output
    assert (full_pooled - lora_pooled).abs().max() < 1e-5
    assert (vision_pooled - lora_pooled).abs().max() < 1e-5
    assert (full_pooled - base_pooled).abs().max() > 1e-4  # the adapter did change the tower

    original = SiglipModel.from_pretrained(tiny_siglip)
    text = original.text_model.state_dict()
    assert all(torch.equal(v, text[k]) for k, v in full.text_model.state_dict().items())
    assert torch.equal(full.logit_scale, original.logit_scale)
    assert (exported / "preprocessor_config.json").is_file()
    info = json.loads((exported / "genhancer.json").read_text())
    assert info["family"] == "siglip" and info["global_token"].startswith("pooler_output")


def test_siglip_export_loads_without_this_package(siglip_run, tmp_path):
    check = textwrap.dedent(f"""
        import sys
        sys.modules["genhancer_llava"] = None
        from transformers import SiglipImageProcessor, SiglipModel, SiglipVisionModel
        SiglipModel.from_pretrained({str(siglip_run.encoder_dir)!r})
        SiglipVisionModel.from_pretrained({str(siglip_run.encoder_dir)!r})
        p = SiglipImageProcessor.from_pretrained({str(siglip_run.encoder_dir)!r})
        assert list(p.image_mean) == [0.5, 0.5, 0.5], p.image_mean
        print("loaded")
    """)
    proc = run_python("-c", check, cwd=tmp_path)
    assert proc.returncode == 0 and "loaded" in proc.stdout, proc.stderr[-2000:]


def test_vision_only_siglip_base_exports_a_siglip_vision_model(siglip_run, tmp_path):
    # same seed -> the same vision weights as the full tiny SigLIP the run was trained on
    base = make_tiny_siglip(tmp_path / "vision-only", vision_only=True)
    copy = RunDir(tmp_path / "copy")
    shutil.copytree(siglip_run.root, copy.root)
    shutil.rmtree(copy.encoder_dir)
    cfg = yaml.safe_load(copy.config_file.read_text())
    cfg["encoder"]["path"] = str(base)
    copy.config_file.write_text(yaml.safe_dump(cfg))
    out = export_encoder(copy.root)
    assert json.loads((out / "config.json").read_text())["model_type"] == "siglip_vision_model"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = SiglipVisionModel.from_pretrained(out).eval()(pixel_values=x).pooler_output
        b = (
            SiglipVisionModel.from_pretrained(siglip_run.encoder_dir)
            .eval()(pixel_values=x)
            .pooler_output
        )
    assert (a - b).abs().max() < 1e-5


@pytest.mark.slow
def test_enhance_clip_sh_runs_a_siglip_on_deepspeed_zero2(tiny_siglip, tmp_path):
    """The pooling head's MultiheadAttention LoRA through accelerate + DeepSpeed ZeRO-2."""
    import os
    import subprocess

    from .conftest import REPO

    out = tmp_path / "run"
    proc = subprocess.run(
        [
            "bash",
            "scripts/enhance_clip.sh",
            "--preset",
            "tiny-siglip",
            "--num_processes",
            "1",
            "--zero",
            "2",
            "--output",
            str(out),
            f"encoder.path={tiny_siglip}",
        ],
        cwd=REPO,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    run = RunDir(out)
    for stage in ("stage1", "stage2"):
        dist = run.summary(stage)["distributed"]
        assert dist["type"] == "DEEPSPEED" and dist["zero_stage"] == 2, dist
    assert SiglipModel.from_pretrained(out / "encoder").config.vision_config.image_size == 32
