"""Shared fixtures: tiny random CLIP and SigLIP folders and tiny run configs, built in code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genhancer_llava.config import load_config
from genhancer_llava.models.tiny import make_tiny_clip, make_tiny_siglip

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("DS_ACCELERATOR", "cpu")
# DeepSpeed JIT-compiles its CPU ops under TORCH_EXTENSIONS_DIR, behind a file lock: one folder
# per environment, so that a run killed mid-compile elsewhere cannot stall this suite.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A tiny CLIPModel folder: 32 px, patch 8, hidden 64, projection 32."""
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory) -> Path:
    """A tiny SiglipModel folder: 32 px, patch 8, hidden 64 (the global token is 64-d)."""
    return make_tiny_siglip(tmp_path_factory.mktemp("siglip") / "tiny-siglip")


@pytest.fixture(scope="session")
def tiny_vae(tmp_path_factory) -> Path:
    """A tiny random AutoencoderKL in the FLUX layout (16 latent channels, 8x down)."""
    from diffusers import AutoencoderKL

    folder = tmp_path_factory.mktemp("vae") / "vae"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=16,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            layers_per_block=1,
            norm_num_groups=4,
        ).save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_config(tiny_clip, tmp_path):
    def build(*overrides: str):
        return load_config(
            "tiny",
            overrides=[
                f"encoder.path={tiny_clip}",
                f"run.output_dir={tmp_path / 'run'}",
                *overrides,
            ],
        )

    return build


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def run_python(*args: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python *args` in a fresh process (as a user would), capturing its output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def cli_error(capsys, argv: list[str]) -> str:
    """Run `genhancer ARGV` in-process; assert the one-line `error: ...` and exit status 2."""
    from genhancer_llava.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def write_entry_point_metadata(folder: Path) -> Path:
    """A folder holding a dist-info that declares this checkout's entry points (pyproject.toml).

    Put it on sys.path / PYTHONPATH where a test needs them (lmms-eval's `--model
    genhancer_llava`, `load_llava`'s checkpoint formats): the shared test environment may carry
    metadata installed from another checkout.
    """
    groups = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    dist = folder / "genhancer_llava_worktree_entrypoints-0.0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: genhancer-llava-worktree-entrypoints\nVersion: 0.0.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) + "\n"
            for group, entries in groups.items()
        )
    )
    return folder
