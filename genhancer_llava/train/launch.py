"""Run a whole enhancement: check inputs, write the run folder, launch each stage through
`accelerate launch` (DeepSpeed ZeRO from the shipped configs, or one plain process with
`--zero 0`), then export.

Stages are separate launches: each builds its own model and optimiser, and each can be resumed
on its own. This module starts processes; it does not import accelerate itself.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from importlib import resources
from pathlib import Path

from ..config import Config
from ..errors import GenhancerError, StageFailed, Stopped
from ..stages import stages
from ..utils import free_port
from .accelerate_run import ERROR_FILE_ENV, read_error
from .preflight import preflight
from .processes import DEFAULT_GRACE_S, GRACE_ENV, run_launcher
from .run_dir import RunDir
from .run_lock import hold_run

__all__ = ["accelerate_config", "prepare_run_dir", "launch_stage", "enhance"]

# Shipped as package data (pyproject), so an installed wheel launches without the checkout.
LAUNCH_CONFIGS = Path(str(resources.files(__package__) / "launch_configs"))


ZERO_STAGES = (0, 2, 3)  # 0: no DeepSpeed, one plain process


def accelerate_config(zero: int, path: str | Path | None = None, num_processes: int = 1) -> Path:
    """The accelerate config for ZeRO stage `zero` (or the given file); 0 is plain accelerate."""
    if path:
        config = Path(path)
    else:
        if zero not in ZERO_STAGES:
            raise GenhancerError(f"--zero {zero} is not supported; choose 0, 2 or 3")
        if zero == 0 and num_processes > 1:
            raise GenhancerError(
                f"--zero 0 (no DeepSpeed) runs one process, not {num_processes}; "
                "use --zero 2 or 3 with several processes"
            )
        config = LAUNCH_CONFIGS / f"zero{zero}.yaml"
    if not config.is_file():
        raise GenhancerError(
            f"accelerate config {config} not found; pass --accelerate_config PATH (the package "
            f"ships zero0.yaml, zero2.yaml and zero3.yaml in {LAUNCH_CONFIGS})"
        )
    return config


# the export (torch, transformers, peft) loads only once the stages ran: a bad input fails fast
def export_encoder(*args, **kwargs):
    from ..export import export_encoder as export

    return export(*args, **kwargs)


def prepare_run_dir(cfg: Config, overwrite: bool, resume: bool) -> RunDir:
    """Create the run folder and write config.yaml; never clobber a run unless asked."""
    run = RunDir(Path(cfg.run.output_dir))
    if run.has_outputs():
        if overwrite:
            run.clear()
        elif not resume:
            raise GenhancerError(
                f"{run.root} already holds a run; pass --overwrite to start over or "
                "--resume latest to continue it"
            )
    run.root.mkdir(parents=True, exist_ok=True)
    if not (resume and run.config_file.is_file()):
        cfg.save(run.config_file)
    return run


def launch_stage(
    run: RunDir,
    stage: str,
    num_processes: int,
    accel_config: Path,
    resume: str | None = None,
) -> None:
    """`accelerate launch` one stage; raises when it fails."""
    cmd = [
        sys.executable,
        "-m",
        "genhancer_llava.train.accelerate_run",  # `accelerate launch`
        "--config_file",
        str(accel_config),
        "--num_processes",
        str(num_processes),
        "--main_process_port",
        str(free_port()),
        "-m",
        "genhancer_llava.train",
        "--run_dir",
        str(run.root),
        "--stage",
        stage,
    ]
    if resume:
        cmd += ["--resume", resume]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    import torch

    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")  # the launcher imports DeepSpeed too
    # the agent's wait between passing SIGTERM on and SIGKILL: time for the last checkpoint
    env.setdefault(
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(int(float(env.get(GRACE_ENV, DEFAULT_GRACE_S))))
    )
    record = run.stage(stage) / "stopped.json"  # written by rank 0 when it stops on a signal
    record.unlink(missing_ok=True)
    error_file = run.stage(stage) / "error.txt"  # a worker's one-line error, for our last line
    error_file.parent.mkdir(parents=True, exist_ok=True)
    error_file.unlink(missing_ok=True)
    env[ERROR_FILE_ENV] = str(error_file)
    code, received = run_launcher(cmd, env)
    error = read_error(error_file)
    _raise_if_stopped(stage, record, received, code)
    if error:  # a worker's one-line error exits 2, whatever another rank did on its way out
        raise StageFailed(error, 2)
    if code != 0:
        raise StageFailed(
            f"{stage} failed (exit code {code}); its traceback is printed above", code
        )


def _raise_if_stopped(stage: str, record: Path, received: int | None, code: int) -> None:
    if record.is_file():
        info = json.loads(record.read_text())
        if info.get("checkpoint"):
            raise Stopped(
                f"[{stage}] {info['signal']} received: stopped after step "
                f"{info['step']} of {info['steps']}, checkpoint {info['checkpoint']}"
            )
        raise Stopped(f"[{stage}] {info['signal']} received after the stage finished")
    if received is not None:
        name = signal.Signals(received).name
        if code == 0:
            raise Stopped(f"[{stage}] {name} received after the stage finished")
        raise Stopped(
            f"[{stage}] {name} received; the launch ended (exit code {code}) "
            "without a clean stop; the checkpoints written before are kept"
        )


def enhance(
    cfg: Config,
    num_processes: int = 1,
    zero: int = 2,
    overwrite: bool = False,
    resume: str | None = None,
    accel_config: str | Path | None = None,
) -> Path:
    """Both stages (or end-to-end) through accelerate, then export; returns the encoder folder.

    Args:
        cfg: the run config (run.output_dir is the run folder).
        num_processes: processes per stage launch (GPUs, or CPU processes over gloo).
        zero: DeepSpeed ZeRO stage of the shipped launcher configs (2 or 3), or 0: one
            plain accelerate process without DeepSpeed.
        overwrite: clear this run's earlier outputs in run.output_dir first.
        resume: "latest" or a checkpoint: continue an interrupted run (finished stages are kept).
        accel_config: an accelerate config file instead of the shipped ones.
    """
    config_file = accelerate_config(zero, accel_config, num_processes)
    # before any process starts or any file is written
    preflight(cfg, num_processes, resume, None if accel_config else zero)
    # one writer per run folder: held through every launch and the export
    with hold_run(cfg.run.output_dir, "genhancer enhance"):
        run = prepare_run_dir(cfg, overwrite, resume is not None)
        for stage in stages(cfg):
            if resume and (run.final(stage.name) / "summary.json").is_file():
                print(f"[{stage.name}] already finished; kept", flush=True)
                continue
            launch_stage(run, stage.name, num_processes, config_file, resume)
        return export_encoder(run.root, overwrite=True)
