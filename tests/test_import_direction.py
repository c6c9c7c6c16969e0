"""Imports flow one way: `llava_patches` may import `genhancer_llava`, never the reverse.

Only `llava_patches` touches the original LLaVA package (`llava`). The static check reads every
import statement of every module with `ast` (also those inside functions, and
`importlib.import_module("...")` / `__import__("...")` with a literal name); the dynamic check
imports every module of `genhancer_llava` in a fresh interpreter and looks at `sys.modules`.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from genhancer_llava.errors import GenhancerError
from genhancer_llava.mllm.runner import FORMAT_GROUP, HFRunner, runner_class

from .conftest import REPO, run_python, write_entry_point_metadata

PACKAGES = ("genhancer_llava", "llava_patches")
FORBIDDEN = {"llava", "llava_patches"}  # top-level packages genhancer_llava must not import


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ImportFrom names (resolving `from . import x`)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, at any depth."""
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, _absolute(node, module, is_package)))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = getattr(func, "attr", getattr(func, "id", None))
            first = node.args[0]
            if (
                name in ("import_module", "__import__")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                found.append((node.lineno, first.value))
    return found


def _files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def test_walker_sees_every_kind_of_import(tmp_path, monkeypatch):
    """The checker itself: top level, inside functions, relative, and import_module."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import sub\n")
    (pkg / "mod.py").write_text(
        "import os\nfrom llava_hf import x\n"
        "def f():\n    import llava.model\n    from llava_patches import apply\n"
        "    import importlib\n    importlib.import_module('llava_patches.runner')\n"
        "from .sub import y\nfrom ..other import z\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert sorted(m for _, m in imported_modules(pkg / "mod.py")) == sorted(
        [
            "os",
            "llava_hf",
            "llava.model",
            "llava_patches",
            "importlib",
            "pkg.sub",
            "other",
            "llava_patches.runner",
        ]
    )
    assert [m for _, m in imported_modules(pkg / "__init__.py")] == ["pkg"]
    forbidden = sorted(
        m for _, m in imported_modules(pkg / "mod.py") if m.split(".")[0] in FORBIDDEN
    )
    assert forbidden == ["llava.model", "llava_patches", "llava_patches.runner"]


def test_genhancer_llava_never_imports_llava_or_llava_patches():
    files = _files("genhancer_llava")
    assert len(files) > 30  # the walk found the package
    bad = [
        f"{path.relative_to(REPO)}:{line}: {module}"
        for path in files
        for line, module in imported_modules(path)
        if module.split(".")[0] in FORBIDDEN
    ]
    assert not bad, "genhancer_llava must not import llava / llava_patches:\n" + "\n".join(bad)


def test_no_cycle_between_the_packages():
    """Package-level import graph: llava_patches -> genhancer_llava only."""
    edges = {
        (package, module.split(".")[0])
        for package in PACKAGES
        for path in _files(package)
        for _, module in imported_modules(path)
        if module.split(".")[0] in PACKAGES and module.split(".")[0] != package
    }
    assert edges == {("llava_patches", "genhancer_llava")}


def _all_modules() -> list[str]:
    names = [_module_name(path) for path in _files("genhancer_llava")]
    return [n for n in names if not n.endswith("__main__")]  # those run the command line


def test_importing_every_module_loads_neither_llava_nor_llava_patches():
    modules = _all_modules()
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps({'loaded': sorted(n for n in sys.modules if n.split('.')[0] in "
        "('llava', 'llava_patches')), 'ours': sys.modules['genhancer_llava'].__file__,"
        " 'count': sum(n.startswith('genhancer_llava') for n in sys.modules)}))\n"
    )
    proc = run_python("-c", code, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    assert Path(report["ours"]).is_relative_to(REPO / "genhancer_llava")
    assert report["count"] >= len(modules)


def test_original_format_runner_is_found_through_the_entry_point(tmp_path, monkeypatch):
    """This checkout's pyproject registers llava_patches' runner for `original` checkpoints."""
    monkeypatch.syspath_prepend(str(write_entry_point_metadata(tmp_path / "meta")))
    cls = runner_class("original")
    assert cls.__module__ == "llava_patches.runner" and cls.__name__ == "OriginalRunner"
    assert cls.format == "original"
    assert runner_class("llava-hf") is HFRunner


def test_unregistered_format_is_a_one_line_error():
    with pytest.raises(GenhancerError, match=FORMAT_GROUP) as info:
        runner_class("llava-next")
    assert "\n" not in str(info.value)
