"""Our training step vs the authors' (GenHancer reference code) at identical shapes.

    OMP_NUM_THREADS=1 python -m benchmarks.side_by_side --ref-src /tmp/genhancer_ref \\
        --shapes scaled-64 scaled-224 --stages 1 2_only --rounds 3

Every measurement is its own process (one thread by default), so each peak-memory figure is
clean; the processes run interleaved (reference, ours, ours, reference, ...) so that load on a
shared machine hits both sides alike. Each process builds one side at the given shapes, times
`--steps` steps after `--warmup`, and prints one JSON line: median s/step, images/s, peak memory
above its own import baseline (RSS on CPU, allocated bytes on CUDA), and the FLOPs of one step
(torch's FlopCounterMode). The table gives, per shapes and stage, the medians over rounds and:

    speed-up   reference s/step / ours s/step (> 1: ours is faster): the median over rounds of
               each round's back-to-back pair, and in brackets the ratio of the fastest steps
    memory     ours peak-over-import / reference's (< 1: ours needs less)
    GFLOP/s    FLOPs per step / s per step, and its fraction of a plain matmul on this device

"ours" reads the cache (`data.kind=cached`) unless `--on-the-fly`. Stage "2_only" is the paper's
default stage 2 (LoRA on the encoder; projector and DiT frozen, in the graph).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time

STAGE_NAMES = {"1": "stage 1", "2_only": "stage 2"}


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_gflops(device: str, dtype, n: int = 1024, repeats: int = 5) -> float:
    """A plain square matmul's rate on this device and thread count: the ceiling to compare to."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def step_flops(step, prepared) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(prepared)
    return counter.get_total_flops()


def run_child(args) -> dict:
    """Build one side, time it, print its JSON line."""
    import torch

    from .shapes import by_name

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    shapes = by_name(args.shapes[0], args.batch)
    if args.child == "reference":
        from .reference_side import ReferenceStep, import_reference

        ref = import_reference(args.ref_src)
        # every module a side uses is imported before its baseline (transformers and diffusers
        # import their model classes lazily, at first use)
        from peft import get_peft_model  # noqa: F401
        from transformers import CLIPModel  # noqa: F401
    else:
        from diffusers import AutoencoderKL, FluxTransformer2DModel  # noqa: F401
        from peft import get_peft_model  # noqa: F401
        from transformers import CLIPVisionModelWithProjection  # noqa: F401

        from genhancer_llava.cache import model_inputs  # noqa: F401
        from genhancer_llava.models.enhancer import build_enhancer  # noqa: F401
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_mb()
    if args.child == "reference":
        step = ReferenceStep(ref, shapes, args.stages[0], args.device, dtype)
    else:
        from .our_side import OurStep

        step = OurStep(shapes, args.stages[0], args.device, dtype, from_cache=not args.on_the_fly)
    gen = torch.Generator().manual_seed(1)
    crops = [
        torch.randint(
            0,
            256,
            (shapes.batch, 3, shapes.image_size, shapes.image_size),
            dtype=torch.uint8,
            generator=gen,
        )
        for _ in range(2)
    ]
    if args.child == "reference":
        pool = [c.float().div(255) for c in crops]
    elif args.prepare:  # the cache, written by its own process as `genhancer cache` would
        with open(args.prepare, "wb") as fh:
            pickle.dump([step.prepare(c) for c in crops], fh)
        return {}
    elif args.pool:
        with open(args.pool, "rb") as fh:
            pool = pickle.load(fh)
    else:
        pool = [step.prepare(c) for c in crops]
    times, losses = [], []
    for i in range(args.warmup + args.steps):
        _sync(args.device)
        t0 = time.perf_counter()
        loss = step(pool[i % 2])
        _sync(args.device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    if args.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20 - base
    else:
        peak = _peak_rss_mb() - base
    flops = step_flops(step, pool[0])
    matmul = matmul_gflops(args.device, dtype)  # this process, this moment's load
    sec = statistics.median(times)
    out = {
        "side": args.child,
        "shapes": shapes.name,
        "stage": args.stages[0],
        "device": args.device,
        "dtype": args.dtype,
        "batch": shapes.batch,
        "sec_per_step": sec,
        "sec_per_step_min": min(times),
        "images_per_s": shapes.batch / sec,
        "peak_over_import_mb": peak,
        "flops_per_step": flops,
        "gflops_per_s": flops / sec / 1e9,
        "matmul_gflops": matmul,
        "loss_first_last": [losses[0], losses[-1]],
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(out), flush=True)
    return out


def _child_command(args, side: str, shapes: str, stage: str) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.side_by_side",
        "--child",
        side,
        "--shapes",
        shapes,
        "--stages",
        stage,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--threads",
        str(args.threads),
    ]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    if args.ref_src:
        cmd += ["--ref-src", args.ref_src]
    if args.on_the_fly:
        cmd.append("--on-the-fly")
    return cmd


