"""The LLaVA-1.5 recipe on an enhanced encoder: pretrain (projector) then finetune (+ LLM).

`scripts/llava_finetune.sh` calls `python -m llava_patches.finetune`. Each stage is one
`torchrun ... -m llava_patches.train` process group with LLaVA-1.5's flags (from
haotian-liu/LLaVA `scripts/v1_5/pretrain.sh` and `finetune.sh`) and the DeepSpeed configs in
`llava_patches/deepspeed/` (package data):

- pretrain: `--tune_mm_mlp_adapter True`, `--version plain`, lr 1e-3, global batch 256, ZeRO-2;
  writes `OUTPUT/llava-pretrain/mm_projector.bin`;
- finetune: projector + LLM, `--version v1`, lr 2e-5, global batch 128, ZeRO-3,
  `--pretrain_mm_mlp_adapter` from the first stage; writes the checkpoint
  `OUTPUT/llava-finetune` (LLaVA's `load_pretrained_model` needs "llava" in the folder name).

A SigLIP tower (no CLS token) gets `--mm_vision_select_feature cls_patch`.
Presets are data (`PRESETS`): `llava-1.5` (the paper protocol, bf16 on GPUs) and `tiny` (CPU,
fp32, DeepSpeed's CPU accelerator over gloo, two steps per stage: for tests). Anything after
`--` is passed to both stages' LLaVA `train()` as is and wins over the preset.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from genhancer_llava.errors import GenhancerError
from genhancer_llava.mllm.registry import TowerSpec, is_genhancer_name, resolve_tower
from genhancer_llava.utils import free_port

__all__ = ["PRESETS", "Preset", "stage_args", "main"]

# LLaVA-format DeepSpeed configs, shipped as package data (an installed wheel needs no checkout).
SCRIPTS = Path(str(resources.files(__package__) / "deepspeed"))
STAGES = ("pretrain", "finetune")
STAGE_DIRS = {"pretrain": "llava-pretrain", "finetune": "llava-finetune"}

# Flags both LLaVA-1.5 stages share (scripts/v1_5/{pretrain,finetune}.sh).
COMMON = {
    "mm_projector_type": "mlp2x_gelu",
    "mm_vision_select_layer": "-2",
    "mm_use_im_start_end": "False",
    "mm_use_im_patch_token": "False",
    "num_train_epochs": "1",
    "per_device_eval_batch_size": "4",
    "eval_strategy": "no",
    "save_total_limit": "1",
    "weight_decay": "0.",
    "warmup_ratio": "0.03",
    "lr_scheduler_type": "cosine",
    "logging_steps": "1",
    "model_max_length": "2048",
    "gradient_checkpointing": "True",
    "lazy_preprocess": "True",
}
STAGE_FLAGS = {
    "pretrain": {
        "version": "plain",
        "tune_mm_mlp_adapter": "True",
        "learning_rate": "1e-3",
        "save_strategy": "steps",
        "save_steps": "24000",
    },
    "finetune": {
        "version": "v1",
        "image_aspect_ratio": "pad",
        "group_by_modality_length": "True",
        "learning_rate": "2e-5",
        "save_strategy": "steps",
        "save_steps": "50000",
    },
}


@dataclass(frozen=True)
class Preset:
    """Per-preset settings: global batch per stage, precision, device-specific flags."""

    global_batch: dict[str, int]
    per_device_batch: dict[str, int]
    flags: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


PRESETS = {
    "llava-1.5": Preset(
        global_batch={"pretrain": 256, "finetune": 128},
        per_device_batch={"pretrain": 32, "finetune": 16},
        flags={"bf16": "True", "tf32": "True", "dataloader_num_workers": "4", "report_to": "none"},
    ),
    "tiny": Preset(
        global_batch={"pretrain": 4, "finetune": 4},
        per_device_batch={"pretrain": 4, "finetune": 4},
        flags={
            "bf16": "False",
            "model_max_length": "512",
            "dataloader_num_workers": "0",
            "report_to": "none",
            "ddp_backend": "gloo",
            "max_steps": "2",
            "save_strategy": "no",
            "warmup_ratio": "0.0",
        },
        env={"DS_ACCELERATOR": "cpu"},
    ),
}


def _accumulation(preset: Preset, stage: str, nproc: int) -> int:
    per_step = preset.per_device_batch[stage] * nproc
    batch = preset.global_batch[stage]
    if batch % per_step:
        raise GenhancerError(
            f"{stage}: global batch {batch} is not a multiple of {preset.per_device_batch[stage]}"
            f" per device x {nproc} processes; change --nproc_per_node"
        )
    return batch // per_step


def stage_args(stage: str, args: argparse.Namespace, preset: Preset, nproc: int) -> list[str]:
    """LLaVA `train()` flags for one stage (preset, then the user's extra flags)."""
    flags = {**COMMON, **STAGE_FLAGS[stage], **preset.flags}
    out = Path(args.output)
    flags.update(
        deepspeed=str(SCRIPTS / ("zero2.json" if stage == "pretrain" else "zero3.json")),
        model_name_or_path=str(args.llm),
        vision_tower=args.vision_tower,
        data_path=str(args.pretrain_data or args.data if stage == "pretrain" else args.data),
        image_folder=str(
            args.pretrain_images or args.images if stage == "pretrain" else args.images
        ),
        output_dir=str(out / STAGE_DIRS[stage]),
        per_device_train_batch_size=str(preset.per_device_batch[stage]),
        gradient_accumulation_steps=str(_accumulation(preset, stage, nproc)),
    )
    spec = _tower_spec(args.vision_tower)
    if spec is not None and not spec.has_cls_token:
        flags["mm_vision_select_feature"] = "cls_patch"  # no CLS token: keep every token
    if stage == "finetune":
        projector = args.projector or (
            out / STAGE_DIRS["pretrain"] / "mm_projector.bin" if args.stage == "both" else None
        )
        if projector is not None:
            flags["pretrain_mm_mlp_adapter"] = str(projector)
    argv = [f"--{k}={v}" for k, v in flags.items()]
    return argv + list(args.llava_args)


def _tower_spec(name: str) -> TowerSpec | None:
    return resolve_tower(name) if is_genhancer_name(name) else None


def _flag_value(argv: list[str], flag: str) -> str | None:
    value = None
    for i, arg in enumerate(argv):
        if arg == f"--{flag}" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"--{flag}="):
            value = arg.split("=", 1)[1]
    return value


