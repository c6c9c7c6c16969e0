"""webdataset shard specs -> shard paths, checked (no torch: the CLI checks them before launch)."""

from __future__ import annotations

from pathlib import Path

from .errors import GenhancerError

__all__ = ["expand_shards"]


def expand_shards(spec: str) -> list[Path]:
    """A brace pattern (`/data/{00000..00099}.tar`), a `.txt` list file, or one tar path."""
    from braceexpand import braceexpand

    path = Path(spec)
    if path.suffix == ".txt" and path.is_file():
        base = path.parent
        names = [ln.strip() for ln in path.read_text().splitlines()]
        shards = [(base / n) if not Path(n).is_absolute() else Path(n)
                  for n in names if n and not n.startswith("#")]
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
