"""The layout of a run's output folder, and the weights each stage leaves for the next.

    OUT/config.yaml                  the resolved config every stage process reads
    OUT/<stage>/checkpoints/step-00000040   accelerate states (periodic; 8-digit step)
    OUT/<stage>/logs/genhancer/      tensorboard
    OUT/<stage>/final/               projector.safetensors, denoiser.safetensors,
                                     adapter/ (peft LoRA, stages that train the encoder),
                                     summary.json
    OUT/encoder/                     the exported Hugging Face folder

<stage> is stage1, stage2 or end-to-end (`genhancer_llava.stages`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config, load_config
from ..errors import GenhancerError
from ..stages import STAGE_NAMES

if TYPE_CHECKING:  # torch loads when tensors are read or written, not to lay out a folder
    import torch
    from torch import nn

__all__ = ["RunDir", "save_tensors", "load_module"]


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def encoder_dir(self) -> Path:
        return self.root / "encoder"

    def stage(self, name: str) -> Path:
        if name not in STAGE_NAMES:
            raise GenhancerError(f"unknown stage '{name}'; choose one of {', '.join(STAGE_NAMES)}")
        return self.root / name

    def final(self, name: str) -> Path:
        return self.stage(name) / "final"

    def checkpoints(self, name: str) -> Path:
        return self.stage(name) / "checkpoints"

    def logs(self, name: str) -> Path:
        return self.stage(name) / "logs"

    def load_config(self) -> Config:
        if not self.config_file.is_file():
            raise GenhancerError(
                f"{self.config_file} is missing; start the run with `genhancer enhance` "
                "(or scripts/enhance_clip.sh), which writes it"
            )
        return load_config(config_file=self.config_file)

    def summary(self, name: str) -> dict[str, Any] | None:
        path = self.final(name) / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def owned_paths(self) -> list[Path]:
        """What a run writes here (and `--overwrite` may delete); other files are left alone."""
        return [self.config_file, self.encoder_dir, *(self.root / s for s in STAGE_NAMES)]

    def has_outputs(self) -> bool:
        return any(p.exists() for p in self.owned_paths())

    def clear(self) -> None:
        for path in self.owned_paths():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def save_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    """A state dict (e.g. one gathered under ZeRO-3) as safetensors."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))


def load_module(module: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise GenhancerError(f"{path} is missing; the previous stage did not finish")
    from safetensors.torch import load_file

    state = load_file(str(path))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise GenhancerError(
            f"{path} does not fit this config's {type(module).__name__} ({first}); was the "
            "earlier stage run with another preset?"
        ) from None
