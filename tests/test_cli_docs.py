"""The README and the command line agree: every flag the README shows for a `genhancer`
command is accepted by that command and listed in `genhancer --help`'s usage text."""

from __future__ import annotations

import argparse
import re

from genhancer_llava.cli.main import build_parser

from .conftest import REPO

EVAL_COMMANDS = "mmvp-vlm|zeroshot|compare|make-benchmark|lmms-report|report"
TOY_COMMANDS = "pretrain-clip|study"
COMMAND = re.compile(
    rf"genhancer ((?:eval (?:{EVAL_COMMANDS}))|(?:toy (?:{TOY_COMMANDS}))"
    rf"|[a-z][a-z-]+)([^`\n]*)"
)
FLAG = re.compile(r"(?<![\w-])(--[a-zA-Z][\w-]*)")


def readme_flags() -> dict[str, set[str]]:
    """{command: flags} from every `genhancer ...` line of the README (code blocks with their
    backslash continuations, and inline code), plus the enhance "Flags:" paragraph."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "README.md").read_text())
    found: dict[str, set[str]] = {}
    for match in COMMAND.finditer(text):
        found.setdefault(match.group(1), set()).update(FLAG.findall(match.group(2)))
    paragraph = text.split("\nFlags: ", 1)[1].split("\n\n", 1)[0]
    found["enhance"].update(FLAG.findall(paragraph))
    return {k: v for k, v in found.items() if v}


def usage_block(command: str) -> str:
    """The usage text's lines for `command` (its line and its indented continuations)."""
    lines = build_parser().description.splitlines()
    block, inside = [], False
    for line in lines:
        if line.strip().startswith("genhancer "):
            inside = f"genhancer {command} " in line + " "
        if inside:
            block.append(line)
    return "\n".join(block)


def accepted(command: str) -> set[str]:
    parser = build_parser()
    for word in command.split():
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return {s for a in parser._actions for s in a.option_strings}


def test_readme_commands_are_found():
    flags = readme_flags()
    assert {"enhance", "export", "eval mmvp-vlm", "eval compare", "swap"} <= set(flags)
    assert {"--preset", "--overwrite", "--resume", "--accelerate_config"} <= flags["enhance"]


def test_usage_lists_every_flag_the_readme_documents():
    missing_usage, rejected = [], []
    for command, flags in sorted(readme_flags().items()):
        usage = usage_block("eval lmms-report" if command == "eval report" else command)
        for flag in sorted(flags):
            if flag not in accepted(command):
                rejected.append(f"{command} {flag}")
            if flag not in usage and not (
                command.startswith("eval ") and flag in ("--batch_size", "--device")
            ):
                missing_usage.append(f"{command} {flag}")
    assert not rejected, f"the README shows flags the command rejects: {rejected}"
    assert not missing_usage, f"the usage text omits flags the README shows: {missing_usage}"
