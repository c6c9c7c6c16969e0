"""`genhancer`: the command line.

    genhancer enhance --preset NAME|--config FILE [--output DIR] [--num_processes N]
                      [--zero 0|2|3] [--accelerate_config FILE] [--overwrite]
                      [--resume latest|CHECKPOINT] [k=v ...]
    genhancer export RUN_DIR [--output DIR] [--overwrite]
    genhancer preview RUN_DIR|FINAL_DIR [--output PNG] [--images N] [--steps N]
    genhancer cache --preset NAME --output DIR [--crops K] [k=v ...]
    genhancer presets | genhancer config --preset NAME|--config FILE [k=v ...]
    genhancer make-tiny-clip DIR | genhancer make-tiny-siglip DIR | genhancer make-tiny-vq DIR
    genhancer convert-open-clip CHECKPOINT OUTPUT [--arch NAME] [--force_quick_gelu]
    genhancer demo [--output DIR] [--overwrite]
    genhancer toy pretrain-clip OUTPUT [--steps N] [--num_images N] [--fine_p P] [--seed S]
    genhancer toy study [--output DIR] [--base DIR] [--seeds S ...] [--settings NAME ...]
                        [--jobs N] [--quick] [k=v ...]
    genhancer eval mmvp-vlm --model DIR [--model DIR ...] --data DIR [--output DIR]
    genhancer eval zeroshot --model DIR [...] [--classification DIR] [--retrieval JSON]
                            [--templates FILE] [--output DIR]
    genhancer eval compare BASE ENHANCED [--mmvp DIR] [--classification DIR] [--retrieval JSON]
                           [--output DIR]
    genhancer eval make-benchmark OUT [--pairs_per_pattern 15] [--with_zeroshot]
    genhancer eval lmms-report RESULTS_DIR [RESULTS_DIR ...] [--name NAME ...] [--output DIR]
    genhancer swap --llava CKPT --vision-tower DIR --output OUT
    (every eval command also takes --batch_size N and --device DEV)

Mistakes in the input print one line, `error: ...`, and exit with status 2; a training stage
that fails prints its worker's one-line error last and exits with the worker's status; a run
stopped by SIGTERM/SIGINT exits with 75 after saying how to resume.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import yaml

from ..config import available_presets, load_config
from ..errors import STOPPED_EXIT, GenhancerError, Stopped
from .eval import add_eval_parsers
from .toy import add_toy_parsers

__all__ = ["main", "build_parser"]


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help=f"one of: {', '.join(available_presets())}")
    parser.add_argument("--config", help="a YAML config file (may `inherit:` a preset)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")


def _config_from(args: argparse.Namespace):
    if not args.preset and not args.config:
        raise GenhancerError(
            f"pass --preset NAME or --config FILE; presets: {', '.join(available_presets())}"
        )
    overrides = list(args.overrides)
    if getattr(args, "output", None):
        overrides.append(f"run.output_dir={args.output}")
    return load_config(args.preset, args.config, overrides)


def cmd_enhance(args: argparse.Namespace) -> None:
    cfg = _config_from(args)  # a bad config fails before the launcher's imports
    from ..train.launch import enhance

    encoder_dir = enhance(
        cfg, args.num_processes, args.zero, args.overwrite, args.resume, args.accelerate_config
    )
    print(f"enhanced encoder: {encoder_dir}")


def cmd_export(args: argparse.Namespace) -> None:
    from ..export import export_encoder
    from ..train.run_lock import hold_run

    if not Path(args.run_dir).is_dir():
        raise GenhancerError(f"run folder {args.run_dir} does not exist")
    with hold_run(args.run_dir, "genhancer export"):  # not while a run writes the folder
        encoder_dir = export_encoder(args.run_dir, args.output, args.overwrite)
    print(f"enhanced encoder: {encoder_dir}")


def cmd_preview(args: argparse.Namespace) -> None:
    from ..train.preview import preview_run

    print(f"preview: {preview_run(args.path, args.output, args.images, args.steps)}")


def cmd_cache(args: argparse.Namespace) -> None:
    cfg = _config_from(args)
    from ..train.preflight import check_data, check_encoder

    if cfg.data.kind != "cached":  # (a cache as input is refused by write_cache)
        check_encoder(cfg)  # the folders and shards, before any model loads
        from ..models.targets import check_target

        check_target(cfg.target)
        check_data(cfg)
    from ..cache import write_cache

    out = write_cache(
        cfg,
        args.cache_dir,
        args.crops,
        args.batch_size,
        args.per_shard,
        args.device,
        args.overwrite,
    )
    print(f"cache: {out} (train with data.kind=cached data.path={out})")


def cmd_presets(args: argparse.Namespace) -> None:
    print("\n".join(available_presets()))


def cmd_config(args: argparse.Namespace) -> None:
    print(yaml.safe_dump(_config_from(args).to_dict(), sort_keys=False), end="")


def cmd_make_tiny_clip(args: argparse.Namespace) -> None:
    from ..models.tiny import make_tiny_clip

    folder = make_tiny_clip(
        args.folder,
        image_size=args.image_size,
        patch_size=args.patch_size,
        hidden_size=args.hidden_size,
        projection_dim=args.projection_dim,
    )
    print(f"tiny CLIP written to {folder}")


def cmd_make_tiny_siglip(args: argparse.Namespace) -> None:
    from ..models.tiny import make_tiny_siglip

    folder = make_tiny_siglip(
        args.folder,
        image_size=args.image_size,
        patch_size=args.patch_size,
        hidden_size=args.hidden_size,
        vision_only=args.vision_only,
    )
    print(f"tiny SigLIP written to {folder}")


def cmd_make_tiny_vq(args: argparse.Namespace) -> None:
    from ..models.tiny import make_tiny_vq

    folder = make_tiny_vq(
        args.folder,
        codebook_size=args.codebook_size,
        downsample=args.downsample,
        latent_channels=args.latent_channels,
    )
    print(f"tiny VQModel written to {folder} (target.path for the *-masked tiny presets)")


def cmd_convert_open_clip(args: argparse.Namespace) -> None:
    from ..models.convert import convert_open_clip

    out = convert_open_clip(
        args.checkpoint,
        args.output,
        arch=args.arch,
        force_quick_gelu=args.force_quick_gelu,
        overwrite=args.overwrite,
    )
    print(f"CLIPModel folder: {out}")


def cmd_demo(args: argparse.Namespace) -> None:
    from ..demo import run_demo

    run_demo(args.output, args.overwrite)


def cmd_swap(args: argparse.Namespace) -> None:
    from ..mllm.swap import swap_checkpoint

    out = swap_checkpoint(args.llava, args.vision_tower, args.output)
    print(f"swapped checkpoint: {out} (provenance in {out / 'genhancer.json'})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genhancer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("enhance", help="stage 1 + stage 2 through accelerate, then export")
    _add_config_args(p)
    p.add_argument("--output", help="run folder (sets run.output_dir)")
    p.add_argument("--num_processes", type=int, default=1)
    p.add_argument(
        "--zero",
        type=int,
        default=2,
        choices=[0, 2, 3],
        help="DeepSpeed ZeRO stage (default 2, the paper's); 0: one process, no "
        "DeepSpeed (faster for a single GPU or CPU)",
    )
    p.add_argument("--overwrite", action="store_true", help="start over in an existing run folder")
    p.add_argument("--resume", help="'latest' or a checkpoint folder: continue a run")
    p.add_argument("--accelerate_config", help="an accelerate config instead of the shipped one")
    p.set_defaults(func=cmd_enhance)

    p = sub.add_parser("export", help="merge a run's LoRA into its base; write an HF folder")
    p.add_argument("run_dir")
    p.add_argument("--output", help="default: RUN_DIR/encoder")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("preview", help="PNG of inputs and their reconstructions from a run")
    p.add_argument("path", help="a run folder or a stage's final folder")
    p.add_argument("--output", help="PNG path (default: <final>/preview.png)")
    p.add_argument("--images", type=int, help="number of images (default run.preview_images)")
    p.add_argument("--steps", type=int, help="sampler steps (default run.preview_sample_steps)")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser(
        "cache",
        help="encode a dataset once: targets and frozen-encoder tokens for data.kind=cached",
    )
    _add_config_args(p)
    p.add_argument("--output", dest="cache_dir", required=True, help="the cache folder to write")
    p.add_argument(
        "--crops", type=int, default=1, help="crops per image; epoch e trains on crop e %% K"
    )
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument(
        "--per_shard",
        type=int,
        default=1000,
        help="records per shard (folder and synthetic sources)",
    )
    p.add_argument("--device", help="default: this process's GPU, else CPU")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("presets", help="list the shipped presets")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("config", help="print the resolved config")
    _add_config_args(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("make-tiny-clip", help="write a tiny random CLIPModel folder")
    p.add_argument("folder")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--patch_size", type=int, default=8)
    p.add_argument("--hidden_size", type=int, default=64)
    p.add_argument("--projection_dim", type=int, default=32)
    p.set_defaults(func=cmd_make_tiny_clip)

    p = sub.add_parser("make-tiny-siglip", help="write a tiny random SiglipModel folder")
    p.add_argument("folder")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--patch_size", type=int, default=8)
    p.add_argument("--hidden_size", type=int, default=64)
    p.add_argument("--vision_only", action="store_true", help="a SiglipVisionModel folder")
    p.set_defaults(func=cmd_make_tiny_siglip)

    p = sub.add_parser(
        "make-tiny-vq", help="write a tiny random VQModel folder (tiny-masked presets' target)"
    )
    p.add_argument("folder")
    p.add_argument("--codebook_size", type=int, default=32)
    p.add_argument("--downsample", type=int, default=4, help="spatial factor, a power of two")
    p.add_argument("--latent_channels", type=int, default=4)
    p.set_defaults(func=cmd_make_tiny_vq)

    p = sub.add_parser(
        "convert-open-clip", help="convert a local open_clip checkpoint into an HF CLIPModel folder"
    )
    p.add_argument(
        "checkpoint",
        help="a weights file (with --arch) or a local open_clip folder "
        "holding open_clip_config.json",
    )
    p.add_argument("output", help="the CLIPModel folder to write")
    p.add_argument(
        "--arch",
        help="open_clip architecture, e.g. ViT-L-14-quickgelu (MetaCLIP L), "
        "ViT-H-14-quickgelu (MetaCLIP H)",
    )
    p.add_argument(
        "--force_quick_gelu",
        action="store_true",
        help="QuickGELU whatever the architecture says (OpenAI / MetaCLIP weights)",
    )
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_convert_open_clip)

    p = sub.add_parser("demo", help="the built-in demo (tiny CLIP, CPU; minutes, see README)")
    p.add_argument("--output", default="runs/demo")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("swap", help="put an enhanced encoder into an existing LLaVA checkpoint")
    p.add_argument(
        "--llava",
        required=True,
        help="a LLaVA checkpoint folder (only read): llava-hf LLaVA-1.5, LLaVA-NeXT "
        "or LLaVA-OneVision, or original-format LLaVA-1.5 / llava-v1.6",
    )
    p.add_argument(
        "--vision-tower",
        "--vision_tower",
        dest="vision_tower",
        required=True,
        help="the encoder folder (genhancer export) or a genhancer[:NAME|:PATH] name",
    )
    p.add_argument("--output", required=True, help="the folder to write (must not exist)")
    p.set_defaults(func=cmd_swap)

    add_eval_parsers(sub)
    add_toy_parsers(sub)
    return parser


def resume_command(argv: list[str]) -> str:
    """The command line that continues a stopped `genhancer ARGV`."""
    words, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == "--overwrite":
            continue
        elif word == "--resume":
            skip = True
        elif not word.startswith("--resume="):
            words.append(word)
    return shlex.join(["genhancer", *words, "--resume", "latest"])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except Stopped as err:
        print(f"stopped: {err}; continue with: {resume_command(argv)}", file=sys.stderr)
        sys.exit(STOPPED_EXIT)
    except GenhancerError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))  # a failed stage: its worker's status


if __name__ == "__main__":
    main()
