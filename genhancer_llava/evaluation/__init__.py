"""Scoring encoders: MMVP-VLM as the paper, zero-shot preservation, one comparison report.

`scorer` wraps a CLIP/SigLIP folder (encode images and texts once, batched); `mmvp` reads the
benchmark and applies the paper's protocol; `zeroshot` measures classification and retrieval;
`benchmark` writes generated fixtures in the real formats; `report` writes tables and figures.
"""

from .benchmark import make_mmvp_benchmark, make_zeroshot_fixture
from .mmvp import PATTERNS, MMVPBenchmark, MMVPResult, load_benchmark, run_mmvp, score_pairs
from .report import mmvp_markdown, plot_mmvp, write_comparison, write_mmvp, write_zeroshot
from .scorer import FAMILIES, HFScorer, Scorer, load_scorer, read_family
from .zeroshot import (
    ZeroShotResult,
    load_classification,
    load_retrieval,
    run_zeroshot,
)

__all__ = [
    "FAMILIES",
    "HFScorer",
    "MMVPBenchmark",
    "MMVPResult",
    "PATTERNS",
    "Scorer",
    "ZeroShotResult",
    "load_benchmark",
    "load_classification",
    "load_retrieval",
    "load_scorer",
    "make_mmvp_benchmark",
    "make_zeroshot_fixture",
    "mmvp_markdown",
    "plot_mmvp",
    "read_family",
    "run_mmvp",
    "run_zeroshot",
    "score_pairs",
    "write_comparison",
    "write_mmvp",
    "write_zeroshot",
]
