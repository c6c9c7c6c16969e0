"""`genhancer eval ...`: the scoring commands (MMVP-VLM, zero-shot, comparison, benchmark
fixtures, and the paper-metric report of lmms-eval runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import GenhancerError

__all__ = ["add_eval_parsers"]


def _print_files(files: dict[str, Path]) -> None:
    for kind, path in files.items():
        print(f"  {kind}: {path}")


def cmd_eval_mmvp(args: argparse.Namespace) -> None:
    from ..evaluation import mmvp_markdown, write_mmvp
    from ..evaluation.runs import evaluate

    mmvp, _ = evaluate(
        args.model,
        mmvp_data=args.data,
        names=args.name,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
    )
    print(mmvp_markdown(mmvp, delta=len(mmvp) == 2), end="")
    print(f"wrote {args.output}:")
    _print_files(write_mmvp(mmvp, args.output))


def _templates(args: argparse.Namespace) -> list[str] | None:
    if not args.templates:
        return None
    path = Path(args.templates)
    if not path.is_file():
        raise GenhancerError(f"templates file {path} does not exist (one prompt per line, {{c}})")
    return [t.strip() for t in path.read_text().splitlines() if t.strip()]


def cmd_eval_zeroshot(args: argparse.Namespace) -> None:
    from ..evaluation.report import write_zeroshot, zeroshot_markdown
    from ..evaluation.runs import evaluate

    if not args.classification and not args.retrieval:
        raise GenhancerError("pass --classification DIR and/or --retrieval JSON")
    _, zeroshot = evaluate(
        args.model,
        classification=args.classification,
        retrieval=args.retrieval,
        templates=_templates(args),
        names=args.name,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
    )
    print(zeroshot_markdown(zeroshot, delta=len(zeroshot) == 2), end="")
    print(f"wrote {args.output}:")
    _print_files(write_zeroshot(zeroshot, args.output))


def cmd_eval_compare(args: argparse.Namespace) -> None:
    from ..evaluation import mmvp_markdown
    from ..evaluation.report import zeroshot_markdown
    from ..evaluation.runs import compare

    result = compare(
        args.base,
        args.enhanced,
        args.output,
        mmvp_data=args.mmvp,
        classification=args.classification,
        retrieval=args.retrieval,
        templates=_templates(args),
        names=(args.base_name, args.enhanced_name),
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
    )
    if result.mmvp:
        print(mmvp_markdown(result.mmvp, delta=True), end="")
    if result.zeroshot:
        print(zeroshot_markdown(result.zeroshot, delta=True), end="")
    print(f"wrote {args.output}:")
    _print_files(result.files)


def cmd_eval_make_benchmark(args: argparse.Namespace) -> None:
    from ..evaluation import make_mmvp_benchmark, make_zeroshot_fixture

    out = make_mmvp_benchmark(
        args.out,
        pairs_per_pattern=args.pairs_per_pattern,
        image_size=args.image_size,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"generated MMVP-VLM-format benchmark (a format fixture, not MMVP-VLM): {out}")
    if args.with_zeroshot:
        cls, ret = make_zeroshot_fixture(out / "zeroshot", seed=args.seed)
        print(f"zero-shot fixture: --classification {cls} --retrieval {ret}")


def cmd_eval_lmms_report(args: argparse.Namespace) -> None:
    from ..evaluation.lmms_report import lmms_markdown, write_lmms_report

    scores, files = write_lmms_report(args.results_dirs, args.output, args.name)
    print(lmms_markdown(scores), end="")
    print(f"wrote {args.output}:")
    _print_files(files)


def add_eval_parsers(sub) -> None:
    p_eval = sub.add_parser(
        "eval", help="score encoders (MMVP-VLM, zero-shot, comparison) and report lmms-eval runs"
    )
    eval_sub = p_eval.add_subparsers(dest="eval_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--batch_size", type=int, default=64, help="images or texts per forward")
        p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
        p.add_argument(
            "--dtype",
            default="float32",
            choices=("float32", "bfloat16", "float16"),
            help="dtype the model is scored in, whatever the folder stores (default "
            "float32, as the paper's evaluation)",
        )

    p = eval_sub.add_parser("mmvp-vlm", help="MMVP-VLM as the paper (9 patterns x 15 pairs)")
    p.add_argument("--model", action="append", required=True, help="a CLIP/SigLIP folder; repeat")
    p.add_argument("--name", action="append", help="table label per --model (default folder)")
    p.add_argument("--data", required=True, help="the MMVP-VLM folder (Questions.csv + images)")
    p.add_argument("--output", default="runs/eval/mmvp-vlm")
    common(p)
    p.set_defaults(func=cmd_eval_mmvp)

    p = eval_sub.add_parser("zeroshot", help="zero-shot classification and retrieval")
    p.add_argument("--model", action="append", required=True, help="a CLIP/SigLIP folder; repeat")
    p.add_argument("--name", action="append", help="table label per --model (default folder)")
    p.add_argument("--classification", help="class folder (sub-folder per class)")
    p.add_argument("--templates", help="prompt templates file, one per line with {c}")
    p.add_argument("--retrieval", help="image-caption JSON")
    p.add_argument("--output", default="runs/eval/zeroshot")
    common(p)
    p.set_defaults(func=cmd_eval_zeroshot)

    p = eval_sub.add_parser("compare", help="base vs enhanced: one report and one figure")
    p.add_argument("base")
    p.add_argument("enhanced")
    p.add_argument("--mmvp", help="the MMVP-VLM folder")
    p.add_argument("--classification", help="class folder (sub-folder per class)")
    p.add_argument("--templates", help="prompt templates file, one per line with {c}")
    p.add_argument("--retrieval", help="image-caption JSON")
    p.add_argument("--base_name", default="base")
    p.add_argument("--enhanced_name", default="enhanced")
    p.add_argument("--output", default="runs/eval/compare")
    common(p)
    p.set_defaults(func=cmd_eval_compare)

    p = eval_sub.add_parser(
        "make-benchmark", help="write a generated MMVP-VLM-format benchmark (format fixture)"
    )
    p.add_argument("out")
    p.add_argument("--pairs_per_pattern", type=int, default=15)
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--with_zeroshot",
        action="store_true",
        help="also write a tiny class folder and caption JSON under OUT/zeroshot",
    )
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_eval_make_benchmark)

    # `report` was its first name; kept as an alias so existing scripts keep working
    p = eval_sub.add_parser(
        "lmms-report",
        aliases=["report"],
        help="paper metrics from lmms-eval runs only (mmvp, cv_bench, pope "
        "--log_samples outputs), one RESULTS_DIR per model",
    )
    p.add_argument(
        "results_dirs",
        nargs="+",
        metavar="RESULTS_DIR",
        help="an lmms-eval --output_path of one model (run with --log_samples)",
    )
    p.add_argument("--name", action="append", help="table label per RESULTS_DIR (default folder)")
    p.add_argument("--output", default="runs/eval/lmms-report")
    p.set_defaults(func=cmd_eval_lmms_report)
