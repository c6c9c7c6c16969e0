"""The real pipeline on tiny models: trainer processes, checkpoints, export, and the shell
entry point through `accelerate launch` on DeepSpeed ZeRO-2."""

import json
import textwrap

import pytest
import torch
from peft import PeftModel
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPModel, CLIPVisionModel

from genhancer_llava.cli.main import main
from genhancer_llava.export import export_encoder
from genhancer_llava.models.encoders import load_encoder
from genhancer_llava.train.launch import prepare_run_dir
from genhancer_llava.train.preview import grid_size
from genhancer_llava.train.run_dir import RunDir

from .conftest import REPO, cli_error, run_python


@pytest.fixture(scope="module")
def finished_run(tiny_clip, tmp_path_factory):
    """A tiny run: stage 1 and stage 2 in plain trainer processes, then export."""
    from genhancer_llava.config import load_config

    out = tmp_path_factory.mktemp("pipeline") / "run"
    cfg = load_config(
        "tiny",
        overrides=[
            f"encoder.path={tiny_clip}",
            f"run.output_dir={out}",
            "run.save_every=2",
            "stage2.lr=1e-3",  # big enough that the merged weights visibly move
        ],
    )
    run = prepare_run_dir(cfg, overwrite=False, resume=False)
    logs = {}
    for stage in ("stage1", "stage2"):
        proc = run_python("-m", "genhancer_llava.train", "--run_dir", str(out), "--stage", stage)
        assert proc.returncode == 0, proc.stderr[-3000:]
        logs[stage] = proc.stdout + proc.stderr
    export_encoder(out)
    return run, logs


def test_stages_leave_their_state_and_summaries(finished_run):
    run, logs = finished_run
    s1, s2 = run.summary("stage1"), run.summary("stage2")
    assert (s1["policy"], s1["steps"], s2["policy"], s2["steps"]) == ("stage1", 6, "lora-only", 4)
    assert s1["parameters"]["encoder"]["trainable"] == 0
    assert s2["parameters"]["projector"]["trainable"] == 0
    assert s1["distributed"]["type"] == "NO" and s1["distributed"]["mixed_precision"] == "no"
    assert [step for step, _ in s1["losses"]] == list(range(1, 7))
    assert "[stage1] stage1: flow_loss" in logs["stage1"]
    final1 = run.final("stage1")
    assert {p.name for p in final1.iterdir()} == {
        "projector.safetensors",
        "denoiser.safetensors",
        "summary.json",
    }
    assert (run.final("stage2") / "adapter" / "adapter_config.json").is_file()
    # periodic checkpoints (every 2 steps, the last 2 kept) with their step recorded
    kept = sorted(p.name for p in run.checkpoints("stage1").iterdir())
    assert kept == ["step-00000002", "step-00000004"]
    progress = json.loads((run.checkpoints("stage1") / kept[-1] / "progress.json").read_text())
    assert progress["step"] == 4 and progress["batches_per_rank"] == [4]
    assert [step for step, _ in progress["losses"]] == [1, 2, 3, 4]
    # a labelled preview at the end of each stage: 2 images, inputs over 2 reconstruction rows
    with Image.open(run.stage("stage1") / "previews" / "final.png") as grid:
        assert grid.size == grid_size(2, 32, rows=3)
    assert any(run.logs("stage1").rglob("events.out.tfevents.*"))


