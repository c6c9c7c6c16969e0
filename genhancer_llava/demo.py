"""`genhancer demo` (and `make demo`): the whole flow on a tiny random CLIP, on CPU, in minutes.

A tiny CLIP is written, enhanced with the `demo` preset (stage 1 + stage 2 on DeepSpeed ZeRO-2
through the real launcher), exported, loaded back with plain transformers in a fresh process,
and scored against its base on the generated MMVP-VLM-format benchmark (a format fixture, not
MMVP-VLM) and generated zero-shot shapes. The command line only parses and calls `run_demo`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from .config import load_config

__all__ = ["demo_scores", "run_demo"]


def run_demo(output: str | Path, overwrite: bool = False) -> Path:
    """Tiny CLIP -> both stages on DeepSpeed ZeRO-2 -> export -> load check -> scores.

    Args:
        output: the demo folder (base CLIP, run, exported encoder, eval reports).
        overwrite: start over when the folder already holds a run.

    Returns:
        The exported encoder folder.
    """
    from .models.tiny import make_tiny_clip
    from .stages import stages
    from .train.launch import enhance
    from .train.run_dir import RunDir

    out = Path(output)
    cfg = load_config("demo", overrides=[f"run.output_dir={out}"])
    base = make_tiny_clip(out / "base-clip", image_size=cfg.encoder.image_size, patch_size=8,
                          hidden_size=64, projection_dim=64)
    cfg = load_config("demo", overrides=[f"run.output_dir={out}", f"encoder.path={base}"])
    print(f"demo: random tiny CLIP at {base}; enhancing with preset 'demo'", flush=True)
    encoder_dir = enhance(cfg, num_processes=1, zero=2, overwrite=overwrite)
    run = RunDir(out)
    print("\n== GenHancer demo ==")
    for stage in stages(cfg):
        s = run.summary(stage.name)
        print(f"{stage.name:<8} ({s['policy']}): {s['loss']} {s['loss_first']:.4f} at start -> "
              f"{s['loss_last']:.4f} at step {s['steps']}")
    # a fresh interpreter: the export must load with transformers alone
    check = textwrap.dedent(f"""
        from transformers import CLIPModel, CLIPVisionModel
        CLIPModel.from_pretrained({str(encoder_dir)!r})
        CLIPVisionModel.from_pretrained({str(encoder_dir)!r})
    """)
    subprocess.run([sys.executable, "-c", check], check=True, capture_output=True)
    print(f"enhanced encoder: {encoder_dir}")
    print("  loads with CLIPModel.from_pretrained and CLIPVisionModel.from_pretrained")
    info = json.loads((encoder_dir / "genhancer.json").read_text())
    print(f"  provenance: {encoder_dir / 'genhancer.json'} (base {info['base_model']})")
    demo_scores(out, base, encoder_dir)
    return encoder_dir


def demo_scores(out: Path, base: Path, encoder_dir: Path) -> None:
    """The demo's last step: base vs enhanced on the generated MMVP-VLM-format benchmark.

    Args:
        out: the demo folder (reports go to `out/eval`).
        base: the base CLIP folder.
        encoder_dir: the enhanced encoder folder.
    """
    from .evaluation import make_mmvp_benchmark, make_zeroshot_fixture, mmvp_markdown
    from .evaluation.report import zeroshot_markdown
    from .evaluation.runs import compare

    bench = make_mmvp_benchmark(out / "eval" / "generated-mmvp-vlm", overwrite=True)
    cls, ret = make_zeroshot_fixture(out / "eval" / "generated-zeroshot")
    result = compare(base, encoder_dir, out / "eval" / "report", mmvp_data=bench,
                     classification=cls, retrieval=ret)
    print("\n== MMVP-VLM format, generated benchmark (a format fixture, not MMVP-VLM) ==")
    print(f"benchmark: {bench} (9 patterns x 15 pairs, drawn images)")
    print(mmvp_markdown(result.mmvp, delta=True), end="")
    print("zero-shot on generated shapes (%):")
    print(zeroshot_markdown(result.zeroshot, delta=True), end="")
    print(f"bar chart: {result.files['mmvp_figure']}")
    print(f"report: {result.files['markdown']} (+ report.json, report.png)")
