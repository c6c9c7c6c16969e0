"""One denoiser config class per kind, chosen by `denoiser.kind` in presets, files and overrides."""

import dataclasses

import pytest
import yaml

from genhancer_llava.config import (
    DENOISER_CONFIGS,
    FlowDenoiserConfig,
    MaskedDenoiserConfig,
    available_presets,
    load_config,
)
from genhancer_llava.errors import ConfigError


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_each_kind_carries_only_its_settings():
    assert DENOISER_CONFIGS == {"flow": FlowDenoiserConfig, "masked": MaskedDenoiserConfig}
    assert {"guidance", "axes_dims_rope", "attention_head_dim"} <= _fields(FlowDenoiserConfig)
    assert not {"guidance", "axes_dims_rope", "attention_head_dim", "num_single_layers"} & _fields(
        MaskedDenoiserConfig
    )
    assert not {"hidden_size", "mlp_ratio", "mask_schedule"} & _fields(FlowDenoiserConfig)


@pytest.mark.parametrize("preset", available_presets())
def test_every_preset_builds_its_kinds_class(preset):
    cfg = load_config(preset)
    assert type(cfg.denoiser) is DENOISER_CONFIGS[cfg.denoiser.kind]
    assert set(cfg.to_dict()["denoiser"]) == _fields(type(cfg.denoiser))


def test_a_masked_preset_inherits_nothing_of_its_parents_flow_denoiser():
    cfg = load_config("openai-clip-l14-224-masked")
    assert isinstance(cfg.denoiser, MaskedDenoiserConfig)
    assert (
        cfg.denoiser.num_layers,
        cfg.denoiser.hidden_size,
        cfg.denoiser.num_attention_heads,
    ) == (6, 1024, 16)
    assert not hasattr(cfg.denoiser, "guidance")


def test_kind_override_starts_the_section_over():
    cfg = load_config(
        "tiny",
        overrides=[
            "denoiser.kind=masked",
            "denoiser.hidden_size=32",
            "denoiser.num_attention_heads=2",
            "target.kind=vq",
            "projector.pooled_dim=0",
        ],
    )
    assert isinstance(cfg.denoiser, MaskedDenoiserConfig) and cfg.denoiser.hidden_size == 32


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["denoiser.guidance=1.0"],
            "denoiser.guidance is a flow setting; denoiser.kind=masked has none: remove it",
        ),
        (
            ["denoiser.kind=diffusion"],
            "denoiser.kind='diffusion' is invalid: choose one of flow, masked",
        ),
        (
            ["denoiser.hidden_size=33"],
            "denoiser.hidden_size=33 is invalid: must be a positive "
            "multiple of num_attention_heads=2",
        ),
    ],
)
def test_bad_denoiser_settings_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config("tiny-masked", overrides=overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_saved_config_reloads_as_the_same_kind(tmp_path):
    cfg = load_config("tiny-masked")
    cfg.save(tmp_path / "config.yaml")
    assert "guidance" not in yaml.safe_load((tmp_path / "config.yaml").read_text())["denoiser"]
    assert load_config(config_file=tmp_path / "config.yaml") == cfg
