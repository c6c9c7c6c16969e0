"""Typed run configuration: dataclasses, YAML presets, `key.sub=value` overrides.

The paper's settings live in YAML presets shipped with the package (`genhancer_llava/presets`),
never as constants in code. A preset may name another with `inherit:` and change a few keys.
Every dataclass checks its values in `__post_init__` and raises `ConfigError` with a one-line
message naming the key and what to do.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import ConfigError
from .models.families import FAMILIES
from .stages import SCHEDULES, STAGE2_MODES

__all__ = [
    "EncoderConfig",
    "TargetConfig",
    "ProjectorConfig",
    "DenoiserConfig",
    "FlowDenoiserConfig",
    "MaskedDenoiserConfig",
    "DENOISER_CONFIGS",
    "LoraConfig",
    "StageConfig",
    "DataConfig",
    "OptimConfig",
    "RunConfig",
    "Config",
    "available_presets",
    "load_config",
    "apply_overrides",
]

TARGET_KINDS = ("flux_vae", "pixels", "vq")
# which targets each denoiser reconstructs
DENOISER_TARGETS = {"flow": ("flux_vae", "pixels"), "masked": ("vq",)}


def _check(ok: bool, key: str, value: Any, hint: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {hint}")


def _positive(key: str, value: float) -> None:
    _check(value > 0, key, value, "must be > 0")


@dataclass
class EncoderConfig:
    """The vision encoder to enhance (a local Hugging Face folder)."""

    # A local folder, no hub names. clip: CLIPModel or CLIPVisionModelWithProjection (OpenAI,
    # MetaCLIP, converted open_clip); siglip: SiglipModel or SiglipVisionModel.
    path: str = ""
    family: str = "clip"  # checked against the folder's model_type when it is loaded
    image_size: int = 224
    # Width of the global token that feeds the projector (768 CLIP L/14, 1024 MetaCLIP H/14,
    # 1152 SigLIP SO400M); checked against the folder when set, taken from it when null.
    global_dim: int | None = None
    # Fraction of patch tokens appended to the conditioning (paper ablation; 0 = global token only).
    local_token_ratio: float = 0.0

    def __post_init__(self) -> None:
        _check(
            self.family in FAMILIES,
            "encoder.family",
            self.family,
            f"choose one of {', '.join(FAMILIES)}",
        )
        _positive("encoder.image_size", self.image_size)
        if self.global_dim is not None:
            _positive("encoder.global_dim", self.global_dim)
        _check(
            0.0 <= self.local_token_ratio <= 1.0,
            "encoder.local_token_ratio",
            self.local_token_ratio,
            "must be in [0, 1]",
        )


@dataclass
class TargetConfig:
    """What the denoiser reconstructs; produced by a frozen module outside the trained one."""

    # flux_vae: autoencoder latents (flow); pixels: packed pixel patches (flow, tiny runs);
    # vq: VQ-GAN token ids (masked)
    kind: str = "flux_vae"
    path: str = ""  # local AutoencoderKL (flux_vae) or VQModel (vq) folder
    latent_channels: int = 16
    downsample: int = 8  # the autoencoder's / VQ-GAN's spatial factor
    pack: int = 2  # tokens pack pack x pack latents (flux_vae) or pixels (pixels)
    scaling_factor: float = 0.3611
    shift_factor: float = 0.1159
    sample_posterior: bool = True  # the paper samples z; the mean is the other option
    codebook_size: int = 16384  # vq only: checked against the VQModel folder

    def __post_init__(self) -> None:
        _check(
            self.kind in TARGET_KINDS,
            "target.kind",
            self.kind,
            f"choose one of {', '.join(TARGET_KINDS)}",
        )
        _positive("target.pack", self.pack)
        _positive("target.latent_channels", self.latent_channels)
        _positive("target.downsample", self.downsample)
        _check(self.codebook_size > 1, "target.codebook_size", self.codebook_size, "must be > 1")

    @property
    def token_dim(self) -> int:
        """Width of one continuous target token (flow targets)."""
        channels = self.latent_channels if self.kind == "flux_vae" else 3
        return channels * self.pack * self.pack

    @property
    def token_stride(self) -> int:
        """Image pixels per token side."""
        if self.kind == "vq":
            return self.downsample
        return self.pack * (self.downsample if self.kind == "flux_vae" else 1)

    def grid(self, image_size: int) -> tuple[int, int]:
        if image_size % self.token_stride:
            raise ConfigError(
                f"encoder.image_size={image_size} is not a multiple of the target's token stride "
                f"{self.token_stride} (target.kind={self.kind}); pick a multiple of it"
            )
        side = image_size // self.token_stride
        return side, side


@dataclass
class ProjectorConfig:
    """h_omega: global token -> adaLN vector and -> one context token (widths of the denoiser)."""

    pooled_dim: int = 768  # 0: no adaLN path (the masked denoiser uses cross-attention only)
    context_dim: int = 4096

    def __post_init__(self) -> None:
        _check(self.pooled_dim >= 0, "projector.pooled_dim", self.pooled_dim, "must be >= 0")
        _positive("projector.context_dim", self.context_dim)


@dataclass
class _DenoiserCommon:
    """What both denoisers share: depth, heads and the timestep-like t they draw."""

    kind: str = "flow"
    num_layers: int = 2
    num_attention_heads: int = 24
    timestep_sampling: str = "logit_normal"  # logit_normal: sigmoid(s * N(0, 1)); uniform
    logit_normal_scale: float = 1.0  # s
    logit_normal_mean: float = 0.0  # m in sigmoid(m + s * N(0, 1)); > 0 puts more mass at high t

    def __post_init__(self) -> None:
        _check(self.num_layers >= 0, "denoiser.num_layers", self.num_layers, "must be >= 0")
        _positive("denoiser.num_attention_heads", self.num_attention_heads)
        _check(
            self.timestep_sampling in ("logit_normal", "uniform"),
            "denoiser.timestep_sampling",
            self.timestep_sampling,
            "choose logit_normal or uniform",
        )
        _positive("denoiser.logit_normal_scale", self.logit_normal_scale)


@dataclass
class FlowDenoiserConfig(_DenoiserCommon):
    """denoiser.kind=flow: a FLUX-style DiT trained with rectified flow (num_layers
    double-stream + num_single_layers single-stream blocks of num_attention_heads x
    attention_head_dim), conditioned by adaLN (pooled) and one context token."""

    kind: str = "flow"
    num_single_layers: int = 4
    attention_head_dim: int = 128
    axes_dims_rope: tuple[int, int, int] = (16, 56, 56)
    guidance: float | None = 4.0  # constant fed to the guidance embedding; null = none

    def __post_init__(self) -> None:
        _check(self.kind == "flow", "denoiser.kind", self.kind, "a FlowDenoiserConfig is flow")
        super().__post_init__()
        self.axes_dims_rope = tuple(int(a) for a in self.axes_dims_rope)
        _check(
            self.num_single_layers >= 0,
            "denoiser.num_single_layers",
            self.num_single_layers,
            "must be >= 0",
        )
        _positive("denoiser.attention_head_dim", self.attention_head_dim)
        _check(
            len(self.axes_dims_rope) == 3 and sum(self.axes_dims_rope) == self.attention_head_dim,
            "denoiser.axes_dims_rope",
            list(self.axes_dims_rope),
            f"needs 3 even sizes summing to attention_head_dim={self.attention_head_dim}",
        )
        _check(
            all(a % 2 == 0 for a in self.axes_dims_rope),
            "denoiser.axes_dims_rope",
            list(self.axes_dims_rope),
            "each size must be even",
        )


@dataclass
class MaskedDenoiserConfig(_DenoiserCommon):
    """denoiser.kind=masked: a Perceiver-style transformer (num_layers blocks of self-attention,
    cross-attention to the condition and MLP, width hidden_size) predicting masked VQ token ids;
    it hides mask_schedule(t) of the tokens. Defaults: the paper's (6 x 1024, 16 heads)."""

    kind: str = "masked"
    num_layers: int = 6
    num_attention_heads: int = 16
    timestep_sampling: str = "uniform"
    hidden_size: int = 1024
    mlp_ratio: float = 4.0
    mask_schedule: str = "cosine"  # cosine (ratio = sin(pi t / 2)) or linear (= t)

    def __post_init__(self) -> None:
        _check(
            self.kind == "masked", "denoiser.kind", self.kind, "a MaskedDenoiserConfig is masked"
        )
        super().__post_init__()
        _positive("denoiser.num_layers", self.num_layers)
        _check(
            self.hidden_size > 0 and self.hidden_size % self.num_attention_heads == 0,
            "denoiser.hidden_size",
            self.hidden_size,
            f"must be a positive multiple of num_attention_heads={self.num_attention_heads}",
        )
        _positive("denoiser.mlp_ratio", self.mlp_ratio)
        _check(
            self.mask_schedule in ("cosine", "linear"),
            "denoiser.mask_schedule",
            self.mask_schedule,
            "choose cosine or linear",
        )


