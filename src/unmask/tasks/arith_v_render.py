"""Pictures for the `arith-v` task: k objects in a grid, drawn with Pillow, fully determined by a spec.

A picture is a white square cut into GRID x GRID cells; k of them hold one object (a filled
square for containers, a filled circle for loose items) in one of a few strong colours, with a
small random inset. The objects sit inside their cells, so a vision tower whose patches tile the
cells (patch = cell / 2 in the 2x2 tiles, = cell in the base tile of the bundled model) sees each
object as one whole patch pattern: counting is summing, which a tiny tower learns on a CPU.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

GRID = 4  # cells per side
CELL = 16  # pixels per cell side
SIZE = GRID * CELL  # the rendered picture's side in pixels
BACKGROUND = (255, 255, 255)
COLORS = (
    (220, 40, 40), (40, 150, 40), (40, 80, 220), (230, 140, 20), (150, 40, 180), (20, 150, 160), (60, 60, 60),
)
SHAPES = ("square", "circle")
MAX_INSET = 3  # pixels between an object's edge and its cell's, at most (at least 1)


@dataclass(frozen=True)
class PictureSpec:
    """Everything that decides a picture's pixels: which cells, what shape, colour and insets."""

    cells: tuple[int, ...]  # cell indices 0..GRID*GRID-1, row-major, one object each
    shape: str
    color: tuple[int, int, int]
    insets: tuple[tuple[int, int, int, int], ...]  # per object: left, top, right, bottom

    @property
    def count(self) -> int:
        return len(self.cells)

    def to_json(self) -> dict:
        return {"cells": list(self.cells), "shape": self.shape, "color": list(self.color),
                "insets": [list(i) for i in self.insets]}

    @classmethod
    def from_json(cls, data: dict) -> "PictureSpec":
        return cls(cells=tuple(data["cells"]), shape=data["shape"], color=tuple(data["color"]),
                   insets=tuple(tuple(i) for i in data["insets"]))


def random_spec(rng: random.Random, count: int, shape: str) -> PictureSpec:
    """`count` objects of `shape` in distinct random cells, one random colour, random insets."""
    if not 0 <= count <= GRID * GRID:
        raise ValueError(f"count={count}: a picture holds 0..{GRID * GRID} objects")
    if shape not in SHAPES:
        raise ValueError(f"shape={shape!r}; valid: {SHAPES}")
    cells = tuple(sorted(rng.sample(range(GRID * GRID), count)))
    color = rng.choice(COLORS)
    insets = tuple(tuple(rng.randint(1, MAX_INSET) for _ in range(4)) for _ in cells)
    return PictureSpec(cells=cells, shape=shape, color=color, insets=insets)


def render(spec: PictureSpec, size: int = SIZE) -> Image.Image:
    """The picture as an RGB image of side `size` (drawn at SIZE, resized only if `size` differs)."""
    image = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for cell, (left, top, right, bottom) in zip(spec.cells, spec.insets):
        x0, y0 = (cell % GRID) * CELL, (cell // GRID) * CELL
        box = (x0 + left, y0 + top, x0 + CELL - 1 - right, y0 + CELL - 1 - bottom)
        if spec.shape == "square":
            draw.rectangle(box, fill=spec.color)
        else:
            draw.ellipse(box, fill=spec.color)
    if size != SIZE:
        image = image.resize((size, size), Image.Resampling.NEAREST)
    return image


def blank(size: int = SIZE) -> Image.Image:
    """A picture with nothing on it (the control that shows answers come from the picture)."""
    return Image.new("RGB", (size, size), BACKGROUND)
