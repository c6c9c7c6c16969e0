"""Generated benchmarks in the real formats: a format fixture, NOT a substitute for MMVP-VLM.

`make_mmvp_benchmark` draws image pairs procedurally (PIL) for the nine MMVP-VLM patterns and
writes them in the distributed layout (`Questions.csv` + `MLLM_VLM Images/<type>/<qid>.jpg`).
Each pair differs in exactly the property its pattern names (an arrow pointing left or right, two
or three discs, a red or a green square, ...) and each statement is true of its own image only.
Numbers on it measure nothing about real-image perception; they exercise the runner, the
protocol, the report and `make demo` end to end.

`make_zeroshot_fixture` writes a tiny ImageNet-style class folder (with `classnames.txt` and
`templates.txt`) and an image-caption JSON for the zero-shot checks, in the same spirit.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..errors import GenhancerError
from .mmvp import FIXTURE_MARKER, IMAGE_DIR_NAMES, PATTERNS

__all__ = ["make_mmvp_benchmark", "make_zeroshot_fixture", "COLOURS"]

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 180),
    "orange": (240, 140, 30),
}
_BACKGROUNDS = ((245, 245, 245), (225, 235, 245), (245, 238, 220), (232, 245, 232))
_WORDS = (("STOP", "OPEN"), ("CAT", "DOG"), ("SALE", "EXIT"), ("LEFT", "RIGHT"), ("YES", "NO"))

Pair = tuple[Image.Image, Image.Image, str, str]


def _a(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _canvas(rng: random.Random, size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (size, size), rng.choice(_BACKGROUNDS))
    return image, ImageDraw.Draw(image)


def _colour(rng: random.Random, exclude: tuple[str, ...] = ()) -> tuple[str, tuple[int, ...]]:
    name = rng.choice([c for c in COLOURS if c not in exclude])
    return name, COLOURS[name]


def _orientation(rng: random.Random, s: int) -> Pair:
    name, fill = _colour(rng)
    out = []
    for direction in (-1, 1):
        image, draw = _canvas(rng, s)
        cy, half = s * rng.uniform(0.4, 0.6), s * rng.uniform(0.3, 0.4)
        tip, tail = s / 2 + direction * half, s / 2 - direction * half
        neck = s / 2 + direction * half * 0.2
        draw.rectangle([min(tail, neck), cy - s * 0.06, max(tail, neck), cy + s * 0.06], fill=fill)
        draw.polygon([(tip, cy), (neck, cy - s * 0.18), (neck, cy + s * 0.18)], fill=fill)
        out.append(image)
    return (
        out[0],
        out[1],
        f"{_a(name)} arrow pointing to the left",
        f"{_a(name)} arrow pointing to the right",
    )


def _presence(rng: random.Random, s: int) -> Pair:
    name, fill = _colour(rng)
    out = []
    for with_dot in (True, False):
        image, draw = _canvas(rng, s)
        r = s * rng.uniform(0.25, 0.35)
        draw.ellipse([s / 2 - r, s / 2 - r, s / 2 + r, s / 2 + r], fill=fill)
        if with_dot:
            d = r * 0.35
            draw.ellipse([s / 2 - d, s / 2 - d, s / 2 + d, s / 2 + d], fill=(20, 20, 20))
        out.append(image)
    return (
        out[0],
        out[1],
        f"{_a(name)} disc with a black dot in its centre",
        f"a plain {name} disc without any dot",
    )


def _state(rng: random.Random, s: int) -> Pair:
    out = []
    for full in (True, False):
        image, draw = _canvas(rng, s)
        w, h = s * rng.uniform(0.3, 0.4), s * rng.uniform(0.5, 0.6)
        x0, y0 = s / 2 - w / 2, s / 2 - h / 2
        if full:
            draw.rectangle([x0, y0 + h * 0.15, x0 + w, y0 + h], fill=(60, 120, 230))
        draw.rectangle([x0, y0, x0 + w, y0 + h], outline=(30, 30, 30), width=max(1, s // 40))
        out.append(image)
    return out[0], out[1], "a glass full of blue water", "an empty glass"


def _quantity(rng: random.Random, s: int) -> Pair:
    name, fill = _colour(rng)
    n = rng.choice((2, 3))
    words = {2: "two", 3: "three", 4: "four"}
    out = []
    for count in (n, n + 1):
        image, draw = _canvas(rng, s)
        r = s * 0.08
        for i in range(count):
            cx = s * (i + 1) / (count + 1)
            cy = s * rng.uniform(0.4, 0.6)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        out.append(image)
    return out[0], out[1], f"{words[n]} {name} discs", f"{words[n + 1]} {name} discs"


def _position(rng: random.Random, s: int) -> Pair:
    a, fa = _colour(rng)
    b, fb = _colour(rng, exclude=(a,))
    out = []
    for square_left in (True, False):
        image, draw = _canvas(rng, s)
        r, cy = s * 0.13, s * rng.uniform(0.4, 0.6)
        xs = (s * 0.28, s * 0.72) if square_left else (s * 0.72, s * 0.28)
        draw.rectangle([xs[0] - r, cy - r, xs[0] + r, cy + r], fill=fa)
        draw.ellipse([xs[1] - r, cy - r, xs[1] + r, cy + r], fill=fb)
        out.append(image)
    return (
        out[0],
        out[1],
        f"{_a(a)} square to the left of {_a(b)} circle",
        f"{_a(a)} square to the right of {_a(b)} circle",
    )


def _colour_pattern(rng: random.Random, s: int) -> Pair:
    a, fa = _colour(rng)
    b, fb = _colour(rng, exclude=(a,))
    out = []
    for fill in (fa, fb):
        image, draw = _canvas(rng, s)
        r = s * rng.uniform(0.22, 0.32)
        draw.rectangle([s / 2 - r, s / 2 - r, s / 2 + r, s / 2 + r], fill=fill)
        out.append(image)
    return out[0], out[1], f"{_a(a)} square", f"{_a(b)} square"


def _structure(rng: random.Random, s: int) -> Pair:
    name, fill = _colour(rng)
    out = []
    for striped in (True, False):
        image, draw = _canvas(rng, s)
        r = s * rng.uniform(0.25, 0.32)
        box = [s / 2 - r, s / 2 - r, s / 2 + r, s / 2 + r]
        draw.rectangle(box, fill=fill)
        if striped:
            step = max(2, int(2 * r / 6))
            for x in range(int(box[0]) + step // 2, int(box[2]), step):
                draw.rectangle([x, box[1], x + step // 2, box[3]], fill=(250, 250, 250))
        out.append(image)
    return (
        out[0],
        out[1],
        f"{_a(name)} square with white vertical stripes",
        f"a solid {name} square",
    )


def _font(size: int):
    try:
        return ImageFont.load_default(size=max(8, size))
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _texts(rng: random.Random, s: int) -> Pair:
    words = rng.choice(_WORDS)
    out = []
    for word in words:
        image, draw = _canvas(rng, s)
        draw.rectangle(
            [s * 0.1, s * 0.3, s * 0.9, s * 0.7],
            fill=(255, 255, 255),
            outline=(20, 20, 20),
            width=max(1, s // 50),
        )
        draw.text((s / 2, s / 2), word, fill=(10, 10, 10), font=_font(s // 6), anchor="mm")
        out.append(image)
    return (
        out[0],
        out[1],
        f'a white sign with the word "{words[0]}" written on it',
        f'a white sign with the word "{words[1]}" written on it',
    )


def _viewpoint(rng: random.Random, s: int) -> Pair:
    name, fill = _colour(rng)
    darker = tuple(int(c * 0.7) for c in fill)
    darkest = tuple(int(c * 0.45) for c in fill)
    front, angled = _canvas(rng, s), _canvas(rng, s)
    r = s * rng.uniform(0.22, 0.28)
    front[1].rectangle([s / 2 - r, s / 2 - r, s / 2 + r, s / 2 + r], fill=fill)
    c, d = (s / 2, s / 2), r * 1.1
    corner = [
        (c[0] + d * math.cos(math.radians(a)), c[1] - d * math.sin(math.radians(a)))
        for a in (90, 150, 210, 270, 330, 30)
    ]
    draw = angled[1]
    draw.polygon([c, corner[5], corner[0], corner[1]], fill=fill)  # top face
    draw.polygon([c, corner[1], corner[2], corner[3]], fill=darker)  # left face
    draw.polygon([c, corner[3], corner[4], corner[5]], fill=darkest)  # right face
    return (
        front[0],
        angled[0],
        f"{_a(name)} cube seen straight from the front, one face visible",
        f"{_a(name)} cube seen from above at an angle, three faces visible",
    )


DRAWERS: dict[str, Callable[[random.Random, int], Pair]] = dict(
    zip(
        PATTERNS,
        (
            _orientation,
            _presence,
            _state,
            _quantity,
            _position,
            _colour_pattern,
            _structure,
            _texts,
            _viewpoint,
        ),
        strict=True,
    )
)


def make_mmvp_benchmark(
    out: str | Path,
    pairs_per_pattern: int = 15,
    image_size: int = 224,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a generated benchmark in MMVP-VLM's distributed layout.

    Args:
        out: the benchmark folder (`Questions.csv`, `MLLM_VLM Images/<type>/<qid>.jpg`).
        pairs_per_pattern: pairs per pattern (MMVP-VLM has 15: 9 x 15 = 135 pairs, 270 images).
        image_size: side of the square images (the model's processor resizes them).
        seed: drawing seed (the same seed writes the same benchmark).
        overwrite: write into a folder that already holds a Questions.csv.
    """
    out = Path(out)
    if pairs_per_pattern < 1 or image_size < 16:
        raise GenhancerError("make-benchmark needs pairs_per_pattern >= 1 and image_size >= 16")
    if (out / "Questions.csv").exists() and not overwrite:
        raise GenhancerError(f"{out} already holds a benchmark; pass --overwrite to replace it")
    rng = random.Random(seed)
    images_dir = out / IMAGE_DIR_NAMES[0]
    rows, qid = [], 1
    for pattern, draw in DRAWERS.items():
        (images_dir / pattern).mkdir(parents=True, exist_ok=True)
        for _ in range(pairs_per_pattern):
            image1, image2, statement1, statement2 = draw(rng, image_size)
            for image, statement in ((image1, statement1), (image2, statement2)):
                image.save(images_dir / pattern / f"{qid}.jpg", quality=95)
                rows.append((qid, pattern, statement))
                qid += 1
    with open(out / "Questions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Question ID", "Type", "Statement"])
        writer.writerows(rows)
    (out / FIXTURE_MARKER).write_text(
        json.dumps(  # read back: reports and charts say so
            {
                "generator": "genhancer eval make-benchmark",
                "seed": seed,
                "pairs_per_pattern": pairs_per_pattern,
                "what": "generated fixture, not MMVP-VLM",
            }
        )
    )
    (out / "README.md").write_text(
        "# Generated MMVP-VLM-format benchmark\n\nA format fixture drawn by "
        f"`genhancer eval make-benchmark` (seed {seed}, {pairs_per_pattern} pairs per "
        "pattern). It is not MMVP-VLM and its scores say nothing about real-image perception.\n"
    )
    return out


