"""Required paths from the config: an empty value means "not set", never the current folder.

`Path("")` is `Path(".")`, an existing folder, so a check like `Path(cfg.data.path).is_dir()`
passes for an unset key and the run quietly reads whatever lies under the working directory.
Every required path goes through `required_path` instead.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError, GenhancerError

__all__ = ["required_path", "required_dir", "IMAGE_EXTENSIONS", "FOLDER_HINT"]

# what a folder dataset reads (here, not in `data`, so that preflight checks need no torch)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
FOLDER_HINT = "pass data.path=DIR, a folder of images (searched recursively)"


def required_path(value: str | Path | None, key: str, hint: str) -> Path:
    """`value` as a Path; a one-line error naming `key` when it is empty or only blanks.

    Args:
        value: the configured path (a string from YAML or an override).
        key: the config key, e.g. "data.path" (named in the error).
        hint: how to set it, e.g. "pass data.path=DIR, a folder of images" (ends the error).
    """
    text = "" if value is None else str(value)
    if not text.strip():
        raise ConfigError(f"{key} is not set; {hint}")
    return Path(text)


def required_dir(value: str | Path | None, key: str, hint: str) -> Path:
    """`required_path`, and the folder must exist."""
    path = required_path(value, key, hint)
    if not path.is_dir():
        raise GenhancerError(f"{key}='{value}' is not a folder; {hint}")
    return path
