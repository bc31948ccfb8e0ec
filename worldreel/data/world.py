"""The reel world (WORLD.md v1): random scenes, scenes that realise a caption, and the training stream.

``sample_scene(seed)`` draws a plan (objects, motions, camera, pillar, an aimed hit),
lays it out (``layout.py``), simulates it (``physics.py``) and keeps it only when the
simulation does what the facts will say: its facts are what really happened (who hit
whom, who passed behind the pillar). ``scene_from_facts(facts, seed)`` searches layouts
until one realises given facts (world-bench's truth for a prompt). ``WorldClips`` renders
clips on the fly for training. ``HOLDOUT`` names (colour, shape, motion) triples that
training never sees. Public names of physics.py and render.py are re-exported here.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from worldreel.data.captions import canonical_order
from worldreel.data.facts import COLORS, FPS, SHAPES, ObjectFacts, SceneFacts
from worldreel.data.layout import START_SPANS, Spec, layout
from worldreel.data.physics import (  # noqa: F401  (re-exported: the world's public API)
    BALL_DECEL, BEHIND_COVER, BOX_DECEL, HIT_SPEED, PAN_DISTANCE, PAN_SPEED, SAME_COLOUR_GAP, WALL_MARGIN,
    Scene, Trajectory, WorldObject, check_seconds, check_size, num_frames, pan_speed, problems, simulate,
)
from worldreel.data.render import render_clip  # noqa: F401  (re-exported)
from worldreel.data.video_io import to_tensor
from worldreel.errors import UserError

MAX_ATTEMPTS = 400  # scene samples tried before giving up (a bug, never expected)
LAYOUT_TRIES = 8  # layouts tried for one random plan before drawing another plan
PLAN_OBJECTS = [0.25, 0.35, 0.40]  # chance of planning 1, 2, 3 objects
MOTION_WEIGHTS = {"falls": 0.24, "rolls_left": 0.14, "rolls_right": 0.14, "thrown_left": 0.14, "thrown_right": 0.14,
                  "rests": 0.20}

# Compositional hold-out: (colour, shape, motion) triples never in training scenes. One per
# colour, each shape four times, every motion at least once, so each part is seen in
# training and only the combination is new.
HOLDOUT: frozenset[tuple[str, str, str]] = frozenset({
    ("red", "box", "rests"),
    ("green", "ball", "thrown_right"),
    ("blue", "box", "falls"),
    ("yellow", "ball", "rolls_left"),
    ("magenta", "box", "rolls_right"),
    ("cyan", "ball", "falls"),
    ("orange", "box", "thrown_left"),
    ("white", "ball", "rests"),
})


def is_holdout(facts: SceneFacts) -> bool:
    """True when any object of the scene is a held-out (colour, shape, motion) combination."""
    return any((o.color, o.shape, o.motion) in HOLDOUT for o in facts.objects)




# ---------------------------------------------------------------------------------------
# Sampling scenes and realising facts


def _check_holdout(holdout: str) -> str:
    if holdout not in ("exclude", "only", "any"):
        raise UserError(f"holdout must be exclude, only or any, got {holdout!r}", param="holdout")
    return holdout


def check_starts(starts: str) -> str:
    if starts not in START_SPANS:
        raise UserError(f"starts must be {' or '.join(START_SPANS)}, got {starts!r}", param="starts")
    return starts


def _sample_specs(rng: np.random.Generator, holdout: str) -> tuple[list[Spec], list[int], str, bool]:
    """A random plan: specs, a group id per object (identical objects are counted), camera, pillar."""
    # Crowded plans fail to lay out more often; these weights give about 35/40/25 % scenes of 1/2/3 objects.
    n = 1 + int(np.searchsorted(np.cumsum(PLAN_OBJECTS), rng.random()))
    counts = [1] * n
    if n >= 2 and rng.random() < 0.18:
        counts = [3] if n == 3 and rng.random() < 0.25 else [2] + [1] * (n - 2)
    motions, cumulative = list(MOTION_WEIGHTS), np.cumsum(list(MOTION_WEIGHTS.values()))
    triples: list[tuple[str, str, str]] = []
    if holdout == "only":
        triples.append(sorted(HOLDOUT)[int(rng.integers(len(HOLDOUT)))])
    while len(triples) < len(counts):
        free = [c for c in COLORS if c not in {t[0] for t in triples}]
        color = free[int(rng.integers(len(free)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        motion = motions[min(int(np.searchsorted(cumulative, rng.random())), len(motions) - 1)]
        if holdout == "exclude" and (color, shape, motion) in HOLDOUT:
            continue
        triples.append((color, shape, motion))
    order = rng.permutation(len(triples))
    specs, groups = [], []
    for g, k in enumerate(order):
        for _ in range(counts[k]):
            specs.append(Spec(*triples[k]))
            groups.append(g)
    camera = ("static", "static", "pan_left", "pan_right")[int(rng.integers(4))]
    pillar = bool(rng.random() < 0.3)
    single = [i for i in range(len(specs)) if groups.count(groups[i]) == 1]
    movers = [i for i in single if specs[i].motion.split("_")[0] in ("rolls", "thrown")]
    if pillar and movers and rng.random() < 0.8:
        specs[int(rng.choice(movers))].behind = True
    hitters = [i for i in single if specs[i].motion != "rests" and not specs[i].behind]
    if len(specs) >= 2 and hitters and rng.random() < (0.45 if len(specs) == 2 else 0.8):
        h = int(rng.choice(hitters))
        options = [j for j in range(len(specs)) if groups[j] != groups[h] and specs[j].target is None
                   and not specs[j].motion.startswith("thrown") and groups.count(groups[j]) == 1]
        if options:
            specs[h].target = int(rng.choice(options))
    return specs, groups, camera, pillar


def _observed_facts(scene: Scene, traj: Trajectory) -> SceneFacts:
    """The facts as simulated: stated motions, who really hit whom, who really went behind the pillar."""
    objs = []
    for i, o in enumerate(scene.objects):
        hits = next((t for _, h, t, _ in sorted(traj.contacts) if h == i), None)
        behind = scene.pillar_x is not None and traj.covered[:, i].max() >= BEHIND_COVER
        objs.append(ObjectFacts(o.color, o.shape, o.motion, bool(behind), hits))
    return SceneFacts(tuple(objs), scene.facts.camera, scene.facts.pillar)


def _permute(scene: Scene, traj: Trajectory, facts: SceneFacts, order: list[int]) -> Scene:
    inverse = {old: new for new, old in enumerate(order)}
    traj = replace(
        traj, x=traj.x[:, order], y=traj.y[:, order], angle=traj.angle[:, order], covered=traj.covered[:, order],
        hidden=traj.hidden[:, order], first_contact=traj.first_contact[order],
        contacts=tuple((t, inverse[h], inverse[g], v) for t, h, g, v in traj.contacts),
    )
    return replace(scene, objects=tuple(scene.objects[k] for k in order), facts=facts, trajectory=traj)


def sample_scene(seed: int, *, size=(64, 64), seconds: float = 4.0, holdout: str = "exclude",
                 starts: str = "side") -> Scene:
    """A random scene whose facts are what its simulation really does (deterministic per seed).

    holdout: "exclude" never yields a HOLDOUT combination, "only" always contains one, "any" either.
    starts: "side" (the world's own layout) or "wide" (movers may start anywhere with room ahead;
    layout.START_SPANS), training data whose layout does not give the direction away.
    Objects (and trajectory columns) are in canonical facts order: scene.objects[i] is facts.objects[i].
    """
    size, seconds, holdout, starts = check_size(size), check_seconds(seconds), _check_holdout(holdout), check_starts(starts)
    for attempt in range(MAX_ATTEMPTS):
        if attempt % LAYOUT_TRIES == 0:
            rng = np.random.default_rng([seed, attempt // LAYOUT_TRIES])
            specs, groups, camera, pillar = _sample_specs(rng, holdout)
        # Several layouts per plan, so crowded plans (3 objects, pans) are not under-represented;
        # paths kept apart first (clean scenes, planned hits only), then free (the simulation decides).
        scene = layout(specs, camera, pillar, size, seconds, seed, rng, strict=2 if attempt % LAYOUT_TRIES < 4 else 1,
                       starts=starts)
        if scene is None:
            continue
        traj = simulate(scene)
        facts = _observed_facts(scene, traj)
        if problems(scene, traj, facts):
            continue
        # Counted objects must have said the same thing ("two red balls fall and hit the blue box").
        def said(k: int):
            o = facts.objects[k]
            return (o.motion, o.behind_pillar, None if o.hits is None else groups[o.hits])
        if any(groups[a] == groups[b] and said(a) != said(b) for a in range(len(specs)) for b in range(a)):
            continue
        # No hits inside a counted group, nor on one ("hits a yellow ball" when two fall is ambiguous).
        if any(o.hits is not None and (groups[o.hits] == groups[k] or groups.count(groups[o.hits]) > 1)
               for k, o in enumerate(facts.objects)):
            continue
        canonical, order = canonical_order(facts)
        if (holdout == "only") != is_holdout(canonical) and holdout != "any":
            continue
        return _permute(scene, traj, canonical, order)
    raise RuntimeError(f"no valid scene for seed {seed} after {MAX_ATTEMPTS} attempts (a bug)")


def scene_from_facts(facts: SceneFacts, seed: int, *, size=(64, 64), seconds: float = 4.0) -> Scene:
    """A scene realising ``facts`` (the truth world-bench compares a prompt's videos with).

    Objects keep the order of ``facts.objects``. When no layout realises every fact (e.g.
    "rests behind a gray pillar"), the closest one is returned and ``scene.notes`` lists
    what does not hold.
    """
    size, seconds = check_size(size), check_seconds(seconds)
    if not 1 <= len(facts.objects) <= 3:
        raise UserError(f"a scene has 1 to 3 objects, got {len(facts.objects)}", param="prompt")
    for o in facts.objects:
        if o.color not in COLORS or o.shape not in SHAPES or o.motion not in MOTION_WEIGHTS:
            raise UserError(f"unknown object {o.color} {o.shape} {o.motion}", param="prompt")
        if o.hits is not None and not 0 <= o.hits < len(facts.objects):
            raise UserError(f"hit target {o.hits} is not an object", param="prompt")
    specs = [Spec(o.color, o.shape, o.motion, o.behind_pillar, o.hits) for o in facts.objects]
    pillar = facts.pillar or any(o.behind_pillar for o in facts.objects)
    best: tuple[int, Scene, Trajectory, list[str]] | None = None
    for attempt in range(80):
        if attempt >= 60 and best is not None:
            break
        rng = np.random.default_rng([seed, attempt, 1])
        strict = 2 if attempt < 40 else (0 if attempt < 60 else -1)  # relax until something fits
        scene = layout(specs, facts.camera, pillar, size, seconds, seed, rng, strict=strict)
        if scene is None:
            continue
        traj = simulate(scene)
        found = problems(scene, traj, facts)
        if best is None or len(found) < best[0]:
            best = (len(found), scene, traj, found)
        if not found:
            break
    if best is None:  # nothing fits with aims: drop them (the notes will say what does not hold)
        plain = [Spec(o.color, o.shape, o.motion) for o in facts.objects]
        for attempt in range(50):
            scene = layout(plain, facts.camera, pillar, size, seconds, seed, np.random.default_rng([seed, attempt, 2]), -1)
            if scene is not None:
                traj = simulate(scene)
                best = (0, scene, traj, problems(scene, traj, facts))
                break
        else:
            raise UserError(f"cannot fit these {len(facts.objects)} objects into a {size[0]}x{size[1]} frame", param="size")
    _, scene, traj, found = best
    return replace(scene, facts=facts, notes=tuple(found), trajectory=traj)


# ---------------------------------------------------------------------------------------
# Streaming dataset


class WorldClips(torch.utils.data.IterableDataset):
    """Endless reel-world clips rendered on the fly (seeded, data-loader-worker and rank aware).

    Item k of the stream (counted over all workers and ranks) comes from
    ``sample_scene(seed_k)`` with seed_k derived from (seed, k), so the data do not depend
    on the number of workers. Yields ``{"video": float32 (3, F, H, W) in [-1, 1],
    "caption": str, "facts": dict, "seed": int}``.
    """

    def __init__(self, seed: int = 0, size=(64, 64), frames: int | None = None, seconds: float = 4.0,
                 image_prob: float = 0.0, holdout: str = "exclude", crop: tuple[int, int, int] | None = None,
                 rank: int = 0, world_size: int = 1, starts: str = "side"):
        super().__init__()
        self.seed = int(seed)  # base seed of the stream
        self.size = check_size(size)  # (W, H) rendered
        self.frames = num_frames(check_seconds(seconds)) if frames is None else int(frames)  # frames per clip
        if self.frames < 1:
            raise UserError(f"frames must be at least 1, got {frames}", param="frames")
        # Clips shorter than 4 s are the start of a 4 s scene (the caption holds over the whole scene).
        self.sim_seconds = max((self.frames - 1) / FPS, 4.0)
        self.image_prob = float(image_prob)  # fraction of 1-frame items (the scene's first frame)
        self.holdout = _check_holdout(holdout)
        self.starts = check_starts(starts)  # layout of movers (sample_scene)
        self.crop = None if crop is None else tuple(int(c) for c in crop)  # (F, H, W) random spacetime crop
        if self.crop is not None and (self.crop[0] > self.frames or self.crop[1] > self.size[1] or self.crop[2] > self.size[0]):
            raise UserError(f"crop {self.crop} is larger than the clip ({self.frames}, {self.size[1]}, {self.size[0]})",
                            param="crop")
        self.rank, self.world_size = int(rank), int(world_size)  # distributed training: this rank's share

    def item_seed(self, k: int) -> int:
        return int(np.random.SeedSequence([self.seed, k]).generate_state(1)[0] & 0x7FFFFFFF)

    def item(self, k: int) -> dict:
        """The k-th item of the stream."""
        from worldreel.data.captions import caption
        from worldreel.data.facts import facts_to_dict

        seed = self.item_seed(k)
        rng = np.random.default_rng([seed, 2])
        scene = sample_scene(seed, size=self.size, seconds=self.sim_seconds, holdout=self.holdout, starts=self.starts)
        image = rng.random() < self.image_prob
        frames = [0] if image else list(range(self.frames))
        video = render_clip(scene, frames=frames)  # (F, H, W, 3) uint8
        if self.crop is not None:
            f, h, w = self.crop
            t0 = 0 if image else int(rng.integers(video.shape[0] - f + 1))
            y0, x0 = int(rng.integers(video.shape[1] - h + 1)), int(rng.integers(video.shape[2] - w + 1))
            video = video[t0:t0 + (1 if image else f), y0:y0 + h, x0:x0 + w]
        return {"video": to_tensor(video), "caption": caption(scene.facts, rng), "facts": facts_to_dict(scene.facts), "seed": seed}

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        stride = workers * self.world_size
        k = self.rank * workers + worker
        while True:
            yield self.item(k)
            k += stride