def _measure(args, side, shapes, stage, extra: tuple[str, ...] = ()) -> dict:
    if args.in_process:  # smoke runs: no process per measurement (memory figures not clean)
        if extra and extra[0] == "--prepare":
            return {}
        child = argparse.Namespace(
            **{
                **vars(args),
                "child": side,
                "shapes": [shapes],
                "stages": [stage],
                "prepare": None,
                "pool": None,
            }
        )
        return run_child(child)
    proc = subprocess.run(
        [*_child_command(args, side, shapes, stage), *extra],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS=str(args.threads or 1)),
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"error: the {side} step at {shapes} stage {stage} failed:\n" + proc.stderr[-3000:]
        )
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def table(results: list[dict], matmul: float, peak_tflops: float | None) -> str:
    """Markdown: medians over rounds, speed-up and memory ratios."""
    rows = [
        "| shapes | stage | ref s/step | ours s/step | speed-up (best) | ref img/s "
        "| ours img/s "
        "| ref peak MB | ours peak MB | memory ratio | ours GFLOP/s (of matmul) |"
        + (" ours MFU |" if peak_tflops else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if peak_tflops else ""),
    ]
    keys = sorted(
        {(r["shapes"], r["stage"]) for r in results},
        key=lambda k: (int(k[0].split("-")[-1]) if k[0][-1].isdigit() else 0, k[1]),
    )
    for shapes, stage in keys:
        pick = {
            side: [
                r for r in results if (r["shapes"], r["stage"], r["side"]) == (shapes, stage, side)
            ]
            for side in ("reference", "ours")
        }

        def med(side, field, pick=pick):
            values = [r[field] for r in pick[side]]
            return statistics.median(values) if values else float("nan")

        ref_s, our_s = med("reference", "sec_per_step"), med("ours", "sec_per_step")
        # each round's pair ran back to back (same machine load): the median of their ratios,
        # and the ratio of the fastest steps (noise on a shared machine only adds time)
        paired = statistics.median(
            a["sec_per_step"] / b["sec_per_step"]
            for a in pick["reference"]
            for b in pick["ours"]
            if a["round"] == b["round"]
        )
        best = min(r["sec_per_step_min"] for r in pick["reference"]) / min(
            r["sec_per_step_min"] for r in pick["ours"]
        )
        ref_m, our_m = med("reference", "peak_over_import_mb"), med("ours", "peak_over_import_mb")
        gflops = med("ours", "gflops_per_s")
        matmul = med("ours", "matmul_gflops")
        row = (
            f"| {shapes} | {STAGE_NAMES.get(stage, stage)} | {ref_s:.3f} | {our_s:.3f} | "
            f"{paired:.2f}x ({best:.2f}x) | {med('reference', 'images_per_s'):.1f} | "
            f"{med('ours', 'images_per_s'):.1f} | {ref_m:.0f} | {our_m:.0f} | "
            f"{our_m / ref_m:.2f} | {gflops:.1f} ({gflops / matmul:.0%}) |"
        )
        if peak_tflops:
            row += f" {gflops / 1e3 / peak_tflops:.1%} |"
        rows.append(row)
    return "\n".join(rows)


