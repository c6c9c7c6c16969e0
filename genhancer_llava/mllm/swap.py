"""Swap an enhanced encoder into an existing LLaVA checkpoint (no retraining).

The checkpoint's family comes from its config.json (`checkpoints.py`: LLaVA-1.5, LLaVA-NeXT and
LLaVA-OneVision in llava-hf format, LLaVA-1.5 and LLaVA-NeXT `llava-v1.6-*` in the original
format). For every family the encoder's family, width, patch size, image size (so the token grid)
and depth are checked against the checkpoint's tower first, and only the tower's weights change:

- llava-hf: the checkpoint folder is copied as is, and in the weight files that hold tower
  tensors (`model.vision_tower.*`, or `vision_tower.*` in older uploads) exactly those tensors
  are replaced by the encoder's, in the stored dtype; every other tensor and file stays
  byte-identical, so the vision feature layer, select strategy, anyres tiling and processor are
  the checkpoint's own. No model is instantiated (a 7B checkpoint swaps shard by shard).
  LLaVA-OneVision's tower is SO400M without its last layer: the encoder's first N layers are
  copied (N = the tower's depth) and the record says so; SigLIP's pooling head is never part of
  a LLaVA tower.
- original LLaVA (haotian-liu/LLaVA, `mm_vision_tower` in config.json): `mm_vision_tower` is
  rewritten to the genhancer name of the encoder (`genhancer:/abs/folder` or a registry name);
  tower weights stored in the checkpoint (`model.vision_tower.vision_tower.*`, e.g. in
  llava-v1.6-* whose tower was fine-tuned) are replaced where present. Loading it needs the hook
  (`llava_patches.apply()`).

Both write `genhancer.json` with a `swap` record. The input checkpoint is only read. The
projector was trained on the old encoder's features: a swap is the cheap, weaker option; the
paper's protocol retrains projector and LLM (`scripts/llava_finetune.sh`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import PreTrainedModel

from .. import __version__
from ..errors import GenhancerError
from ..models.encoders import folder_family
from ..models.families import FAMILIES, family_of_model_type, get_family
from ..utils import atomic_dir, quiet_transformers
from .checkpoints import (
    LlavaFamily,
    checkpoint_family,
    feature_selection,
    read_checkpoint_config,
)
from .registry import PREFIX, is_genhancer_name, resolve_tower

__all__ = [
    "TowerGeometry",
    "checkpoint_format",
    "check_fits",
    "encoder_geometry",
    "fitting_presets",
    "geometry_of",
    "load_encoder_tower",
    "original_tower_name",
    "resolve_encoder",
    "stored_tower_state",
    "swap_checkpoint",
    "swap_llava_hf_tower",
    "tower_key",
    "tower_state",
    "warn_projector_once",
    "ORIGINAL_TOWER_PREFIX",
    "PROJECTOR_NOTE",
]

FINETUNE_HINT = "scripts/llava_finetune.sh"
# Where the original LLaVA code stores a tower's weights: LlavaMetaModel.vision_tower (the tower
# wrapper) -> .vision_tower (the HF vision model).
ORIGINAL_TOWER_PREFIX = "model.vision_tower.vision_tower."
# Towers original-format LLaVA checkpoints name by hub id (no config to read offline).
KNOWN_TOWERS = {  # family, width, patch, image size, depth
    "openai/clip-vit-large-patch14-336": ("clip", 1024, 14, 336, 24),
    "openai/clip-vit-large-patch14": ("clip", 1024, 14, 224, 24),
}
_WARNED = False
PROJECTOR_NOTE = (
    "the checkpoint's projector and LLM were trained on the old encoder's features; a "
    "swapped encoder is the cheap, weaker option. For the paper's protocol retrain them on "
    f"the enhanced encoder with {FINETUNE_HINT} (LLaVA-1.5 pretrain + finetune)"
)


@dataclass(frozen=True)
class TowerGeometry:
    """What must agree between a checkpoint's tower and a replacement encoder.

    The token grid (patches per side) is what the projector and LLM were trained on; the pixel
    size is only known from a config (stored weights give the grid: SigLIP SO400M/14 at 384 px
    has a 27 x 27 grid, whose patches cover 378 px).
    """

    family: str
    hidden_size: int
    patch_size: int
    grid: int  # patches per side
    num_layers: int
    image_size: int | None = None  # None: read from stored weights, which hold only the grid
    source: str = ""  # where the numbers came from (for messages)

    @property
    def tokens(self) -> int:
        return self.grid**2

    def describe_grid(self) -> str:
        px = f"{self.image_size} px, " if self.image_size else ""
        return f"{px}a {self.grid} x {self.grid} grid ({self.tokens} image tokens)"


def warn_projector_once() -> None:
    """Warn (once per process) that a swapped tower meets a projector trained on the old one."""
    global _WARNED
    if _WARNED:
        return
    _WARNED = True
    warnings.warn(PROJECTOR_NOTE, UserWarning, stacklevel=2)


# --- inputs --------------------------------------------------------------------------------


def checkpoint_format(ckpt: str | Path) -> str:
    """'llava-hf' or 'original' (the family table's format); a one-line error for anything else."""
    return checkpoint_family(ckpt)[0].format


def resolve_encoder(vision_tower: str | Path) -> tuple[Path, str]:
    """(folder, name to store) for `--vision-tower`: a folder or a `genhancer[:NAME|:PATH]` name."""
    text = str(vision_tower)
    if text == PREFIX or text.startswith(PREFIX + ":"):
        spec = resolve_tower(text)
        return spec.path.resolve(), text
    folder = Path(text).expanduser()
    folder_family(folder)  # exists, has config.json, is CLIP or SigLIP
    return folder.resolve(), f"{PREFIX}:{folder.resolve()}"


def _quiet(fn, *args, **kwargs):
    with quiet_transformers():  # a full CLIPModel folder has text weights
        return fn(*args, **kwargs)


def load_encoder_tower(folder: str | Path) -> PreTrainedModel:
    """The encoder folder's vision tower (CLIPVisionModel / SiglipVisionModel), fp32."""
    family, _ = folder_family(folder)
    return _quiet(
        get_family(family).cls("vision_model").from_pretrained, folder, dtype=torch.float32
    )


def _geometry(config, family: str, source: str) -> TowerGeometry:
    return geometry_of(
        family,
        config.hidden_size,
        config.patch_size,
        config.image_size,
        config.num_hidden_layers,
        source,
    )


def geometry_of(
    family: str,
    hidden_size: int,
    patch_size: int,
    image_size: int,
    num_layers: int,
    source: str = "",
) -> TowerGeometry:
    """The geometry of a tower known by its config (its grid: image_size // patch_size, as the
    patch convolution drops any remainder)."""
    return TowerGeometry(
        family=family,
        hidden_size=hidden_size,
        patch_size=patch_size,
        grid=image_size // patch_size,
        num_layers=num_layers,
        image_size=image_size,
        source=source,
    )


def encoder_geometry(folder: str | Path) -> TowerGeometry:
    family, _ = folder_family(folder)
    config = transformers.AutoConfig.from_pretrained(folder)
    vision = getattr(config, "vision_config", config)
    return _geometry(vision, family, f"the encoder at {folder}")


def check_fits(old: TowerGeometry, new: TowerGeometry, dropped_last_layers: int = 0) -> None:
    """One-line error naming every field where the encoder does not fit the checkpoint, and why.

    Args:
        old: the checkpoint's tower.
        new: the encoder.
        dropped_last_layers: the checkpoint's tower lacks this many of its encoder's last layers
            (LLaVA-OneVision: 1), so an encoder that deep fits too (its first layers are used).
    """
    problems = []
    if old.family != new.family:
        problems.append(
            f"family: the checkpoint's tower is {old.family}, the encoder is {new.family} "
            "(token layout and features differ)"
        )
    if old.hidden_size != new.hidden_size:
        problems.append(
            f"width: the projector takes {old.hidden_size}-wide features, the encoder gives "
            f"{new.hidden_size}"
        )
    if old.patch_size != new.patch_size:
        problems.append(
            f"patch size: {old.patch_size} in the checkpoint, {new.patch_size} in "
            "the encoder (the patch embedding would not load)"
        )
    if old.grid != new.grid:
        problems.append(
            f"token grid: the checkpoint's tower sees {old.describe_grid()}, what the LLM was "
            f"trained on; the encoder {new.describe_grid()}"
        )
    depths = sorted({old.num_layers, old.num_layers + dropped_last_layers})
    if new.num_layers not in depths:
        fits = " or ".join(str(d) for d in depths)
        kept = (
            f"; this family keeps the first {old.num_layers} of the encoder's layers"
            if dropped_last_layers
            else ""
        )
        problems.append(
            f"depth: {old.num_layers} layers in the checkpoint's tower, "
            f"{new.num_layers} in the encoder (the selected layer would differ; "
            f"encoders of {fits} layers fit{kept})"
        )
    if problems:
        fits = (
            f"a {old.family} encoder {old.hidden_size} wide, patch {old.patch_size}, "
            f"{old.describe_grid()}, {' or '.join(str(d) for d in depths)} layers"
        )
        presets = fitting_presets(old, dropped_last_layers)
        raise GenhancerError(
            f"{new.source} does not fit the checkpoint ({old.source}): "
            + "; ".join(problems)
            + f"; what fits: {fits}"
            + (f" (presets {', '.join(presets)})" if presets else "")
            + "; enhance the checkpoint's own tower instead"
        )


def fitting_presets(old: TowerGeometry, dropped_last_layers: int = 0) -> list[str]:
    """The shipped presets whose enhanced encoder fits a checkpoint's tower (for messages)."""
    from ..config import available_presets, load_config
    from ..models.paper_towers import PAPER_TOWERS, preset_tower

    depths = {old.num_layers, old.num_layers + dropped_last_layers}
    found = []
    for name in available_presets():
        tower = preset_tower(name)
        if tower is None:
            continue
        family, shape = PAPER_TOWERS[tower]
        if (family, shape["hidden_size"], shape["patch_size"]) != (
            old.family,
            old.hidden_size,
            old.patch_size,
        ) or shape["num_hidden_layers"] not in depths:
            continue
        if load_config(name).encoder.image_size // old.patch_size == old.grid:
            found.append(name)
    return found


# --- llava-hf ------------------------------------------------------------------------------


def llava_hf_geometry(config, source: str) -> TowerGeometry:
    vision = config.vision_config
    found = family_of_model_type(getattr(vision, "model_type", None))
    if found is None:
        raise GenhancerError(
            f"{source}: vision tower type {vision.model_type!r} is not CLIP or "
            "SigLIP; only those can be swapped"
        )
    return _geometry(vision, found[0].name, source)


def _vision_tower_module(model) -> torch.nn.Module:
    inner = getattr(model, "model", model)
    tower = getattr(inner, "vision_tower", None)
    if tower is None:
        raise GenhancerError(f"{type(model).__name__} has no model.vision_tower to swap")
    return tower


def _layer_index(key: str) -> int | None:
    m = re.match(r"encoder\.layers\.(\d+)\.", key)
    return int(m.group(1)) if m else None


def tower_state(
    stored: dict[str, tuple[int, ...]], encoder: dict[str, torch.Tensor], source: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The encoder's tensors for each stored tower weight, and what of the encoder goes unused.

    Keys on both sides are compared without a `vision_model.` level. Unused encoder weights may
    only be SigLIP's pooling head (LLaVA reads hidden states) and layers past the tower's depth
    (checked against the family by `check_fits` before); anything else, a stored weight the
    encoder lacks, or a differing shape is a one-line error.

    Args:
        stored: the checkpoint tower's weight names (normalised) and shapes.
        encoder: the encoder's vision state dict.
        source: how to name the checkpoint in messages.
    """
    encoder = {tower_key(k): v for k, v in encoder.items()}
    depth = len({i for k in stored if (i := _layer_index(k)) is not None})
    missing = sorted(set(stored) - set(encoder))
    wrong = sorted(
        k for k in set(stored) & set(encoder) if tuple(encoder[k].shape) != tuple(stored[k])
    )
    extra = set(encoder) - set(stored)
    unused_layers = sorted({i for k in extra if (i := _layer_index(k)) is not None and i >= depth})
    allowed = {
        k
        for k in extra
        if k.startswith("head.") or ((i := _layer_index(k)) is not None and i >= depth)
    }
    unexpected = sorted(extra - allowed)
    if missing or wrong or unexpected:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}"
            for what, keys in (
                ("missing in the encoder", missing),
                ("other shapes", wrong),
                ("not in the tower", unexpected),
            )
            if keys
        )
        raise GenhancerError(
            f"the encoder's weights do not match {source}'s vision tower ({detail})"
        )
    unused = [f"encoder.layers.{unused_layers[0]}-{unused_layers[-1]}"] if unused_layers else []
    if any(k.startswith("head.") for k in extra):
        unused.append("head (SigLIP pooling head)")
    return {k: encoder[k] for k in stored}, unused


def swap_llava_hf_tower(
    model,
    encoder_dir: str | Path,
    source: str = "the checkpoint",
    family: LlavaFamily | None = None,
) -> list[str]:
    """Load the encoder's vision weights strictly into a loaded llava-hf model's tower.

    Args:
        model: a llava-hf model of a known family (any dtype/device).
        encoder_dir: an exported (or any CLIP/SigLIP) encoder folder.
        source: how to name the checkpoint in error messages.
        family: the checkpoint's family (its dropped last layers); default LLaVA-1.5's rules.

    Returns:
        What of the encoder the tower does not use (e.g. its last layer, its pooling head).
    """
    dropped = family.dropped_last_layers if family else 0
    check_fits(llava_hf_geometry(model.config, source), encoder_geometry(encoder_dir), dropped)
    tower = _vision_tower_module(model)
    current = tower.state_dict()
    names = {tower_key(k): k for k in current}
    state, unused = tower_state(
        {n: tuple(current[k].shape) for n, k in names.items()},
        load_encoder_tower(encoder_dir).state_dict(),
        source,
    )
    try:
        tower.load_state_dict({names[n]: v for n, v in state.items()}, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise GenhancerError(
            f"the encoder's weights do not load into {source}'s vision tower ({first})"
        ) from exc
    warn_projector_once()
    return unused


def _tower_prefix(key: str, family: LlavaFamily) -> str | None:
    return next((p for p in family.tower_prefixes if key.startswith(p)), None)


def _stored_tower(files: list[Path], family: LlavaFamily) -> dict[Path, dict[str, str]]:
    """weight file -> {stored key: normalised tower key} for the files holding tower weights."""
    out = {}
    for f in files:
        keys = _stored_keys(f)
        found = {k: tower_key(k[len(p) :]) for k in keys if (p := _tower_prefix(k, family))}
        if found:
            out[f] = found
    return out


def check_config_matches_stored(
    config: TowerGeometry, stored: dict[str, tuple[int, ...]], source: str
) -> None:
    """The checkpoint's vision_config must describe the tower weights it stores: the swap trusts
    the config for the fit, and a deeper config would otherwise drop encoder layers silently."""
    depth = len({i for k in stored if (i := _layer_index(k)) is not None})
    widths = {shape[0] for k, shape in stored.items() if k.endswith("patch_embedding.weight")}
    found = []
    if depth != config.num_layers:
        found.append(f"{config.num_layers} layers in the config, {depth} stored")
    if widths and widths != {config.hidden_size}:
        found.append(f"{config.hidden_size} wide in the config, {min(widths)} stored")
    if found:
        raise GenhancerError(
            f"{source}: its config.json vision_config disagrees with the weights "
            f"stored in it ({'; '.join(found)}); fix the config (or the weights) "
            "before swapping"
        )


def _swap_llava_hf(
    ckpt: Path, encoder_dir: Path, out: Path, family: LlavaFamily, config: dict[str, Any]
) -> dict[str, Any]:
    from transformers import AutoProcessor

    source = f"{family.name} checkpoint {ckpt}"
    hf_config = transformers.AutoConfig.from_pretrained(ckpt)
    old = llava_hf_geometry(hf_config, source)
    check_fits(old, encoder_geometry(encoder_dir), family.dropped_last_layers)
    try:
        AutoProcessor.from_pretrained(ckpt)
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0]
        raise GenhancerError(
            f"{ckpt} has no loadable processor (llava-hf checkpoints ship "
            f"processor_config.json and tokenizer files): {reason}"
        ) from exc
    located = _stored_tower(_weight_files(ckpt), family)
    if not located:
        raise GenhancerError(
            f"{source} stores no vision tower weights (no keys under "
            f"{' or '.join(family.tower_prefixes)}); nothing to swap"
        )
    shapes = {}
    for f, keys in located.items():
        shapes.update({name: shape for name, shape in _stored_shapes(f, keys).items()})
    check_config_matches_stored(old, shapes, source)
    state, unused = tower_state(shapes, load_encoder_tower(encoder_dir).state_dict(), source)
    shutil.copytree(ckpt, out, dirs_exist_ok=True)
    dtypes = set()
    for f, keys in located.items():
        stored, metadata = _load_weights(f), _metadata(f)
        for key, name in keys.items():
            dtypes.add(str(stored[key].dtype).replace("torch.", ""))
            stored[key] = state[name].to(stored[key].dtype).contiguous()
        _save_weights(stored, out / f.name, metadata)
    warn_projector_once()
    return {
        "format": "llava-hf",
        "family": family.name,
        "tower_module": "model.vision_tower",
        "replaced_weight_files": sorted(f.name for f in located),
        "tower_weights": len(state),
        "tower_layers": old.num_layers,
        "unused_encoder_weights": unused,
        "dtype": ",".join(sorted(dtypes)),
        "tiling": family.tiling,
        "kept": feature_selection(family, config),
    }


# --- original LLaVA ------------------------------------------------------------------------


def _weight_files(ckpt: Path) -> list[Path]:
    files = sorted(ckpt.glob("*.safetensors")) + sorted(ckpt.glob("*.bin"))
    return [f for f in files if not f.name.startswith(("mm_projector", "training_args"))]


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _metadata(path: Path) -> dict[str, str] | None:
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return f.metadata()


def _save_weights(
    state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, path, metadata=metadata or {"format": "pt"})
    else:
        torch.save(state, path)


def _stored_keys(path: Path) -> list[str]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return list(f.keys())
    return list(_load_weights(path))


def _stored_shapes(path: Path, keys: dict[str, str]) -> dict[str, tuple[int, ...]]:
    """{normalised tower key: shape} of the stored keys `keys` (read lazily from safetensors)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return {name: tuple(f.get_slice(key).get_shape()) for key, name in keys.items()}
    state = _load_weights(path)
    return {name: tuple(state[key].shape) for key, name in keys.items()}


def _stored_tower_keys(path: Path) -> list[str]:
    return [k for k in _stored_keys(path) if k.startswith(ORIGINAL_TOWER_PREFIX)]


def stored_tower_state(ckpt: str | Path) -> dict[str, torch.Tensor]:
    """The tower weights an original-format checkpoint stores (keys without the tower prefix or
    a `vision_model.` level); empty when it stores none (released LLaVA-1.5 checkpoints)."""
    state: dict[str, torch.Tensor] = {}
    for f in _weight_files(Path(ckpt)):
        if _stored_tower_keys(f):
            state.update(
                {
                    tower_key(k[len(ORIGINAL_TOWER_PREFIX) :]): v
                    for k, v in _load_weights(f).items()
                    if k.startswith(ORIGINAL_TOWER_PREFIX)
                }
            )
    return state


def tower_key(key: str) -> str:
    """A tower weight's name without the `vision_model.` level (transformers 4 had it, 5 not)."""
    return key[len("vision_model.") :] if key.startswith("vision_model.") else key


def _stored_geometry(state: dict[str, torch.Tensor], source: str) -> TowerGeometry | None:
    """The tower geometry implied by stored tower weights (CLIP or SigLIP, either key layout)."""
    state = {tower_key(k): v for k, v in state.items()}
    patch = state.get("embeddings.patch_embedding.weight")
    pos = state.get("embeddings.position_embedding.weight")
    if patch is None or pos is None:
        return None
    # Stored weights show the token layout only (a CLS embedding or not): name the first
    # registered family of that layout (clip / siglip).
    has_cls = "embeddings.class_embedding" in state
    family = next(f.name for f in FAMILIES.values() if f.has_cls_token == has_cls)
    layers = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    side = round((pos.shape[0] - has_cls) ** 0.5)
    return TowerGeometry(
        family=family,
        hidden_size=patch.shape[0],
        patch_size=patch.shape[-1],
        grid=side,
        num_layers=len(layers),
        source=source,
    )


def original_tower_name(config: dict[str, Any]) -> str:
    return config.get("mm_vision_tower") or config.get("vision_tower") or ""


def _named_geometry(name: str, source: str) -> TowerGeometry | None:
    """The old tower's geometry from its name: a genhancer name, a local folder, a known id."""
    try:
        if is_genhancer_name(name):
            return encoder_geometry(resolve_tower(name).path)
        if Path(name, "config.json").is_file():
            return encoder_geometry(name)
    except GenhancerError:
        return None
    if name in KNOWN_TOWERS:
        return geometry_of(*KNOWN_TOWERS[name], source=source)
    return None


def _same_tower(a: TowerGeometry, b: TowerGeometry) -> bool:
    return (a.hidden_size, a.patch_size, a.grid, a.num_layers) == (
        b.hidden_size,
        b.patch_size,
        b.grid,
        b.num_layers,
    )


def original_geometry(
    ckpt: Path, config: dict[str, Any], stored: dict[str, torch.Tensor] | None
) -> TowerGeometry | None:
    """What is known of an original-format checkpoint's tower (None: only its width).

    Stored tower weights win; when the tower's name also tells a geometry, the two must agree
    (a checkpoint whose config names another tower than the one it stores is an error).
    """
    name = original_tower_name(config)
    source = f"original-format checkpoint {ckpt}, tower {name!r}"
    named = _named_geometry(name, source)
    found = _stored_geometry(stored, source + " (stored weights)") if stored else None
    if found is not None and named is not None and not _same_tower(found, named):
        raise GenhancerError(
            f"{ckpt}'s config names the tower {name!r} ({named.hidden_size} wide, patch "
            f"{named.patch_size}, {named.describe_grid()}, {named.num_layers} layers) but the "
            f"tower weights stored in it are {found.hidden_size} wide, patch "
            f"{found.patch_size}, {found.describe_grid()}, {found.num_layers} layers; fix "
            "mm_vision_tower in its config.json (or its weights) before swapping"
        )
    return found or named


def check_original_fits(
    ckpt: Path,
    config: dict[str, Any],
    encoder_dir: Path,
    stored: dict[str, torch.Tensor] | None = None,
) -> TowerGeometry:
    """Width (mm_hidden_size), the select feature, and the full geometry when it can be known."""
    new = encoder_geometry(encoder_dir)
    width = config.get("mm_hidden_size")
    if width is not None and width != new.hidden_size:
        raise GenhancerError(
            f"{new.source} does not fit original-format checkpoint {ckpt}: width: its projector "
            f"takes {width}-wide features (mm_hidden_size), the encoder gives {new.hidden_size}"
        )
    feature = config.get("mm_vision_select_feature", "patch")
    if not get_family(new.family).has_cls_token and feature == "patch":
        raise GenhancerError(
            f"{new.source} is a {new.family} encoder (no CLS token) but {ckpt} selects 'patch' "
            "features (drops the first token, LLaVA's CLS); such a checkpoint only fits a CLIP "
            "tower"
        )
    old = original_geometry(ckpt, config, stored)
    if old is None:
        warnings.warn(
            f"could not tell the image size, patch size or depth of {ckpt}'s tower "
            f"{original_tower_name(config)!r} (no stored tower weights, not a local folder); only "
            "the width was checked",
            UserWarning,
            stacklevel=2,
        )
    else:
        check_fits(old, new)
    return new


def swap_original(ckpt: Path, encoder_dir: Path, tower_name: str, out: Path) -> dict[str, Any]:
    config = read_checkpoint_config(ckpt)
    files = _weight_files(ckpt)
    with_tower = [f for f in files if _stored_tower_keys(f)]
    stored: dict[str, torch.Tensor] = {}
    for f in with_tower:
        stored.update(
            {
                k[len(ORIGINAL_TOWER_PREFIX) :]: v
                for k, v in _load_weights(f).items()
                if k.startswith(ORIGINAL_TOWER_PREFIX)
            }
        )
    check_original_fits(ckpt, config, encoder_dir, stored)
    new_state = (
        {tower_key(k): v for k, v in load_encoder_tower(encoder_dir).state_dict().items()}
        if stored
        else {}
    )
    if stored:
        stored = {tower_key(k): v for k, v in stored.items()}
        if set(stored) != set(new_state) or any(
            stored[k].shape != new_state[k].shape for k in stored
        ):
            missing = sorted(set(stored) ^ set(new_state))[:3]
            raise GenhancerError(
                f"the tower weights stored in {ckpt} do not match the encoder's state dict "
                f"(differing keys or shapes, e.g. {missing or 'shapes'})"
            )
    # Copy everything, then rewrite config.json and the files holding tower weights.
    shutil.copytree(ckpt, out, dirs_exist_ok=True)
    for f in with_tower:
        state = _load_weights(f)
        for key in state:
            if key.startswith(ORIGINAL_TOWER_PREFIX):
                old = state[key]
                new = new_state[tower_key(key[len(ORIGINAL_TOWER_PREFIX) :])]
                state[key] = new.to(old.dtype).contiguous()
        _save_weights(state, out / f.name)
    old_name = original_tower_name(config)
    config["mm_vision_tower"] = tower_name
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    warn_projector_once()
    return {
        "format": "original",
        "old_mm_vision_tower": old_name,
        "mm_vision_tower": tower_name,
        "replaced_weight_files": [f.name for f in with_tower],
        "tower_weights_in_checkpoint": bool(stored),
    }


# --- the command ---------------------------------------------------------------------------


def swap_checkpoint(ckpt: str | Path, vision_tower: str | Path, output: str | Path) -> Path:
    """Write OUTPUT: the LLaVA checkpoint CKPT with the encoder as its vision tower.

    Args:
        ckpt: a LLaVA checkpoint folder of a family in `checkpoints.CHECKPOINT_FAMILIES`
            (only read).
        vision_tower: an encoder folder (what `genhancer export` writes) or a
            `genhancer[:NAME|:PATH]` name; original-format checkpoints store this name.
        output: the folder to write; it must not exist.
    """
    ckpt, out = Path(ckpt), Path(output)
    if out.exists():
        raise GenhancerError(f"output {out} already exists; choose a new folder")
    if out.resolve() == ckpt.resolve():
        raise GenhancerError("the output folder must differ from the checkpoint")
    family, config = checkpoint_family(ckpt)
    encoder_dir, tower_name = resolve_encoder(vision_tower)
    with atomic_dir(out, ".tmp-swap") as tmp:
        if family.format == "llava-hf":
            record = _swap_llava_hf(ckpt, encoder_dir, tmp, family, config)
        else:
            record = swap_original(ckpt, encoder_dir, tower_name, tmp)
            record.update(family=family.name, kept=feature_selection(family, config))
        geometry = asdict(encoder_geometry(encoder_dir))
        geometry.pop("source")
        provenance = _encoder_provenance(encoder_dir)
        (tmp / "genhancer.json").write_text(
            json.dumps(
                {
                    "genhancer_llava_version": __version__,
                    "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "swap": {
                        "checkpoint": str(ckpt.resolve()),
                        "encoder": str(encoder_dir),
                        "encoder_geometry": geometry,
                        "encoder_provenance": provenance,
                        "retrained": False,
                        "note": "projector and LLM trained on the old encoder; "
                        f"see {FINETUNE_HINT}",
                        **record,
                    },
                },
                indent=2,
            )
        )
    return out


def _encoder_provenance(encoder_dir: Path) -> dict[str, Any] | None:
    path = encoder_dir / "genhancer.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    return {k: info.get(k) for k in ("base_model", "family", "created", "genhancer_llava_version")}
