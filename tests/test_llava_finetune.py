"""`scripts/llava_finetune.sh --preset tiny` end to end: the real LLaVA code, DeepSpeed on CPU.

A tiny random Llama with a SentencePiece tokenizer trained here, generated image conversations
in LLaVA's JSON format and tiny exported encoders; pretrain (ZeRO-2) then finetune (ZeRO-3),
a reload with LLaVA's `load_pretrained_model` in a fresh process, and the continue-from-
checkpoint pitfall asserted on the saved weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("llava", reason="llava-torch is installed by `make` (pip --no-deps)")

from .conftest import REPO  # noqa: E402
from .llava_tiny import (  # noqa: E402
    make_exported_encoder,
    make_llava_data,
    make_tiny_llama,
    make_tiny_siglip,
)

pytestmark = pytest.mark.slow
SCRIPT = REPO / "scripts" / "llava_finetune.sh"
TOWER_PREFIX = "model.vision_tower.vision_tower."


def run_script(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, PYTHONUNBUFFERED="1", DS_ACCELERATOR="cpu")
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava-e2e")
    data, images = make_llava_data(root / "data", n=8)  # instruction data: some text-only
    pretrain_data, pretrain_images = make_llava_data(root / "pretrain", n=8, text_only=False)
    return {
        "root": root,
        "llm": make_tiny_llama(root / "llm"),
        "enc_a": make_exported_encoder(root / "enc-a", seed=1),
        "enc_b": make_exported_encoder(root / "enc-b", seed=2),
        "data": data,
        "images": images,
        "pretrain": (
            "--pretrain_data",
            str(pretrain_data),
            "--pretrain_images",
            str(pretrain_images),
        ),
    }


def retrain(inputs, tower: Path, out: Path) -> subprocess.CompletedProcess:
    """Both LLaVA-1.5 stages on the tiny LLM and data with `tower`; asserts success."""
    result = run_script(
        "--vision_tower",
        f"genhancer:{tower}",
        "--preset",
        "tiny",
        "--llm",
        str(inputs["llm"]),
        "--data",
        str(inputs["data"]),
        "--images",
        str(inputs["images"]),
        *inputs["pretrain"],
        "--output",
        str(out),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture(scope="module")
def trained(inputs):
    out = inputs["root"] / "run-a"
    return out, retrain(inputs, inputs["enc_a"], out)


def _tower_state(folder):
    from transformers import CLIPVisionModel

    return CLIPVisionModel.from_pretrained(folder).state_dict()


def test_pretrain_then_finetune_through_llava_and_deepspeed(trained, inputs):
    out, result = trained
    log = result.stdout + result.stderr
    assert "pretrain: " in log and "zero2.json" in log and "zero3.json" in log
    pretrain, finetune = out / "llava-pretrain", out / "llava-finetune"
    projector = torch.load(pretrain / "mm_projector.bin", map_location="cpu")
    assert sorted(projector) == [
        f"model.mm_projector.{i}.{p}" for i in (0, 2) for p in ("bias", "weight")
    ]
    assert f"--pretrain_mm_mlp_adapter={pretrain / 'mm_projector.bin'}" in log
    config = json.loads((finetune / "config.json").read_text())
    assert config["mm_vision_tower"] == f"genhancer:{inputs['enc_a']}"
    assert config["model_type"] == "llava_llama" and config["mm_projector_type"] == "mlp2x_gelu"
    assert config["mm_hidden_size"] == 64 and config["mm_vision_select_layer"] == -2
    # Both stages took real optimizer steps (the loss is finite and the LLM changed).
    for stage in ("llava-pretrain", "llava-finetune"):
        state = json.loads((out / stage / "trainer_state.json").read_text())
        assert state["global_step"] == 2
        assert all(
            torch.isfinite(torch.tensor(h["loss"])) for h in state["log_history"] if "loss" in h
        )
    trained_llm = load_file(finetune / "model.safetensors")
    base_llm = load_file(inputs["llm"] / "model.safetensors")
    key = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(trained_llm[key].float(), base_llm[key].float())


def test_checkpoint_reloads_in_a_fresh_process(trained, inputs):
    out, _ = trained
    code = textwrap.dedent(f"""
        import json, torch
        import llava_patches
        llava_patches.apply()
        from PIL import Image
        from llava.conversation import conv_templates
        from llava.mm_utils import process_images, tokenizer_image_token
        from llava.model.builder import load_pretrained_model
        from transformers import CLIPVisionModel

        tokenizer, model, processor, _ = load_pretrained_model(
            "{out / "llava-finetune"}", None, "llava-finetune", device="cpu", device_map="cpu")
        tower = model.get_vision_tower()
        ref = CLIPVisionModel.from_pretrained("{inputs["enc_a"]}").state_dict()
        mine = tower.vision_tower.state_dict()
        same = mine.keys() == ref.keys() and all(
            torch.equal(mine[k], ref[k].to(mine[k].dtype)) for k in ref)
        image = Image.open("{inputs["images"] / "000.png"}").convert("RGB")
        images = process_images([image], processor, model.config).to(model.dtype)
        conv = conv_templates["v1"].copy()
        conv.append_message(conv.roles[0], "<image>\\nWhat is the colour of the image?")
        conv.append_message(conv.roles[1], None)
        ids = tokenizer_image_token(conv.get_prompt(), tokenizer, -200, return_tensors="pt")
        out = model.generate(ids[None], images=images, image_sizes=[image.size],
                             do_sample=False, max_new_tokens=4)
        print(json.dumps({{"tower": type(tower).__name__, "same": same,
                          "tokens": out[0].tolist(), "images": list(images.shape)}}))
    """)
    env = dict(os.environ, DS_ACCELERATOR="cpu")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-5000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["tower"] == "GenhancerCLIPTower" and report["same"]
    assert report["images"] == [1, 3, 32, 32]  # padded to square, then the encoder's 32 px
    assert len(report["tokens"]) == 4 and all(0 <= t < 200 for t in report["tokens"])


def test_continuing_from_a_checkpoint_with_another_tower_trains_the_new_one(trained, inputs):
    """The pitfall: LLaVA alone would train and save tower A's weights under B's name."""
    out, _ = trained
    result = run_script(
        "--vision_tower",
        f"genhancer:{inputs['enc_b']}",
        "--preset",
        "tiny",
        "--stage",
        "finetune",
        "--llm",
        str(out / "llava-finetune"),
        "--data",
        str(inputs["data"]),
        "--images",
        str(inputs["images"]),
        "--output",
        str(inputs["root"] / "run-b"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "vision tower 'genhancer:" in result.stdout + result.stderr
    folder = inputs["root"] / "run-b" / "llava-finetune"
    config = json.loads((folder / "config.json").read_text())
    assert config["mm_vision_tower"] == f"genhancer:{inputs['enc_b']}"
    saved = {
        k[len(TOWER_PREFIX) :]: v
        for k, v in load_file(folder / "model.safetensors").items()
        if k.startswith(TOWER_PREFIX)
    }
    tower_b, tower_a = _tower_state(inputs["enc_b"]), _tower_state(inputs["enc_a"])
    assert saved.keys() == tower_b.keys()
    assert all(torch.equal(saved[k], tower_b[k].to(saved[k].dtype)) for k in tower_b)
    assert not all(torch.equal(saved[k], tower_a[k].to(saved[k].dtype)) for k in tower_a)


def test_siglip_tower_retrains_on_data_with_text_only_samples(inputs):
    """LLaVA's dataset reads image_processor.crop_size for text-only samples (a quarter of the
    tiny data, as in mix665k); SigLIP's processor has none of its own."""
    records = json.loads(inputs["data"].read_text())
    assert any("image" not in r for r in records) and any("image" in r for r in records)
    siglip = make_tiny_siglip(inputs["root"] / "siglip-tower")
    out = inputs["root"] / "run-siglip"
    retrain(inputs, siglip, out)
    for stage in ("llava-pretrain", "llava-finetune"):
        state = json.loads((out / stage / "trainer_state.json").read_text())
        assert state["global_step"] == 2
    config = json.loads((out / "llava-finetune" / "config.json").read_text())
    assert config["mm_vision_select_feature"] == "cls_patch"


