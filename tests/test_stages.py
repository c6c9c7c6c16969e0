"""The one list of stages: built from the config, read by the trainer, launcher and export."""

import pytest

from genhancer_llava.config import load_config
from genhancer_llava.errors import ConfigError, GenhancerError
from genhancer_llava.stages import STAGE_NAMES, STAGE_POLICIES, Stage, get_stage, stages
from genhancer_llava.train.run_dir import RunDir


def test_two_stage_schedule_from_the_config():
    cfg = load_config(
        "tiny",
        overrides=[
            "stage1.steps=7",
            "stage1.lr=0.01",
            "stage2.steps=3",
            "stage2.lr=0.001",
            "stage2.mode=all",
        ],
    )
    assert stages(cfg) == [Stage("stage1", "stage1", 7, 0.01), Stage("stage2", "all", 3, 0.001)]
    first, second = stages(cfg)
    assert first.starts_from is None and second.starts_from == "stage1"
    assert second.rule is STAGE_POLICIES["all"] and second.rule.encoder_lora


def test_end_to_end_schedule_uses_stage1_settings_from_scratch():
    cfg = load_config("tiny", overrides=["schedule=end-to-end", "stage1.steps=5"])
    (only,) = stages(cfg)
    assert (only.name, only.policy, only.steps, only.lr) == (
        "end-to-end",
        "end-to-end",
        5,
        cfg.stage1.lr,
    )
    assert only.starts_from is None and only.rule.encoder_lora


def test_every_stage_name_has_a_folder_and_a_policy(tmp_path):
    cfg = load_config("tiny")
    run = RunDir(tmp_path)
    for name in STAGE_NAMES:
        assert get_stage(cfg, name).policy in STAGE_POLICIES
        assert run.stage(name) == tmp_path / name
    with pytest.raises(GenhancerError, match="unknown stage 'stage3'; choose one of stage1"):
        get_stage(cfg, "stage3")
    with pytest.raises(GenhancerError, match="unknown stage 'stage3'"):
        run.stage("stage3")


@pytest.mark.parametrize(
    "override,message",
    [
        ("schedule=three-stage", "choose one of two-stage, end-to-end"),
        ("stage2.mode=stage1", "choose one of lora-only, all"),
    ],
)
def test_config_validation_reads_the_stage_list(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", overrides=[override])
