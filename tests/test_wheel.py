"""The built wheel works without the checkout: `genhancer enhance` and `genhancer swap` from it.

The wheel is built from a copy of the two packages and pyproject.toml (`pip wheel --no-deps
--no-build-isolation`, offline) and installed with `--no-deps` into a FRESH virtual environment
outside the checkout. Its third-party packages come from the test environment through a `.pth`
file holding that environment's site-packages path: a path line in a .pth file does not run the
.pth files inside the directory it adds, so an editable install of a checkout there stays
invisible, and `genhancer_llava` can only come from the wheel. The commands then run with the
working directory outside the checkout and no PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch

from .conftest import REPO
from .llava_tiny import make_tiny_llama, make_tiny_llava_hf

pytestmark = pytest.mark.slow

# What the installed package reads at run time (importlib.resources), and must therefore ship.
PACKAGE_DATA = [
    "genhancer_llava/presets/tiny.yaml",
    "genhancer_llava/presets/openai-clip-l14-224.yaml",
    "genhancer_llava/presets/siglip-so400m-384-masked.yaml",
    "genhancer_llava/train/launch_configs/zero2.yaml",
    "genhancer_llava/train/launch_configs/zero3.yaml",
    "llava_patches/deepspeed/zero2.json",
    "llava_patches/deepspeed/zero3.json",
]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 900):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{(proc.stdout + proc.stderr)[-4000:]}"
    return proc


def build_wheel(tmp: Path) -> Path:
    """Build the wheel from a copy of the sources (the checkout gets no build/ or egg-info)."""
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("genhancer_llava", "llava_patches"):
        shutil.copytree(REPO / package, src / package, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(src),
        ],
        cwd=tmp,
        env=dict(os.environ),
    )
    (wheel,) = (tmp / "dist").glob("genhancer_llava-*.whl")
    return wheel


def fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A new venv with the wheel installed (--no-deps); third-party packages via a .pth line."""
    venv = tmp / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", "--without-pip", str(venv)], cwd=tmp, env=dict(os.environ))
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    shared = Path(sysconfig.get_paths()["purelib"])
    (Path(purelib) / "shared_site_packages.pth").write_text(f"{shared}\n")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        cwd=tmp,
        env=dict(os.environ),
    )
    return venv


def test_wheel_installs_and_runs_enhance_and_swap_outside_the_checkout(tiny_clip, tmp_path):
    wheel = build_wheel(tmp_path)
    from genhancer_llava import __version__

    assert wheel.name == f"genhancer_llava-{__version__}-py3-none-any.whl"  # version: one place
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in PACKAGE_DATA if f not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert "llava_patches/runner.py" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    declared = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[lmms_eval.models]" in declared and "[genhancer_llava.llava_formats]" in declared

    venv = fresh_venv(tmp_path, wheel)
    work = tmp_path / "work"  # outside the checkout, which is nowhere on the path
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHONUNBUFFERED="1", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")

    where = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            (
                "import json, genhancer_llava, llava_patches.finetune as ft, "
                "genhancer_llava.train.launch as launch, genhancer_llava.config as config\n"
                "from genhancer_llava.mllm.runner import runner_class\n"
                "print(json.dumps({'ours': genhancer_llava.__file__, 'patches': str(ft.SCRIPTS),"
                " 'launch': str(launch.LAUNCH_CONFIGS), 'presets': str(config.available_presets()),"
                " 'original': runner_class('original').__module__}))"
            ),
        ],
        cwd=work,
        env=env,
    )
    paths = json.loads(where.stdout.strip().splitlines()[-1])
    for key in ("ours", "patches", "launch"):
        assert Path(paths[key]).resolve().is_relative_to(venv.resolve()), paths
        assert not Path(paths[key]).resolve().is_relative_to(REPO), paths
    assert "tiny" in paths["presets"] and paths["original"] == "llava_patches.runner"

    genhancer = str(venv / "bin" / "genhancer")  # the wheel's console script
    run = work / "run"
    proc = _run(
        [
            genhancer,
            "enhance",
            "--preset",
            "tiny",
            "--output",
            str(run),
            f"encoder.path={tiny_clip}",
        ],
        cwd=work,
        env=env,
    )
    assert f"enhanced encoder: {run / 'encoder'}" in proc.stdout, proc.stdout[-2000:]
    from transformers import CLIPVisionModel

    assert CLIPVisionModel.from_pretrained(run / "encoder").config.image_size == 32

    llava = make_tiny_llava_hf(tmp_path / "llava-hf", make_tiny_llama(tmp_path / "llm"), tiny_clip)
    swapped = work / "llava-swapped"
    _run(
        [
            genhancer,
            "swap",
            "--llava",
            str(llava),
            "--vision-tower",
            str(run / "encoder"),
            "--output",
            str(swapped),
        ],
        cwd=work,
        env=env,
    )
    info = json.loads((swapped / "genhancer.json").read_text())
    assert info["swap"]["format"] == "llava-hf", info
    from transformers import LlavaForConditionalGeneration

    tower = LlavaForConditionalGeneration.from_pretrained(swapped).model.vision_tower
    encoder = CLIPVisionModel.from_pretrained(run / "encoder")
    for name, value in encoder.state_dict().items():
        assert torch.equal(tower.state_dict()[name], value), name
