"""Everything `genhancer enhance` can check before a process starts or a file is written.

A mistake found here costs no launch (tens of seconds of imports and process-group set-up) and
leaves no run folder behind, so the corrected command needs no `--overwrite`. What only a
running stage can find (a non-finite loss, a full disk) is reported by the stage itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import Config
from ..errors import GenhancerError
from ..models.families import get_family
from ..models.folders import (
    ENCODER_PATH_HINT,
    check_encoder_folder,
    check_resolution,
    read_vision_config,
)
from ..paths import FOLDER_HINT, IMAGE_EXTENSIONS, required_dir, required_path
from ..shards import expand_shards
from ..stages import stages
from .run_dir import RunDir

__all__ = [
    "preflight",
    "check_paths",
    "check_encoder",
    "check_data",
    "check_resume",
    "resume_mismatch",
]


def check_paths(cfg: Config) -> None:
    """What needs no import beyond the standard library: the encoder folder and data.path
    exist, so that a mistyped path fails in well under a second."""
    check_encoder_folder(required_path(cfg.encoder.path, "encoder.path", ENCODER_PATH_HINT))
    if cfg.data.kind == "shards":
        expand_shards(cfg.data.path)
    elif cfg.data.kind == "cached":
        required_dir(
            cfg.data.path, "data.path", "pass data.path=DIR, a folder written by `genhancer cache`"
        )
    elif cfg.data.kind == "folder":
        root = required_dir(cfg.data.path, "data.path", FOLDER_HINT)
        if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in root.rglob("*")):
            raise GenhancerError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) under data.path={root}; "
                "point data.path at a folder of images"
            )


def check_encoder(cfg: Config) -> int:
    """encoder.path is set and holds a tower of the config's family, resolution and global
    width; returns the global token's width (read from its config: no model is built)."""
    path = required_path(cfg.encoder.path, "encoder.path", ENCODER_PATH_HINT)
    vision, _, found = read_vision_config(path, cfg.encoder.family)
    check_resolution(path, cfg.encoder.image_size, vision)
    global_dim = getattr(vision, get_family(found).global_dim_field)
    if cfg.encoder.global_dim is not None and cfg.encoder.global_dim != global_dim:
        raise GenhancerError(
            f"encoder.global_dim={cfg.encoder.global_dim} but the {found} encoder at {path} has a "
            f"{global_dim}-d global token; the folder is not this preset's backbone "
            f"(or set encoder.global_dim={global_dim})"
        )
    return global_dim


def check_data(cfg: Config) -> None:
    """data.path is set and holds images (folder), every shard (shards), or a cache made
    for this config (cached)."""
    check_paths(cfg)
    if cfg.data.kind == "cached":
        from ..cache import CachedSource, check_cache

        check_cache(cfg)  # made for this encoder, target and image size
        CachedSource(cfg.data.path)  # and every shard is there


def resume_mismatch(
    folder: Path, record: dict, num_processes: int, zero_stage: int | None
) -> str | None:
    """Why checkpoint `folder` (its progress record) cannot be resumed by this launch, or None.

    A checkpoint holds one state per rank, in DeepSpeed's partitioned layout under ZeRO and in
    accelerate's plain one without; it loads only into the same number of processes and the
    same layout. `zero_stage` None: not known here (an own accelerate config); not checked.
    """
    written_by = len(record.get("batches_per_rank", []))
    if written_by != num_processes:
        return (
            f"{folder} was written by {written_by} processes; resume it with "
            f"--num_processes {written_by} (now {num_processes})"
        )
    written_zero = record.get("zero_stage")  # absent in checkpoints from before it was recorded
    if None not in (written_zero, zero_stage) and written_zero != zero_stage:
        return (
            f"{folder} was written with --zero {written_zero}; resume it with --zero "
            f"{written_zero} (now {zero_stage})"
        )
    return None


def check_resume(
    cfg: Config, num_processes: int, resume: str | None, zero_stage: int | None = None
) -> None:
    """The checkpoint a resume would continue was written by as many processes as now, and
    with the same ZeRO stage."""
    if not resume:
        return
    run = RunDir(Path(cfg.run.output_dir))
    pending = [s.name for s in stages(cfg) if run.summary(s.name) is None]
    if resume == "latest":
        if not pending:
            return
        folders = sorted(
            p
            for p in run.checkpoints(pending[0]).glob("step-*")
            if p.is_dir() and (p / "progress.json").is_file()
        )
        if not folders:
            return  # nothing written yet: the stage starts from step 0
        folder = folders[-1]
    else:
        folder = Path(resume)
        if not (folder / "progress.json").is_file():
            raise GenhancerError(
                f"--resume {resume} is not a checkpoint folder (no progress.json);"
                " pass a step-N folder or --resume latest"
            )
    try:
        record = json.loads((folder / "progress.json").read_text())
    except (OSError, ValueError):
        return  # a damaged record: the stage skips that checkpoint and says so
    problem = resume_mismatch(folder, record, num_processes, zero_stage)
    if problem:
        raise GenhancerError(problem)


def preflight(
    cfg: Config, num_processes: int = 1, resume: str | None = None, zero_stage: int | None = None
) -> None:
    """Every check that needs no launch, in one place: one-line errors, nothing written.

    Args:
        cfg: the run config.
        num_processes: processes per stage launch.
        resume: the `--resume` value, if any.
        zero_stage: the launch's `--zero` (0: no DeepSpeed); None: an own accelerate config.
    """
    if num_processes < 1:
        raise GenhancerError(f"--num_processes {num_processes} is invalid; use 1 or more")
    check_paths(cfg)  # first: a mistyped path costs no import
    check_encoder(cfg)
    from ..models.targets import check_target  # torch: after the folders were found

    check_target(cfg.target)
    check_data(cfg)
    check_resume(cfg, num_processes, resume, zero_stage)
