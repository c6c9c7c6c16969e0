"""Honest throughput: images per second over the last logging window, training time only.

A checkpoint or a preview inside the window is timed apart (`paused`) and left out, so the rate
says how fast training runs now; the time spent saving is logged on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["WindowMeter"]


class WindowMeter:
    """Counts images and training seconds since the last `take`.

    Args:
        clock: a monotonic clock in seconds (injectable for tests).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.start = clock()
        self.images = 0
        self.paused_s = 0.0
        self.last_pause_s = 0.0

    def add(self, images: int) -> None:
        self.images += images

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time the block (e.g. a checkpoint) outside the window; its length is `last_pause_s`."""
        tic = self.clock()
        try:
            yield
        finally:
            self.last_pause_s = self.clock() - tic
            self.paused_s += self.last_pause_s

    def seconds(self) -> float:
        """Training seconds in the window so far (wall time less pauses)."""
        return max(self.clock() - self.start - self.paused_s, 1e-9)

    def take(self, images: float | None = None) -> float:
        """The window's rate (of `images`, default this process's count); starts a new window."""
        rate = (self.images if images is None else images) / self.seconds()
        self.start, self.images, self.paused_s = self.clock(), 0, 0.0
        return rate
