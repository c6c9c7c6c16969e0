"""benchmarks/gpu_check.sh --smoke: the GPU benchmark's code paths, on the CPU at tiny shapes."""

import json
import subprocess
import time

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_gpu_check_smoke_runs_on_cpu():
    start = time.perf_counter()
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    steps = [json.loads(ln) for ln in lines if ln.startswith('{"side"')]
    assert {s["stage"] for s in steps} == {"1", "2_only"}
    for s in steps:
        assert s["sec_per_step"] > 0 and s["flops_per_step"] > 0
    lmms = json.loads(next(ln for ln in lines if ln.startswith('{"lmms_model"')))
    assert lmms["device"] == "cpu" and len(lmms["answers"]) == 2
    assert lines[-1] == "[gpu_check] smoke passed"
    assert time.perf_counter() - start < 120  # CI budget (< 60 s on an idle machine)


def test_paper_shapes_are_the_published_configs():
    """The GPU benchmark's paper shapes: the autoencoder is FLUX.1's vae/config.json and the
    CLIP tower openai/clip-vit-large-patch14's (tests/fixtures/configs)."""
    from benchmarks.shapes import paper

    fixtures = REPO / "tests" / "fixtures" / "configs"
    shapes = paper()
    vae = json.loads((fixtures / "flux1-vae.json").read_text())
    ours = shapes.autoencoder_config()
    for key, value in ours.items():
        published = vae[key]
        assert (tuple(published) if isinstance(published, list) else published) == value, key
    clip = json.loads((fixtures / "openai-clip-vit-large-patch14.json").read_text())
    vision = clip["vision_config"]
    assert {k: vision[k] for k in shapes.clip_vision} == shapes.clip_vision
    assert (vision["image_size"], clip["projection_dim"]) == (shapes.image_size, shapes.global_dim)
