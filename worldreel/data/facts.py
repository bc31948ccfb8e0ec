"""The reel world's fixed vocabulary and constants (WORLD.md, specification v1).

Shared by the simulator/renderer (``data/world.py``), the captioner and parser
(``data/captions.py``) and the evaluator (``eval/worldbench.py``): anything here that
changes changes what every checkpoint and benchmark means, so it changes only with
the specification.

Coordinates: world units, y up, the frame is 1.0 unit high and W/H units wide, the floor
surface at y = FLOOR_TOP. A camera offset ``cam_x`` (world units) is the world x shown at the
left edge of the frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Palette: exact sRGB fills (WORLD.md "Palette").
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 70),
    "blue": (50, 100, 240),
    "yellow": (240, 220, 40),
    "magenta": (220, 60, 220),
    "cyan": (40, 210, 220),
    "orange": (250, 140, 20),
    "white": (240, 240, 240),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
BACKGROUND = (16, 18, 32)
FLOOR = (96, 96, 96)
TICK = (64, 64, 64)
PILLAR = (150, 150, 150)

SHAPES: tuple[str, ...] = ("ball", "box")
# Motion names in scene facts. Captions say "rolls" for a ball and "slides" for a box; both
# map to rolls_left / rolls_right here ("the object moves along the floor").
MOTIONS: tuple[str, ...] = ("falls", "rolls_left", "rolls_right", "thrown_left", "thrown_right", "rests")
CAMERAS: tuple[str, ...] = ("static", "pan_left", "pan_right")

# Frame and timing (WORLD.md "Frame and timing").
FPS = 8
FRAMES = 33  # 4.0 s plus the first frame
SIZE = 64  # native frame height and width in pixels
SIZE_MULTIPLE = 16
FLOOR_TOP = 1.0 / 8.0  # the floor band covers the bottom 1/8 of the frame
TICK_SPACING = 1.0 / 8.0  # floor ticks every 1/8 of the (square) frame width, in world units

# Physics constants (documented world constants; WORLD.md asks that a fall from the top
# reaches the floor in roughly 0.5-0.8 s: from y=0.9 to the floor, sqrt(2*0.7/4.0) = 0.59 s).
GRAVITY = 4.0  # world units / s^2, downwards

# Object sizes (world units).
BALL_RADIUS = (0.06, 0.10)
BOX_SIDE = (0.12, 0.18)
PILLAR_WIDTH = 0.12
PILLAR_HEIGHT = 0.5
MAX_OBJECTS = 3


@dataclass(frozen=True)
class ObjectFacts:
    """What a caption states about one object."""

    color: str  # a key of PALETTE
    shape: str  # one of SHAPES
    motion: str  # one of MOTIONS
    behind_pillar: bool = False  # the caption says it passes behind the gray pillar
    hits: int | None = None  # index (in SceneFacts.objects) of the object it hits, if stated


@dataclass(frozen=True)
class SceneFacts:
    """Everything a caption states about a clip; what world-bench checks a video against."""

    objects: tuple[ObjectFacts, ...]
    camera: str = "static"  # one of CAMERAS
    pillar: bool = False  # a gray pillar stands in the scene
    extras: dict = field(default_factory=dict, compare=False, hash=False)  # free-form notes, never compared


def facts_to_dict(facts: SceneFacts) -> dict:
    """SceneFacts as the JSON written to captions.jsonl ("facts" field)."""
    return {
        "objects": [
            {"color": o.color, "shape": o.shape, "motion": o.motion, "behind_pillar": o.behind_pillar, "hits": o.hits}
            for o in facts.objects
        ],
        "camera": facts.camera,
        "pillar": facts.pillar,
    }


def facts_from_dict(data: dict) -> SceneFacts:
    objects = tuple(
        ObjectFacts(
            color=o["color"],
            shape=o["shape"],
            motion=o["motion"],
            behind_pillar=bool(o.get("behind_pillar", False)),
            hits=o.get("hits"),
        )
        for o in data["objects"]
    )
    return SceneFacts(objects=objects, camera=data.get("camera", "static"), pillar=bool(data.get("pillar", False)))
