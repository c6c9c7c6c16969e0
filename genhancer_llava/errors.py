"""One exception type for user-facing mistakes.

Anything raised as `GenhancerError` is printed by the CLI as a single line (no traceback): its
message must say what is wrong and what to do about it.
"""

from __future__ import annotations

__all__ = ["GenhancerError", "ConfigError"]


class GenhancerError(Exception):
    """A mistake in the user's input (path, config value, checkpoint) with a one-line fix."""


class ConfigError(GenhancerError, ValueError):
    """A bad configuration value."""
