"""One writer per run folder: an advisory lock file in the folder, naming its holder.

Two locks, both `fcntl.flock` on files in the run folder:
    OUT/.lock        held by the process that owns the run (`genhancer enhance`, `genhancer
                     export`) for the whole run, launches and export included
    OUT/.train.lock  held by rank 0 of a training launch while it trains (so a worker that
                     outlives its CLI still keeps the folder)
A second enhance/export refuses a folder while either is held, in one line that names the
holder's pid and host. The kernel drops a flock when its holder dies, whatever killed it, so a
lock file that still names a holder but is not locked is stale: it is taken over, and we say so.

flock locks belong to an open file description, which a fork shares: the lock's fd is closed in
forked children (DataLoader workers), so that a dead holder's children never keep its lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import GenhancerError

__all__ = ["RunLock", "OWNER_LOCK", "TRAIN_LOCK", "hold_run", "check_free"]

OWNER_LOCK = ".lock"
TRAIN_LOCK = ".train.lock"

_held: set[int] = set()  # fds this process holds locks on, closed in forked children


def _close_in_child() -> None:
    for fd in list(_held):
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


def _describe(holder: dict[str, Any]) -> str:
    what = holder.get("command") or "a process"
    since = holder.get("since")
    when = f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if since else ""
    return f"{what} (pid {holder.get('pid', '?')} on host {holder.get('host', '?')}{when})"


class RunLock:
    """An exclusive, non-blocking advisory lock on `folder/name`.

    Args:
        folder: the run folder (created if missing).
        name: the lock file's name (OWNER_LOCK or TRAIN_LOCK).
        command: what holds it, written into the file for whoever is refused.
    """

    def __init__(self, folder: str | Path, name: str = OWNER_LOCK, command: str = ""):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.command = command
        self.fd: int | None = None

    def read_holder(self) -> dict[str, Any]:
        """The holder record in the file ({} when empty or unreadable)."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def refusal(self) -> GenhancerError:
        """The one-line error for a second writer."""
        holder = self.read_holder()
        return GenhancerError(
            f"{self.folder} is in use by {_describe(holder)}; wait for it to finish or stop it "
            f"(kill {holder.get('pid', 'PID')} on {holder.get('host', 'its host')}) first"
        )

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self.refusal() from None
        stale = os.read(fd, 1 << 16)
        if stale.strip():
            try:
                holder = json.loads(stale)
            except ValueError:
                holder = {}
            print(
                f"[lock] taking over the stale lock {self.path} of {_describe(holder)}, "
                "which is gone",
                file=sys.stderr,
                flush=True,
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "since": time.time(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self.fd = fd
        _held.add(fd)
        return self

    def release(self) -> None:
        """Empty the file (a clean release is not stale) and unlock."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        _held.discard(fd)
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def check_free(folder: str | Path, name: str = TRAIN_LOCK) -> None:
    """Raise the one-line refusal when someone holds `folder/name`; hold nothing afterwards."""
    path = Path(folder) / name
    if not path.exists():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLock(folder, name).refusal() from None
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextmanager
def hold_run(folder: str | Path, command: str) -> Iterator[RunLock]:
    """Own `folder` for the block: its owner lock, after checking no training still runs there.

    Args:
        folder: the run folder.
        command: what holds it (shown to a refused second command).
    """
    with RunLock(folder, OWNER_LOCK, command) as lock:
        check_free(folder, TRAIN_LOCK)
        yield lock
