"""The real CLI's training step vs a bare loop at the same model and shapes: prints ratios.

    OMP_NUM_THREADS=1 python -m benchmarks.cli_step --rounds 3 --steps 60 --zero 2 0

"cli" is `genhancer enhance --preset tiny --zero Z` as a user runs it (accelerate launch,
DeepSpeed ZeRO-2 for Z=2 or one plain process for Z=0, the trainer's data stream, logging,
checkpoint checks), once per `--zero` value; its per-step time is the
trainer's own: batch / the images_per_s it logs (TensorBoard scalars, one per `run.log_every`
steps; checkpoint and preview time left out), the median over stage 1's steps after
`--skip` warm-up steps. "bare" is the same Enhancer at the same shapes in this process, stage-1
policy, on one batch from the same data stream: forward, backward, gradient clipping, AdamW,
nothing else. The two are run interleaved (cli, bare, cli, ...), so that machine load hits both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cli_step_seconds(
    encoder: Path, out: Path, steps: int, skip: int, zero: int, overrides: list[str]
) -> list[float]:
    """Stage 1 of `genhancer enhance --preset tiny --zero Z` in its own processes -> s/step
    per log."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from genhancer_llava.config import load_config

    cmd = [
        sys.executable,
        "-m",
        "genhancer_llava.cli",
        "enhance",
        "--preset",
        "tiny",
        "--output",
        str(out),
        "--overwrite",
        "--zero",
        str(zero),
        f"encoder.path={encoder}",
        f"stage1.steps={steps}",
        "stage2.steps=1",
        *overrides,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: the CLI run failed:\n{proc.stderr[-3000:]}")
    batch = load_config("tiny", overrides=overrides).optim.per_device_batch_size
    events = sorted((out / "stage1").rglob("events.out.tfevents.*"))
    if not events:
        raise SystemExit(f"error: no TensorBoard events under {out / 'stage1'}")
    acc = EventAccumulator(str(events[-1].parent))
    acc.Reload()
    rates = [e for e in acc.Scalars("images_per_s") if e.step > skip]
    return [batch / e.value for e in rates]


class BareStep:
    """The tiny preset's stage-1 step with nothing around it."""

    def __init__(self, encoder: Path, overrides: list[str]) -> None:
        import torch

        from genhancer_llava.cache import model_inputs
        from genhancer_llava.config import load_config
        from genhancer_llava.data import build_stream, collate
        from genhancer_llava.models.enhancer import apply_stage_policy, build_enhancer
        from genhancer_llava.models.targets import build_target
        from genhancer_llava.train.optim import build_optimizer

        cfg = load_config("tiny", overrides=[f"encoder.path={encoder}", *overrides])
        torch.manual_seed(0)
        self.enhancer = build_enhancer(cfg)
        apply_stage_policy(self.enhancer, "stage1", cfg.lora)
        target = build_target(cfg.target, "cpu", torch.float32)
        stream = build_stream(
            cfg.data,
            cfg.encoder.image_size,
            self.enhancer.encoder.image_mean,
            self.enhancer.encoder.image_std,
            batch_size=cfg.optim.per_device_batch_size,
        )
        items = iter(stream)
        batch = collate([next(items) for _ in range(cfg.optim.per_device_batch_size)])
        self.inputs = model_inputs(target, batch, "cpu", cached_condition=False)
        self.optimizer, _ = build_optimizer(cfg, self.enhancer, cfg.stage1.lr, "cpu")
        self.params = [p for p in self.enhancer.parameters() if p.requires_grad]
        self.clip = cfg.optim.grad_clip
        self.enhancer.train()

    def __call__(self) -> float:
        import torch

        tic = time.perf_counter()
        loss = sum(self.enhancer(**self.inputs).values())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return time.perf_counter() - tic


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cli_step",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="stage-1 steps per CLI run")
    parser.add_argument("--skip", type=int, default=10, help="warm-up steps left out")
    parser.add_argument(
        "--zero",
        type=int,
        nargs="+",
        default=[2],
        choices=[0, 2, 3],
        help="the CLI's --zero values to time (each against the bare step)",
    )
    parser.add_argument("overrides", nargs="*", help="key=value for both sides")
    args = parser.parse_args(argv)
    import torch

    from genhancer_llava.models.tiny import make_tiny_clip

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work = Path(tempfile.mkdtemp(prefix="genhancer-cli-step-"))
    encoder = make_tiny_clip(work / "tiny-clip")
    bare = BareStep(encoder, args.overrides)
    for _ in range(args.skip):
        bare()
    ratios: dict[int, list[float]] = {z: [] for z in args.zero}
    cli_all: dict[int, list[float]] = {z: [] for z in args.zero}
    bare_all: list[float] = []
    for r in range(args.rounds):
        for zero in args.zero:  # interleaved: cli (each --zero), bare, cli, ...
            cli = cli_step_seconds(
                encoder, work / "run", args.steps, args.skip, zero, args.overrides
            )
            plain = [bare() for _ in range(args.steps - args.skip)]
            cli_s, bare_s = statistics.median(cli), statistics.median(plain)
            ratios[zero].append(cli_s / bare_s)
            cli_all[zero] += cli
            bare_all += plain
            print(
                f"[round {r + 1}] cli --zero {zero} {cli_s * 1e3:.1f} ms/step, bare "
                f"{bare_s * 1e3:.1f} ms/step, ratio {cli_s / bare_s:.2f}",
                file=sys.stderr,
                flush=True,
            )
    print(
        f"tiny preset stage 1, {torch.get_num_threads()} thread(s), medians of "
        f"{args.steps - args.skip} steps x {args.rounds} rounds; bare "
        f"{statistics.median(bare_all) * 1e3:.1f} ms/step"
    )
    for zero in args.zero:
        print(
            f"  cli --zero {zero}: {statistics.median(cli_all[zero]) * 1e3:.1f} ms/step; "
            f"cli / bare = {statistics.median(ratios[zero]):.2f} "
            f"(rounds: {', '.join(f'{x:.2f}' for x in ratios[zero])})"
        )


if __name__ == "__main__":
    main()
