"""Drawing the reel world with skia: flat palette fills, anti-aliased edges (WORLD.md "Palette").

Layers, back to front: sky, floor band with world-anchored ticks, objects (in scene
order), pillar (in front of everything, so objects pass behind it). World units map to
pixels by the frame height: ``px = (x - cam_x) * H``, ``py = (1 - y) * H``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import skia

from worldreel.data.facts import (
    BACKGROUND, FLOOR, FLOOR_TOP, PALETTE, PILLAR, PILLAR_HEIGHT, PILLAR_WIDTH, SIZE, TICK, TICK_SPACING,
)

if TYPE_CHECKING:
    from worldreel.data.physics import Scene, Trajectory

TICK_WIDTH = 1.0 / SIZE  # one pixel at 64 px height, in frame heights


def _color(rgb: tuple[int, int, int]) -> int:
    return skia.Color(*rgb)


def render_clip(scene: "Scene", trajectory: "Trajectory | None" = None, *, frames: "list[int] | None" = None) -> np.ndarray:
    """The clip as uint8 (F, H, W, 3); ``frames`` renders only those frame indices."""
    if trajectory is None:
        from worldreel.data.physics import simulate  # (render.py is imported by physics' users, not the reverse)

        trajectory = simulate(scene)
    w, h = scene.size
    scale = float(h)  # pixels per world unit
    indices = range(len(trajectory.t)) if frames is None else frames
    out = np.empty((len(indices), h, w, 3), dtype=np.uint8)
    buffer = np.zeros((h, w, 4), dtype=np.uint8)  # (H, W, RGBA): skia draws straight into it
    surface = skia.Surface(buffer)
    canvas = surface.getCanvas()
    sky = _color(BACKGROUND)
    floor_paint = skia.Paint(Color=_color(FLOOR))
    tick_paint = skia.Paint(Color=_color(TICK), AntiAlias=True)
    pillar_paint = skia.Paint(Color=_color(PILLAR), AntiAlias=True)
    object_paints = [skia.Paint(Color=_color(PALETTE[o.color]), AntiAlias=True) for o in scene.objects]
    floor_y = (1.0 - FLOOR_TOP) * scale
    for n, f in enumerate(indices):
        cam = float(trajectory.cam_x[f])
        # 1. Sky and floor band; ticks every TICK_SPACING world units, so they move with the world.
        canvas.clear(sky)
        canvas.drawRect(skia.Rect.MakeLTRB(0, floor_y, w, h), floor_paint)
        first = int(np.floor(cam / TICK_SPACING)) - 1
        last = int(np.ceil((cam + w / scale) / TICK_SPACING)) + 1
        for k in range(first, last + 1):
            px = (k * TICK_SPACING - cam) * scale  # a tick covers [px, px + 1 pixel): crisp when px is whole
            canvas.drawRect(skia.Rect.MakeLTRB(px, floor_y, px + TICK_WIDTH * scale, h), tick_paint)
        # 2. Objects.
        for i, o in enumerate(scene.objects):
            px = (float(trajectory.x[f, i]) - cam) * scale
            py = (1.0 - float(trajectory.y[f, i])) * scale
            if o.shape == "ball":
                canvas.drawCircle(px, py, o.size * scale, object_paints[i])
            else:
                half = o.size * scale / 2
                canvas.save()
                canvas.translate(px, py)
                canvas.rotate(-float(np.degrees(trajectory.angle[f, i])))  # y points down on screen
                canvas.drawRect(skia.Rect.MakeLTRB(-half, -half, half, half), object_paints[i])
                canvas.restore()
        # 3. The pillar, in front.
        if scene.pillar_x is not None:
            left = (scene.pillar_x - PILLAR_WIDTH / 2 - cam) * scale
            top = (1.0 - FLOOR_TOP - PILLAR_HEIGHT) * scale
            canvas.drawRect(skia.Rect.MakeLTRB(left, top, left + PILLAR_WIDTH * scale, floor_y), pillar_paint)
        out[n] = buffer[..., :3]
    return out
