"""Training at scale: per-rank sharding with real processes, exact resume after SIGKILL,
atomic checkpoints, bad data, non-finite losses and previews."""

import json
import os
import shutil
import signal

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from genhancer_llava.config import load_config
from genhancer_llava.errors import STOPPED_EXIT
from genhancer_llava.train.checkpoint import latest_checkpoint
from genhancer_llava.train.launch import accelerate_config, enhance, launch_stage, prepare_run_dir
from genhancer_llava.train.preview import grid_size
from genhancer_llava.train.run_dir import RunDir

from .conftest import run_python
from .test_data import jpg_bytes, make_shards, write_shard


def _config(tiny_clip, out, *overrides):
    return load_config(
        "tiny", overrides=[f"encoder.path={tiny_clip}", f"run.output_dir={out}", *overrides]
    )


def _train(run_dir, stage="stage1", *extra, fault=None):
    env_fault = {"GENHANCER_FAULT": fault} if fault else {}
    old = {k: os.environ.get(k) for k in env_fault}
    os.environ.update(env_fault)
    try:
        return run_python(
            "-m", "genhancer_llava.train", "--run_dir", str(run_dir), "--stage", stage, *extra
        )
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _keys(run, stage, rank):
    return (run.stage(stage) / f"keys-rank{rank}.txt").read_text().split()