def alternate(args) -> None:
    """Both sides built in one process, their steps alternated (ours, reference, ours, ...):
    the fairest time ratio on a loaded machine (both see the same load); no memory figures."""
    import torch

    from .our_side import OurStep
    from .reference_side import ReferenceStep, import_reference
    from .shapes import by_name

    torch.set_num_threads(args.threads or torch.get_num_threads())
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    ref = import_reference(args.ref_src)
    print(
        "| shapes | stage | ref s/step median (min) | ours s/step median (min) | speed-up "
        "median (min) |\n|---|---|---|---|---|"
    )
    for name in args.shapes:
        shapes = by_name(name, args.batch)
        for stage in args.stages:
            sides = {
                "ours": OurStep(shapes, stage, args.device, dtype),
                "reference": ReferenceStep(ref, shapes, stage, args.device, dtype),
            }
            crops = torch.randint(
                0, 256, (shapes.batch, 3, shapes.image_size, shapes.image_size), dtype=torch.uint8
            )
            inputs = {"ours": sides["ours"].prepare(crops), "reference": crops.float() / 255}
            times = {"ours": [], "reference": []}
            for i in range(args.warmup + args.steps):
                for side, step in sides.items():
                    _sync(args.device)
                    t0 = time.perf_counter()
                    step(inputs[side])
                    _sync(args.device)
                    if i >= args.warmup:
                        times[side].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) for k, v in times.items()}
            low = {k: min(v) for k, v in times.items()}
            ratio, best = med["reference"] / med["ours"], low["reference"] / low["ours"]
            print(
                f"| {name} | {STAGE_NAMES[stage]} | {med['reference']:.3f} "
                f"({low['reference']:.3f}) | {med['ours']:.3f} ({low['ours']:.3f}) | "
                f"{ratio:.2f}x ({best:.2f}x) |",
                flush=True,
            )
            del sides


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.side_by_side",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--ref-src",
        default=os.environ.get("GENHANCER_SRC"),
        help="extracted GenHancer repository (or $GENHANCER_SRC)",
    )
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=["scaled-64", "scaled-224"],
        help="scaled-64, scaled-224, paper, tiny",
    )
    parser.add_argument("--stages", nargs="+", default=["1", "2_only"], choices=list(STAGE_NAMES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch", type=int, default=None, help="default: the shapes' batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--on-the-fly", action="store_true", help="ours without the cache")
    parser.add_argument("--ours-only", action="store_true", help="no reference side (smoke runs)")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's peak TFLOP/s at --dtype: adds an MFU column",
    )
    parser.add_argument("--json", help="also write every measurement to this file")
    parser.add_argument(
        "--alternate",
        action="store_true",
        help="time only: both sides in one process, steps alternated",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="measure in this process (fast smoke runs; memory not comparable)",
    )
    parser.add_argument("--child", choices=["reference", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--prepare", help=argparse.SUPPRESS)  # write the cached batches here
    parser.add_argument("--pool", help=argparse.SUPPRESS)  # read them from here
    args = parser.parse_args(argv)
    if args.child:
        run_child(args)
        return
    if not args.ours_only and not args.ref_src:
        parser.error(
            "name the extracted GenHancer copy with --ref-src (or GENHANCER_SRC), "
            "or pass --ours-only"
        )
    if args.alternate:
        alternate(args)
        return
    import torch

    torch.set_num_threads(args.threads or torch.get_num_threads())
    matmul = matmul_gflops(args.device, {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype])
    sides = ["ours"] if args.ours_only else ["reference", "ours"]
    results = []
    pools = {}
    cache_dir = tempfile.mkdtemp(prefix="genhancer-bench-")
    if not args.on_the_fly:  # ours reads a cache written beforehand, outside its measurement
        for shapes in args.shapes:
            for stage in args.stages:
                pools[shapes, stage] = os.path.join(cache_dir, f"{shapes}-{stage}.pkl")
                _measure(args, "ours", shapes, stage, ("--prepare", pools[shapes, stage]))
    for r in range(args.rounds):
        for shapes in args.shapes:
            for stage in args.stages:
                order = sides if r % 2 == 0 else sides[::-1]  # alternate who goes first
                for side in order:
                    pool = pools.get((shapes, stage)) if side == "ours" else None
                    res = _measure(args, side, shapes, stage, ("--pool", pool) if pool else ())
                    res["round"] = r
                    results.append(res)
                    print(
                        f"[round {r + 1}] {shapes} {STAGE_NAMES[stage]} {side}: "
                        f"{res['sec_per_step']:.3f} s/step, "
                        f"{res['peak_over_import_mb']:.0f} MB over import",
                        file=sys.stderr,
                        flush=True,
                    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"matmul_gflops": matmul, "results": results}, fh, indent=1)
    print(
        f"plain {args.dtype} matmul on {args.device} ({args.threads} thread(s)): "
        f"{matmul:.1f} GFLOP/s; ours {'on the fly' if args.on_the_fly else 'from the cache'}; "
        f"medians over {args.rounds} rounds of {args.steps} steps"
    )
    if args.ours_only:
        for res in results:
            print(json.dumps(res))
        return
    print(table(results, matmul, args.peak_tflops))


if __name__ == "__main__":
    main()
