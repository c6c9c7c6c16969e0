"""One training loop for every stage (stage1, stage2 lora-only/all, end-to-end).

Distribution comes from the launcher: `accelerate launch --config_file <zero2|zero3>.yaml`
makes this DeepSpeed ZeRO; a plain `python -m genhancer_llava.train` runs one process. Only the
Enhancer goes through `accelerator.prepare`; the target producer (autoencoder or pixels) stays
outside, frozen. The data stream shards itself by rank and worker (see `genhancer_llava.data`)
and is not prepared either, so that its position can be restored exactly. Settings the launcher
config leaves as "auto" (batch sizes, accumulation, clipping, precision) come from the run's
config, the single source of truth.
"""

from __future__ import annotations

from . import deepspeed_env  # noqa: F401  (sets DS_ACCELERATOR before accelerate loads)

# isort: split

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..cache import check_cache, model_inputs
from ..config import Config
from ..data import build_stream, collate
from ..errors import STOPPED_EXIT, GenhancerError, Stopped
from ..models.diagnostics import shuffle_gap
from ..models.enhancer import (
    Enhancer,
    apply_speed_options,
    apply_stage_policy,
    build_enhancer,
    trainable_parameter_table,
)
from ..models.targets import build_target
from ..stages import STAGE_NAMES, STAGE_POLICIES, get_stage
from ..utils import atomic_dir, default_dtype
from .accelerate_run import report_error
from .checkpoint import Progress, load_checkpoint, read_progress, save_checkpoint
from .faults import kill_self, planned_faults, signal_self
from .meter import WindowMeter
from .optim import build_optimizer
from .preview import preview_batch, preview_grid, save_grid
from .processes import StopRequest, guard_worker
from .run_dir import RunDir, load_module, save_tensors
from .run_lock import TRAIN_LOCK, RunLock

__all__ = ["main", "train_stage", "StageTrainer"]


def resolve_mixed_precision(value: str) -> str:
    if value == "auto":
        return "bf16" if default_dtype() == torch.bfloat16 else "no"
    return value


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
        ds["train_micro_batch_size_per_gpu"] = cfg.optim.per_device_batch_size
        ds["train_batch_size"] = global_batch(cfg, accelerator.num_processes)
    return accelerator


def global_batch(cfg: Config, world_size: int) -> int:
    o = cfg.optim
    return o.per_device_batch_size * o.gradient_accumulation_steps * world_size


def build_model(cfg: Config, run: RunDir, stage: str) -> tuple[Enhancer, str]:
    spec = get_stage(cfg, stage)
    if spec.starts_from is not None:
        final = run.final(spec.starts_from)
        if not (final / "denoiser.safetensors").is_file():
            raise GenhancerError(
                f"{stage} ({spec.policy}) starts from the stage-1 state, but {final} is missing; "
                "run stage 1 first (genhancer enhance runs both), or set schedule=end-to-end"
            )
    enhancer = build_enhancer(cfg)
    if spec.starts_from is not None:
        load_module(enhancer.projector, final / "projector.safetensors")
        load_module(enhancer.denoiser, final / "denoiser.safetensors")
    apply_stage_policy(enhancer, spec.policy, cfg.lora)
    apply_speed_options(enhancer, cfg.run.compile_denoiser, cfg.run.activation_checkpointing)
    return enhancer, spec.policy


def build_dataloader(
    cfg: Config, enhancer: Enhancer, accelerator: Accelerator, start_batches: int
) -> DataLoader:
    if cfg.data.kind == "cached":
        check_cache(cfg)  # made for this run's encoder, target and image size
    stream = build_stream(
        cfg.data,
        cfg.encoder.image_size,
        enhancer.encoder.image_mean,
        enhancer.encoder.image_std,
        seed=cfg.run.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        batch_size=cfg.optim.per_device_batch_size,
        start_batches=start_batches,
    )
    return DataLoader(
        stream,
        batch_size=cfg.optim.per_device_batch_size,
        num_workers=cfg.data.num_workers,
        collate_fn=collate,
        # its own generator: creating the loader must not advance the training RNG
        generator=torch.Generator().manual_seed(cfg.run.seed),
    )


# ---- the stage's final state ---------------------------------------------------------------


