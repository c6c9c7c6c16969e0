"""Our training step vs the bare denoiser's, at the same shapes: prints ratios, not seconds.

    python benchmarks/step_ratio.py --preset demo            # CPU-sized shapes
    python benchmarks/step_ratio.py --preset openai-clip-l14-224 --device cuda --dtype bf16

"ours" is one stage-1 micro-step of the Enhancer (frozen CLIP forward without a graph,
projector, denoiser, loss, backward, AdamW step); "reference" is the same denoiser's
forward + backward + AdamW step on precomputed conditioning, i.e. the floor our wrapper adds to.
A ratio near 1 means the encoder pass, projector and loss bookkeeping cost little. Timings on
shared machines are noisy: both are measured side by side, interleaved, and the medians compared.
Paper presets need no weights or autoencoder: a random tower of the paper's shape is built on
the device and the targets are random tokens of the preset's shape (196 x 64 at 224 px).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from genhancer_llava.config import load_config
from genhancer_llava.models.encoders import CLIPEncoder
from genhancer_llava.models.enhancer import apply_stage_policy, build_enhancer
from genhancer_llava.models.paper_towers import preset_tower, random_tower
from genhancer_llava.utils import default_device

# a CPU-sized tower for presets without a paper backbone (demo, tiny)
DEMO_TOWER = dict(
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    patch_size=8,
    projection_dim=64,
)


def _tower(preset: str, image_size: int):
    paper = preset_tower(preset)
    if paper is not None:
        return random_tower(paper, image_size)
    return CLIPEncoder(
        CLIPVisionModelWithProjection(CLIPVisionConfig(**DEMO_TOWER, image_size=image_size))
    )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()
    cfg = load_config(args.preset)  # targets are random tokens of the preset's shape
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(0)
    enhancer = build_enhancer(cfg, encoder=_tower(args.preset, cfg.encoder.image_size))
    apply_stage_policy(enhancer, "stage1", cfg.lora)
    enhancer.to(args.device, dtype)
    size, (gh, gw) = cfg.encoder.image_size, cfg.target.grid(cfg.encoder.image_size)
    pixels = torch.randn(args.batch, 3, size, size, device=args.device, dtype=dtype)
    target = torch.randn(args.batch, gh * gw, cfg.target.token_dim, device=args.device)
    with torch.no_grad():
        pooled, context = enhancer.condition(pixels)
    params = [p for p in enhancer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)

    def ours() -> None:
        enhancer(pixels, target)["flow_loss"].backward()
        optimizer.step()
        optimizer.zero_grad()

    def reference() -> None:
        enhancer.denoiser(target, pooled, context)["flow_loss"].backward()
        optimizer.step()
        optimizer.zero_grad()

    timings: dict[str, list[float]] = {"ours": [], "reference": []}
    for fn in (ours, reference):  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in (("ours", ours), ("reference", reference)):
            _sync(args.device)
            tic = time.perf_counter()
            fn()
            _sync(args.device)
            timings[name].append(time.perf_counter() - tic)
    ratio = statistics.median(timings["ours"]) / statistics.median(timings["reference"])
    print(
        f"preset {args.preset}, batch {args.batch}, {args.device}, {args.dtype}: "
        f"ours / reference step = {ratio:.3f} (median of {args.repeats})"
    )


if __name__ == "__main__":
    main()
