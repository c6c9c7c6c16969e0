"""MMVP-VLM, scored exactly as the paper (GenHancer, after MMVP's `evaluate_vlm.py`).

The benchmark folder, as distributed:

    ROOT/Questions.csv                     qid, type, statement (a header row)
    ROOT/MLLM_VLM Images/<type>/<qid>.jpg  (folder names with a space or an underscore;
                                            images straight under ROOT/<type>/ also work)

Rows come in pairs (qid 2k-1, 2k); both images of a pair live under the first row's type.
For each statement: text "a photo of " + statement; softmax of `logits_per_text` over the pair's
two images; the prediction is image 1 when P(image 1) > 0.5 (a tie picks image 2); the ground
truth is image 1 when the qid is odd. A pair counts only when both statements pick their image.
Pattern score = correct pairs / pairs of the pattern * 100 (15 pairs per pattern: steps of 6.67);
the headline is the mean over the patterns. A pair's pattern is assigned by position, as the
reference (`pair_index // 15` over the paper's 9 patterns; `pair_index // (pairs / 9)` for other
pair counts, e.g. a generated benchmark): a warning names pairs whose CSV type column says
otherwise (images are still looked up under the first row's type folder). A pair count that
is not a multiple of 9 cannot be assigned by position: the type column is used, with a warning.

The runner encodes every image once and every text once, in batches, then scores each pair
from the cached embeddings (the reference re-encodes both images for each statement).
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import GenhancerError
from .scorer import Scorer

# written by `make_mmvp_benchmark` into a generated folder: the data is a fixture
FIXTURE_MARKER = "genhancer_fixture.json"

__all__ = [
    "PATTERNS",
    "SHORT_NAMES",
    "PROMPT_PREFIX",
    "MMVPItem",
    "MMVPPair",
    "MMVPBenchmark",
    "MMVPResult",
    "load_benchmark",
    "assign_patterns",
    "positional_pattern",
    "score_pairs",
    "run_mmvp",
]

# The paper's pattern order (MMVP-VLM table).
PATTERNS = (
    "Orientation and Direction",
    "Presence of Specific Features",
    "State and Condition",
    "Quantity and Count",
    "Positional and Relational Context",
    "Color and Appearance",
    "Structural Characteristics",
    "Texts",
    "Viewpoint and Perspective",
)
SHORT_NAMES = dict(
    zip(
        PATTERNS,
        (
            "Orientation",
            "Presence",
            "State",
            "Quantity",
            "Position",
            "Color",
            "Structure",
            "Text",
            "Viewpoint",
        ),
        strict=True,
    )
)
PROMPT_PREFIX = "a photo of "
IMAGE_DIR_NAMES = ("MLLM_VLM Images", "MLLM_VLM_Images")
CSV_NAMES = ("Questions.csv", "questions.csv")
_MAX_LISTED = 5


@dataclass(frozen=True)
class MMVPItem:
    qid: int
    type: str
    statement: str

    @property
    def text(self) -> str:
        return PROMPT_PREFIX + self.statement

    @property
    def truth(self) -> int:
        """0 when the statement describes image 1 (odd qid), else 1."""
        return 0 if self.qid % 2 == 1 else 1


@dataclass(frozen=True)
class MMVPPair:
    pattern: str  # the first row's type
    first: MMVPItem
    second: MMVPItem
    images: tuple[Path, Path]  # image 1 (first qid), image 2 (second qid)


@dataclass
class MMVPBenchmark:
    root: Path
    pairs: list[MMVPPair]

    @property
    def patterns(self) -> list[str]:
        """The patterns present: the paper's order first, then any others as they appear."""
        seen = list(dict.fromkeys(p.pattern for p in self.pairs))
        return [p for p in PATTERNS if p in seen] + [p for p in seen if p not in PATTERNS]

    @property
    def images(self) -> list[Path]:
        return list(dict.fromkeys(img for pair in self.pairs for img in pair.images))

    @property
    def source(self) -> str:
        """What the data is, for reports and chart titles."""
        marker = read_fixture_marker(self.root)
        if marker is not None:
            return f"{marker.get('what', 'generated fixture, not MMVP-VLM')} ({self.root.name})"
        return f"MMVP-VLM at {self.root}"

    @property
    def items(self) -> list[MMVPItem]:
        return [item for pair in self.pairs for item in (pair.first, pair.second)]


