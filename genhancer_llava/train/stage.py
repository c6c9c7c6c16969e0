"""One training loop for every stage (stage1, stage2 lora-only/all, end-to-end).

Distribution comes from the launcher: `accelerate launch --config_file <zero2|zero3>.yaml`
makes this DeepSpeed ZeRO; a plain `python -m genhancer_llava.train` runs one process. Only the
Enhancer goes through `accelerator.prepare`; the target producer (autoencoder or pixels) stays
outside, frozen. Settings the launcher config leaves as "auto" (gradient accumulation, clipping,
precision) come from the run's config, the single source of truth.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import Config
from ..data import build_dataset, collate
from ..enhancer import (
    STAGE_POLICIES,
    Enhancer,
    apply_stage_policy,
    build_enhancer,
    trainable_parameter_table,
)
from ..errors import GenhancerError
from ..run_dir import RunDir, load_module, save_tensors
from ..targets import build_target

__all__ = ["main", "train_stage", "policy_for", "StageResult"]


def policy_for(cfg: Config, stage: str) -> str:
    return {"stage1": "stage1", "stage2": cfg.stage2.mode, "end-to-end": "end-to-end"}[stage]


def stage_settings(cfg: Config, stage: str) -> tuple[int, float]:
    """(optimiser steps, learning rate); end-to-end trains from scratch with stage 1's."""
    s = cfg.stage2 if stage == "stage2" else cfg.stage1
    return s.steps, s.lr


def resolve_mixed_precision(value: str) -> str:
    if value == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    return value


@dataclass
class StageResult:
    stage: str
    policy: str
    steps: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    images: int = 0
    skipped: int = 0
    seconds: float = 0.0
    distributed: dict[str, Any] = field(default_factory=dict)


# ---- setup ---------------------------------------------------------------------------------


def setup_accelerator(cfg: Config, run: RunDir, stage: str) -> Accelerator:
    handlers = []
    if not torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        # launched processes on CPU talk over gloo; a plain single process needs no group
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.optim.gradient_accumulation_steps,
        mixed_precision=resolve_mixed_precision(cfg.run.mixed_precision),
        log_with="tensorboard",
        project_dir=str(run.logs(stage)),
        kwargs_handlers=handlers,
    )
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:
        ds = plugin.deepspeed_config
        ds["gradient_clipping"] = cfg.optim.grad_clip
        ds["gradient_accumulation_steps"] = cfg.optim.gradient_accumulation_steps
    return accelerator


def build_model(cfg: Config, run: RunDir, stage: str) -> tuple[Enhancer, str]:
    policy = policy_for(cfg, stage)
    rule = STAGE_POLICIES[policy]
    if rule.from_stage1:
        final = run.final("stage1")
        if not (final / "denoiser.safetensors").is_file():
            raise GenhancerError(
                f"{stage} ({policy}) starts from the stage-1 state, but {final} is missing; run "
                "stage 1 first (genhancer enhance runs both), or set schedule=end-to-end"
            )
    enhancer = build_enhancer(cfg)
    if rule.from_stage1:
        load_module(enhancer.projector, final / "projector.safetensors")
        load_module(enhancer.denoiser, final / "denoiser.safetensors")
    apply_stage_policy(enhancer, policy, cfg.lora)
    return enhancer, policy


def build_dataloader(cfg: Config, enhancer: Enhancer) -> DataLoader:
    dataset = build_dataset(
        cfg.data, cfg.encoder.image_size, enhancer.encoder.image_mean,
        enhancer.encoder.image_std, seed=cfg.run.seed,
    )
    if len(dataset) < cfg.optim.per_device_batch_size:
        raise GenhancerError(
            f"{len(dataset)} images cannot fill one batch of optim.per_device_batch_size="
            f"{cfg.optim.per_device_batch_size}; add images or lower the batch size"
        )
    return DataLoader(
        dataset,
        batch_size=cfg.optim.per_device_batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=cfg.data.num_workers,
        persistent_workers=cfg.data.num_workers > 0,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(cfg.run.seed),
    )


def build_optimizer(cfg: Config, enhancer: Enhancer, lr: float):
    params = [p for p in enhancer.parameters() if p.requires_grad]
    # torch's AdamW, not DeepSpeed's: identical maths, and nothing to compile on first use.
    optimizer = torch.optim.AdamW(
        params, lr=lr, betas=cfg.optim.betas, eps=cfg.optim.eps,
        weight_decay=cfg.optim.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)  # constant, no warmup
    return optimizer, scheduler


