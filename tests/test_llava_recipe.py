"""The LLaVA-1.5 recipe as flags (no processes launched): stages, configs, batch arithmetic."""

from __future__ import annotations

import argparse
import json

import pytest

from genhancer_llava.errors import GenhancerError
from llava_patches.finetune import PRESETS, SCRIPTS, stage_args

from .llava_tiny import make_exported_encoder


@pytest.fixture
def args(tmp_path):
    enc = make_exported_encoder(tmp_path / "enc")
    return argparse.Namespace(
        vision_tower=f"genhancer:{enc}",
        llm=tmp_path / "vicuna",
        data=tmp_path / "mix665k.json",
        images=tmp_path / "img",
        output=tmp_path / "ckpt",
        pretrain_data=tmp_path / "558k.json",
        pretrain_images=tmp_path / "pre-img",
        projector=None,
        stage="both",
        llava_args=[],
    )


def _flags(argv):
    return dict(arg[2:].split("=", 1) for arg in argv)


def test_llava15_pretrain_and_finetune_flags(args):
    pre = _flags(stage_args("pretrain", args, PRESETS["llava-1.5"], nproc=8))
    fin = _flags(stage_args("finetune", args, PRESETS["llava-1.5"], nproc=8))
    assert pre["deepspeed"] == str(SCRIPTS / "zero2.json")
    assert fin["deepspeed"] == str(SCRIPTS / "zero3.json")
    assert (pre["tune_mm_mlp_adapter"], pre["version"], pre["learning_rate"]) == (
        "True",
        "plain",
        "1e-3",
    )
    assert "tune_mm_mlp_adapter" not in fin and fin["version"] == "v1"
    assert fin["learning_rate"] == "2e-5"
    assert pre["data_path"].endswith("558k.json") and fin["data_path"].endswith("mix665k.json")
    assert fin["pretrain_mm_mlp_adapter"] == str(
        args.output / "llava-pretrain" / "mm_projector.bin"
    )
    assert fin["output_dir"] == str(args.output / "llava-finetune")
    assert (fin["image_aspect_ratio"], fin["group_by_modality_length"]) == ("pad", "True")
    for flags in (pre, fin):
        assert flags["vision_tower"] == args.vision_tower
        assert flags["mm_projector_type"] == "mlp2x_gelu"
        assert flags["mm_vision_select_layer"] == "-2"
        assert flags["mm_use_im_start_end"] == flags["mm_use_im_patch_token"] == "False"
        assert (flags["bf16"], flags["model_max_length"], flags["warmup_ratio"]) == (
            "True",
            "2048",
            "0.03",
        )
        assert flags["lr_scheduler_type"] == "cosine" and flags["num_train_epochs"] == "1"
    # global batch 256 / 128 on 8 processes
    assert (
        int(pre["per_device_train_batch_size"]) * 8 * int(pre["gradient_accumulation_steps"]) == 256
    )
    assert (
        int(fin["per_device_train_batch_size"]) * 8 * int(fin["gradient_accumulation_steps"]) == 128
    )


def test_global_batch_is_kept_on_fewer_devices(args):
    fin = _flags(stage_args("finetune", args, PRESETS["llava-1.5"], nproc=2))
    assert fin["gradient_accumulation_steps"] == "4"  # 16 x 2 x 4 = 128
    with pytest.raises(GenhancerError, match="not a multiple"):
        stage_args("finetune", args, PRESETS["llava-1.5"], nproc=3)


def test_extra_flags_come_last_and_win(args):
    args.llava_args = ["--report_to", "wandb"]
    argv = stage_args("pretrain", args, PRESETS["llava-1.5"], nproc=8)
    assert argv[-2:] == ["--report_to", "wandb"]


def test_deepspeed_configs_are_llavas_format():
    zero2 = json.loads((SCRIPTS / "zero2.json").read_text())
    zero3 = json.loads((SCRIPTS / "zero3.json").read_text())
    assert zero2["zero_optimization"]["stage"] == 2 and zero3["zero_optimization"]["stage"] == 3
    assert zero3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    for config in (zero2, zero3):
        assert config["bf16"]["enabled"] == config["fp16"]["enabled"] == "auto"
        assert config["train_micro_batch_size_per_gpu"] == "auto"
