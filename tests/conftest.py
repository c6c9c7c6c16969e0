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

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A tiny CLIPModel folder: 32 px, patch 8, hidden 64, projection 32."""
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory) -> Path:
    """A tiny SiglipModel folder: 32 px, patch 8, hidden 64 (the global token is 64-d)."""
    return make_tiny_siglip(tmp_path_factory.mktemp("siglip") / "tiny-siglip")


@pytest.fixture
def tiny_config(tiny_clip, tmp_path):
    def build(*overrides: str):
        return load_config(
            "tiny",
            overrides=[f"encoder.path={tiny_clip}", f"run.output_dir={tmp_path / 'run'}",
                       *overrides],
        )

    return build


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def run_python(*args: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python *args` in a fresh process (as a user would), capturing its output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def cli_error(capsys, argv: list[str]) -> str:
    """Run `genhancer ARGV` in-process; assert the one-line `error: ...` and exit status 2."""
    from genhancer_llava.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err
