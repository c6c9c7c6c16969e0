"""Fault injection for tests: make a training process fail at an exact point.

`GENHANCER_FAULT=<point>:<step>` with point one of
  kill-after-step         SIGKILL right after optimiser step <step> (before any checkpoint of it)
  kill-in-checkpoint      SIGKILL while the checkpoint of step <step> is half written
  nan-loss                the loss of step <step> becomes NaN
  sigterm-after-step      a real SIGTERM to this process right after optimiser step <step>
                          (a preemption at an exact point)
  disk-full-in-checkpoint the checkpoint of step <step> fails with ENOSPC once written
`GENHANCER_FAULT_RANK=<r>` limits the fault to rank r (default: every rank).
Unset (always, outside tests) it does nothing.
"""

from __future__ import annotations

import os
import signal

__all__ = ["fault_at", "planned_faults", "kill_self", "signal_self"]


def fault_at(point: str, step: int) -> bool:
    spec = os.environ.get("GENHANCER_FAULT", "")
    if not spec:
        return False
    name, _, at = spec.partition(":")
    rank = os.environ.get("GENHANCER_FAULT_RANK")
    if rank is not None and rank != os.environ.get("RANK", "0"):
        return False
    return name == point and at.isdigit() and int(at) == step


def planned_faults() -> dict[str, int]:
    """{point: step} of this process's fault, read once (the training loop compares ints)."""
    spec = os.environ.get("GENHANCER_FAULT", "")
    name, _, at = spec.partition(":")
    if not spec or not at.isdigit() or not fault_at(name, int(at)):
        return {}
    return {name: int(at)}


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def signal_self(sig: int = signal.SIGTERM) -> None:
    os.kill(os.getpid(), sig)