def make_zeroshot_fixture(
    out: str | Path, images_per_class: int = 4, image_size: int = 64, seed: int = 0
) -> tuple[Path, Path]:
    """Write a tiny class folder (colour x shape classes) and an image-caption JSON.

    Returns (classification folder, retrieval JSON). The class folder holds one sub-folder per
    class, `classnames.txt` (one name per line, sorted folder order) and `templates.txt`.
    """
    out = Path(out)
    rng = random.Random(seed)
    shapes = ("square", "disc")
    colours = ("red", "green", "blue", "yellow", "purple", "orange")
    classes = [(c, sh) for c in colours for sh in shapes]
    cls_dir = out / "classification"
    names = []
    for colour, shape in classes:
        folder = cls_dir / f"{colour}_{shape}"
        folder.mkdir(parents=True, exist_ok=True)
        names.append(f"{colour} {shape}")
        for i in range(images_per_class):
            _draw_shape(rng, image_size, colour, shape).save(folder / f"{i}.png")
    names = [names[i] for i in sorted(range(len(classes)), key=lambda i: "_".join(classes[i]))]
    (cls_dir / "classnames.txt").write_text("\n".join(names) + "\n")  # sorted folder order
    (cls_dir / "templates.txt").write_text("a photo of a {c}.\na drawing of a {c}.\n")
    ret_dir = out / "retrieval"
    (ret_dir / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(2 * len(classes)):
        colour, shape = classes[i % len(classes)]
        name = f"images/{i}.png"
        _draw_shape(rng, image_size, colour, shape).save(ret_dir / name)
        records.append(
            {
                "image": name,
                "captions": [f"{_a(colour)} {shape}", f"a picture of {_a(colour)} {shape}"],
            }
        )
    (ret_dir / "captions.json").write_text(json.dumps(records, indent=1))
    (out / FIXTURE_MARKER).write_text(
        json.dumps(  # read back: reports and charts say so
            {
                "generator": "genhancer eval make-benchmark --with_zeroshot",
                "seed": seed,
                "what": "generated zero-shot fixture",
            }
        )
    )
    return cls_dir, ret_dir / "captions.json"


def _draw_shape(rng: random.Random, s: int, colour: str, shape: str) -> Image.Image:
    image, draw = _canvas(rng, s)
    r = s * rng.uniform(0.2, 0.32)
    cx, cy = s * rng.uniform(0.4, 0.6), s * rng.uniform(0.4, 0.6)
    box = [cx - r, cy - r, cx + r, cy + r]
    (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=COLOURS[colour])
    return image