# ---- checkpoints ---------------------------------------------------------------------------


def save_checkpoint(accelerator: Accelerator, run: RunDir, stage: str, step: int, keep: int):
    """An accelerate state (model, optimiser, scheduler, RNG) plus the step, in step-N."""
    folder = run.checkpoints(stage) / f"step-{step:08d}"
    accelerator.save_state(str(folder))  # every rank writes its part under ZeRO
    if accelerator.is_main_process:
        (folder / "progress.json").write_text(json.dumps({"step": step}))
        done = sorted(p for p in run.checkpoints(stage).glob("step-*")
                      if (p / "progress.json").is_file())
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def latest_checkpoint(run: RunDir, stage: str) -> Path | None:
    done = sorted(p for p in run.checkpoints(stage).glob("step-*")
                  if (p / "progress.json").is_file())
    return done[-1] if done else None


def resume(accelerator: Accelerator, run: RunDir, stage: str, which: str) -> int:
    folder = latest_checkpoint(run, stage) if which == "latest" else Path(which)
    if folder is None:
        accelerator.print(f"[{stage}] no checkpoint to resume from; starting at step 0")
        return 0
    if not (folder / "progress.json").is_file():
        raise GenhancerError(f"{folder} is not a complete checkpoint (progress.json missing)")
    accelerator.load_state(str(folder))
    step = json.loads((folder / "progress.json").read_text())["step"]
    accelerator.print(f"[{stage}] resumed from {folder} at step {step}")
    return step


