"""webdataset shard specs -> shard paths, checked (no torch: the CLI checks them before launch)."""

from __future__ import annotations

from pathlib import Path

from .errors import GenhancerError
from .paths import required_path

__all__ = ["SHARDS_HINT", "expand_shards"]

SHARDS_HINT = (
    "pass data.path='/data/cc3m/{00000..00331}.tar' (webdataset shards) or a .txt "
    "file listing shard paths"
)


def expand_shards(spec: str) -> list[Path]:
    """A brace pattern (`/data/{00000..00099}.tar`), a `.txt` list file, or one tar path."""
    from braceexpand import braceexpand

    path = required_path(spec, "data.path", SHARDS_HINT)
    if path.suffix == ".txt" and path.is_file():
        base = path.parent
        names = [ln.strip() for ln in path.read_text().splitlines()]
        shards = [
            (base / n) if not Path(n).is_absolute() else Path(n)
            for n in names
            if n and not n.startswith("#")
        ]
    else:
        shards = [Path(p) for p in braceexpand(spec)]
    if not shards:
        raise GenhancerError(f"data.path='{spec}' names no shards")
    missing = [str(p) for p in shards if not p.is_file()]
    if missing:
        raise GenhancerError(
            f"{len(missing)} of {len(shards)} shards are missing (first: {missing[0]}); "
            "fix data.path or the list file"
        )
    return shards
