"""The reel world's state at latent resolution: training targets for the denoiser (issue 32).

A reel-world clip is a pure function of its scene seed, so its state can be re-simulated
at any time: where each colour is, how fast it moves, what is behind the pillar. The DiT
task uses it for two training levers (``train/state_head.py``): weighting the flow loss
where objects are, and an auxiliary head that predicts this state from an intermediate
block (privileged information, the simulator as teacher).

Targets of one clip: float32 (STATE_CHANNELS, f, h, w) on the latent grid, where latent
frame 0 is pixel frame 0 and latent frame k >= 1 is pixel frames 4k-3 .. 4k (the causal
autoencoder's ``time_factor`` 4), and a latent cell is ``space_factor`` (8) pixels square:

    0:8    visible occupancy per palette colour (``facts.COLORS`` order): the fraction of the
           cell's pixels showing that colour's object, averaged over the latent frame's pixel
           frames. Coverage is drawn with the renderer's own geometry and anti-aliasing
           (skia), then composited as the renderer does: later objects and the pillar in front.
    8:16   hidden occupancy per colour: the part of that colour's object behind the pillar.
    16:18  velocity (dx, dy) in latent cells per latent frame, on screen (x right, y down, so
           a camera pan shows), the occupancy-weighted mean of the objects covering the cell;
           0 where no object is. Measured over the 4 pixel frames ending at the latent frame's
           last one (frames 0..4 for latent frame 0).

Out of frame: ``sample_scene`` rejects scenes whose objects leave the frame, so no reel-world
clip has anything out of view today; a part of an object outside the frame is simply in no
cell. Clips without a seed (a user's own videos) have no targets.

Costs (2-core CPU, noisy): re-simulating a scene ~13 ms, the masks ~5 ms for a 4 s 64x64
clip; ``scene_targets`` keeps the last 8192 clips in memory (~25 KB each at 64x64), so a
latent cache pays once per item and epoch 2 onwards is free.
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from worldreel.data.facts import COLORS, FLOOR_TOP, FPS, PILLAR_HEIGHT, PILLAR_WIDTH

OCCUPANCY = slice(0, len(COLORS))  # channels of the visible occupancy per colour
HIDDEN = slice(len(COLORS), 2 * len(COLORS))  # ... of the occupancy behind the pillar
VELOCITY = slice(2 * len(COLORS), 2 * len(COLORS) + 2)  # (dx, dy) cells per latent frame
STATE_CHANNELS = 2 * len(COLORS) + 2


def latent_groups(frames: list[int], time_factor: int) -> list[list[int]]:
    """Pixel frames of each latent frame (positions in ``frames``): [0], [1..tf], [tf+1..2tf], ..."""
    n = len(frames)
    if (n - 1) % time_factor:
        raise ValueError(f"{n} frames do not make whole latent frames (1 + k * {time_factor})")
    return [[0]] + [list(range(1 + k * time_factor, 1 + (k + 1) * time_factor)) for k in range((n - 1) // time_factor)]


def coverage(scene, trajectory, frames: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased pixel coverage of each object drawn alone, (F, N, H, W), and of the pillar,
    (F, H, W), in [0, 1]: the same shapes and transforms as ``render.render_clip``."""
    import skia

    w, h = scene.size
    scale = float(h)
    buffer = np.zeros((h, w, 4), dtype=np.uint8)  # (H, W, RGBA): skia draws straight into it
    canvas = skia.Surface(buffer).getCanvas()
    paint = skia.Paint(Color=skia.Color(255, 255, 255), AntiAlias=True)
    objects = np.zeros((len(frames), len(scene.objects), h, w), dtype=np.float32)
    pillar = np.zeros((len(frames), h, w), dtype=np.float32)
    for n, f in enumerate(frames):
        cam = float(trajectory.cam_x[f])
        for i, o in enumerate(scene.objects):
            canvas.clear(skia.Color(0, 0, 0))
            px, py = (float(trajectory.x[f, i]) - cam) * scale, (1.0 - float(trajectory.y[f, i])) * scale
            if o.shape == "ball":
                canvas.drawCircle(px, py, o.size * scale, paint)
            else:
                half = o.size * scale / 2
                canvas.save()
                canvas.translate(px, py)
                canvas.rotate(-float(np.degrees(trajectory.angle[f, i])))  # y points down on screen
                canvas.drawRect(skia.Rect.MakeLTRB(-half, -half, half, half), paint)
                canvas.restore()
            objects[n, i] = buffer[..., 0] / 255.0
        if scene.pillar_x is not None:
            canvas.clear(skia.Color(0, 0, 0))
            left = (scene.pillar_x - PILLAR_WIDTH / 2 - cam) * scale
            top = (1.0 - FLOOR_TOP - PILLAR_HEIGHT) * scale
            canvas.drawRect(skia.Rect.MakeLTRB(left, top, left + PILLAR_WIDTH * scale, (1.0 - FLOOR_TOP) * scale), paint)
            pillar[n] = buffer[..., 0] / 255.0
    return objects, pillar


