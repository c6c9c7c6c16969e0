"""Every paper preset at its true size, on the CPU, batch 1: one line per preset.

    python benchmarks/paper_shapes.py                          # all 12 presets (make paper-shapes)
    python benchmarks/paper_shapes.py --presets openai-clip-l14-336-masked,siglip-so400m-384
    python benchmarks/paper_shapes.py --preset siglip-so400m-384 --json   # one, in this process

For each preset, with random weights of the real shapes (the vision configs, FLUX.1 autoencoder
and LLaVA-1.5 configs are the published ones kept in tests/fixtures/configs):

1. the base tower is written as a Hugging Face folder and loaded by the enhancer (the real
   `encoder.path` route), the target producer (FLUX.1 autoencoder / a VQ-GAN of the preset's
   codebook and factor) encodes the image;
2. stage 1: forward and backward through the denoiser and projector; the AdamW step runs when
   its memory (weights, gradients, two moments: 16 bytes a parameter) fits `--memory_gb`, and the
   line says so when it does not (the 1.3e9-parameter DiT needs about 21 GB);
3. stage 2 (`lora-only`): LoRA added, forward, backward and one AdamW step;
4. the adapter is exported (`export_encoder`), the export is loaded as a LLaVA tower through the
   hook (`genhancer:<folder>`), and swapped into a llava-hf model whose vision config is the
   real one (the language model is tiny).

Each preset runs in its own process (one at a time) so that peak memory is per preset.
The masked VQ-GAN is a stand-in: taming-transformers' f16/16384 layout (not a fixture: the paper
names no checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "configs"
PRESETS = [
    p
    for base in (
        "openai-clip-l14-224",
        "openai-clip-l14-336",
        "metaclip-l14-224",
        "metaclip-h14-224",
        "siglip-so400m-224",
        "siglip-so400m-384",
    )
    for p in (base, base + "-masked")
]
ADAMW_BYTES_PER_PARAM = 16  # fp32 weight + gradient + two moments


def fixture(name: str) -> dict:
    data = json.loads((FIXTURES / f"{name.replace('/', '-')}.json").read_text())
    return {k: v for k, v in data.items() if k != "_source"}


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def vision_config(preset: str):
    """The real vision config of the preset's checkpoint (CLIP: with its projection width)."""
    from transformers import CLIPConfig, SiglipConfig

    from genhancer_llava.models.paper_towers import preset_checkpoint

    data = fixture(preset_checkpoint(preset))
    if data["model_type"] == "siglip":
        return SiglipConfig(**data).vision_config
    config = CLIPConfig(**data)
    config.vision_config.projection_dim = config.projection_dim
    return config.vision_config


def write_base(preset: str, folder: Path) -> str:
    """A vision-tower folder of the preset's checkpoint shape, random weights, real processor."""
    from transformers import CLIPImageProcessor, SiglipImageProcessor

    from genhancer_llava.models.families import family_of_model_type

    vision = vision_config(preset)
    family = family_of_model_type(vision.model_type)[0]
    torch.manual_seed(0)
    family.cls("encoder_model")(vision).save_pretrained(folder)
    size = vision.image_size
    if family.name == "siglip":
        SiglipImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)
    else:
        CLIPImageProcessor(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        ).save_pretrained(folder)
    return family.name


def write_target(cfg, folder: Path) -> None:
    """FLUX.1's autoencoder (its published config) or a VQ-GAN of the preset's codebook."""
    from diffusers import AutoencoderKL, VQModel

    torch.manual_seed(0)
    if cfg.target.kind == "flux_vae":
        config = fixture("flux1-vae")
        AutoencoderKL.from_config(
            {k: v for k, v in config.items() if not k.startswith("_")}
        ).save_pretrained(folder)
        return
    levels = cfg.target.downsample.bit_length()  # 16 -> 5 levels, 4 down-samplings
    VQModel(
        in_channels=3,
        out_channels=3,
        latent_channels=256,
        vq_embed_dim=256,
        num_vq_embeddings=cfg.target.codebook_size,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=(128, 128, 256, 256, 512)[:levels],
        layers_per_block=2,
        norm_num_groups=32,
    ).save_pretrained(folder)


def llava_hf_model(preset: str):
    """A llava-hf model with the real vision config and a tiny Llama (random weights)."""
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
    from transformers.initialization import no_init_weights

    from genhancer_llava.models.paper_towers import preset_checkpoint

    if preset_checkpoint(preset) == "openai/clip-vit-large-patch14-336":
        vision = fixture("llava-hf/llava-1.5-7b-hf")["vision_config"]  # LLaVA-1.5's own
    else:
        vision = vision_config(preset).to_dict()
    text = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text.to_dict(),
        image_token_id=255,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    with no_init_weights():  # the tower is overwritten strictly by the swap; nothing runs it
        return LlavaForConditionalGeneration(config)


