"""Checkpoints that survive SIGKILL at any moment, and exact resume.

A checkpoint is written into `step-N.tmp/` (accelerate's state: model, optimiser, scheduler,
RNG states of every rank; DeepSpeed's partitioned files under ZeRO) plus `progress.json`
(step, data position per rank, counters, losses so far), then renamed to `step-N/`. A rename
is atomic, so a folder named `step-N` is always complete; a leftover `.tmp` is ignored and
removed at the next save. The last K complete checkpoints are kept.

`progress.json` also lists every file of the checkpoint with its size: a resume skips (with a
warning) a checkpoint with a missing or truncated file in favour of the one before. The chosen
checkpoint is pinned while it loads (a shared flock on its progress.json), and rotation never
deletes a pinned checkpoint. A write that fails (disk full) removes its `.tmp` and stops the run
with one line; the previous checkpoint stays.
"""

from __future__ import annotations

from . import deepspeed_env  # noqa: F401  (sets DS_ACCELERATOR before accelerate loads)

# isort: split

import errno
import fcntl
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator

from ..errors import GenhancerError
from ..utils import publish_dir
from .faults import fault_at, kill_self
from .preflight import resume_mismatch
from .run_dir import RunDir

__all__ = [
    "Progress",
    "Pin",
    "save_checkpoint",
    "latest_checkpoint",
    "read_progress",
    "load_checkpoint",
    "checkpoint_problem",
    "rotate",
]


@dataclass
class Progress:
    step: int = 0
    batches_per_rank: list[int] = field(default_factory=list)  # data position of each rank
    images: int = 0  # all ranks, trained on
    skipped: int = 0  # all ranks, unreadable
    losses: list[list[float]] = field(default_factory=list)  # [step, mean loss]
    zero_stage: int | None = None  # DeepSpeed ZeRO stage it was written under; 0: no DeepSpeed


def _complete(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.glob("step-*")
        if p.is_dir() and not p.name.endswith(".tmp") and (p / "progress.json").is_file()
    )


def latest_checkpoint(run: RunDir, stage: str) -> Path | None:
    done = _complete(run.checkpoints(stage))
    return done[-1] if done else None


