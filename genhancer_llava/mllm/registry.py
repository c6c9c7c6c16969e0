"""The vision-tower registry: `genhancer[:NAME|:PATH]` -> an exported encoder folder and kind.

Names LLaVA sees (`--vision_tower`, `mm_vision_tower` in a checkpoint's config.json):

- `genhancer`             the registry entry named `default`
- `genhancer:NAME`        the registry entry NAME
- `genhancer:PATH`        an encoder folder (absolute or relative path)
- a folder holding `genhancer.json` (an export of this package), given as a plain path

The registry is a YAML (or JSON) file mapping names to folders::

    # ~/.config/genhancer/towers.yaml   (or the file named by $GENHANCER_TOWERS)
    default: /models/genhancer-clip-l14-336
    clip-l14-336: /models/genhancer-clip-l14-336
    siglip-so400m: /models/genhancer-siglip-so400m

Relative folders in the file are relative to the file. A folder is accepted when its
config.json holds a CLIP or SigLIP model (full model or vision-only); the tower kind follows
from its `model_type`, never from the name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import GenhancerError
from ..models.families import FAMILIES, family_of_model_type, get_family

__all__ = [
    "REGISTRY_ENV",
    "PREFIX",
    "TowerSpec",
    "default_registry_file",
    "is_genhancer_name",
    "known_towers",
    "resolve_tower",
    "tower_kind",
]

REGISTRY_ENV = "GENHANCER_TOWERS"
PREFIX = "genhancer"
DEFAULT_ENTRY = "default"


@dataclass(frozen=True)
class TowerSpec:
    """A resolved tower: the name LLaVA stores, the folder it loads, and its kind."""

    name: str
    path: Path
    kind: str  # the encoder family (models/families.py): "clip", "siglip", ...

    @property
    def has_cls_token(self) -> bool:
        return get_family(self.kind).has_cls_token


def default_registry_file() -> Path:
    """$GENHANCER_TOWERS when set, else ~/.config/genhancer/towers.yaml (XDG_CONFIG_HOME aware)."""
    if os.environ.get(REGISTRY_ENV):
        return Path(os.environ[REGISTRY_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "genhancer" / "towers.yaml"


def known_towers(registry_file: str | Path | None = None) -> dict[str, Path]:
    """The registry's entries (name -> folder); empty when the file does not exist."""
    path = Path(registry_file) if registry_file else default_registry_file()
    if not path.is_file():
        if registry_file or os.environ.get(REGISTRY_ENV):
            raise GenhancerError(f"tower registry file {path} does not exist")
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        reason = str(exc).replace("\n", " ")
        raise GenhancerError(f"tower registry {path} is not valid YAML: {reason}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise GenhancerError(f"tower registry {path} must map names to folders (name: /path)")
    return {str(k): (path.parent / Path(v).expanduser()).resolve() for k, v in data.items()}


def is_genhancer_name(name: object) -> bool:
    """Whether the hook owns this tower name (the rest goes to LLaVA's own builder)."""
    if not isinstance(name, str) or not name:
        return False
    if name == PREFIX or name.startswith(PREFIX + ":"):
        return True
    return Path(name, "genhancer.json").is_file()


def tower_kind(folder: Path, name: str) -> str:
    """The tower kind of an encoder folder, or a one-line error when it is not an encoder."""
    config = folder / "config.json"
    if not folder.is_dir():
        raise GenhancerError(f"vision tower {name!r}: folder {folder} does not exist")
    if not config.is_file():
        raise GenhancerError(
            f"vision tower {name!r}: {folder} is not an encoder folder (no config.json); "
            "point it at an exported encoder (`genhancer export`)"
        )
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except json.JSONDecodeError as exc:
        raise GenhancerError(f"vision tower {name!r}: {config} is not valid JSON ({exc})") from exc
    found = family_of_model_type(model_type)
    if found is None:
        known = sorted(t for f in FAMILIES.values() for t in f.model_types())
        raise GenhancerError(
            f"vision tower {name!r}: {folder} holds a {model_type!r} model, not an encoder "
            f"(expected one of {', '.join(known)})"
        )
    return found[0].name


def resolve_tower(name: str, registry_file: str | Path | None = None) -> TowerSpec:
    """Resolve a genhancer tower name to its folder and kind.

    Args:
        name: `genhancer`, `genhancer:NAME`, `genhancer:PATH`, or a folder with genhancer.json.
        registry_file: the registry to read; default `default_registry_file()`.
    """
    if not is_genhancer_name(name):
        raise GenhancerError(f"{name!r} is not a genhancer tower name (genhancer[:NAME|:PATH])")
    if name == PREFIX or name.startswith(PREFIX + ":"):
        key = name[len(PREFIX) + 1 :] or DEFAULT_ENTRY
        towers = known_towers(registry_file)
        if key in towers:
            folder = towers[key]
        elif "/" in key or key.startswith(".") or Path(key).is_dir():
            folder = Path(key).expanduser()
        else:
            listed = ", ".join(sorted(towers)) or "none"
            where = registry_file or default_registry_file()
            raise GenhancerError(
                f"unknown genhancer tower {key!r}; known: {listed} (registry {where}, "
                f"set ${REGISTRY_ENV}), or pass genhancer:/path/to/encoder"
            )
    else:
        folder = Path(name)
    return TowerSpec(name=name, path=folder, kind=tower_kind(folder, name))