def state_targets(scene, trajectory, frames: list[int], *, time_factor: int = 4, space_factor: int = 8) -> np.ndarray:
    """Targets (STATE_CHANNELS, f, H/sf, W/sf) float32 of pixel frames ``frames`` of a simulated scene."""
    w, h = scene.size
    if w % space_factor or h % space_factor:
        raise ValueError(f"size {w}x{h} is not a multiple of the space factor {space_factor}")
    groups = latent_groups(frames, time_factor)
    objects, pillar = coverage(scene, trajectory, frames)  # (F, N, H, W), (F, H, W)
    F, N = objects.shape[:2]
    # 1. Per pixel: composite back to front as the renderer does (alpha over), so an object
    #    shows where no later object and no pillar covers it; hidden = covered by the pillar.
    visible = np.empty_like(objects)
    front = 1.0 - pillar  # (F, H, W) what is not behind the pillar
    for i in reversed(range(N)):
        visible[:, i] = objects[:, i] * front
        front = front * (1.0 - objects[:, i])
    hidden = objects * pillar[:, None]  # (F, N, H, W)

    # 2. Pixels -> latent cells: mean over each cell's pixels and over each latent frame's pixel frames.
    def pool(a: np.ndarray) -> np.ndarray:  # (F, N, H, W) -> (f, N, h, w)
        cells = a.reshape(F, N, h // space_factor, space_factor, w // space_factor, space_factor).mean(axis=(3, 5))
        return np.stack([cells[g].mean(axis=0) for g in groups])

    vis, hid, amodal = pool(visible), pool(hidden), pool(objects)  # (f, N, h, w)
    # 3. Screen velocity per object and latent frame, in cells: the displacement over the
    #    time_factor pixel frames ending at the group's last frame (frames 0..tf for frame 0).
    sx = (trajectory.x - trajectory.cam_x[:, None]) * h / space_factor  # (F_sim, N) cells from the left edge
    sy = (1.0 - trajectory.y) * h / space_factor  # (F_sim, N) cells from the top
    vel = np.zeros((len(groups), N, 2))
    for k, g in enumerate(groups):
        end = max(frames[g[-1]], time_factor)
        end = min(end, len(trajectory.t) - 1)
        start = max(end - time_factor, 0)
        vel[k, :, 0] = (sx[end] - sx[start]) * time_factor / max(end - start, 1)
        vel[k, :, 1] = (sy[end] - sy[start]) * time_factor / max(end - start, 1)
    # 4. Objects -> colours (two objects share a colour only when counted; they never touch).
    f_lat, hh, ww = len(groups), h // space_factor, w // space_factor
    out = np.zeros((STATE_CHANNELS, f_lat, hh, ww), dtype=np.float32)
    for i, o in enumerate(scene.objects):
        c = COLORS.index(o.color)
        out[OCCUPANCY.start + c] += vis[:, i]
        out[HIDDEN.start + c] += hid[:, i]
    out[: HIDDEN.stop] = np.clip(out[: HIDDEN.stop], 0.0, 1.0)
    mass = amodal.sum(axis=1)  # (f, h, w)
    for d in range(2):
        moment = (amodal * vel[:, :, d, None, None]).sum(axis=1)  # (f, h, w)
        out[VELOCITY.start + d] = np.where(mass > 1e-6, moment / np.maximum(mass, 1e-6), 0.0)
    return out


@lru_cache(maxsize=8192)
def scene_targets(seed: int, size: tuple[int, int], seconds: float, frames: tuple[int, ...], holdout: str = "exclude",
                  time_factor: int = 4, space_factor: int = 8, starts: str = "side") -> tuple[np.ndarray, str]:
    """(targets, facts as JSON) of ``sample_scene(seed, size, seconds, holdout, starts)``'s pixel frames
    ``frames``: deterministic, kept in memory. The array is read-only (it is shared)."""
    from worldreel.data.facts import facts_to_dict
    from worldreel.data.world import sample_scene, simulate

    scene = sample_scene(seed, size=size, seconds=seconds, holdout=holdout, starts=starts)
    out = state_targets(scene, simulate(scene), list(frames), time_factor=time_factor, space_factor=space_factor)
    out.setflags(write=False)
    return out, json.dumps(facts_to_dict(scene.facts), sort_keys=True)


class CacheStates:
    """State targets for the items of a latent cache built from the reel world (``WorldItems``).

    An item qualifies when it records its scene ``seed`` and the re-simulated scene states the
    same facts as the item (a check that the cache and this code agree); a 1-frame item's
    pixel frame is replayed from the cache's seed, as ``WorldItems`` drew it.
    """

    def __init__(self, info: dict, entries: list[dict]):
        meta = info.get("meta") or {}
        vae = meta.get("vae") or {}
        self.entries = entries
        self.world = meta.get("source") == "world"
        self.seed = int(meta.get("seed", 0))
        self.starts = str(meta.get("starts", "side"))  # the movers' layout the cache was built with
        self.sizes = [tuple(s) for s in meta.get("sizes") or []]
        self.seconds = [float(s) for s in meta.get("seconds") or []]
        self.time_factor, self.space_factor = int(vae.get("time_factor", 4)), int(vae.get("space_factor", 8))
        self.mismatches = 0  # items whose re-simulated facts differ (no targets for them)

    def _image_frame(self, entry: dict) -> int | None:
        """The pixel frame WorldItems rendered for a 1-frame item: its rng draws replayed."""
        if not self.sizes or not self.seconds:
            return None
        rng = np.random.default_rng([self.seed, int(entry["key"])])
        rng.integers(len(self.sizes))
        rng.integers(len(self.seconds))
        if int(rng.integers(2**31)) != int(entry["seed"]):
            return None
        return int(rng.integers(33))

    def targets(self, i: int, shape: tuple[int, int, int]) -> np.ndarray | None:
        """Item ``i``'s targets (STATE_CHANNELS, f, h, w) for latent grid ``shape`` (f, h, w), or None."""
        e = self.entries[i]
        if not self.world or "seed" not in e or "size" not in e:
            return None
        seconds = float(e.get("seconds", 4.0))
        if seconds > 0:
            frames = tuple(range(1 + round(seconds * FPS)))
        else:
            frame = self._image_frame(e)
            if frame is None:
                return None
            frames, seconds = (frame,), 4.0
        out, facts = scene_targets(int(e["seed"]), tuple(e["size"]), seconds, frames, "exclude",
                                   self.time_factor, self.space_factor, self.starts)
        if "facts" in e and json.dumps(e["facts"], sort_keys=True) != facts or tuple(out.shape[1:]) != tuple(shape):
            self.mismatches += 1
            return None
        return out

    def batch(self, indices: list[int], shape: tuple[int, int, int]) -> dict[str, Any]:
        """``{"state": (B, STATE_CHANNELS, f, h, w), "has_state": (B,) bool}`` (zeros where an item has none)."""
        return stack_targets([self.targets(int(i), shape) for i in indices], shape)


def stack_targets(targets: list[np.ndarray | None], shape: tuple[int, int, int]) -> dict[str, Any]:
    """A batch of per-item targets (None: no targets) as tensors for the DiT task."""
    state = torch.zeros(len(targets), STATE_CHANNELS, *shape)  # (B, K, f, h, w)
    for b, t in enumerate(targets):
        if t is not None:
            state[b] = torch.from_numpy(np.array(t))
    return {"state": state, "has_state": torch.tensor([t is not None for t in targets], dtype=torch.bool)}
