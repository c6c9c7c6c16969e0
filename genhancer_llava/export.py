"""Export: LoRA merged into the base encoder, written as a standard Hugging Face folder.

The folder has the base's own class, per family, and loads without this package:

| base folder                   | export                       | also loads with   |
|-------------------------------|------------------------------|-------------------|
| CLIPModel                     | CLIPModel (text unchanged)   | CLIPVisionModel   |
| CLIPVisionModelWithProjection | the same class               | CLIPVisionModel   |
| SiglipModel                   | SiglipModel (text unchanged) | SiglipVisionModel |
| SiglipVisionModel             | SiglipVisionModel            |                   |

It carries the base's processor and tokenizer files and a `genhancer.json` provenance record.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from . import __version__
from .errors import GenhancerError
from .models.encoders import load_encoder, read_vision_config
from .models.families import get_family
from .stages import stages
from .train.run_dir import RunDir
from .utils import atomic_dir, quiet_transformers

__all__ = ["merge_adapter", "export_encoder", "PROCESSOR_FILES"]

# Processor and tokenizer files copied from the base folder when present.
PROCESSOR_FILES = (
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "spiece.model",
)


def merge_adapter(
    base_path: str | Path, adapter_dir: str | Path, image_size: int, family: str | None = None
) -> PreTrainedModel:
    """Base vision tower (+ CLIP projection) with the LoRA adapter merged in (a plain HF model)."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise GenhancerError(f"{adapter_dir} holds no LoRA adapter (adapter_config.json missing)")
    encoder = load_encoder(base_path, image_size, dtype=torch.float32, family=family)
    peft_model = PeftModel.from_pretrained(encoder.model, adapter_dir)
    return peft_model.merge_and_unload()


def _quiet_from_pretrained(cls, path: Path) -> PreTrainedModel:
    with quiet_transformers():
        return cls.from_pretrained(path)


def _full_model(base_path: Path, merged: PreTrainedModel) -> PreTrainedModel:
    """The base's own model class with the merged vision weights in it."""
    _, model_type, found = read_vision_config(base_path)
    family = get_family(found)
    if model_type != family.full_model_type:
        return merged  # a vision-only base: the merged tower is already its class
    full = _quiet_from_pretrained(family.cls("full_model"), base_path)
    # The trained tower is the full model's `vision_model`; a projection (CLIP's
    # visual_projection) sits beside it under the same name in both.
    tower = getattr(merged, "vision_model", merged)
    full.vision_model.load_state_dict(tower.state_dict(), strict=True)
    if hasattr(merged, "visual_projection"):
        full.visual_projection.load_state_dict(merged.visual_projection.state_dict(), strict=True)
    return full


def export_encoder(
    run_dir: str | Path, output: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Merge the run's final LoRA adapter into its base encoder and write an HF folder.

    Args:
        run_dir: an enhancement run's output folder (holds config.yaml and the stage folders).
        output: where to write; default `run_dir/encoder`.
        overwrite: replace an existing output folder (otherwise an error).
    """
    run = RunDir(Path(run_dir))
    cfg = run.load_config()
    stage = stages(cfg)[-1].name
    adapter = run.final(stage) / "adapter"
    if not adapter.is_dir():
        raise GenhancerError(
            f"{adapter} is missing: the run's last stage ({stage}) has not finished; run it first"
        )
    output = Path(output) if output else run.encoder_dir
    if output.exists() and any(output.iterdir()) and not overwrite:
        if (output / "genhancer.json").is_file():  # `genhancer enhance` exports at its end
            raise GenhancerError(
                f"{output} already holds an export of this run (genhancer enhance exports when "
                "it finishes); pass --overwrite to export it again, or --output DIR for a copy"
            )
        raise GenhancerError(f"{output} already exists; pass --overwrite to replace it")

    base = Path(cfg.encoder.path)
    merged = merge_adapter(base, adapter, cfg.encoder.image_size, cfg.encoder.family)
    model = _full_model(base, merged)

    # Write next to the target, then swap in: an interrupted export never leaves half a folder.
    with atomic_dir(output, ".tmp-export") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for name in PROCESSOR_FILES:
            if (base / name).is_file():
                shutil.copy2(base / name, tmp / name)
        (tmp / "genhancer.json").write_text(json.dumps(_provenance(run, cfg, base), indent=2))
    return output


def _provenance(run: RunDir, cfg: Any, base: Path) -> dict[str, Any]:
    done = {}
    for stage in stages(cfg):
        summary = run.summary(stage.name) or {}
        done[stage.name] = {
            k: summary.get(k) for k in ("policy", "steps", "loss_first", "loss_last")
        }
    return {
        "genhancer_llava_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "base_model": str(base.resolve()),
        "family": cfg.encoder.family,
        "global_token": get_family(cfg.encoder.family).global_token,
        "stages": done,
        "config": cfg.to_dict(),
    }
