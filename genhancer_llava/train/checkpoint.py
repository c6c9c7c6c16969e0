"""Checkpoints that survive SIGKILL at any moment, and exact resume.

A checkpoint is written into `step-N.tmp/` (accelerate's state: model, optimiser, scheduler,
RNG states of every rank; DeepSpeed's partitioned files under ZeRO) plus `progress.json`
(step, data position per rank, counters, losses so far), then renamed to `step-N/`. A rename
is atomic, so a folder named `step-N` is always complete; a leftover `.tmp` is ignored and
removed at the next save. The last K complete checkpoints are kept.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accelerate import Accelerator

from ..errors import GenhancerError
from ..utils import publish_dir
from .faults import fault_at, kill_self
from .run_dir import RunDir

__all__ = ["Progress", "save_checkpoint", "latest_checkpoint", "read_progress", "load_checkpoint"]


@dataclass
class Progress:
    step: int = 0
    batches_per_rank: list[int] = field(default_factory=list)  # data position of each rank
    images: int = 0  # all ranks, trained on
    skipped: int = 0  # all ranks, unreadable
    losses: list[list[float]] = field(default_factory=list)  # [step, mean loss]


def _complete(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("step-*")
                  if p.is_dir() and not p.name.endswith(".tmp") and (p / "progress.json").is_file())


def latest_checkpoint(run: RunDir, stage: str) -> Path | None:
    done = _complete(run.checkpoints(stage))
    return done[-1] if done else None


def save_checkpoint(accelerator: Accelerator, run: RunDir, stage: str, progress: Progress,
                    keep: int) -> Path:
    root = run.checkpoints(stage)
    final = root / f"step-{progress.step:08d}"
    tmp = root / f"step-{progress.step:08d}.tmp"
    if accelerator.is_main_process:
        for stale in root.glob("step-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # every rank writes its part
    accelerator.wait_for_everyone()
    if fault_at("kill-in-checkpoint", progress.step):
        kill_self()
    if accelerator.is_main_process:
        (tmp / "progress.json").write_text(json.dumps(asdict(progress)))
        publish_dir(tmp, final)
        for old in _complete(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def read_progress(
    run: RunDir, stage: str, which: str, world_size: int
) -> tuple[Path | None, Progress]:
    """The checkpoint `which` ('latest' or a path) names, and its progress record.

    'latest' with no complete checkpoint yet means: start the stage from step 0.
    """
    folder = latest_checkpoint(run, stage) if which == "latest" else Path(which)
    if folder is None:
        return None, Progress(batches_per_rank=[0] * world_size)
    if not (folder / "progress.json").is_file():
        raise GenhancerError(f"{folder} is not a complete checkpoint (progress.json missing)")
    progress = Progress(**json.loads((folder / "progress.json").read_text()))
    if len(progress.batches_per_rank) != world_size:
        raise GenhancerError(
            f"{folder} was written by {len(progress.batches_per_rank)} processes; resume it "
            f"with --num_processes {len(progress.batches_per_rank)} (now {world_size})"
        )
    return folder, progress


def load_checkpoint(accelerator: Accelerator, folder: Path) -> None:
    accelerator.load_state(str(folder))