def test_stage2_starts_from_stage1_and_keeps_projector_and_denoiser(finished_run):
    run, _ = finished_run
    for part in ("projector", "denoiser"):
        a = load_file(run.final("stage1") / f"{part}.safetensors")
        b = load_file(run.final("stage2") / f"{part}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_export_equals_the_lora_model_and_keeps_the_text_tower(finished_run, tiny_clip):
    run, _ = finished_run
    exported = run.encoder_dir
    x = torch.randn(3, 3, 32, 32)

    base = load_encoder(tiny_clip, 32).model.eval()
    lora = PeftModel.from_pretrained(
        load_encoder(tiny_clip, 32).model, run.final("stage2") / "adapter"
    ).eval()
    full = CLIPModel.from_pretrained(exported).eval()
    vision = CLIPVisionModel.from_pretrained(exported).eval()
    with torch.no_grad():
        lora_out = lora.vision_model(pixel_values=x)
        lora_global = lora.visual_projection(lora_out.pooler_output)
        full_global = full.get_image_features(pixel_values=x)
        full_global = getattr(full_global, "pooler_output", full_global)
        vision_hidden = vision(pixel_values=x).last_hidden_state
        base_global = base(pixel_values=x).image_embeds
    assert (full_global - lora_global).abs().max() < 1e-5
    assert (vision_hidden - lora_out.last_hidden_state).abs().max() < 1e-5
    assert (full_global - base_global).abs().max() > 1e-4  # the adapter did change the tower

    original = CLIPModel.from_pretrained(tiny_clip)
    text_original = original.text_model.state_dict()
    for key, value in full.text_model.state_dict().items():
        assert torch.equal(value, text_original[key]), key
    assert torch.equal(full.text_projection.weight, original.text_projection.weight)
    for name in ("preprocessor_config.json", "tokenizer.json", "vocab.json", "merges.txt"):
        assert (exported / name).is_file(), name
    info = json.loads((exported / "genhancer.json").read_text())
    assert info["stages"]["stage2"]["steps"] == 4 and info["config"]["encoder"]["path"]
    assert info["base_model"] == str(tiny_clip.resolve())


def test_export_does_not_overwrite_unless_asked(finished_run):
    from genhancer_llava.errors import GenhancerError

    run, _ = finished_run
    before = (run.encoder_dir / "genhancer.json").read_text()
    with pytest.raises(GenhancerError, match="already holds an export of this run"):
        export_encoder(run.root)
    assert (run.encoder_dir / "genhancer.json").read_text() == before


def test_export_after_enhance_says_so_and_overwrite_exports_again(finished_run, capsys):
    """The README's `genhancer export RUN_DIR` on a run the enhance already exported."""
    run, _ = finished_run
    err = cli_error(capsys, ["export", str(run.root)])
    assert err == (
        f"error: {run.encoder_dir} already holds an export of this run (genhancer "
        "enhance exports when it finishes); pass --overwrite to export it again, or "
        "--output DIR for a copy"
    )
    before = json.loads((run.encoder_dir / "genhancer.json").read_text())
    main(["export", str(run.root), "--overwrite"])
    assert capsys.readouterr().out.strip() == f"enhanced encoder: {run.encoder_dir}"
    after = json.loads((run.encoder_dir / "genhancer.json").read_text())
    assert after["stages"] == before["stages"] and after["base_model"] == before["base_model"]
    CLIPModel.from_pretrained(run.encoder_dir)  # a complete folder again


def test_export_loads_in_a_plain_process_without_this_package(finished_run, tmp_path):
    run, _ = finished_run
    check = textwrap.dedent(f"""
        import sys
        sys.modules["genhancer_llava"] = None  # prove nothing of ours is needed
        from transformers import CLIPModel, CLIPVisionModel, CLIPProcessor
        CLIPModel.from_pretrained({str(run.encoder_dir)!r})
        CLIPVisionModel.from_pretrained({str(run.encoder_dir)!r})
        CLIPProcessor.from_pretrained({str(run.encoder_dir)!r})
        print("loaded")
    """)
    proc = run_python("-c", check, cwd=tmp_path)
    assert proc.returncode == 0 and "loaded" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.slow
def test_enhance_clip_sh_runs_both_stages_on_deepspeed_zero2(tiny_clip, tmp_path):
    out = tmp_path / "run"
    proc = run_python_bash(
        "scripts/enhance_clip.sh",
        "--preset",
        "tiny",
        "--num_processes",
        "1",
        "--zero",
        "2",
        "--output",
        str(out),
        f"encoder.path={tiny_clip}",
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    run = RunDir(out)
    for stage in ("stage1", "stage2"):
        dist = run.summary(stage)["distributed"]
        assert dist["type"] == "DEEPSPEED" and dist["zero_stage"] == 2, dist
    assert f"enhanced encoder: {out / 'encoder'}" in proc.stdout
    vision = CLIPVisionModel.from_pretrained(out / "encoder")
    assert vision.config.image_size == 32


@pytest.mark.slow
def test_zero_0_runs_both_stages_as_one_plain_accelerate_process(tiny_clip, tmp_path):
    """`--zero 0`: accelerate launch without DeepSpeed; the checkpoints record it for resume."""
    out = tmp_path / "run"
    proc = run_python_bash(
        "scripts/enhance_clip.sh",
        "--preset",
        "tiny",
        "--zero",
        "0",
        "--output",
        str(out),
        f"encoder.path={tiny_clip}",
        "stage1.steps=4",
        "stage2.steps=4",
        "run.save_every=2",
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    run = RunDir(out)
    for stage in ("stage1", "stage2"):
        dist = run.summary(stage)["distributed"]
        assert (dist["type"], dist["zero_stage"], dist["num_processes"]) == ("NO", None, 1), dist
        step = sorted(run.checkpoints(stage).glob("step-*"))[-1]
        assert json.loads((step / "progress.json").read_text())["zero_stage"] == 0
    assert CLIPVisionModel.from_pretrained(out / "encoder").config.image_size == 32


def run_python_bash(*args):
    import os
    import subprocess

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        ["bash", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )


def test_resume_latest_continues_from_the_newest_checkpoint(finished_run, tmp_path):
    import shutil

    run, _ = finished_run
    copy = RunDir(tmp_path / "copy")
    shutil.copytree(run.root, copy.root)
    shutil.rmtree(copy.final("stage1"))  # as if stopped after the step-4 checkpoint
    proc = run_python(
        "-m",
        "genhancer_llava.train",
        "--run_dir",
        str(copy.root),
        "--stage",
        "stage1",
        "--resume",
        "latest",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout and "at step 4" in proc.stdout
    summary = copy.summary("stage1")
    assert [step for step, _ in summary["losses"]] == [1, 2, 3, 4, 5, 6]  # 1-4 restored


def test_step_ratio_benchmark_runs_and_prints_a_ratio():
    proc = run_python(
        "benchmarks/step_ratio.py", "--preset", "demo", "--repeats", "1", "--batch", "2"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ours / reference step = " in proc.stdout  # a smoke test: no timing is asserted


def test_readme_run_folder_names_what_a_run_writes(finished_run):
    """The README's run-folder listing, checked against a real run: every path it names exists
    (its example step, 00000040, stands for any 8-digit step), and tensorboard's event files
    lie under the log folder it names."""
    import re

    run, _ = finished_run
    readme = (REPO / "README.md").read_text()
    assert not re.search(r"step-N\b", readme)  # the names as written, not a placeholder
    block = readme.split("### The run folder\n\n```\n", 1)[1].split("```", 1)[0]
    listed = [line.split()[0] for line in block.splitlines() if line.startswith("OUT/")]
    assert len(listed) >= 6
    for path in listed:
        pattern = re.sub(r"step-\d{8}", "step-" + "[0-9]" * 8, path.removeprefix("OUT/"))
        assert list(run.root.glob(pattern.rstrip("/"))), f"the README lists {path}; not written"
    folders = [p.removeprefix("OUT/") for p in listed if p.endswith("/")]
    events = [
        str(p.relative_to(run.root).parent).replace("stage2", "stage1") + "/"
        for p in run.root.rglob("events.out.tfevents.*")
    ]
    shallowest = min(events, key=len)  # the scalars' folder (hparams go one level down)
    assert shallowest in folders and all(e.startswith(shallowest) for e in events), events
