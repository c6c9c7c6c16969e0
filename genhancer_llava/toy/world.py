"""The toy world: small scenes whose attributes are drawn, recorded and captioned.

A scene is a 32x32 RGB picture on black: a 2x2 grid of 16 px cells holding 1-4 objects. Object 0
is a triangle; the others are circles or squares in other cells, never in the triangle's colour.
Recorded attributes (the triangle's, plus the scene's object count):

| attribute   | values                                     | kind   |
|-------------|--------------------------------------------|--------|
| orientation | up, right, down, left                      | fine   |
| count       | one, two, three, four (objects)            | fine   |
| position    | top left, top right, bottom left, bottom right (cell) | fine |
| state       | filled, hollow                             | fine   |
| colour      | red, green, blue, yellow, purple, white    | coarse |

Captions always name the triangle's colour ("a photo of red triangle and blue circle"); with
probability `fine_p` one fine phrase is added ("pointing up", "at top left", "three objects",
"hollow"). `pair_differing` changes exactly one attribute of a scene and keeps the rest.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from PIL import Image, ImageDraw

__all__ = [
    "ATTRIBUTES",
    "FINE",
    "COARSE",
    "COLOURS",
    "SIZE",
    "Obj",
    "Scene",
    "draw_scene",
    "render",
    "caption",
    "phrase",
    "vocabulary",
    "pair_differing",
]

SIZE = 32
CELL = SIZE // 2
COLOURS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (235, 215, 40),
    "purple": (160, 60, 200),
    "white": (235, 235, 235),
}
ORIENTATIONS = ("up", "right", "down", "left")
COUNTS = ("one", "two", "three", "four")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
STATES = ("filled", "hollow")
OTHER_SHAPES = ("circle", "square")
# attribute -> its values (index = the recorded label)
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "orientation": ORIENTATIONS,
    "count": COUNTS,
    "position": POSITIONS,
    "state": STATES,
    "colour": tuple(COLOURS),
}
FINE = ("orientation", "count", "position", "state")
COARSE = ("colour",)


@dataclass(frozen=True)
class Obj:
    shape: str  # triangle, circle, square
    colour: str
    cell: int  # 0..3, row-major
    dx: int  # centre offset from the cell centre, px
    dy: int
    radius: int
    orientation: int = 0  # triangles only: index into ORIENTATIONS
    hollow: bool = False  # triangles only


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]  # objects[0] is the triangle
    extras: tuple[str, ...] = field(default=())  # caption words drawn with the scene

    @property
    def triangle(self) -> Obj:
        return self.objects[0]

    def attributes(self) -> dict[str, int]:
        """attribute -> label index (see ATTRIBUTES)."""
        t = self.triangle
        return {
            "orientation": t.orientation,
            "count": len(self.objects) - 1,
            "position": t.cell,
            "state": int(t.hollow),
            "colour": list(COLOURS).index(t.colour),
        }


def _other(rng: random.Random, cell: int, avoid: str) -> Obj:
    colour = rng.choice([c for c in COLOURS if c != avoid])
    return Obj(
        rng.choice(OTHER_SHAPES),
        colour,
        cell,
        rng.randint(-2, 2),
        rng.randint(-2, 2),
        rng.randint(4, 5),
    )


def draw_scene(rng: random.Random) -> Scene:
    """A random scene: every attribute uniform over its values."""
    colour = rng.choice(list(COLOURS))
    cell = rng.randrange(4)
    tri = Obj(
        "triangle",
        colour,
        cell,
        rng.randint(-1, 1),
        rng.randint(-1, 1),
        rng.randint(5, 6),
        orientation=rng.randrange(4),
        hollow=rng.random() < 0.5,
    )
    free = [c for c in range(4) if c != cell]
    rng.shuffle(free)
    others = tuple(_other(rng, c, colour) for c in sorted(free[: rng.randrange(4)]))
    return Scene((tri, *others))


def _triangle_points(o: Obj, cx: float, cy: float) -> list[tuple[float, float]]:
    r = o.radius
    up = [(0.0, -r), (-r, 0.8 * r), (r, 0.8 * r)]  # apex, base left, base right
    # rotate clockwise by 90 degrees per orientation step: (x, y) -> (-y, x) in image coords
    pts = up
    for _ in range(o.orientation):
        pts = [(-y, x) for x, y in pts]
    return [(cx + x, cy + y) for x, y in pts]


def render(scene: Scene) -> Image.Image:
    """The scene as a 32x32 RGB image."""
    image = Image.new("RGB", (SIZE, SIZE), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        cx = (o.cell % 2) * CELL + CELL / 2 - 0.5 + o.dx
        cy = (o.cell // 2) * CELL + CELL / 2 - 0.5 + o.dy
        fill = COLOURS[o.colour]
        if o.shape == "triangle":
            pts = _triangle_points(o, cx, cy)
            if o.hollow:
                draw.polygon(pts, outline=fill)
            else:
                draw.polygon(pts, fill=fill)
        else:
            r = o.radius
            box = [cx - r, cy - r, cx + r, cy + r]
            (draw.ellipse if o.shape == "circle" else draw.rectangle)(box, fill=fill)
    return image


def phrase(scene: Scene, attribute: str) -> str:
    """The caption words naming one attribute of the scene (colour: "red triangle")."""
    a = scene.attributes()
    if attribute == "colour":
        return f"{scene.triangle.colour} triangle"
    if attribute == "orientation":
        return f"pointing {ORIENTATIONS[a['orientation']]}"
    if attribute == "position":
        return f"at {POSITIONS[a['position']]}"
    if attribute == "count":
        n = COUNTS[a["count"]]
        return f"{n} object" if n == "one" else f"{n} objects"
    if attribute == "state":
        return STATES[a["state"]]
    raise KeyError(attribute)


def caption(scene: Scene, rng: random.Random, fine_p: float = 0.1) -> str:
    """ "red triangle [fine phrase] [and blue circle ...]" (the prompt prefix is the caller's)."""
    words = [phrase(scene, "colour")]
    if rng.random() < fine_p:
        words.append(phrase(scene, rng.choice(FINE)))
    for o in scene.objects[1:]:
        if rng.random() < 0.5:
            words.append(f"and {o.colour} {o.shape}")
    return " ".join(words)


def statement(scene: Scene, attribute: str) -> str:
    """An MMVP-style statement naming the triangle's colour and one attribute."""
    if attribute == "colour":
        return phrase(scene, "colour")
    return f"{phrase(scene, 'colour')} {phrase(scene, attribute)}"


def vocabulary() -> list[str]:
    """Every word a caption, statement or zero-shot prompt can hold."""
    words = {
        "a",
        "photo",
        "of",
        "and",
        "triangle",
        "pointing",
        "at",
        "object",
        "objects",
        *OTHER_SHAPES,
        *COLOURS,
        *ORIENTATIONS,
        *COUNTS,
        *STATES,
    }
    for p in POSITIONS:
        words.update(p.split())
    return sorted(words)


def pair_differing(rng: random.Random, attribute: str) -> tuple[Scene, Scene]:
    """Two scenes that differ in exactly `attribute` (all other attributes and objects kept)."""
    scene = draw_scene(rng)
    t = scene.triangle
    if attribute == "orientation":
        other = replace(t, orientation=rng.choice([o for o in range(4) if o != t.orientation]))
        return scene, replace(scene, objects=(other, *scene.objects[1:]))
    if attribute == "state":
        return scene, replace(scene, objects=(replace(t, hollow=not t.hollow), *scene.objects[1:]))
    if attribute == "colour":
        used = {o.colour for o in scene.objects[1:]}
        colour = rng.choice([c for c in COLOURS if c != t.colour and c not in used])
        return scene, replace(scene, objects=(replace(t, colour=colour), *scene.objects[1:]))
    if attribute == "position":
        cell = rng.choice([c for c in range(4) if c != t.cell])
        moved = [replace(o, cell=t.cell) if o.cell == cell else o for o in scene.objects[1:]]
        return scene, replace(scene, objects=(replace(t, cell=cell), *moved))
    if attribute == "count":
        n = len(scene.objects)
        target = rng.choice([k for k in range(1, 5) if k != n])
        objects = list(scene.objects)
        free = [c for c in range(4) if c not in {o.cell for o in objects}]
        rng.shuffle(free)
        while len(objects) < target:
            objects.append(_other(rng, free.pop(), t.colour))
        objects = objects[:target]
        return scene, replace(scene, objects=tuple(objects))
    raise KeyError(attribute)