def save_final(
    accelerator: Accelerator,
    model: torch.nn.Module,
    run: RunDir,
    stage: str,
    summary: dict[str, Any],
) -> None:
    """projector/denoiser weights, the LoRA adapter (peft format) and summary.json."""
    state = accelerator.get_state_dict(model)  # gathered on rank 0 under ZeRO-3
    if accelerator.is_main_process:
        with atomic_dir(run.final(stage)) as tmp:  # final.tmp -> final
            for part in ("projector", "denoiser"):
                save_tensors(_sub_state(state, f"{part}."), tmp / f"{part}.safetensors")
            if STAGE_POLICIES[summary["policy"]].encoder_lora:
                _save_adapter(accelerator.unwrap_model(model), state, tmp / "adapter")
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
    accelerator.wait_for_everyone()


def _sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {
        k[len(prefix) :]: (v.float() if v.is_floating_point() else v)
        for k, v in state.items()
        if k.startswith(prefix)
    }


def _save_adapter(enhancer: Enhancer, state: dict[str, torch.Tensor], folder: Path) -> None:
    from peft import get_peft_model_state_dict

    peft_model = enhancer.encoder.model
    adapter = get_peft_model_state_dict(peft_model, state_dict=_sub_state(state, "encoder.model."))
    folder.mkdir(parents=True)
    save_tensors(adapter, folder / "adapter_model.safetensors")
    peft_model.peft_config["default"].save_pretrained(str(folder))


def _distribution(accelerator: Accelerator, cfg: Config) -> dict[str, Any]:
    plugin = accelerator.state.deepspeed_plugin
    return {
        "type": str(accelerator.distributed_type.value),
        "num_processes": accelerator.num_processes,
        "zero_stage": plugin.zero_stage if plugin is not None else None,
        "mixed_precision": accelerator.mixed_precision,
        "device": str(accelerator.device),
        "global_batch": global_batch(cfg, accelerator.num_processes),
    }


# ---- the loop ------------------------------------------------------------------------------


def _every(step: int, period: int) -> bool:
    return period > 0 and step % period == 0


def _all_finite(accelerator: Accelerator, loss: torch.Tensor) -> bool:
    """The same answer on every rank, so that all stop together (one host sync)."""
    bad = (~torch.isfinite(loss.detach())).float().reshape(1)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, "sum")
    return bad.item() == 0


def _agreed_stop(accelerator: Accelerator, stop: StopRequest) -> str | None:
    """The stop signal's name if any rank got one, on every rank alike (one tiny all-reduce)."""
    got = [float(stop.signal == signal.SIGTERM), float(stop.signal == signal.SIGINT)]
    if accelerator.num_processes > 1:  # one process: nothing to agree on, no device sync
        got = accelerator.reduce(torch.tensor(got, device=accelerator.device), "sum").tolist()
    if got[0] > 0:
        return "SIGTERM"
    return "SIGINT" if got[1] > 0 else None