# denoiser.kind -> its config class (the YAML loader picks the class by `kind`)
DENOISER_CONFIGS: dict[str, type[_DenoiserCommon]] = {
    "flow": FlowDenoiserConfig,
    "masked": MaskedDenoiserConfig,
}
DenoiserConfig = Union[FlowDenoiserConfig, MaskedDenoiserConfig]  # noqa: UP007 (runtime alias)


@dataclass
class LoraConfig:
    """LoRA on the vision tower in stage 2 (never on a text tower: none is loaded)."""

    r: int = 16
    alpha: int = 16
    dropout: float = 0.1
    bias: str = "lora_only"
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    include_projection: bool = False  # also adapt visual_projection (CLIP only)
    # SigLIP's pooling-head attention: "full" adapts in_proj and out_proj (peft's
    # MultiheadAttention LoRA; stronger than the paper's code), "reference" targets out_proj
    # alone as the paper's code does (nn.MultiheadAttention bypasses that LoRA: only its bias
    # trains)
    head_attention: str = "full"

    def __post_init__(self) -> None:
        _positive("lora.r", self.r)
        _positive("lora.alpha", self.alpha)
        _check(0.0 <= self.dropout < 1.0, "lora.dropout", self.dropout, "must be in [0, 1)")
        _check(
            self.bias in ("none", "lora_only", "all"),
            "lora.bias",
            self.bias,
            "choose none, lora_only or all",
        )
        _check(
            self.head_attention in ("full", "reference"),
            "lora.head_attention",
            self.head_attention,
            "choose full or reference",
        )
        self.target_modules = tuple(self.target_modules)
        _check(
            len(self.target_modules) > 0,
            "lora.target_modules",
            self.target_modules,
            "name at least one module",
        )