def _all_keys(pattern_folder):
    import tarfile

    keys = set()
    for shard in sorted(pattern_folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            keys |= {f"{shard.name}/{m.name.split('.')[0]}" for m in tar.getmembers()}
    return keys


@pytest.mark.slow
def test_two_processes_zero2_read_disjoint_parts_that_cover_the_shards(tiny_clip, tmp_path):
    pattern = make_shards(tmp_path / "shards", 4, 8)  # 32 images
    # 2 ranks x 1 worker: 2 shards (16 images) each = 4 batches of 4 = one epoch in 4 steps
    cfg = _config(
        tiny_clip,
        tmp_path / "run",
        "data.kind=shards",
        f"data.path={pattern}",
        "data.log_keys=true",
        "data.num_workers=1",
        "stage1.steps=4",
    )
    run = prepare_run_dir(cfg, overwrite=False, resume=False)
    launch_stage(run, "stage1", 2, accelerate_config(2))
    rank0, rank1 = _keys(run, "stage1", 0), _keys(run, "stage1", 1)
    assert len(rank0) == len(rank1) == 16
    assert not set(rank0) & set(rank1)
    assert set(rank0) | set(rank1) == _all_keys(tmp_path / "shards")
    dist = run.summary("stage1")["distributed"]
    assert (dist["type"], dist["zero_stage"], dist["num_processes"]) == ("DEEPSPEED", 2, 2)
    assert dist["global_batch"] == 4 * 1 * 2
    assert run.summary("stage1")["images_seen"] == 32


@pytest.mark.slow
def test_two_processes_zero3_shard_data_and_export_the_gathered_weights(tiny_clip, tmp_path):
    from peft import PeftModel
    from transformers import CLIPModel

    from genhancer_llava.models.encoders import load_encoder
    from genhancer_llava.models.enhancer import build_enhancer

    cfg = _config(
        tiny_clip,
        tmp_path / "run",
        "data.num_images=16",
        "data.log_keys=true",
        "stage1.steps=2",
        "stage2.steps=2",
        "stage2.lr=1e-3",
    )
    encoder_dir = enhance(cfg, num_processes=2, zero=3)
    run = RunDir(tmp_path / "run")
    for stage in ("stage1", "stage2"):
        dist = run.summary(stage)["distributed"]
        assert (dist["zero_stage"], dist["num_processes"]) == (3, 2)
        rank0, rank1 = _keys(run, stage, 0), _keys(run, stage, 1)
        assert len(rank0) == len(rank1) == 8 and not set(rank0) & set(rank1)
        assert len(set(rank0) | set(rank1)) == 16
    # the saved states are whole tensors (ZeRO-3 partitions were gathered), loadable strictly
    fresh = build_enhancer(cfg)
    fresh.denoiser.load_state_dict(load_file(run.final("stage2") / "denoiser.safetensors"))
    fresh.projector.load_state_dict(load_file(run.final("stage2") / "projector.safetensors"))
    # the export equals base + the gathered adapter, merged independently here
    lora = PeftModel.from_pretrained(
        load_encoder(tiny_clip, 32).model, run.final("stage2") / "adapter"
    ).merge_and_unload()
    exported = CLIPModel.from_pretrained(encoder_dir)
    for key, value in lora.vision_model.state_dict().items():
        assert torch.allclose(exported.vision_model.state_dict()[key], value, atol=1e-6), key
    base = load_encoder(tiny_clip, 32).model
    assert not torch.allclose(
        exported.vision_model.encoder.layers[0].mlp.fc1.weight,
        base.vision_model.encoder.layers[0].mlp.fc1.weight,
    )


def _trainable(run):
    state = {}
    for part in ("projector", "denoiser"):
        state.update(
            {
                f"{part}.{k}": v
                for k, v in load_file(run.final("stage1") / f"{part}.safetensors").items()
            }
        )
    return state


@pytest.mark.parametrize(
    "fault,code,resumed_at",
    [
        ("kill-after-step:4", -signal.SIGKILL, 3),  # killed: the work since step 3 is lost
        ("sigterm-after-step:4", STOPPED_EXIT, 4),  # preempted: step 4 finished and saved
    ],
)
def test_stop_and_resume_matches_a_straight_run(tiny_clip, tmp_path, fault, code, resumed_at):
    # two dataloader workers and wide crops: the data position and crops must resume exactly
    overrides = (
        "stage1.steps=6",
        "run.save_every=3",
        "data.num_workers=2",
        "data.num_images=20",
        "data.crop_scale=[0.5,1.0]",
    )
    straight = prepare_run_dir(_config(tiny_clip, tmp_path / "a", *overrides), False, False)
    assert _train(straight.root).returncode == 0
    broken = prepare_run_dir(_config(tiny_clip, tmp_path / "b", *overrides), False, False)
    stopped = _train(broken.root, fault=fault)
    assert stopped.returncode == code, stopped.stderr[-3000:]
    assert latest_checkpoint(broken, "stage1").name == f"step-{resumed_at:08d}"
    assert not run_final_exists(broken)
    resumed = _train(broken.root, "stage1", "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {resumed_at}" in resumed.stdout
    a, b = _trainable(straight), _trainable(broken)
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-6, worst
    assert straight.summary("stage1")["losses"] == broken.summary("stage1")["losses"]


def run_final_exists(run):
    return (run.final("stage1") / "summary.json").is_file()


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(tiny_clip, tmp_path):
    run = prepare_run_dir(
        _config(tiny_clip, tmp_path / "run", "stage1.steps=6", "run.save_every=2"), False, False
    )
    killed = _train(run.root, fault="kill-in-checkpoint:4")
    assert killed.returncode == -signal.SIGKILL
    checkpoints = run.checkpoints("stage1")
    assert (checkpoints / "step-00000004.tmp").is_dir()  # half written, never renamed
    assert latest_checkpoint(run, "stage1").name == "step-00000002"
    resumed = _train(run.root, "stage1", "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step-00000002 at step 2" in resumed.stdout
    assert not (checkpoints / "step-00000004.tmp").exists()
    assert run.summary("stage1")["steps"] == 6


def test_bad_members_are_skipped_counted_and_training_finishes(tiny_clip, tmp_path):
    good = [jpg_bytes(i) for i in range(12)]
    members, bad = (
        {},
        {
            2: ("corrupt.jpg", b"not a jpeg at all"),
            5: ("truncated.jpg", good[0][:300]),
            9: ("empty.png", b""),
            14: ("textonly.txt", b"a caption without its image"),
        },
    )
    for i in range(16):  # 16 samples = 4 batches of 4; no batch is all bad
        if i in bad:
            name, data = bad[i]
            members[f"{i:03d}{name[name.index('.') :]}"] = data
        else:
            members[f"{i:03d}.jpg"] = good.pop()
    folder = tmp_path / "shards"
    folder.mkdir()
    write_shard(folder / "00000.tar", members)
    cfg = _config(
        tiny_clip,
        tmp_path / "run",
        "data.kind=shards",
        f"data.path={folder}/00000.tar",
        "stage1.steps=4",
    )
    run = prepare_run_dir(cfg, False, False)
    proc = _train(run.root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = run.summary("stage1")
    assert summary["images_skipped"] == 4 and summary["images_seen"] == 12
    assert "skipped (unreadable) 4" in proc.stdout


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tiny_clip, tmp_path):
    run = prepare_run_dir(
        _config(tiny_clip, tmp_path / "run", "stage1.steps=6", "run.save_every=2"), False, False
    )
    proc = _train(run.root, fault="nan-loss:3")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: [stage1] the loss became non-finite at step 3")
    assert latest_checkpoint(run, "stage1").name == "step-00000002"
    assert not run_final_exists(run)


def test_previews_every_n_steps_and_on_demand(tiny_clip, tmp_path):
    run = prepare_run_dir(
        _config(
            tiny_clip,
            tmp_path / "run",
            "stage1.steps=4",
            "run.preview_every=2",
            "run.preview_images=3",
        ),
        False,
        False,
    )
    assert _train(run.root).returncode == 0
    for name in ("step-00000002.png", "final.png"):
        with Image.open(run.stage("stage1") / "previews" / name) as grid:
            assert grid.size == grid_size(3, 32, rows=3)  # inputs over 2 reconstruction rows
    proc = run_python(
        "-m",
        "genhancer_llava.cli.main",
        "preview",
        str(run.root),
        "--images",
        "5",
        "--output",
        str(tmp_path / "p.png"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with Image.open(tmp_path / "p.png") as grid:
        assert grid.size == grid_size(5, 32, rows=3)


def test_missing_shard_is_a_one_line_error_before_launch(capsys, tiny_clip, tmp_path):
    from genhancer_llava.cli.main import main

    make_shards(tmp_path / "s", 1, 2)
    with pytest.raises(SystemExit):
        main(
            [
                "enhance",
                "--preset",
                "tiny",
                f"encoder.path={tiny_clip}",
                "data.kind=shards",
                f"data.path={tmp_path}/s/{{00000..00001}}.tar",
                "--output",
                str(tmp_path / "o"),
            ]
        )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: 1 of 2 shards are missing") and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_resume_with_another_process_count_is_refused(tiny_clip, tmp_path):
    run = prepare_run_dir(
        _config(tiny_clip, tmp_path / "run", "stage1.steps=4", "run.save_every=2"), False, False
    )
    assert _train(run.root, fault="kill-after-step:3").returncode == -signal.SIGKILL
    progress = latest_checkpoint(run, "stage1") / "progress.json"
    record = json.loads(progress.read_text())
    record["batches_per_rank"] = [2, 2]  # as if written by 2 processes
    progress.write_text(json.dumps(record))
    proc = _train(run.root, "stage1", "--resume", "latest")
    assert proc.returncode == 2
    assert "resume it with --num_processes 2 (now 1)" in proc.stderr.strip().splitlines()[-1]
    shutil.rmtree(run.root)
