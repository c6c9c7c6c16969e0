"""LLaVA-1.5's tower (CLIP L/14@336) and SigLIP SO400M@384 at their true sizes through every
step the paper runs: target producer, stage 1, a stage-2 LoRA step, export, the LLaVA hook and
a swap into a llava-hf model of the real vision config (`make paper-shapes` runs all 12 presets;
CI runs these two with the masked denoiser, whose 1.3e9-parameter flow twin would take minutes
more on a CPU)."""

from __future__ import annotations

import re

import pytest

from .conftest import REPO, run_python

pytestmark = pytest.mark.slow


def test_paper_shapes_for_llava_15_tower_and_siglip_384():
    presets = ["openai-clip-l14-336-masked", "siglip-so400m-384-masked"]
    proc = run_python(
        str(REPO / "benchmarks" / "paper_shapes.py"),
        "--presets",
        ",".join(presets),
        "--lean",
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = {
        line.split()[0]: line
        for line in proc.stdout.splitlines()
        if line.split() and line.split()[0] in presets
    }
    assert set(lines) == set(presets), proc.stdout
    clip, siglip = lines["openai-clip-l14-336-masked"], lines["siglip-so400m-384-masked"]
    # 336 px / f16 -> 21 x 21 VQ ids; LLaVA's 'patch' feature: 24 x 24 patch tokens (CLS dropped)
    assert "tokens 441" in clip and "(576 tok)" in clip
    # 384 px / f16 -> 24 x 24 ids; SigLIP keeps every token of its 27 x 27 grid
    assert "tokens 576" in siglip and "(729 tok)" in siglip
    for line in lines.values():
        assert "stage-1 AdamW ran" in line
        assert float(re.search(r"peak\s+([\d.]+) GB", line).group(1)) < 12
