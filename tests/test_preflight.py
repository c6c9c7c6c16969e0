"""What a new user meets when a path or setting is wrong: `genhancer enhance` in a real process
refuses before anything launches, in one last line that names the key, and leaves no run folder
behind; a worker's error that only a running stage can find is the CLI's last line, with no
torch-elastic traceback after it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from genhancer_llava.config import load_config
from genhancer_llava.errors import ConfigError, GenhancerError

REPO = Path(__file__).resolve().parents[1]


def enhance(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`genhancer enhance ARGS` as a user runs it, from `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "genhancer_llava.cli", "enhance", *args],
        cwd=cwd,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **env),
        capture_output=True,
        text=True,
        timeout=900,
    )


def last_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def test_empty_path_is_not_set_not_the_current_folder(tmp_path):
    from genhancer_llava.paths import required_dir, required_path

    for empty in ("", "  ", None):
        with pytest.raises(ConfigError, match=r"^data\.path is not set; pass data\.path=DIR"):
            required_path(empty, "data.path", "pass data.path=DIR")
    assert required_path("x/y", "data.path", "") == Path("x/y")
    with pytest.raises(GenhancerError, match="is not a folder"):
        required_dir(tmp_path / "missing", "data.path", "pass data.path=DIR")


def test_folder_data_without_data_path_refused_before_launch(tiny_clip, tmp_path):
    """Images lie in the working folder; an unset data.path must not train on them."""
    for i in range(4):
        Image.new("RGB", (40, 40), (60 * i, 0, 0)).save(tmp_path / f"stray-{i}.png")
    out = tmp_path / "run"
    proc = enhance(
        tmp_path,
        "--preset",
        "tiny",
        "--output",
        str(out),
        "data.kind=folder",
        f"encoder.path={tiny_clip}",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert last_line(proc).startswith("error: data.path is not set; pass data.path=DIR"), (
        proc.stderr[-3000:]
    )
    assert not out.exists()  # nothing launched, nothing written


def test_flow_target_without_target_path_refused_before_launch(tiny_clip, tmp_path):
    out = tmp_path / "run"
    proc = enhance(
        tmp_path,
        "--preset",
        "tiny",
        "--output",
        str(out),
        "target.kind=flux_vae",
        f"encoder.path={tiny_clip}",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert last_line(proc).startswith(
        "error: target.path is not set; set target.path to a local AutoencoderKL folder"
    ), proc.stderr[-3000:]
    assert "policy stage1" not in proc.stdout  # no stage started
    assert not out.exists()


def test_global_dim_mismatch_refused_before_launch_and_no_overwrite_needed(tiny_clip, tmp_path):
    out = tmp_path / "run"
    proc = enhance(
        tmp_path,
        "--preset",
        "tiny",
        "--output",
        str(out),
        f"encoder.path={tiny_clip}",
        "encoder.global_dim=99",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert last_line(proc).startswith("error: encoder.global_dim=99 but the clip encoder at "), (
        proc.stderr[-3000:]
    )
    assert "32-d global token" in last_line(proc)
    assert not (out / "config.yaml").exists() and not out.exists()


@pytest.mark.slow
def test_num_processes_mismatch_on_resume_refused_before_launch(tiny_clip, tmp_path):
    """A checkpoint written by 2 processes, resumed with 1: the error names the right flag."""
    out = tmp_path / "run"
    proc = enhance(
        tmp_path,
        "--preset",
        "tiny",
        "--output",
        str(out),
        f"encoder.path={tiny_clip}",
        "--num_processes",
        "0",
    )
    assert proc.returncode == 2 and "--num_processes 0 is invalid" in last_line(proc)
    # the record a 2-process checkpoint leaves (progress.json); preflight reads nothing else
    out.mkdir()
    load_config("tiny", overrides=[f"encoder.path={tiny_clip}"]).save(out / "config.yaml")
    step = out / "stage1" / "checkpoints" / "step-00000002"
    step.mkdir(parents=True)
    (step / "progress.json").write_text(
        json.dumps(
            {
                "step": 2,
                "batches_per_rank": [2, 2],
                "images": 16,
                "skipped": 0,
                "losses": [],
                "files": {},
            }
        )
    )
    proc = enhance(
        tmp_path,
        "--preset",
        "tiny",
        "--output",
        str(out),
        f"encoder.path={tiny_clip}",
        "--resume",
        "latest",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert last_line(proc) == (
        f"error: {step} was written by 2 processes; resume it with --num_processes 2 (now 1)"
    ), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_zero_stage_mismatch_on_resume_refused_before_launch(tiny_clip, tmp_path):
    """A checkpoint DeepSpeed ZeRO-2 wrote (partitioned layout) cannot load into a plain
    process: `--zero 0` on it names the flag to use; `--zero 0` with 2 processes is refused."""
    out = tmp_path / "run"
    proc = enhance(
        tmp_path,
        "--preset",
        "tiny",
        "--output",
        str(out),
        f"encoder.path={tiny_clip}",
        "--zero",
        "0",
        "--num_processes",
        "2",
    )
    assert proc.returncode == 2 and last_line(proc) == (
        "error: --zero 0 (no DeepSpeed) runs one process, not 2; use --zero 2 or 3 with "
        "several processes"
    ), proc.stderr[-3000:]
    out.mkdir()
    load_config("tiny", overrides=[f"encoder.path={tiny_clip}"]).save(out / "config.yaml")
    step = out / "stage1" / "checkpoints" / "step-00000002"
    step.mkdir(parents=True)
    (step / "progress.json").write_text(
        json.dumps(
            {
                "step": 2,
                "batches_per_rank": [2],
                "images": 16,
                "skipped": 0,
                "losses": [],
                "zero_stage": 2,
                "files": {},
            }
        )
    )
    proc = enhance(
        tmp_path,
        "--preset",
        "tiny",
        "--output",
        str(out),
        f"encoder.path={tiny_clip}",
        "--resume",
        "latest",
        "--zero",
        "0",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert last_line(proc) == (
        f"error: {step} was written with --zero 2; resume it with --zero 2 (now 0)"
    ), proc.stderr[-3000:]
    assert "policy stage1" not in proc.stdout  # nothing launched


@pytest.mark.slow
def test_worker_error_is_the_last_line(tiny_clip, tmp_path):
    """A non-finite loss found by the running stage (2 processes through accelerate launch and
    DeepSpeed): the worker's one line is the CLI's last, its exit status the CLI's."""
    out = tmp_path / "run"
    proc = enhance(
        tmp_path,
        "--preset",
        "tiny",
        "--output",
        str(out),
        f"encoder.path={tiny_clip}",
        "--num_processes",
        "2",
        GENHANCER_FAULT="nan-loss:2",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert last_line(proc).startswith(
        "error: [stage1] the loss became non-finite at step 2; lower the lr"
    ), proc.stderr[-3000:]
    for noise in ("Traceback", "ChildFailedError", "printed above", "exitcode"):
        assert noise not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.count("the loss became non-finite") == 1  # said once, not per rank
    assert not (out / "stage1" / "error.txt").exists()  # read and removed by the CLI


def test_worker_error_sets_the_status_when_another_rank_aborts_on_its_way_out(
    tmp_path, monkeypatch
):
    """One rank leaves its one-line error and exits 2; another aborts in teardown (134) and
    torch-elastic reports that first: the CLI still exits 2 with the worker's line."""
    from genhancer_llava.errors import StageFailed
    from genhancer_llava.train import launch
    from genhancer_llava.train.accelerate_run import ERROR_FILE_ENV
    from genhancer_llava.train.run_dir import RunDir

    def launcher_whose_first_failure_is_an_abort(cmd, env):
        Path(env[ERROR_FILE_ENV]).write_text("[stage1] the loss became non-finite at step 2")
        return 134, None

    monkeypatch.setattr(launch, "run_launcher", launcher_whose_first_failure_is_an_abort)
    run = RunDir(tmp_path / "run")
    with pytest.raises(StageFailed) as failed:
        launch.launch_stage(run, "stage1", 2, launch.accelerate_config(2))
    assert failed.value.exit_code == 2
    assert str(failed.value) == "[stage1] the loss became non-finite at step 2"
    assert not (run.stage("stage1") / "error.txt").exists()


@pytest.mark.parametrize("kind", ["folder", "shards", "cached"])
def test_bad_data_path_is_refused_before_torch_or_transformers_load(tiny_clip, tmp_path, kind):
    """A valid encoder and a mistyped data.path: the data error comes from the path checks
    that run first, before the encoder's config is parsed (transformers) or torch is imported."""
    missing = tmp_path / ("missing-{000..001}.tar" if kind == "shards" else "missing")
    code = f"""
import sys
from genhancer_llava.config import load_config
from genhancer_llava.errors import GenhancerError
from genhancer_llava.train.preflight import preflight
cfg = load_config("tiny", overrides=["encoder.path={tiny_clip}", "data.kind={kind}",
                                     "data.path={missing}"])
try:
    preflight(cfg)
except GenhancerError as exc:
    print("error:", exc)
print("loaded:", sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    error, loaded = proc.stdout.strip().splitlines()[-2:]
    assert error.startswith("error: ") and "missing" in error, proc.stdout
    assert loaded == "loaded: []", proc.stdout


def test_encoder_global_dim_is_read_from_config_without_building_a_model(
    tiny_clip, tiny_siglip, tmp_path
):
    from genhancer_llava.train.preflight import check_encoder

    assert check_encoder(load_config("tiny", overrides=[f"encoder.path={tiny_clip}"])) == 32
    siglip = load_config("tiny-siglip", overrides=[f"encoder.path={tiny_siglip}"])
    assert check_encoder(siglip) == 64  # SigLIP: the pooling head's width, hidden_size
