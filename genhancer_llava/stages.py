"""The stages of an enhancement run, in one place: name, trainable policy, steps, lr, start.

| stage      | schedule   | policy (what trains)        | steps, lr   | starts from            |
|------------|------------|-----------------------------|-------------|------------------------|
| stage1     | two-stage  | stage1                      | stage1.*    | random projector/DiT   |
| stage2     | two-stage  | stage2.mode: lora-only, all | stage2.*    | stage-1 projector/DiT  |
| end-to-end | end-to-end | end-to-end                  | stage1.*    | random (ablation)      |

Policies (applied to the Enhancer by `models.enhancer.apply_stage_policy`, asserted by tests):

| policy      | encoder            | projector | denoiser | starts from              |
|-------------|--------------------|-----------|----------|--------------------------|
| stage1      | frozen             | trained   | trained  | random projector/DiT     |
| lora-only   | LoRA only          | frozen    | frozen   | stage-1 projector/DiT    |
| all         | LoRA only          | trained   | trained  | stage-1 projector/DiT    |
| end-to-end  | LoRA only          | trained   | trained  | random (ablation)        |

Config validation, the run folder, the trainer, the launcher and export all read this module;
none keeps its own list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import GenhancerError

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "StagePolicy",
    "STAGE_POLICIES",
    "STAGE2_MODES",
    "SCHEDULES",
    "STAGE_NAMES",
    "Stage",
    "stages",
    "get_stage",
]


@dataclass(frozen=True)
class StagePolicy:
    encoder_lora: bool  # False: encoder frozen; True: LoRA adapters trained, base frozen
    projector: bool
    denoiser: bool
    from_stage1: bool  # projector and denoiser start from the stage-1 state


STAGE_POLICIES: dict[str, StagePolicy] = {
    "stage1": StagePolicy(encoder_lora=False, projector=True, denoiser=True, from_stage1=False),
    "lora-only": StagePolicy(encoder_lora=True, projector=False, denoiser=False, from_stage1=True),
    "all": StagePolicy(encoder_lora=True, projector=True, denoiser=True, from_stage1=True),
    "end-to-end": StagePolicy(encoder_lora=True, projector=True, denoiser=True, from_stage1=False),
}
STAGE2_MODES = ("lora-only", "all")  # the policies `stage2.mode` may choose
# schedule -> the stages it runs, in order
SCHEDULES: dict[str, tuple[str, ...]] = {
    "two-stage": ("stage1", "stage2"),
    "end-to-end": ("end-to-end",),  # the ablation: everything at once, from scratch
}
STAGE_NAMES = ("stage1", "stage2", "end-to-end")  # every stage folder a run may hold


@dataclass(frozen=True)
class Stage:
    """One stage of a run, resolved from the config."""

    name: str  # also its folder in the run directory
    policy: str  # a key of STAGE_POLICIES
    steps: int  # optimiser steps
    lr: float

    @property
    def rule(self) -> StagePolicy:
        return STAGE_POLICIES[self.policy]

    @property
    def starts_from(self) -> str | None:
        """The stage whose final projector/denoiser this one starts from (None: random)."""
        return "stage1" if self.rule.from_stage1 else None


def get_stage(cfg: Config, name: str) -> Stage:
    """The stage `name` as the config sets it (steps, lr and, for stage 2, its mode)."""
    if name == "stage1":
        return Stage("stage1", "stage1", cfg.stage1.steps, cfg.stage1.lr)
    if name == "stage2":
        return Stage("stage2", cfg.stage2.mode, cfg.stage2.steps, cfg.stage2.lr)
    if name == "end-to-end":  # trains from scratch with stage 1's steps and lr
        return Stage("end-to-end", "end-to-end", cfg.stage1.steps, cfg.stage1.lr)
    raise GenhancerError(f"unknown stage '{name}'; choose one of {', '.join(STAGE_NAMES)}")


def stages(cfg: Config) -> list[Stage]:
    """The stages `cfg.schedule` runs, in order."""
    return [get_stage(cfg, name) for name in SCHEDULES[cfg.schedule]]
