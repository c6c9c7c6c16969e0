"""The eval commands' work: load each model once, score it, write the outputs."""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import GenhancerError
from .mmvp import MMVPResult, load_benchmark, run_mmvp
from .report import write_comparison, write_mmvp, write_zeroshot
from .scorer import load_scorer, read_family
from .zeroshot import (
    ZeroShotResult,
    load_classification,
    load_retrieval,
    run_zeroshot,
    zeroshot_source,
)

__all__ = ["labels_for", "evaluate", "compare", "Evaluation"]


@dataclass
class Evaluation:
    mmvp: list[MMVPResult]
    zeroshot: list[ZeroShotResult]
    files: dict[str, Path]


def labels_for(paths: Sequence[str | Path], names: Sequence[str] | None = None) -> list[str]:
    """Table labels: the given names, else folder names (parent/name where they collide)."""
    if names:
        if len(names) != len(paths):
            raise GenhancerError(
                f"got {len(names)} names for {len(paths)} models; give one --name per --model"
            )
        return list(names)
    resolved = [Path(p).resolve() for p in paths]
    labels = [p.name for p in resolved]
    if len(set(labels)) < len(labels):
        labels = [f"{p.parent.name}/{p.name}" for p in resolved]
    return labels


def evaluate(
    models: Sequence[str | Path],
    mmvp_data: str | Path | None = None,
    classification: str | Path | None = None,
    retrieval: str | Path | None = None,
    templates: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    batch_size: int = 64,
    device: str | None = None,
    dtype: str = "float32",
    mmvp_flag: str = "--data",
) -> tuple[list[MMVPResult], list[ZeroShotResult]]:
    """Score each model (loaded once) on the given data. All inputs are read before any model
    loads, so a bad folder fails in a second, not after the first model ran. `mmvp_flag` is the
    calling command's flag for the MMVP-VLM folder (named in errors)."""
    if not models:
        raise GenhancerError("pass at least one --model DIR")
    if mmvp_data is None and classification is None and retrieval is None:
        raise GenhancerError(
            f"nothing to score: pass {mmvp_flag} DIR (MMVP-VLM), "
            "--classification DIR and/or --retrieval JSON"
        )
    for path in models:
        read_family(path)
    bench = load_benchmark(mmvp_data, mmvp_flag) if mmvp_data is not None else None
    cls = load_classification(classification, templates) if classification is not None else None
    ret = load_retrieval(retrieval) if retrieval is not None else None
    mmvp, zeroshot = [], []
    for path, label in zip(models, labels_for(models, names), strict=True):
        scorer = load_scorer(path, batch_size=batch_size, device=device, name=label, dtype=dtype)
        if bench is not None:
            mmvp.append(run_mmvp(bench, scorer, str(path)))
        if cls is not None or ret is not None:
            zeroshot.append(run_zeroshot(scorer, cls, ret, str(path)))
            zeroshot[-1].source = zeroshot_source(classification, retrieval)
        del scorer
        gc.collect()
    return mmvp, zeroshot


def compare(
    base: str | Path,
    enhanced: str | Path,
    output: str | Path,
    mmvp_data: str | Path | None = None,
    classification: str | Path | None = None,
    retrieval: str | Path | None = None,
    templates: Sequence[str] | None = None,
    names: Sequence[str] = ("base", "enhanced"),
    batch_size: int = 64,
    device: str | None = None,
    dtype: str = "float32",
) -> Evaluation:
    """Base vs enhanced: MMVP-VLM per pattern and zero-shot deltas in one report.

    Writes under `output`: report.md, report.json, report.png (the comparison), and the
    per-part outputs (mmvp_vlm.* with per-statement predictions, zeroshot.*).
    """
    base_family, enhanced_family = read_family(base), read_family(enhanced)
    if base_family != enhanced_family:
        raise GenhancerError(
            f"base is a '{base_family}' model and enhanced a "
            f"'{enhanced_family}' one; compare an encoder with its own base"
        )
    mmvp, zeroshot = evaluate(
        [base, enhanced],
        mmvp_data,
        classification,
        retrieval,
        templates,
        names,
        batch_size,
        device,
        dtype,
        mmvp_flag="--mmvp",
    )
    output = Path(output)
    files = write_comparison(mmvp or None, zeroshot or None, output)
    if mmvp:
        files.update({f"mmvp_{k}": v for k, v in write_mmvp(mmvp, output).items()})
    if zeroshot:
        files.update({f"zeroshot_{k}": v for k, v in write_zeroshot(zeroshot, output).items()})
    return Evaluation(mmvp, zeroshot, files)