@dataclass
class MMVPResult:
    model: str
    path: str
    family: str
    scores: dict[str, float]  # pattern -> score in [0, 100]
    correct: dict[str, int]  # pattern -> correct pairs
    total: dict[str, int]  # pattern -> pairs
    predictions: list[dict[str, Any]] = field(default_factory=list, repr=False)
    source: str = ""  # what the data was (MMVPBenchmark.source)

    @property
    def average(self) -> float:
        return sum(self.scores.values()) / len(self.scores) if self.scores else 0.0

    def to_dict(self, with_predictions: bool = False) -> dict[str, Any]:
        out = {
            "model": self.model,
            "path": self.path,
            "family": self.family,
            "source": self.source,
            "average": self.average,
            "scores": self.scores,
            "correct": self.correct,
            "pairs": self.total,
        }
        if with_predictions:
            out["predictions"] = self.predictions
        return out


def _find_csv(root: Path) -> Path:
    for name in CSV_NAMES:
        if (root / name).is_file():
            return root / name
    found = sorted(root.glob("*.csv"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise GenhancerError(
            f"{root} holds no questions CSV (Questions.csv: qid,type,statement); pass the "
            "MMVP-VLM folder as distributed, or make one with `genhancer eval make-benchmark`"
        )
    raise GenhancerError(
        f"{root} holds several CSV files ({', '.join(f.name for f in found)}); "
        "name the questions file Questions.csv"
    )


def _variants(name: str) -> list[str]:
    return list(dict.fromkeys([name, name.replace(" ", "_"), name.replace("_", " ")]))


def _image_roots(root: Path) -> list[Path]:
    roots = [root / n for n in IMAGE_DIR_NAMES if (root / n).is_dir()]
    return roots + [root]


def _find_image(roots: list[Path], pattern: str, qid: int) -> Path | None:
    for base in roots:
        for folder in _variants(pattern):
            for ext in (".jpg", ".jpeg", ".png"):
                candidate = base / folder / f"{qid}{ext}"
                if candidate.is_file():
                    return candidate
    return None


def _read_rows(csv_file: Path) -> list[MMVPItem]:
    with open(csv_file, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if any(cell.strip() for cell in r)]
    if rows and not rows[0][0].strip().isdigit():
        rows = rows[1:]  # header
    items = []
    for line, row in enumerate(rows, start=2):
        if len(row) < 3 or not row[0].strip().isdigit():
            raise GenhancerError(
                f"{csv_file} row {line} is not 'qid,type,statement': {','.join(row)[:80]!r}"
            )
        items.append(MMVPItem(int(row[0]), row[1].strip(), ",".join(row[2:]).strip()))
    if not items:
        raise GenhancerError(f"{csv_file} holds no questions")
    if len(items) % 2:
        raise GenhancerError(
            f"{csv_file} holds {len(items)} statements; MMVP-VLM needs pairs "
            "(an even number of rows: qid 2k-1 and 2k)"
        )
    return items


def load_benchmark(root: str | Path, flag: str = "--data") -> MMVPBenchmark:
    """Read an MMVP-VLM folder (layout in the module docstring); every image must exist.

    Args:
        root: the benchmark folder.
        flag: the command's flag for it, named in errors (`--data`; `eval compare`: `--mmvp`).
    """
    root = Path(root)
    if not root.is_dir():
        raise GenhancerError(f"MMVP-VLM folder {root} does not exist; pass {flag} DIR")
    csv_file = _find_csv(root)
    items = _read_rows(csv_file)
    roots = _image_roots(root)
    pairs, missing = [], []
    for first, second in zip(items[::2], items[1::2], strict=True):
        found = []
        for item in (first, second):
            image = _find_image(roots, first.type, item.qid)
            if image is None:
                missing.append(f"{first.type}/{item.qid}.jpg")
            found.append(image)
        if None not in found:
            pairs.append(MMVPPair(first.type, first, second, (found[0], found[1])))
    if missing:
        listed = ", ".join(missing[:_MAX_LISTED])
        more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        raise GenhancerError(
            f"{len(missing)} MMVP-VLM images missing under {roots[0]}: {listed}{more}"
        )
    if (read_fixture_marker(root) or {}).get("patterns") == "type":
        return MMVPBenchmark(root, pairs)  # a generator's own layout: its type column stands
    return MMVPBenchmark(root, assign_patterns(pairs, csv_file))


def read_fixture_marker(root: Path) -> dict[str, Any] | None:
    """The marker a generator leaves in a benchmark it wrote (None for real data). Keys:
    `what` (for titles) and `patterns: "type"` when its pattern count is not MMVP-VLM's 9, so
    the reference's positional rule does not apply."""
    marker = Path(root) / FIXTURE_MARKER
    return json.loads(marker.read_text()) if marker.is_file() else None


def positional_pattern(pair_index: int, num_pairs: int) -> str | None:
    """The reference's rule: PATTERNS[pair_index // pairs_per_pattern] (15 on MMVP-VLM); None
    when the pair count is not a multiple of the pattern count."""
    if num_pairs % len(PATTERNS):
        return None
    return PATTERNS[pair_index // (num_pairs // len(PATTERNS))]


def assign_patterns(pairs: list[MMVPPair], source: Path | str = "the CSV") -> list[MMVPPair]:
    """Each pair's pattern by position (the reference's rule); warn where the type column
    disagrees, or where the position cannot decide (then the type column stands)."""
    if positional_pattern(0, len(pairs)) is None:
        warnings.warn(
            f"{source}: {len(pairs)} pairs is not a multiple of {len(PATTERNS)} patterns, so the "
            "reference's positional rule (pair // 15) cannot apply; patterns follow the type "
            "column",
            UserWarning,
            stacklevel=2,
        )
        return pairs
    out, disagree = [], []
    for i, pair in enumerate(pairs):
        pattern = positional_pattern(i, len(pairs))
        if pattern != pair.pattern:
            disagree.append(f"qid {pair.first.qid} ({pair.pattern!r} -> {pattern!r})")
        out.append(MMVPPair(pattern, pair.first, pair.second, pair.images))
    if disagree:
        listed = ", ".join(disagree[:_MAX_LISTED])
        more = f" and {len(disagree) - _MAX_LISTED} more" if len(disagree) > _MAX_LISTED else ""
        warnings.warn(
            f"{source}: the type column disagrees with the reference's positional pattern "
            f"(pair // pairs-per-pattern) for {len(disagree)} pairs; scored by position, as the "
            f"reference: {listed}{more}",
            UserWarning,
            stacklevel=2,
        )
    return out


def score_pairs(
    pairs: Sequence[MMVPPair], logits: torch.Tensor, patterns: Sequence[str] | None = None
) -> tuple[dict[str, int], dict[str, int], list[dict[str, Any]]]:
    """The paper's rule on per-pair logits.

    Args:
        pairs: the benchmark's pairs.
        logits: (P, 2, 2): for pair p, statement s (first, second), image j (1, 2) the
            `logits_per_text` entry.
        patterns: the pattern order of the result (default: as they appear).

    Returns:
        (correct pairs per pattern, pairs per pattern, one prediction record per statement)
    """
    if logits.shape != (len(pairs), 2, 2):
        raise ValueError(f"logits must be ({len(pairs)}, 2, 2), got {tuple(logits.shape)}")
    probs = logits.float().softmax(dim=-1)[..., 0]  # (P, 2): P(image 1) per statement
    patterns = list(patterns or dict.fromkeys(p.pattern for p in pairs))
    correct = dict.fromkeys(patterns, 0)
    total = dict.fromkeys(patterns, 0)
    records = []
    for p, pair in enumerate(pairs):
        rights = []
        for s, item in enumerate((pair.first, pair.second)):
            prob = float(probs[p, s])
            pred = 0 if prob > 0.5 else 1
            rights.append(pred == item.truth)
            records.append(
                {
                    "qid": item.qid,
                    "pattern": pair.pattern,
                    "statement": item.statement,
                    "images": [str(pair.images[0]), str(pair.images[1])],
                    "prob_image1": prob,
                    "pred": f"img{pred + 1}",
                    "truth": f"img{item.truth + 1}",
                    "correct": rights[-1],
                }
            )
        both = all(rights)
        records[-1]["pair_correct"] = records[-2]["pair_correct"] = both
        total[pair.pattern] += 1
        correct[pair.pattern] += int(both)
    return correct, total, records


def run_mmvp(benchmark: MMVPBenchmark, scorer: Scorer, path: str = "") -> MMVPResult:
    """Score one model: every image and every text encoded once, batched, then the rule."""
    images = benchmark.images
    image_index = {img: i for i, img in enumerate(images)}
    texts = list(dict.fromkeys(item.text for item in benchmark.items))  # a repeated statement
    text_index = {text: i for i, text in enumerate(texts)}  # is encoded once
    image_emb = scorer.encode_images(images)  # (N, d)
    text_emb = scorer.encode_texts(texts)  # (T, d)
    logits = torch.empty(len(benchmark.pairs), 2, 2)
    for p, pair in enumerate(benchmark.pairs):
        cols = [image_index[pair.images[0]], image_index[pair.images[1]]]
        rows = [text_index[pair.first.text], text_index[pair.second.text]]
        logits[p] = scorer.logits_per_text(text_emb[rows], image_emb[cols])  # (2 texts, 2 images)
    correct, total, records = score_pairs(benchmark.pairs, logits, benchmark.patterns)
    for record in records:
        record["model"] = scorer.name
    scores = {k: 100.0 * correct[k] / total[k] for k in total}
    return MMVPResult(
        scorer.name, path, scorer.family, scores, correct, total, records, source=benchmark.source
    )
