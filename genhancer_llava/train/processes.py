"""Process handling for training launches: no orphaned workers, and stop requests.

The chain is  CLI -> `accelerate launch` (torch elastic agent) -> workers, and the agent starts
each worker in a session of its own, so signals to the CLI or its group never reach them. So:
  - the CLI starts the launcher in its own process group with a parent-death signal (Linux
    PR_SET_PDEATHSIG: SIGTERM when the CLI dies, even by SIGKILL), and passes SIGTERM/SIGINT on
    to it, once (`run_launcher`); the agent passes them to every worker;
  - every worker asks for SIGTERM when the launcher dies, and a thread watches its parent as
    well: orphaned, it stops gracefully, and is killed if it has not after a grace period
    (`guard_worker`);
  - a worker turns SIGTERM/SIGINT into a request (`StopRequest`) that the loop honours at the
    next optimiser step boundary: all ranks agree, write a checkpoint, exit with STOPPED_EXIT.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from ..errors import Stopped

__all__ = ["STOP_SIGNALS", "StopRequest", "run_launcher", "guard_worker", "set_parent_death_signal"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# how long an orphaned worker may take to checkpoint before it kills itself
GRACE_ENV = "GENHANCER_STOP_GRACE_S"
DEFAULT_GRACE_S = 300.0


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send `sig` to this process when its parent dies; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _launcher_preexec() -> None:
    # In the child between fork and exec: a group of its own (a terminal's Ctrl-C reaches the
    # CLI only, which passes it on once), and SIGTERM when the CLI dies, however it dies.
    os.setpgid(0, 0)
    set_parent_death_signal(signal.SIGTERM)


def run_launcher(cmd: Sequence[str], env: dict[str, str]) -> tuple[int, int | None]:
    """Run the launcher to its end, passing SIGTERM/SIGINT on to it.

    Returns its exit code and the stop signal this process received meanwhile (None if none).
    """
    received: list[int] = []
    proc = subprocess.Popen(list(cmd), env=env, preexec_fn=_launcher_preexec)

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        if proc.poll() is None:
            proc.send_signal(signum)  # the agent sends it to every worker

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code, (received[0] if received else None)


class StopRequest:
    """SIGTERM/SIGINT set a flag instead of killing the process; the loop reads `signal`.

    Until `armed` (the loop has started) there is nothing new to save: a stop signal then raises
    `Stopped` at once, wherever setup is (loading, compiling, waiting for a build lock).
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self.armed = False

    def install(self) -> StopRequest:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: object) -> None:
        if self.signal is None:
            self.signal = signum
            if not self.armed:
                raise Stopped(
                    f"{self.name} received before training began; nothing new to "
                    "save, the checkpoints so far are kept"
                )

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else ""


def guard_worker(grace_s: float | None = None, poll_s: float = 0.5) -> None:
    """Never outlive the launcher: SIGTERM on its death (stop gracefully), SIGKILL after grace.

    Args:
        grace_s: seconds an orphaned worker may spend on its last checkpoint before it kills
            itself (default: $GENHANCER_STOP_GRACE_S or 300).
        poll_s: how often the watcher looks at the parent.
    """
    if grace_s is None:
        grace_s = float(os.environ.get(GRACE_ENV, DEFAULT_GRACE_S))
    parent = os.getppid()
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os.kill(os.getpid(), signal.SIGTERM)

    def watch() -> None:
        # PR_SET_PDEATHSIG follows the parent *thread*; watching the pid covers the rest
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="genhancer-parent-watch", daemon=True).start()