class StageTrainer:
    """One stage, recipe-style: setup (here), `fit` (the loop), `checkpoint`, `finish`."""

    def __init__(
        self,
        cfg: Config,
        run: RunDir,
        stage: str,
        resume_from: str | None = None,
        stop: StopRequest | None = None,
    ):
        self.cfg, self.run, self.stage = cfg, run, stage
        self.stop_request = stop or StopRequest()  # not installed: a plain flag nobody sets
        self.accelerator = accelerator = setup_accelerator(cfg, run, stage)
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        spec = get_stage(cfg, stage)
        self.steps, self.lr = spec.steps, spec.lr
        set_seed(cfg.run.seed)  # same initial weights on every rank
        enhancer, self.policy = build_model(cfg, run, stage)
        set_seed(cfg.run.seed, device_specific=True)  # different noise and timesteps per rank
        self.table = trainable_parameter_table(enhancer)
        self.loss_name = "mask_loss" if cfg.denoiser.kind == "masked" else "flow_loss"
        dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
        self.target = build_target(cfg.target, accelerator.device, dtype)
        checkpoint, pin = None, None
        plugin = accelerator.state.deepspeed_plugin
        zero_stage = plugin.zero_stage if plugin is not None else 0
        self.progress = Progress(batches_per_rank=[0] * self.world, zero_stage=zero_stage)
        if resume_from:
            checkpoint, self.progress, pin = read_progress(
                run, stage, resume_from, self.world, zero_stage, accelerator.print
            )
        self.batches_seen = self.progress.batches_per_rank[self.rank]
        self.dataloader = build_dataloader(cfg, enhancer, accelerator, self.batches_seen)
        self.previews = preview_batch(cfg, enhancer, cfg.run.preview_images)
        optimizer, scheduler = build_optimizer(cfg, enhancer, self.lr, accelerator.device)
        self.model, self.optimizer, self.scheduler = accelerator.prepare(
            enhancer, optimizer, scheduler
        )
        # clipped each step: the trainable ones only, listed once (not every parameter per step)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        if checkpoint is not None:
            load_checkpoint(accelerator, checkpoint)  # model, optimiser, scheduler, RNG states
            pin.release()  # loaded: rotation may delete it from now on
            accelerator.print(f"[{stage}] resumed from {checkpoint} at step {self.progress.step}")
        accelerator.init_trackers(
            "genhancer", config={"stage": stage, "policy": self.policy, "lr": self.lr}
        )
        accelerator.print(_table_text(stage, self.policy, self.table))
        # keys reach the file at checkpoints, so after a kill it matches the checkpoint resumed
        self.keys_path = (
            run.stage(stage) / f"keys-rank{self.rank}.txt" if cfg.data.log_keys else None
        )
        if self.keys_path and checkpoint is None:
            self.keys_path.unlink(missing_ok=True)
        self.pending_keys: list[str] = []
        self.step_losses: list[torch.Tensor] = []  # this optimiser step's micro-batch losses
        self.faults = planned_faults()  # read once, out of the loop
        self.images = self.skipped = 0  # this rank's, since the last checkpoint
        self.tic = time.perf_counter()
        self.meter = WindowMeter()  # this rank's images and training time since the last log

    def micro_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """Forward + backward of one micro-batch; the optimiser steps when accumulation ends.

        Returns the loss, detached and still on the device: the host waits for it only once
        per optimiser step (the finiteness check, before the step's last backward, which under
        DeepSpeed also applies the update) and at log time.
        """
        accelerator, model = self.accelerator, self.model
        # the target tokens come first (a sampled posterior draws from the RNG as on the fly)
        inputs = model_inputs(
            self.target,
            batch,
            accelerator.device,
            cached_condition=not STAGE_POLICIES[self.policy].encoder_lora,
        )
        with accelerator.accumulate(model):
            losses = model(**inputs)
            loss = sum(losses.values())  # one named loss per denoiser: flow_loss / mask_loss
            if self.faults.get("nan-loss") == self.progress.step + 1:
                loss = loss * float("nan")
            self.step_losses.append(loss.detach())
            if accelerator.sync_gradients and not _all_finite(
                accelerator, torch.stack(self.step_losses).sum()
            ):
                raise GenhancerError(
                    f"[{self.stage}] the loss became non-finite at step {self.progress.step + 1};"
                    f" lower the lr (now {self.lr}) or check the data; checkpoints so far are kept"
                )
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(self.trainable, self.cfg.optim.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        return loss.detach()

    def fit(self) -> None:
        cfg, progress = self.cfg, self.progress
        bar = tqdm(
            total=self.steps,
            initial=progress.step,
            desc=self.stage,
            unit="step",
            disable=not self.accelerator.is_local_main_process,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
        )  # quieter in batch logs
        window: list[torch.Tensor] = []  # optimiser-step losses since the last log line
        batches = iter(self.dataloader)
        self.model.train()
        self.stop_request.armed = True  # from here a stop signal means: this step, save, exit
        try:
            while progress.step < self.steps:
                batch = next(batches)
                self.batches_seen += 1
                self.skipped += batch["skipped"]
                if "pixel_values" not in batch:
                    continue  # every image of this batch was unreadable
                self.pending_keys.extend(batch["keys"])
                self.micro_step(batch)
                self.images += batch["pixel_values"].shape[0]
                self.meter.add(batch["pixel_values"].shape[0])
                if not self.accelerator.sync_gradients:
                    continue
                progress.step += 1
                step = progress.step
                window.append(torch.stack(self.step_losses).float().mean())  # on the device
                self.step_losses.clear()
                if not progress.losses or step % cfg.run.log_every == 0 or step == self.steps:
                    bar.set_postfix(self.log(step, window))
                    window = []
                bar.update(1)
                if self.faults:
                    self.inject_faults(step)
                if step < self.steps and _every(step, cfg.run.preview_every):
                    self.preview(f"step-{step:08d}.png")
                saved = step < self.steps and _every(step, cfg.run.save_every)
                if saved:
                    self.checkpoint()
                if step < self.steps:
                    stop = _agreed_stop(self.accelerator, self.stop_request)
                    if stop:
                        bar.close()
                        self.stop(stop, saved)
        finally:
            bar.close()  # before any error message, so that the message is the last line

    def inject_faults(self, step: int) -> None:
        """Test faults (GENHANCER_FAULT) right after an optimiser step."""
        if self.faults.get("kill-after-step") == step:
            kill_self()
        if self.faults.get("sigterm-after-step") == step:
            signal_self(signal.SIGTERM)

    def log(self, step: int, window: list[torch.Tensor]) -> dict[str, str]:
        """Mean loss over the steps since the last log line and over all ranks; images per
        second over the same window, all ranks, checkpoint and preview time left out. The one
        place the losses come to the host."""
        device = self.accelerator.device
        rate = torch.tensor(self.meter.images / self.meter.seconds(), device=device)
        local = torch.stack([torch.stack(window).mean().to(rate.device), rate])
        mean, rate = (self.accelerator.reduce(local, "sum") / self.world).tolist()
        rate *= self.world  # the sum of the ranks' rates
        self.meter.take()
        self.progress.losses.append([step, mean])
        self.accelerator.log({self.loss_name: mean, "images_per_s": rate}, step=step)
        return {"loss": f"{mean:.4f}", "img_s": f"{rate:.1f}"}

    def preview(self, name: str) -> None:
        """Runs on every rank (ZeRO-3 gathers parameters collectively); rank 0 writes it."""
        with self.meter.paused():
            self._preview(name)

    def _preview(self, name: str) -> None:
        encoder_views, target_views = self.previews
        image = preview_grid(
            self.accelerator.unwrap_model(self.model),
            self.target,
            encoder_views,
            target_views,
            self.cfg.run.preview_sample_steps,
            seed=self.cfg.run.seed,
            title=f"{self.stage}, step {self.progress.step} of {self.steps}",
        )
        if self.accelerator.is_main_process:
            save_grid(image, self.run.stage(self.stage) / "previews" / name)

    def shuffle_gap(self) -> dict[str, float]:
        """Relative rise of the loss with conditions shuffled in a batch (on every rank)."""
        count = min(64, max(2, self.cfg.optim.per_device_batch_size))
        views, targets = preview_batch(self.cfg, self.accelerator.unwrap_model(self.model), count)
        if views.shape[0] < 2:
            return {}
        device = self.accelerator.device
        with self.accelerator.autocast():
            return shuffle_gap(
                self.accelerator.unwrap_model(self.model),
                views.to(device),
                self.target.encode(targets.to(device)),
                seed=self.cfg.run.seed,
            )

    def _collect(self) -> None:
        """Fold every rank's counters since the last call into `progress`."""
        accelerator, progress = self.accelerator, self.progress
        counts = torch.tensor([self.images, self.skipped], device=accelerator.device)
        counts = accelerator.reduce(counts, "sum")
        progress.images += int(counts[0])
        progress.skipped += int(counts[1])
        positions = accelerator.gather(torch.tensor([self.batches_seen], device=accelerator.device))
        progress.batches_per_rank = [int(b) for b in positions.tolist()]
        self.images = self.skipped = 0
        if self.keys_path is not None and self.pending_keys:
            with self.keys_path.open("a") as f:
                f.write("".join(k + "\n" for k in self.pending_keys))
        self.pending_keys = []

    def checkpoint(self) -> Path:
        """Save, timed outside the throughput window; the time goes to the log."""
        with self.meter.paused():
            self._collect()
            folder = save_checkpoint(
                self.accelerator, self.run, self.stage, self.progress, self.cfg.run.keep_checkpoints
            )
        seconds = self.meter.last_pause_s
        self.accelerator.log({"checkpoint_s": seconds}, step=self.progress.step)
        if self.accelerator.is_local_main_process:
            tqdm.write(f"[{self.stage}] checkpoint {folder.name} written in {seconds:.2f} s")
        return folder

    def stop(self, signal_name: str, saved: bool) -> None:
        """Leave after this step on a stop signal: checkpoint (unless just written), record the
        stop for the launching CLI, and raise `Stopped`."""
        step = self.progress.step
        folder = (
            self.run.checkpoints(self.stage) / f"step-{step:08d}" if saved else self.checkpoint()
        )
        self._record_stop(signal_name, folder)
        raise Stopped(
            f"[{self.stage}] {signal_name} received: stopped after step {step} of {self.steps}, "
            f"checkpoint {folder} written; continue with --resume latest"
        )

    def _record_stop(self, signal_name: str, folder: Path | None) -> None:
        if self.accelerator.is_main_process:
            record = {
                "signal": signal_name,
                "step": self.progress.step,
                "steps": self.steps,
                "checkpoint": str(folder) if folder else None,
            }
            tmp = stop_record(self.run, self.stage).with_suffix(".tmp")
            tmp.write_text(json.dumps(record))
            tmp.rename(stop_record(self.run, self.stage))
        self.accelerator.wait_for_everyone()

    def finish(self) -> dict[str, Any]:
        """Final preview, weights, adapter and summary.json."""
        self._collect()
        self.preview("final.png")
        gap = self.shuffle_gap()
        progress = self.progress
        summary = {
            "stage": self.stage,
            "policy": self.policy,
            "loss": self.loss_name,
            "steps": self.steps,
            "loss_first": progress.losses[0][1] if progress.losses else None,
            "loss_last": progress.losses[-1][1] if progress.losses else None,
            "losses": progress.losses,
            "images_seen": progress.images,
            "images_skipped": progress.skipped,
            "seconds_this_run": round(time.perf_counter() - self.tic, 2),
            "shuffle_gap": gap,
            "parameters": self.table,
            "distributed": _distribution(self.accelerator, self.cfg),
        }
        save_final(self.accelerator, self.model, self.run, self.stage, summary)
        if progress.losses:
            self.accelerator.print(
                f"[{self.stage}] {self.policy}: {self.loss_name} {summary['loss_first']:.4f} (step "
                f"{progress.losses[0][0]}) -> {summary['loss_last']:.4f} (step {self.steps}); "
                f"images {progress.images}, skipped (unreadable) {progress.skipped}"
            )
        if gap:
            self.accelerator.print(
                f"[{self.stage}] shuffle gap (loss rise with shuffled "
                f"conditions): {100 * gap['gap']:.1f}%"
            )
        # a signal during the last step or the final save: done, but the CLI must stop here
        self.late_stop = _agreed_stop(self.accelerator, self.stop_request)
        if self.late_stop:
            self._record_stop(self.late_stop, None)
        self.accelerator.end_training()  # destroys the process group: collectives go before
        return summary


def stop_record(run: RunDir, stage: str) -> Path:
    """Written when a stage stops on a signal; tells the launching CLI it was a clean stop."""
    return run.stage(stage) / "stopped.json"


def train_stage(
    cfg: Config,
    run: RunDir,
    stage: str,
    resume_from: str | None = None,
    stop: StopRequest | None = None,
):
    """Train one stage of `run` to its final state; returns its summary.

    Args:
        cfg: the run's config.
        run: the run folder.
        stage: stage1, stage2 or end-to-end.
        resume_from: 'latest' or a checkpoint folder.
        stop: an installed StopRequest: a stop signal then ends the stage after the current
            optimiser step with a checkpoint and `Stopped`.
    """
    trainer = StageTrainer(cfg, run, stage, resume_from, stop)
    trainer.fit()
    summary = trainer.finish()
    if trainer.late_stop:
        raise Stopped(f"[{stage}] {trainer.late_stop} received after the stage finished")
    return summary


def _table_text(stage: str, policy: str, table: dict[str, dict[str, int]]) -> str:
    rows = [f"[{stage}] policy {policy}: trainable / total parameters"]
    for group, row in table.items():
        rows.append(f"  {group:<14} {row['trainable']:>14,} / {row['total']:>14,}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m genhancer_llava.train", description="Train one stage of a GenHancer run."
    )
    parser.add_argument("--run_dir", required=True, help="run folder holding config.yaml")
    parser.add_argument("--stage", required=True, choices=STAGE_NAMES)
    parser.add_argument("--resume", default=None, help="'latest' or a checkpoint folder")
    args = parser.parse_args(argv)
    stop = StopRequest().install()  # first: a SIGTERM from now on means "checkpoint and stop"
    guard_worker()  # never outlive the launcher
    try:
        run = RunDir(Path(args.run_dir))
        lock = None
        if os.environ.get("RANK", "0") == "0":  # rank 0 holds the folder while training
            lock = RunLock(run.root, TRAIN_LOCK, f"training {args.stage} (rank 0)").acquire()
            stop_record(run, args.stage).unlink(missing_ok=True)
        try:
            train_stage(run.load_config(), run, args.stage, args.resume, stop)
        finally:
            if lock is not None:
                lock.release()
    except Stopped as err:
        _leave_process_group()
        if os.environ.get("RANK", "0") == "0":
            print(f"stopped: {err}", file=sys.stderr, flush=True)
        sys.exit(STOPPED_EXIT)
    except GenhancerError as err:
        _leave_process_group()
        if not report_error(str(err)):  # the launching CLI prints it as its last line
            print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def _leave_process_group() -> None:
    """Destroy the process group before a stage ends early (a stop or a one-line error).

    Left to interpreter teardown, gloo's threads can outlive their owner: a rank then aborts
    ("terminate called without an active exception", status 134) after its error was
    reported. Destroying is local to this rank; it waits for no other.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
