"""`genhancer toy ...`: the toy world (a small CLIP pretrained on scenes, and the study)."""

from __future__ import annotations

import argparse

__all__ = ["add_toy_parsers"]


def cmd_pretrain_clip(args: argparse.Namespace) -> None:
    from ..toy.clip_pretrain import PretrainConfig, pretrain_clip

    cfg = PretrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        num_images=args.num_images,
        fine_p=args.fine_p,
        position_init_std=args.position_init_std,
        seed=args.seed,
    )
    out = pretrain_clip(args.output, cfg)
    print(f"toy CLIP: {out} (CLIPModel folder, word-level tokenizer)")


def cmd_study(args: argparse.Namespace) -> None:
    from ..toy.clip_pretrain import PretrainConfig
    from ..toy.study import StudyConfig, run_study

    cfg = StudyConfig(
        output=args.output,
        base=args.base,
        seeds=args.seeds,
        overrides=args.overrides,
        jobs=args.jobs,
        pretrain=PretrainConfig(fine_p=args.fine_p),
    )
    if args.settings:
        cfg.settings = args.settings
    if args.quick:  # the test's end-to-end run: minutes, numbers that mean nothing
        cfg.pretrain = PretrainConfig(steps=30, batch_size=64, num_images=1000, fine_p=args.fine_p)
        cfg.train_images, cfg.probe_train, cfg.probe_test = 256, 300, 300
        cfg.mmvp_pairs, cfg.zeroshot_per_class = 10, 10
        cfg.overrides = [
            "stage1.steps=10",
            "stage2.steps=6",
            "optim.per_device_batch_size=16",
            *cfg.overrides,
        ]
    run_study(cfg)


def add_toy_parsers(sub: argparse._SubParsersAction) -> None:
    toy = sub.add_parser("toy", help="the toy world: pretrain a small CLIP, run the study")
    tsub = toy.add_subparsers(dest="toy_command", required=True)

    p = tsub.add_parser("pretrain-clip", help="train a small CLIP on toy scenes (InfoNCE)")
    p.add_argument("output", help="the CLIPModel folder to write")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num_images", type=int, default=40_000)
    p.add_argument(
        "--fine_p",
        type=float,
        default=0.3,
        help="probability that a caption names one fine attribute",
    )
    p.add_argument("--position_init_std", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_pretrain_clip)

    p = tsub.add_parser("study", help="the paper's claims at toy scale through `enhance`")
    p.add_argument("--output", default="runs/study")
    p.add_argument("--base", help="a toy CLIP folder (default: pretrain one into OUTPUT)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--settings", nargs="+", help="global local end-to-end uniform strong")
    p.add_argument("--fine_p", type=float, default=0.3, help="caption fine-word rate (base)")
    p.add_argument("--jobs", type=int, default=1, help="enhancement runs at once")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in minutes")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides for every run")
    p.set_defaults(func=cmd_study)