@dataclass
class StageConfig:
    steps: int = 1000  # optimiser steps
    lr: float = 1e-4
    mode: str = ""  # stage 2 only: lora-only | all

    def check(self, name: str) -> None:
        _positive(f"{name}.steps", self.steps)
        _positive(f"{name}.lr", self.lr)


@dataclass
class DataConfig:
    # folder: images under path (recursive); shards: webdataset tars (brace pattern or a .txt
    # list of paths); synthetic: generated shapes; cached: a folder `genhancer cache` wrote
    kind: str = "folder"
    path: str = ""
    num_images: int = 256  # synthetic only
    crop_scale: tuple[float, float] = (0.9, 1.0)
    num_workers: int = 2
    shuffle_buffer: int = 1000  # shards only: deterministic sample shuffle within a slot
    log_keys: bool = False  # write the keys each rank trained on to <stage>/keys-rank<r>.txt

    def __post_init__(self) -> None:
        _check(
            self.kind in ("folder", "shards", "synthetic", "cached"),
            "data.kind",
            self.kind,
            "choose folder, shards, synthetic or cached",
        )
        _check(self.shuffle_buffer >= 0, "data.shuffle_buffer", self.shuffle_buffer, "must be >= 0")
        self.crop_scale = tuple(float(s) for s in self.crop_scale)
        lo, hi = self.crop_scale
        _check(
            0 < lo <= hi <= 1,
            "data.crop_scale",
            list(self.crop_scale),
            "needs 0 < low <= high <= 1",
        )
        _positive("data.num_images", self.num_images)
        _check(self.num_workers >= 0, "data.num_workers", self.num_workers, "must be >= 0")


