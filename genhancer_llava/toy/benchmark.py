"""Data drawn from the toy world, in the formats the project's own tools read.

- `write_mmvp`: an MMVP-VLM-format folder (`Questions.csv` + `MLLM_VLM Images/<type>/<qid>.png`)
  whose pairs differ in exactly one attribute; scored by `evaluation.mmvp` as MMVP-VLM is.
- `write_zeroshot`: an ImageNet-style class folder (the triangle's colour, 6 classes).
- `write_images`: a folder of training images for `enhance` (data.kind=folder).
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from ..evaluation.mmvp import FIXTURE_MARKER, IMAGE_DIR_NAMES
from .world import ATTRIBUTES, COLOURS, draw_scene, pair_differing, render, statement

__all__ = ["PATTERN_OF", "write_mmvp", "write_zeroshot", "write_images"]

# attribute -> the MMVP-VLM pattern that names it
PATTERN_OF = {
    "orientation": "Orientation and Direction",
    "count": "Quantity and Count",
    "position": "Positional and Relational Context",
    "state": "State and Condition",
    "colour": "Color and Appearance",
}


def write_mmvp(out: str | Path, pairs_per_attribute: int = 100, seed: int = 1) -> Path:
    """Pairs of scenes that differ in one attribute, each statement true of its image only."""
    out = Path(out)
    rng = random.Random(seed)
    rows, qid = [], 1
    for attribute in ATTRIBUTES:
        pattern = PATTERN_OF[attribute]
        folder = out / IMAGE_DIR_NAMES[0] / pattern
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(pairs_per_attribute):
            for scene in pair_differing(rng, attribute):
                render(scene).save(folder / f"{qid}.png")
                rows.append((qid, pattern, statement(scene, attribute)))
                qid += 1
    with open(out / "Questions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Question ID", "Type", "Statement"])
        writer.writerows(rows)
    (out / FIXTURE_MARKER).write_text(
        json.dumps(  # read back: titles say so, no 9-pattern rule
            {
                "generator": "genhancer toy",
                "seed": seed,
                "pairs_per_attribute": pairs_per_attribute,
                "what": "toy-world pairs, not MMVP-VLM",
                "patterns": "type",
            }
        )
    )
    return out


def write_zeroshot(out: str | Path, per_class: int = 50, seed: int = 2) -> Path:
    """Classes = the triangle's colour ("red triangle"), prompt "a photo of {c}"."""
    out = Path(out)
    rng = random.Random(seed)
    names = sorted(COLOURS)
    for colour in names:
        (out / colour).mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(names, 0)
    while min(counts.values()) < per_class:
        scene = draw_scene(rng)
        colour = scene.triangle.colour
        if counts[colour] < per_class:
            render(scene).save(out / colour / f"{counts[colour]}.png")
            counts[colour] += 1
    (out / "classnames.txt").write_text("".join(f"{c} triangle\n" for c in names))
    (out / "templates.txt").write_text("a photo of {c}\n")
    return out


def write_images(out: str | Path, num_images: int, seed: int = 3) -> Path:
    """`num_images` scenes as PNG files (the enhancement's training images)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(num_images):
        render(draw_scene(rng)).save(out / f"{i:06d}.png")
    return out