def test_unknown_tower_name_is_a_one_line_error(inputs, tmp_path):
    result = run_script(
        "--vision_tower",
        "genhancer:nope",
        "--preset",
        "tiny",
        "--llm",
        str(inputs["llm"]),
        "--data",
        str(inputs["data"]),
        "--images",
        str(inputs["images"]),
        "--output",
        str(tmp_path),
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[-1]]
        and "unknown genhancer tower 'nope'" in result.stderr
    )


def test_finetune_stage_needs_a_projector(inputs, tmp_path):
    result = run_script(
        "--vision_tower",
        f"genhancer:{inputs['enc_a']}",
        "--preset",
        "tiny",
        "--stage",
        "finetune",
        "--llm",
        str(inputs["llm"]),
        "--data",
        str(inputs["data"]),
        "--images",
        str(inputs["images"]),
        "--output",
        str(tmp_path),
    )
    assert result.returncode == 2 and "needs --projector" in result.stderr


def test_siglip_with_patch_select_feature_stops_before_training(inputs, tmp_path):
    siglip = make_tiny_siglip(tmp_path / "siglip")
    result = run_script(
        "--vision_tower",
        f"genhancer:{siglip}",
        "--preset",
        "tiny",
        "--llm",
        str(inputs["llm"]),
        "--data",
        str(inputs["data"]),
        "--images",
        str(inputs["images"]),
        "--output",
        str(tmp_path / "out"),
        "--",
        "--mm_vision_select_feature",
        "patch",
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "without a CLS token" in lines[-1] and "cls_patch" in lines[-1]
    assert not (tmp_path / "out").exists()


def test_siglip_tower_gets_cls_patch_in_the_recipe(inputs, tmp_path):
    import argparse

    from llava_patches.finetune import PRESETS, stage_args

    siglip = make_tiny_siglip(tmp_path / "siglip")
    args = argparse.Namespace(
        vision_tower=f"genhancer:{siglip}",
        llm=inputs["llm"],
        data=inputs["data"],
        images=inputs["images"],
        output=tmp_path,
        pretrain_data=None,
        pretrain_images=None,
        projector=None,
        stage="both",
        llava_args=[],
    )
    for stage in ("pretrain", "finetune"):
        assert "--mm_vision_select_feature=cls_patch" in stage_args(stage, args, PRESETS["tiny"], 1)
