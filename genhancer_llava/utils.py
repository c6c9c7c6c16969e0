"""Small idioms the library and the application share, one helper each.

- `quiet_transformers()`: silence transformers' warnings around a `from_pretrained` whose
  skipped or missing keys are expected (e.g. a vision tower read from a full CLIPModel folder).
- `atomic_dir()` / `publish_dir()`: write a folder under a temporary name next to its target,
  then rename it into place, so an interrupted write never leaves half a folder.
- `free_port()`: a TCP port that is free now on this host (for a launcher's rendezvous).
- `default_device()` / `default_dtype()`: this process's GPU when there is one, else the CPU;
  bfloat16 on a GPU, float32 on the CPU (one code path for both).

torch and transformers are imported inside the helpers, so light entry points (the LLaVA
launcher) can use the rest without paying for them.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "quiet_transformers",
    "atomic_dir",
    "publish_dir",
    "free_port",
    "default_device",
    "default_dtype",
]


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Only errors from transformers' logger inside the block; the old verbosity after it."""
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)


def publish_dir(tmp: Path, final: Path) -> Path:
    """Replace `final` (if any) by the finished folder `tmp`: one rename, atomic on one disk."""
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


@contextmanager
def atomic_dir(final: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield an empty temporary folder next to `final`; on success it replaces `final`.

    A leftover of an earlier interrupted write is cleared first; on an exception the temporary
    folder is removed and `final` is left as it was.

    Args:
        final: the folder to produce.
        suffix: appended to `final`'s name for the temporary folder (readers ignore it).
    """
    final = Path(final)
    tmp = final.with_name(final.name + suffix)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, final)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_device(device: str | torch.device | None = None) -> str:
    """The device to run on: as given, else this process's GPU (LOCAL_RANK) or the CPU."""
    import torch

    if device:
        return str(device)
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def default_dtype(device: str | torch.device | None = None) -> torch.dtype:
    """bfloat16 on a GPU, float32 on the CPU (`device` default: `default_device()`)."""
    import torch

    return torch.bfloat16 if str(default_device(device)).startswith("cuda") else torch.float32
