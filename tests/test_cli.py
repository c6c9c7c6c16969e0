"""Bad input: each mistake is one line on stderr, exit status 2, and nothing written is lost."""

import json

import pytest

from genhancer_llava.cli.main import main
from genhancer_llava.models.tiny import make_tiny_clip

from .conftest import REPO, cli_error, run_python


def test_unknown_preset(capsys, tmp_path):
    err = cli_error(capsys, ["enhance", "--preset", "clip-xxl", "--output", str(tmp_path / "o")])
    assert "unknown preset 'clip-xxl'" in err and "openai-clip-l14-224" in err


def test_missing_model_folder(capsys, tmp_path):
    err = cli_error(
        capsys,
        [
            "enhance",
            "--preset",
            "tiny",
            f"encoder.path={tmp_path / 'nope'}",
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert "does not exist; set encoder.path" in err


def test_empty_encoder_path_in_a_paper_preset(capsys, tmp_path):
    err = cli_error(
        capsys, ["enhance", "--preset", "openai-clip-l14-224", "--output", str(tmp_path / "o")]
    )
    assert "encoder.path is not set" in err


def test_folder_that_is_not_clip(capsys, tmp_path):
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    err = cli_error(
        capsys,
        ["enhance", "--preset", "tiny", f"encoder.path={folder}", "--output", str(tmp_path / "o")],
    )
    assert "holds a 'llama' model, not CLIP" in err


def test_missing_autoencoder_folder(capsys, tiny_clip, tmp_path):
    err = cli_error(
        capsys,
        [
            "enhance",
            "--preset",
            "tiny",
            f"encoder.path={tiny_clip}",
            "target.kind=flux_vae",
            f"target.path={tmp_path / 'vae'}",
            "encoder.image_size=32",
            "target.pack=2",
            "target.downsample=8",
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert "autoencoder folder" in err and "does not exist" in err


def test_image_size_not_a_multiple_of_the_patch_size(capsys, tmp_path):
    clip = make_tiny_clip(tmp_path / "clip36", image_size=36, patch_size=8)
    capsys.readouterr()  # drop the writer's progress bar
    err = cli_error(
        capsys,
        [
            "enhance",
            "--preset",
            "tiny",
            f"encoder.path={clip}",
            "encoder.image_size=36",
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert "encoder.image_size=36 is not a multiple of the patch size 8" in err


def test_image_size_that_differs_from_the_model(capsys, tiny_clip, tmp_path):
    err = cli_error(
        capsys,
        [
            "enhance",
            "--preset",
            "tiny",
            f"encoder.path={tiny_clip}",
            "encoder.image_size=64",
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert "set encoder.image_size=32" in err


@pytest.mark.parametrize(
    "override", ["stage1.lr=0", "stage2.lr=-1", "optim.per_device_batch_size=0"]
)
def test_non_positive_lr_or_batch(capsys, tiny_clip, tmp_path, override):
    err = cli_error(
        capsys,
        [
            "enhance",
            "--preset",
            "tiny",
            f"encoder.path={tiny_clip}",
            override,
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert override.split("=")[0] in err and "must be > 0" in err


def test_existing_run_folder_is_not_touched_without_overwrite(capsys, tiny_clip, tmp_path):
    out = tmp_path / "run"
    (out / "stage1").mkdir(parents=True)
    (out / "stage1" / "precious.txt").write_text("keep me")
    (out / "config.yaml").write_text("name: earlier\n")
    err = cli_error(
        capsys, ["enhance", "--preset", "tiny", f"encoder.path={tiny_clip}", "--output", str(out)]
    )
    assert "already holds a run; pass --overwrite" in err
    assert (out / "stage1" / "precious.txt").read_text() == "keep me"
    assert (out / "config.yaml").read_text() == "name: earlier\n"


def test_export_before_the_last_stage_finished(capsys, tiny_config):
    from genhancer_llava.train.launch import prepare_run_dir

    cfg = tiny_config()
    run = prepare_run_dir(cfg, overwrite=False, resume=False)
    err = cli_error(capsys, ["export", str(run.root)])
    assert "has not finished; run it first" in err


def test_stage2_without_a_stage1_state_is_a_one_line_error(tiny_config):
    from genhancer_llava.train.launch import prepare_run_dir

    run = prepare_run_dir(tiny_config(), overwrite=False, resume=False)
    proc = run_python(
        "-m", "genhancer_llava.train", "--run_dir", str(run.root), "--stage", "stage2"
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stage2 (lora-only) starts from the stage-1 state")
    assert "run stage 1 first" in last


def test_presets_and_config_commands(capsys):
    main(["presets"])
    assert "openai-clip-l14-336" in capsys.readouterr().out
    main(["config", "--preset", "openai-clip-l14-336", "stage1.steps=5"])
    out = capsys.readouterr().out
    assert "image_size: 336" in out and "steps: 5" in out


def test_eval_lmms_report_keeps_report_as_an_alias():
    from genhancer_llava.cli.eval import cmd_eval_lmms_report
    from genhancer_llava.cli.main import build_parser

    for name in ("lmms-report", "report"):
        args = build_parser().parse_args(["eval", name, "runs/lmms/base"])
        assert args.func is cmd_eval_lmms_report and args.results_dirs == ["runs/lmms/base"]


def test_version_is_written_once():
    """pyproject.toml reads the version from genhancer_llava.__version__ (setuptools' reader)."""
    from setuptools.config.pyprojecttoml import read_configuration

    import genhancer_llava

    static = read_configuration(REPO / "pyproject.toml", expand=False)["project"]
    assert "version" not in static and static["dynamic"] == ["version"]
    expanded = read_configuration(REPO / "pyproject.toml", expand=True)["project"]
    assert expanded["version"] == genhancer_llava.__version__