def _step(optimizer, params) -> None:
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for p in params:
        p.grad = None


def run_preset(preset: str, memory_gb: float, tower_forward: bool = True) -> dict:
    """Measure one preset in this process; returns the row.

    Args:
        preset: a paper preset.
        memory_gb: the stage-1 AdamW step runs when its state fits.
        tower_forward: run an image through the LLaVA tower (else read its token count).
    """
    import llava_patches
    from genhancer_llava.config import load_config
    from genhancer_llava.export import export_encoder
    from genhancer_llava.mllm.swap import swap_llava_hf_tower
    from genhancer_llava.models.enhancer import apply_stage_policy, build_enhancer
    from genhancer_llava.models.families import get_family
    from genhancer_llava.models.targets import build_target
    from genhancer_llava.stages import stages
    from genhancer_llava.train.launch import prepare_run_dir
    from genhancer_llava.train.run_dir import RunDir
    from llava_patches import hook

    row: dict = {"preset": preset}
    seconds: dict[str, float] = {}
    tic = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tic
        seconds[name] = round(time.perf_counter() - tic, 1)
        tic = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="paper-shapes-") as tmp:
        tmp = Path(tmp)
        family = write_base(preset, tmp / "base")
        cfg = load_config(
            preset,
            overrides=[
                f"encoder.path={tmp / 'base'}",
                f"target.path={tmp / 'target'}",
                f"run.output_dir={tmp / 'run'}",
            ],
        )
        write_target(cfg, tmp / "target")
        torch.manual_seed(0)
        enhancer = build_enhancer(cfg).train()
        target = build_target(cfg.target)
        lap("build")
        size = cfg.encoder.image_size
        image = torch.rand(1, 3, size, size) * 2 - 1  # the target view, [-1, 1]
        pixels = torch.randn(1, 3, size, size)  # the encoder view (normalised)
        tokens = target.encode(image)
        row["tokens"] = tokens.shape[1]
        row["tower_params"] = sum(p.numel() for p in enhancer.encoder.parameters())
        row["denoiser_params"] = sum(p.numel() for p in enhancer.denoiser.parameters())
        row["projector_params"] = sum(p.numel() for p in enhancer.projector.parameters())
        lap("target")

        # stage 1: denoiser + projector train, the tower is frozen
        apply_stage_policy(enhancer, "stage1", cfg.lora)
        loss = next(iter(enhancer(pixels, tokens).values()))
        loss.backward()
        row["stage1_loss"] = round(loss.item(), 4)
        lap("stage1_fwd_bwd")
        params = [p for p in enhancer.parameters() if p.requires_grad]
        need = sum(p.numel() for p in params) * ADAMW_BYTES_PER_PARAM / 2**30
        if need <= memory_gb:
            _step(torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01), params)
            row["stage1_adamw"] = f"ran ({need:.1f} GB)"
        else:
            for p in params:
                p.grad = None
            row["stage1_adamw"] = (
                f"NOT RUN: needs {need:.1f} GB (16 B x "
                f"{sum(p.numel() for p in params) / 1e9:.2f}e9 params) > "
                f"--memory_gb {memory_gb:g}"
            )
        lap("stage1_adamw")

        # stage 2, lora-only: LoRA on the tower, denoiser and projector frozen in the graph
        apply_stage_policy(enhancer, "lora-only", cfg.lora)
        params = [p for p in enhancer.parameters() if p.requires_grad]
        row["lora_params"] = sum(p.numel() for p in params)
        before = {
            n: p.detach().clone()
            for n, p in enhancer.named_parameters()
            if p.requires_grad and "lora_B" in n
        }
        loss = next(iter(enhancer(pixels, tokens).values()))
        loss.backward()
        _step(torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01), params)
        changed = sum(
            not torch.equal(p, before[n]) for n, p in enhancer.named_parameters() if n in before
        )
        if changed != len(before):  # lora_B starts at 0; its first gradient moves it
            raise RuntimeError(f"stage 2 changed {changed} of {len(before)} lora_B weights")
        lap("stage2_step")

        # export: the adapter where stage 2 leaves it, then the real export
        run = prepare_run_dir(cfg, overwrite=False, resume=False)
        enhancer.encoder.model.save_pretrained(
            RunDir(run.root).final(stages(cfg)[-1].name) / "adapter"
        )
        del enhancer, target, params, before, loss
        export = export_encoder(run.root)
        lap("export")

        # the export as a LLaVA tower, through the hook
        llava_patches.apply()
        select = "patch" if get_family(family).has_cls_token else "cls_patch"
        tower = hook.build_vision_tower(
            SimpleNamespace(
                mm_vision_tower=f"genhancer:{export}",
                vision_tower=f"genhancer:{export}",
                mm_vision_select_layer=-2,
                mm_vision_select_feature=select,
            )
        )
        if tower_forward:
            with torch.no_grad():
                row["llava_tokens"] = tower(pixels).shape[1]
        else:  # --lean: the tower's own count, no forward
            row["llava_tokens"] = tower.num_patches + (
                select == "cls_patch" and get_family(family).has_cls_token
            )
        reference = tower.vision_tower.state_dict()
        del tower
        lap("llava_hook")

        # swap into a llava-hf model with the real vision config
        model = llava_hf_model(preset)
        swap_llava_hf_tower(model, export, f"llava-hf ({preset})")
        mine = model.model.vision_tower.state_dict()
        if not all(torch.equal(mine[k], reference[k]) for k in reference):
            raise RuntimeError("the swapped tower's weights differ from the export's")
        lap("swap")
    row["seconds"] = seconds
    row["total_s"] = round(sum(seconds.values()), 1)
    row["peak_gb"] = round(peak_gb(), 1)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    row["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)  # this process, whole run
    return row


def format_row(row: dict) -> str:
    if "error" in row:
        return f"{row['preset']:<28} FAILED: {row['error']}"
    s = row["seconds"]
    mega = {k: row[k] / 1e6 for k in ("tower_params", "denoiser_params", "lora_params")}
    return (
        f"{row['preset']:<28} tokens {row['tokens']:>3}  tower {mega['tower_params']:6.1f}M"
        f"  denoiser {mega['denoiser_params']:7.1f}M  lora {mega['lora_params']:4.1f}M"
        f"  s1 fwd+bwd {s['stage1_fwd_bwd']:5.1f}s  s2 step {s['stage2_step']:5.1f}s"
        f"  export {s['export']:4.1f}s  hook {s['llava_hook']:4.1f}s"
        f" ({row['llava_tokens']} tok)  swap {s['swap']:4.1f}s"
        f"  total {row['total_s']:6.1f}s (cpu {row['cpu_s']:6.1f}s)"
        f"  peak {row['peak_gb']:5.1f} GB"
        f"  | stage-1 AdamW {row['stage1_adamw']}"
    )


def run_all(presets: list[str], memory_gb: float, timeout: int, lean: bool) -> list[dict]:
    """Each preset in a fresh process, one after the other; a line as each finishes."""
    rows = []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for preset in presets:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--preset",
                preset,
                "--json",
                "--memory_gb",
                str(memory_gb),
                *(["--lean"] if lean else []),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            cwd=REPO,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            row = {"preset": preset, "error": f"exit {proc.returncode}: {tail}"}
        else:
            row = json.loads(lines[-1])
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", help="run one preset in this process")
    parser.add_argument(
        "--presets",
        default=",".join(PRESETS),
        help="comma-separated presets, each in its own process (default: all 12)",
    )
    parser.add_argument("--json", action="store_true", help="print the row as JSON")
    parser.add_argument(
        "--memory_gb",
        type=float,
        default=16.0,
        help="run the stage-1 AdamW step only when its state fits (GB)",
    )
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per preset")
    parser.add_argument(
        "--lean",
        action="store_true",
        help="no image through the LLaVA tower: its token count is read (CI)",
    )
    args = parser.parse_args()
    torch.set_num_threads(
        max(1, int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads())
    )
    if args.preset:
        row = run_preset(args.preset, args.memory_gb, tower_forward=not args.lean)
        print(json.dumps(row, default=str) if args.json else format_row(row))
        return
    presets = [p for p in args.presets.split(",") if p]
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        sys.exit(f"error: unknown presets {', '.join(unknown)}; known: {', '.join(PRESETS)}")
    print(
        f"paper shapes on {torch.get_num_threads()} CPU threads, batch 1, fp32 "
        f"(stage-1 AdamW runs when <= {args.memory_gb:g} GB)",
        flush=True,
    )
    rows = run_all(presets, args.memory_gb, args.timeout, args.lean)
    if any("error" in r for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
