"""The `genhancer` command line: `main.py` (enhance, export, swap, ...), `eval.py` (`eval ...`)."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
