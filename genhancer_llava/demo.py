"""`genhancer demo` (and `make demo`): the whole flow on a toy-pretrained CLIP, on CPU, in minutes.

A small CLIP is pretrained on the toy world (`genhancer_llava.toy`: scenes with a triangle
whose orientation, position, fill and the scene's object count are recorded), enhanced with the
`toy-demo` preset (stage 1 + stage 2 on DeepSpeed ZeRO-2 through the real launcher), exported,
loaded back with plain transformers in a fresh process, and scored against its base: linear
probes of the global token per attribute, MMVP-VLM-format pairs drawn from the same world, and
zero-shot colour classification. The command line only parses and calls `run_demo`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from .config import load_config

__all__ = ["demo_scores", "run_demo", "DEMO_PRETRAIN"]

# the demo's base: `genhancer toy pretrain-clip`'s default, the study's base (a shorter one kept
# so much position and orientation in its global token that enhancement had nothing to add)
DEMO_PRETRAIN: dict = {}


def run_demo(output: str | Path, overwrite: bool = False) -> Path:
    """Toy CLIP -> both stages on DeepSpeed ZeRO-2 -> export -> load check -> scores.

    Args:
        output: the demo folder (base CLIP, toy data, run, exported encoder, eval reports).
        overwrite: start over when the folder already holds a run.

    Returns:
        The exported encoder folder.
    """
    from .stages import stages
    from .toy.benchmark import write_images, write_mmvp, write_zeroshot
    from .toy.clip_pretrain import PretrainConfig, pretrain_clip
    from .train.launch import enhance
    from .train.run_dir import RunDir

    tic = time.perf_counter()
    out = Path(output)
    base = out / "base-clip"
    if overwrite or not (base / "config.json").is_file():
        print("demo: pretraining a small CLIP on the toy world", flush=True)
        pretrain_clip(base, PretrainConfig(**DEMO_PRETRAIN), log_every=50)
    data = out / "toy-data"
    train = write_images(data / "train-images", 2000)
    bench = write_mmvp(data / "mmvp-vlm", pairs_per_attribute=40)
    classes = write_zeroshot(data / "zeroshot", per_class=20)
    cfg = load_config(
        "toy-demo",
        overrides=[f"run.output_dir={out}", f"encoder.path={base}", f"data.path={train}"],
    )
    print(f"demo: toy CLIP at {base}; enhancing with preset 'toy-demo'", flush=True)
    encoder_dir = enhance(cfg, num_processes=1, zero=2, overwrite=overwrite)
    run = RunDir(out)
    print("\n== GenHancer demo ==")
    for stage in stages(cfg):
        s = run.summary(stage.name)
        gap = s.get("shuffle_gap", {})
        print(
            f"{stage.name:<8} ({s['policy']}): {s['loss']} {s['loss_first']:.4f} at start -> "
            f"{s['loss_last']:.4f} at step {s['steps']}; shuffle gap "
            f"{100 * gap.get('gap', 0.0):.1f}% (t=0.95: {100 * gap.get('gap_t0.95', 0.0):.1f}%)"
        )
        print(f"  previews: {run.stage(stage.name) / 'previews'}")
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
    demo_scores(out, base, encoder_dir, mmvp_data=bench, classification=classes)
    demo_probes(base, encoder_dir)
    print(f"demo: {time.perf_counter() - tic:.0f} s in all")
    return encoder_dir


def demo_probes(base: Path, encoder_dir: Path) -> None:
    """Linear probes of the global token, base vs enhanced, on held-out toy scenes."""
    from .toy.probe import probe_encoder

    before = probe_encoder(base, train=1000, test=1000)
    after = probe_encoder(encoder_dir, train=1000, test=1000)
    print(
        "\nlinear probe of the global token, held-out toy scenes (accuracy %, 1000 test; "
        "standard error about 1.5 points):"
    )
    print("| attribute | chance | base | enhanced | delta |\n|---|---|---|---|---|")
    from .toy.world import ATTRIBUTES

    for a, values in ATTRIBUTES.items():
        print(
            f"| {a} | {100 / len(values):.1f} | {before[a]:.1f} | {after[a]:.1f} | "
            f"{after[a] - before[a]:+.1f} |"
        )


def demo_scores(
    out: Path,
    base: Path,
    encoder_dir: Path,
    mmvp_data: Path | None = None,
    classification: Path | None = None,
) -> None:
    """Base vs enhanced on an MMVP-VLM-format benchmark and zero-shot classification.

    Args:
        out: the demo folder (reports go to `out/eval`).
        base: the base CLIP folder.
        encoder_dir: the enhanced encoder folder.
        mmvp_data: an MMVP-VLM-format folder (the demo passes the toy world's); default: the
            generated 9-pattern format fixture.
        classification: a zero-shot class folder (default: the generated shapes fixture).
    """
    from .evaluation import make_mmvp_benchmark, make_zeroshot_fixture, mmvp_markdown
    from .evaluation.report import zeroshot_markdown
    from .evaluation.runs import compare

    retrieval = None
    if mmvp_data is None:
        mmvp_data = make_mmvp_benchmark(out / "eval" / "generated-mmvp-vlm", overwrite=True)
        title = "generated benchmark (a format fixture, not MMVP-VLM)"
    else:
        title = "pairs from the toy world, each differing in one attribute (not MMVP-VLM)"
    if classification is None:
        classification, retrieval = make_zeroshot_fixture(out / "eval" / "generated-zeroshot")
    result = compare(
        base,
        encoder_dir,
        out / "eval" / "report",
        mmvp_data=mmvp_data,
        classification=classification,
        retrieval=retrieval,
    )
    print(f"\n== MMVP-VLM format, {title} ==")
    print(f"benchmark: {mmvp_data} (pair accuracy %, chance 25)")
    print(mmvp_markdown(result.mmvp, delta=True), end="")
    print(f"zero-shot classification (%): {classification}")
    print(zeroshot_markdown(result.zeroshot, delta=True), end="")
    print(f"bar chart: {result.files['mmvp_figure']}")
    print(f"report: {result.files['markdown']} (+ report.json, report.png)")
