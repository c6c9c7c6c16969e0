"""The shared small helpers: atomic folder writes, quiet loading, ports, default device/dtype."""

import socket

import pytest
import torch
import transformers

from genhancer_llava.utils import (
    atomic_dir,
    default_device,
    default_dtype,
    free_port,
    quiet_transformers,
)


def test_atomic_dir_replaces_only_on_success(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no leftover, old kept
    assert (final / "old.txt").read_text() == "old"
    with atomic_dir(final, ".tmp-x") as tmp:
        assert tmp.name == "out.tmp-x" and not any(tmp.iterdir())
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_quiet_transformers_restores_verbosity():
    before = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_info()
    try:
        with quiet_transformers():
            assert transformers.logging.get_verbosity() == transformers.logging.ERROR
        assert transformers.logging.get_verbosity() == transformers.logging.INFO
    finally:
        transformers.logging.set_verbosity(before)


def test_free_port_is_bindable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))


def test_default_device_and_dtype():
    assert default_device("cpu") == "cpu" and default_dtype("cpu") == torch.float32
    assert default_dtype("cuda:1") == torch.bfloat16
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert default_device() == expected