def _check_inputs(args: argparse.Namespace) -> None:
    spec = _tower_spec(args.vision_tower)  # one-line error for unknown names / non-encoders
    select = _flag_value(args.llava_args, "mm_vision_select_feature")
    if spec is not None and not spec.has_cls_token and select == "patch":
        raise GenhancerError(
            f"--vision_tower {args.vision_tower} is a {spec.kind} encoder without a CLS token: "
            "--mm_vision_select_feature patch would drop a real image token; use cls_patch"
        )
    for flag in ("llm", "data", "images"):
        if not Path(getattr(args, flag)).exists():
            raise GenhancerError(f"--{flag} {getattr(args, flag)} does not exist")
    if args.stage == "finetune" and args.projector is None:
        config = Path(args.llm) / "config.json"
        is_llava = config.is_file() and "mm_vision_tower" in json.loads(config.read_text())
        if not is_llava:
            raise GenhancerError(
                "--stage finetune needs --projector PATH/mm_projector.bin (from a pretrain stage)"
                " or --llm pointing at a LLaVA checkpoint"
            )


def _launch(stage: str, argv: list[str], preset: Preset, nproc: int) -> None:
    env = dict(os.environ, **preset.env)
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--master_port={free_port()}",
        "-m",
        "llava_patches.train",
        *argv,
    ]
    print(f"[llava_finetune] {stage}: {' '.join(cmd)}", flush=True)
    result = subprocess.run(cmd, env=env)
    if result.returncode:
        raise GenhancerError(f"{stage} stage failed (exit code {result.returncode}); see above")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llava_finetune.sh",
        description="LLaVA-1.5 pretrain + finetune on a (genhancer) vision tower.",
        epilog="Flags after `--` go to LLaVA's train() for both stages.",
    )
    p.add_argument(
        "--vision_tower",
        required=True,
        help="genhancer, genhancer:NAME, genhancer:PATH, or any LLaVA tower name",
    )
    p.add_argument("--llm", required=True, help="base LLM folder (e.g. vicuna-7b-v1.5)")
    p.add_argument("--data", required=True, help="LLaVA JSON (finetune; pretrain too by default)")
    p.add_argument("--images", required=True, help="image folder of --data")
    p.add_argument("--output", required=True, help="stage folders go under it")
    p.add_argument("--stage", choices=("pretrain", "finetune", "both"), default="both")
    p.add_argument("--preset", choices=sorted(PRESETS), default="llava-1.5")
    p.add_argument("--pretrain_data", help="pretrain JSON (LCS-558K) when it differs from --data")
    p.add_argument("--pretrain_images", help="image folder of --pretrain_data")
    p.add_argument("--projector", help="mm_projector.bin for --stage finetune")
    p.add_argument(
        "--nproc_per_node",
        type=int,
        default=None,
        help="processes per node (default: the visible GPUs, or 1)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    args.llava_args = extra
    preset = PRESETS[args.preset]
    nproc = args.nproc_per_node or _default_nproc(preset)
    try:
        _check_inputs(args)
        stages = STAGES if args.stage == "both" else (args.stage,)
        for stage in stages:
            _launch(stage, stage_args(stage, args, preset, nproc), preset, nproc)
    except GenhancerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[llava_finetune] done: {Path(args.output) / STAGE_DIRS[stages[-1]]}")
    return 0


def _default_nproc(preset: Preset) -> int:
    if preset.env.get("DS_ACCELERATOR") == "cpu":
        return 1
    import torch

    return max(1, torch.cuda.device_count())


if __name__ == "__main__":
    sys.exit(main())