@dataclass
class OptimConfig:
    per_device_batch_size: int = 16
    gradient_accumulation_steps: int = 2
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        _positive("optim.per_device_batch_size", self.per_device_batch_size)
        _positive("optim.gradient_accumulation_steps", self.gradient_accumulation_steps)
        self.betas = tuple(float(b) for b in self.betas)
        _check(
            all(0 <= b < 1 for b in self.betas) and len(self.betas) == 2,
            "optim.betas",
            list(self.betas),
            "needs two values in [0, 1)",
        )
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "must be >= 0")
        _positive("optim.grad_clip", self.grad_clip)
        _positive("optim.eps", self.eps)


@dataclass
class RunConfig:
    output_dir: str = "runs/genhancer"
    seed: int = 0
    mixed_precision: str = "auto"  # auto: bf16 on GPU, fp32 on CPU
    log_every: int = 10
    save_every: int = 1000  # periodic checkpoint, optimiser steps
    keep_checkpoints: int = 2
    preview_every: int = 0  # reconstruction preview PNG every N steps (0: only at the end)
    preview_images: int = 4
    preview_sample_steps: int = 28  # Euler (flow) or MaskGIT (masked) steps of the preview
    compile_denoiser: bool = False  # torch.compile the denoiser in place (same checkpoint keys)
    activation_checkpointing: bool = False  # flow DiT: recompute blocks in backward, less memory

    def __post_init__(self) -> None:
        _check(
            self.mixed_precision in ("auto", "bf16", "fp16", "no"),
            "run.mixed_precision",
            self.mixed_precision,
            "choose auto, bf16, fp16 or no",
        )
        _positive("run.log_every", self.log_every)
        _positive("run.save_every", self.save_every)
        _positive("run.keep_checkpoints", self.keep_checkpoints)
        _check(self.preview_every >= 0, "run.preview_every", self.preview_every, "must be >= 0")
        _positive("run.preview_images", self.preview_images)
        _positive("run.preview_sample_steps", self.preview_sample_steps)


