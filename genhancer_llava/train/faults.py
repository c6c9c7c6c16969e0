"""Fault injection for tests: make a training process fail at an exact point.

`GENHANCER_FAULT=<point>:<step>` with point one of
  kill-after-step     SIGKILL right after optimiser step <step> (before any checkpoint of it)
  kill-in-checkpoint  SIGKILL while the checkpoint of step <step> is half written
  nan-loss            the loss of step <step> becomes NaN
Unset (always, outside tests) it does nothing.
"""

from __future__ import annotations

import os
import signal

__all__ = ["fault_at", "kill_self"]


def fault_at(point: str, step: int) -> bool:
    spec = os.environ.get("GENHANCER_FAULT", "")
    if not spec:
        return False
    name, _, at = spec.partition(":")
    return name == point and at.isdigit() and int(at) == step


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