def save_final(
    accelerator: Accelerator, model: torch.nn.Module, run: RunDir, stage: str,
    result: StageResult, table: dict[str, Any],
) -> None:
    """projector/denoiser weights, the LoRA adapter (peft format) and summary.json."""
    state = accelerator.get_state_dict(model)  # gathered on rank 0 under ZeRO-3
    if accelerator.is_main_process:
        final = run.final(stage)
        tmp = final.with_name("final.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for part in ("projector", "denoiser"):
            save_tensors(_sub_state(state, f"{part}."), tmp / f"{part}.safetensors")
        if STAGE_POLICIES[result.policy].encoder_lora:
            _save_adapter(accelerator.unwrap_model(model), state, tmp / "adapter")
        (tmp / "summary.json").write_text(json.dumps(_summary(result, table), indent=2))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    accelerator.wait_for_everyone()


def _sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {
        k[len(prefix):]: (v.float() if v.is_floating_point() else v)
        for k, v in state.items() if k.startswith(prefix)
    }


def _save_adapter(enhancer: Enhancer, state: dict[str, torch.Tensor], folder: Path) -> None:
    from peft import get_peft_model_state_dict

    peft_model = enhancer.encoder.model
    adapter = get_peft_model_state_dict(peft_model, state_dict=_sub_state(state, "encoder.model."))
    folder.mkdir(parents=True)
    save_tensors(adapter, folder / "adapter_model.safetensors")
    peft_model.peft_config["default"].save_pretrained(str(folder))


def _summary(result: StageResult, table: dict[str, Any]) -> dict[str, Any]:
    return {
        "stage": result.stage,
        "policy": result.policy,
        "steps": result.steps,
        "loss_first": result.losses[0][1] if result.losses else None,
        "loss_last": result.losses[-1][1] if result.losses else None,
        "losses": result.losses,
        "images_seen": result.images,
        "images_skipped": result.skipped,
        "seconds": round(result.seconds, 2),
        "parameters": table,
        "distributed": result.distributed,
    }


# ---- the loop ------------------------------------------------------------------------------


def _batches(dataloader: DataLoader):
    epoch = 0
    while True:
        if hasattr(dataloader, "set_epoch"):
            dataloader.set_epoch(epoch)
        yield from dataloader
        epoch += 1


def train_stage(cfg: Config, run: RunDir, stage: str, resume_from: str | None = None):
    """Train one stage of `run` to its final state; returns its `StageResult`."""
    accelerator = setup_accelerator(cfg, run, stage)
    steps, lr = stage_settings(cfg, stage)
    set_seed(cfg.run.seed)  # same initial weights on every rank
    enhancer, policy = build_model(cfg, run, stage)
    set_seed(cfg.run.seed, device_specific=True)  # different noise and timesteps per rank
    table = trainable_parameter_table(enhancer)
    dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    target = build_target(cfg.target, accelerator.device, dtype)
    dataloader = build_dataloader(cfg, enhancer)
    optimizer, scheduler = build_optimizer(cfg, enhancer, lr)
    model, optimizer, dataloader, scheduler = accelerator.prepare(
        enhancer, optimizer, dataloader, scheduler
    )
    start = resume(accelerator, run, stage, resume_from) if resume_from else 0
    accelerator.init_trackers("genhancer", config={"stage": stage, "policy": policy, "lr": lr})
    accelerator.print(_table_text(stage, policy, table))

    result = StageResult(stage=stage, policy=policy, steps=steps,
                         distributed=_distribution(accelerator))
    bar = tqdm(total=steps, initial=start, desc=stage, unit="step",
               disable=not accelerator.is_local_main_process,
               mininterval=1.0 if sys.stderr.isatty() else 30.0)  # quieter in batch logs
    batches = _batches(dataloader)
    step, images = start, 0
    micro_losses: list[float] = []  # this optimiser step's micro-batches
    window: list[float] = []  # optimiser-step losses since the last log line
    tic = time.perf_counter()
    model.train()
    while step < steps:
        batch = next(batches)
        result.skipped += int(batch["skipped"])
        if "pixel_values" not in batch:
            continue  # every image of this batch was unreadable
        tokens = target.encode(batch["target_pixels"])
        with accelerator.accumulate(model):
            loss = model(batch["pixel_values"], tokens)["flow_loss"]
            if not torch.isfinite(loss):
                raise GenhancerError(
                    f"[{stage}] the loss became {loss.item()} at step {step}; lower the lr "
                    f"(now {lr}) or check the data; checkpoints so far are kept"
                )
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        micro_losses.append(loss.detach().float().item())
        images += batch["pixel_values"].shape[0]
        if not accelerator.sync_gradients:
            continue
        step += 1
        window.append(sum(micro_losses) / len(micro_losses))
        micro_losses.clear()
        if step == start + 1 or step % cfg.run.log_every == 0 or step == steps:
            # mean over the steps since the last log line and over all ranks
            local = torch.tensor(sum(window) / len(window), device=accelerator.device)
            mean = accelerator.reduce(local, "mean").item()
            window.clear()
            rate = images * accelerator.num_processes / max(time.perf_counter() - tic, 1e-9)
            result.losses.append((step, mean))
            accelerator.log({"flow_loss": mean, "images_per_s": rate}, step=step)
            bar.set_postfix(loss=f"{mean:.4f}", img_s=f"{rate:.1f}")
        bar.update(1)
        if step % cfg.run.save_every == 0 and step < steps:
            save_checkpoint(accelerator, run, stage, step, cfg.run.keep_checkpoints)
    bar.close()
    result.images = images * accelerator.num_processes
    result.seconds = time.perf_counter() - tic
    save_final(accelerator, model, run, stage, result, table)
    if result.losses:
        accelerator.print(
            f"[{stage}] {policy}: flow_loss {result.losses[0][1]:.4f} (step "
            f"{result.losses[0][0]}) -> {result.losses[-1][1]:.4f} (step {result.losses[-1][0]}) "
            f"in {result.seconds:.1f} s; skipped images: {result.skipped}"
        )
    accelerator.end_training()
    return result


def _distribution(accelerator: Accelerator) -> dict[str, Any]:
    plugin = accelerator.state.deepspeed_plugin
    return {
        "type": str(accelerator.distributed_type.value),
        "num_processes": accelerator.num_processes,
        "zero_stage": plugin.zero_stage if plugin is not None else None,
        "mixed_precision": accelerator.mixed_precision,
        "device": str(accelerator.device),
    }


def _table_text(stage: str, policy: str, table: dict[str, dict[str, int]]) -> str:
    rows = [f"[{stage}] policy {policy}: trainable / total parameters"]
    for group, row in table.items():
        rows.append(f"  {group:<14} {row['trainable']:>14,} / {row['total']:>14,}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genhancer_llava.train",
                                     description="Train one stage of a GenHancer run.")
    parser.add_argument("--run_dir", required=True, help="run folder holding config.yaml")
    parser.add_argument("--stage", required=True, choices=["stage1", "stage2", "end-to-end"])
    parser.add_argument("--resume", default=None, help="'latest' or a checkpoint folder")
    args = parser.parse_args(argv)
    try:
        run = RunDir(Path(args.run_dir))
        train_stage(run.load_config(), run, args.stage, args.resume)
    except GenhancerError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

