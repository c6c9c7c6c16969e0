"""Zero-shot preservation: classification (top-1/top-5) and image-text retrieval (R@1/5/10).

GenHancer tunes the vision tower and its projection into the joint space while the text tower
stays fixed, so zero-shot use can drop (users report it for the released checkpoint; the
reference code never measures it). These checks measure it before and after.

Inputs (all local):

- classification: an ImageNet-style folder, one sub-folder per class holding its images.
  Class names come from `classnames.txt` (one per line, in sorted sub-folder order) or
  `classnames.json` ({"folder": "name"}), else from the folder names (`_` read as a space).
  Prompt templates come from `templates.txt` (one per line, `{c}` or `{}` for the class name)
  or the `templates` argument; default "a photo of a {c}.". The class embedding is the mean
  of the L2-normalised template embeddings, normalised again (as CLIP and open_clip do).
- retrieval: a JSON list of {"image": path relative to the JSON file, "captions": [...]}
  ("caption": "..." also works). R@k as in CLIP papers: image->text counts an image when any
  of its captions is among the top k; text->image counts a caption when its image is.

Every image and every text is encoded once, in batches, through the same `Scorer` as MMVP-VLM.

Why not `clip-benchmark` (LAION's CLIP_benchmark, 1.6.x): its released model loaders are
open_clip and Japanese CLIP only, so a Hugging Face CLIPModel/SiglipModel folder needs our own
wrapper anyway (its `encode_text`/`encode_image` protocol expects tensors, while transformers 5
returns output objects); its datasets are named downloads (torchvision/tfds/webdataset), not a
local folder with class names and templates; and it pulls open_clip_torch, scikit-learn,
pycocoevalcap and webdataset into the environment for two ranking metrics. We compute the same
metrics (its zero-shot classifier and CLIP-paper recall definitions) in this small module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import GenhancerError
from .mmvp import FIXTURE_MARKER
from .scorer import Scorer

__all__ = [
    "zeroshot_source",
    "ClassificationData",
    "RetrievalData",
    "ZeroShotResult",
    "load_classification",
    "load_retrieval",
    "classify",
    "retrieve",
    "run_zeroshot",
    "topk_accuracy",
    "recall_at_k",
    "DEFAULT_TEMPLATES",
]

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
DEFAULT_TEMPLATES = ("a photo of a {c}.",)


@dataclass
class ClassificationData:
    classnames: list[str]
    templates: list[str]
    images: list[Path]
    labels: list[int]


@dataclass
class RetrievalData:
    images: list[Path]
    captions: list[str]
    caption_image: list[int]  # caption index -> image index


@dataclass
class ZeroShotResult:
    model: str
    path: str
    metrics: dict[str, float] = field(default_factory=dict)  # percent
    sizes: dict[str, int] = field(default_factory=dict)
    source: str = ""  # what the data was (`zeroshot_source`)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "path": self.path,
            "metrics": self.metrics,
            "sizes": self.sizes,
            "source": self.source,
        }


def zeroshot_source(classification: str | Path | None, retrieval: str | Path | None) -> str:
    """What the zero-shot data is, for reports and chart titles (a generated fixture says so)."""
    parts = []
    for kind, given in (("classification", classification), ("retrieval", retrieval)):
        if given is None:
            continue
        path = Path(given)
        folder = path if path.is_dir() else path.parent
        fixture = any((f / FIXTURE_MARKER).is_file() for f in (folder, folder.parent))
        parts.append(f"{kind}: generated fixture" if fixture else f"{kind}: {given}")
    return "; ".join(parts)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def _fill(template: str, name: str) -> str:
    return template.replace("{c}", name).replace("{}", name)


def load_classification(root: str | Path, templates: list[str] | None = None) -> ClassificationData:
    """Read an ImageNet-style class folder (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise GenhancerError(f"classification folder {root} does not exist")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if len(folders) < 2:
        raise GenhancerError(f"{root} needs one sub-folder per class (found {len(folders)})")
    if (root / "classnames.txt").is_file():
        names = [n.strip() for n in (root / "classnames.txt").read_text().splitlines() if n.strip()]
        if len(names) != len(folders):
            raise GenhancerError(
                f"{root}/classnames.txt has {len(names)} names for "
                f"{len(folders)} class folders; give one per folder, sorted"
            )
    elif (root / "classnames.json").is_file():
        mapping = json.loads((root / "classnames.json").read_text())
        names = [mapping.get(f.name, f.name.replace("_", " ")) for f in folders]
    else:
        names = [f.name.replace("_", " ") for f in folders]
    if templates is None and (root / "templates.txt").is_file():
        templates = [
            t.strip() for t in (root / "templates.txt").read_text().splitlines() if t.strip()
        ]
    templates = list(templates or DEFAULT_TEMPLATES)
    images, labels = [], []
    for label, folder in enumerate(folders):
        found = _images_in(folder)
        images += found
        labels += [label] * len(found)
    if not images:
        raise GenhancerError(f"{root} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return ClassificationData(names, templates, images, labels)


def load_retrieval(json_file: str | Path) -> RetrievalData:
    """Read an image-caption JSON (see the module docstring); every image must exist."""
    json_file = Path(json_file)
    if not json_file.is_file():
        raise GenhancerError(f"retrieval captions file {json_file} does not exist")
    records = json.loads(json_file.read_text())
    if not isinstance(records, list) or not records:
        raise GenhancerError(
            f'{json_file} must be a JSON list of {{"image": ..., "captions": [...]}} records'
        )
    images, captions, owner, missing = [], [], [], []
    for i, record in enumerate(records):
        caps = record.get("captions", record.get("caption"))
        if "image" not in record or not caps:
            raise GenhancerError(f"{json_file} record {i} needs 'image' and 'captions'")
        image = json_file.parent / record["image"]
        if not image.is_file():
            missing.append(record["image"])
        images.append(image)
        for caption in [caps] if isinstance(caps, str) else caps:
            captions.append(caption)
            owner.append(i)
    if missing:
        raise GenhancerError(
            f"{len(missing)} retrieval images missing next to {json_file}: {', '.join(missing[:5])}"
        )
    return RetrievalData(images, captions, owner)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Percent of rows whose label is among the k largest logits. logits: (N, C)."""
    top = logits.topk(k, dim=1).indices  # (N, k)
    return 100.0 * (top == labels[:, None]).any(dim=1).float().mean().item()


def recall_at_k(scores: torch.Tensor, positives: torch.Tensor, k: int) -> float:
    """Percent of queries (rows) with at least one positive among their top k. (Q, G) each."""
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices  # (Q, k)
    return 100.0 * positives.gather(1, top).any(dim=1).float().mean().item()


def classify(data: ClassificationData, scorer: Scorer) -> dict[str, float]:
    prompts = [_fill(t, n) for n in data.classnames for t in data.templates]
    text = scorer.encode_texts(prompts).view(len(data.classnames), len(data.templates), -1)
    classes = text.mean(dim=1)
    classes = classes / classes.norm(dim=-1, keepdim=True)  # (C, d)
    logits = scorer.encode_images(data.images) @ classes.T  # (N, C)
    labels = torch.tensor(data.labels)
    metrics = {"classification/top1": topk_accuracy(logits, labels, 1)}
    if len(data.classnames) >= 5:
        metrics["classification/top5"] = topk_accuracy(logits, labels, 5)
    return metrics


def retrieve(
    data: RetrievalData, scorer: Scorer, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    images = scorer.encode_images(data.images)  # (I, d)
    texts = scorer.encode_texts(data.captions)  # (T, d)
    scores = texts @ images.T  # (T, I)
    positives = torch.zeros_like(scores, dtype=torch.bool)
    positives[torch.arange(len(data.captions)), torch.tensor(data.caption_image)] = True
    metrics = {}
    for k in ks:
        metrics[f"retrieval/image_to_text_R@{k}"] = recall_at_k(scores.T, positives.T, k)
    for k in ks:
        metrics[f"retrieval/text_to_image_R@{k}"] = recall_at_k(scores, positives, k)
    return metrics


def run_zeroshot(
    scorer: Scorer,
    classification: ClassificationData | None = None,
    retrieval: RetrievalData | None = None,
    path: str = "",
) -> ZeroShotResult:
    """Zero-shot metrics (percent) of one model on the given data."""
    result = ZeroShotResult(scorer.name, path)
    if classification is not None:
        result.metrics.update(classify(classification, scorer))
        result.sizes.update(
            {
                "classification_images": len(classification.images),
                "classes": len(classification.classnames),
            }
        )
    if retrieval is not None:
        result.metrics.update(retrieve(retrieval, scorer))
        result.sizes.update(
            {"retrieval_images": len(retrieval.images), "captions": len(retrieval.captions)}
        )
    return result
