"""One exception type for user-facing mistakes.

Anything raised as `GenhancerError` is printed by the CLI as a single line (no traceback): its
message must say what is wrong and what to do about it.
"""

from __future__ import annotations

__all__ = ["GenhancerError", "ConfigError", "Stopped", "StageFailed", "STOPPED_EXIT"]

# EX_TEMPFAIL ("try again"): a batch script requeues on it, see README "Preemption"
STOPPED_EXIT = 75


class GenhancerError(Exception):
    """A mistake in the user's input (path, config value, checkpoint) with a one-line fix."""


class ConfigError(GenhancerError, ValueError):
    """A bad configuration value."""


class Stopped(GenhancerError):
    """A run stopped on request (SIGTERM/SIGINT) after writing a checkpoint; it can resume.

    The CLI prints it as `stopped: ...` and exits with STOPPED_EXIT, not 2.
    """


class StageFailed(GenhancerError):
    """A launched stage failed; the message is its worker's one-line error when it left one.

    The CLI exits with the worker's status (`exit_code`), not 2.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