@dataclass
class Config:
    """A whole enhancement run."""

    name: str = "custom"
    schedule: str = "two-stage"  # two-stage: stage 1 then stage 2; end-to-end: ablation
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    denoiser: DenoiserConfig = field(default_factory=FlowDenoiserConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    stage1: StageConfig = field(default_factory=lambda: StageConfig(steps=100_000, lr=1e-4))
    stage2: StageConfig = field(
        default_factory=lambda: StageConfig(steps=10_000, lr=1e-5, mode="lora-only")
    )
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        _check(
            self.schedule in SCHEDULES,
            "schedule",
            self.schedule,
            f"choose one of {', '.join(SCHEDULES)}",
        )
        self.stage1.check("stage1")
        self.stage2.check("stage2")
        _check(
            self.stage2.mode in STAGE2_MODES,
            "stage2.mode",
            self.stage2.mode,
            f"choose one of {', '.join(STAGE2_MODES)}",
        )
        self.target.grid(self.encoder.image_size)  # raises when the size does not tile
        allowed = DENOISER_TARGETS[self.denoiser.kind]
        _check(
            self.target.kind in allowed,
            "target.kind",
            self.target.kind,
            f"denoiser.kind={self.denoiser.kind} reconstructs {' or '.join(allowed)} targets",
        )
        if self.denoiser.kind == "flow":
            _positive("projector.pooled_dim", self.projector.pooled_dim)
        _check(
            not self.run.activation_checkpointing or self.denoiser.kind == "flow",
            "run.activation_checkpointing",
            True,
            "only the flow DiT supports it",
        )

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


# ---- building dataclasses from plain dicts ------------------------------------------------


def _from_dict(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"unknown config key '{where}'; known: {', '.join(sorted(names))}")
        kwargs[key] = _coerce(hints[key], value, f"{prefix}.{key}" if prefix else key)
    return cls(**kwargs)


def _kind_of(cls: type) -> str:
    return next(f.default for f in dataclasses.fields(cls) if f.name == "kind")


def _class_for_kind(options: list[type], data: Any, key: str) -> type:
    """The config class a section's `kind` names (one class per kind, e.g. the denoisers)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{key} must be a mapping, got {type(data).__name__}")
    by_kind = {_kind_of(c): c for c in options}
    kind = data.get("kind", _kind_of(options[0]))
    _check(kind in by_kind, f"{key}.kind", kind, f"choose one of {', '.join(by_kind)}")
    cls = by_kind[kind]
    own = {f.name for f in dataclasses.fields(cls)}
    for name in data:
        other = next(
            (
                k
                for k, c in by_kind.items()
                if name not in own and name in {f.name for f in dataclasses.fields(c)}
            ),
            None,
        )
        if other is not None:
            raise ConfigError(
                f"{key}.{name} is a {other} setting; {key}.kind={kind} has none: remove it"
            )
    return cls


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, key)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) > 1 and all(dataclasses.is_dataclass(a) for a in options):
            return _from_dict(_class_for_kind(options, value, key), value, key)
        return _coerce(options[0], value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} is invalid: expected a list")
        inner = args[0] if args else Any
        return tuple(_coerce(inner, v, key) for v in value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads "1e-4" as a string
        except ValueError:
            pass
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{key}={value!r} is invalid: expected {hint.__name__}")
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is invalid: expected int")
    return value


# Sections with one config class per `kind`: a preset or override that changes the kind starts
# the section over (a masked denoiser inherits nothing of its parent's flow denoiser).
_KIND_SECTIONS = ("denoiser",)


def _changes_kind(key: str, old: Any, new: Any) -> bool:
    return (
        key in _KIND_SECTIONS
        and isinstance(old, dict)
        and isinstance(new, dict)
        and "kind" in new
        and new["kind"] != old.get("kind", _kind_of(FlowDenoiserConfig))
    )


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if (
            isinstance(value, dict)
            and isinstance(out.get(key), dict)
            and not _changes_kind(key, out[key], value)
        ):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# ---- presets and files --------------------------------------------------------------------


def _preset_dir() -> Any:
    return resources.files("genhancer_llava") / "presets"


def available_presets() -> list[str]:
    return sorted(
        p.name[: -len(".yaml")] for p in _preset_dir().iterdir() if p.name.endswith(".yaml")
    )


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{where} is not valid YAML: {err}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a mapping of config keys")
    return data


def _resolve(data: dict[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
    parent = data.pop("inherit", None)
    if parent is None:
        return data
    if parent in seen:
        raise ConfigError(f"preset inheritance loops: {' -> '.join(seen + (parent,))}")
    return _deep_merge(_resolve(_preset_data(parent), seen + (parent,)), data)


def _preset_data(name: str) -> dict[str, Any]:
    path = _preset_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown preset '{name}'; known presets: {', '.join(available_presets())}"
        )
    return _read_yaml(path.read_text(), f"preset {name}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override '{text}' has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = dict(data)
    for text in overrides:
        parts, value = parse_override(text)
        if (
            len(parts) == 2
            and parts[1] == "kind"
            and _changes_kind(parts[0], data.get(parts[0]), {"kind": value})
        ):
            data[parts[0]] = {}  # e.g. denoiser.kind=masked: the flow settings do not carry over
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def load_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
) -> Config:
    """Build a `Config` from a preset name or YAML file, then `key.sub=value` overrides.

    Args:
        preset: name of a shipped preset (see `available_presets()`).
        config_file: a YAML file; may `inherit:` a preset. Used instead of `preset`.
        overrides: strings like `stage1.steps=10` or `data.crop_scale=[0.9,1.0]`.
    """
    if preset and config_file:
        raise ConfigError("pass either a preset or a config file, not both")
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        data = _resolve(_read_yaml(path.read_text(), str(path)), ())
    elif preset:
        data = _resolve(_preset_data(preset), (preset,))
        data.setdefault("name", preset)
    else:
        data = {}
    data = apply_overrides(data, overrides or [])
    return _from_dict(Config, data, "")