class Pin:
    """A shared flock on a checkpoint's progress.json: rotation leaves the checkpoint alone."""

    def __init__(self, folder: Path):
        self.folder, self.fd = folder, None

    def acquire(self) -> bool:
        """False when the checkpoint is gone or being deleted."""
        try:
            fd = os.open(self.folder / "progress.json", os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:  # no flock on this filesystem: nothing to pin with
            pass
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # drops the flock
            self.fd = None


def _delete_unless_pinned(folder: Path) -> bool:
    """rmtree `folder` under an exclusive flock on its progress.json; False when pinned."""
    try:
        fd = os.open(folder / "progress.json", os.O_RDONLY)
    except OSError:
        return True  # not a complete checkpoint any more
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:  # no flock on this filesystem
            pass
        shutil.rmtree(folder, ignore_errors=True)  # a pin tried meanwhile fails, then skips it
        return True
    finally:
        os.close(fd)


def rotate(root: Path, keep: int, log: Callable[[str], None] = print) -> None:
    """Delete all but the newest `keep` complete checkpoints, except pinned ones."""
    for old in _complete(root)[:-keep]:
        if not _delete_unless_pinned(old):
            log(f"[checkpoint] {old} is being loaded by another process; kept for now")


def _manifest(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from (None when it is whole)."""
    try:
        record = json.loads((folder / "progress.json").read_text())
    except (OSError, ValueError):
        return "progress.json is missing or unreadable"
    for name, size in record.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is truncated ({path.stat().st_size} of {size} bytes)"
    return None


def _any_rank(accelerator: Accelerator, failed: bool) -> bool:
    flag = torch.tensor(1.0 if failed else 0.0, device=accelerator.device)
    return accelerator.reduce(flag, "sum").item() > 0


def save_checkpoint(
    accelerator: Accelerator, run: RunDir, stage: str, progress: Progress, keep: int
) -> Path:
    root = run.checkpoints(stage)
    final = root / f"step-{progress.step:08d}"
    tmp = root / f"step-{progress.step:08d}.tmp"
    previous = latest_checkpoint(run, stage)
    if accelerator.is_main_process:
        for stale in root.glob("step-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
    accelerator.wait_for_everyone()
    error: str | None = None
    try:
        accelerator.save_state(str(tmp))  # every rank writes its part
        if fault_at("disk-full-in-checkpoint", progress.step):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
    except Exception as err:  # torch and safetensors report ENOSPC in their own types
        error = _reason(err, tmp.parent)
    if _any_rank(accelerator, error is not None):  # every rank stops, not only the failed one
        _give_up(accelerator, tmp, stage, progress.step, error, previous)
    if fault_at("kill-in-checkpoint", progress.step):
        kill_self()
    if accelerator.is_main_process:
        try:
            record = dict(asdict(progress), files=_manifest(tmp))
            (tmp / "progress.json").write_text(json.dumps(record))
            publish_dir(tmp, final)
        except OSError as err:
            error = _reason(err, tmp.parent)
    if _any_rank(accelerator, error is not None):
        _give_up(accelerator, tmp, stage, progress.step, error, previous)
    if accelerator.is_main_process:
        rotate(root, keep, accelerator.print)
    accelerator.wait_for_everyone()
    return final


def _reason(err: Exception, folder: Path) -> str:
    """A short cause: ENOSPC however it was wrapped (torch says 'unexpected pos ...')."""
    full = isinstance(err, OSError) and err.errno == errno.ENOSPC
    try:
        full = full or shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        pass
    if full:
        return os.strerror(errno.ENOSPC)
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _give_up(
    accelerator: Accelerator,
    tmp: Path,
    stage: str,
    step: int,
    error: str | None,
    previous: Path | None,
) -> None:
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # the half-written one frees its space
    reason = error or "failed on another rank"
    kept = f"{previous} is kept" if previous else "no earlier checkpoint exists"
    raise GenhancerError(
        f"[{stage}] could not write the checkpoint of step {step} in {tmp.parent} ({reason}); "
        f"{kept}; free space there and continue with --resume latest"
    )


def _pick(
    run: RunDir, stage: str, which: str, log: Callable[[str], None]
) -> tuple[Path | None, Pin | None]:
    """The checkpoint to resume from, pinned; a broken 'latest' gives way to the one before."""
    if which != "latest":
        folder, pin = Path(which), Pin(Path(which))
        problem = checkpoint_problem(folder) if pin.acquire() else "it is gone"
        if problem:
            pin.release()
            raise GenhancerError(
                f"{folder} is not a complete checkpoint ({problem}); "
                "pass another one or --resume latest"
            )
        return folder, pin
    for folder in reversed(_complete(run.checkpoints(stage))):
        pin = Pin(folder)
        problem = checkpoint_problem(folder) if pin.acquire() else "it was deleted meanwhile"
        if problem is None:
            return folder, pin
        pin.release()
        log(
            f"warning: [{stage}] skipping checkpoint {folder.name}: {problem}; "
            "trying the one before"
        )
    return None, None


def read_progress(
    run: RunDir,
    stage: str,
    which: str,
    world_size: int,
    zero_stage: int,
    log: Callable[[str], None] = print,
) -> tuple[Path | None, Progress, Pin | None]:
    """The checkpoint `which` ('latest' or a path) names, its progress record, and its pin.

    The pin keeps rotation away from the checkpoint until released (after loading it).
    'latest' with no complete checkpoint yet means: start the stage from step 0.
    """
    folder, pin = _pick(run, stage, which, log)
    if folder is None:
        return None, Progress(batches_per_rank=[0] * world_size, zero_stage=zero_stage), None
    record = json.loads((folder / "progress.json").read_text())
    record.pop("files", None)
    problem = resume_mismatch(folder, record, world_size, zero_stage)
    if problem:
        pin.release()
        raise GenhancerError(problem)
    progress = Progress(**record)
    progress.zero_stage = zero_stage
    return folder, progress, pin


def load_checkpoint(accelerator: Accelerator, folder: Path) -> None:
    accelerator.load_state(str(folder))
