"""Does the stated direction decide the motion? Left/right-swapped prompts, same seeds.

world-bench's motion check says whether an object moved as its prompt said, but not why: a
model that ignores "left" and "right" and picks a side from its noise still passes half its
rolls. This benchmark asks the model for the same subject both ways with the same seed,

* ``text``: text-to-video, "a blue ball rolls to the right" and "... to the left";
* ``image``: image-to-video from one first frame (the subject resting where the reel world
  puts it for that seed), so the layout is fixed and only the text can set the side,

tracks the object (world-bench's tracker, the camera pan removed) and reports per mode:

* ``follows``: the fraction of videos whose motion check passes (the stated side, far enough);
* ``other_way``: the fraction whose object first moves to the other side;
* ``both``: the fraction of (subject, seed) pairs that pass *both* ways: the direction
  flips with the text. A model that follows a coin instead of the text scores about
  ``follows**2`` here at best, and near 0 when its side is fixed by the seed.

Subjects are single objects on a static camera (no pillar, no hit) and avoid the reel
world's hold-out combinations both ways.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

MODES = ("text", "image")
SIDES = ("right", "left")
# (colour, shape, verb phrase): neither side of any is a hold-out triple (data/world.HOLDOUT).
SUBJECTS = (
    ("blue", "ball", "rolls"),
    ("red", "box", "slides"),
    ("cyan", "ball", "rolls"),
    ("white", "box", "slides"),
    ("magenta", "ball", "is thrown"),
    ("yellow", "box", "is thrown"),
)


@dataclass
class DirectionConfig:
    """What the direction benchmark makes."""

    seeds: int = 8  # seeds per subject and side
    seed_base: int = 0
    modes: tuple[str, ...] = MODES
    steps: int | None = None  # sampler steps (None: the model's default)
    guidance: float | None = None  # guidance scale (None: the model's default)
    stagger: float | None = None  # staggered sampling's lead (None: the model's default)


def _named(color: str, shape: str) -> str:
    from worldreel.data.captions import indefinite_article

    return f"{indefinite_article(color)} {color} {shape}"


def prompt_for(subject: tuple[str, str, str], side: str) -> str:
    color, shape, verb = subject
    return f"{_named(color, shape)} {verb} to the {side}"


def resting_first_frame(subject: tuple[str, str, str], seed: int, size: tuple[int, int]) -> np.ndarray:
    """The first frame (H, W, 3) uint8 of the subject resting on the floor, laid out for ``seed``."""
    from worldreel.data.captions import parse_caption
    from worldreel.data.render import render_clip
    from worldreel.data.world import scene_from_facts

    color, shape, _ = subject
    scene = scene_from_facts(parse_caption(f"{_named(color, shape)} rests on the floor"), seed, size=size)
    return render_clip(scene, frames=[0])[0]


def first_side(score) -> str:
    """"right", "left" or "none": where the prompt's single object first moves (world units, pan removed),
    read from world-bench's ``VideoScore`` of the video (its tracks and their assignment to the facts)."""
    from worldreel.eval.worldbench import MOVE, _first_move, _world

    obs, assignment = score.observation, score.assignment
    if 0 not in assignment:
        return "none"
    _, x, _ = _world(obs, obs.tracks[assignment[0]])
    x = x[~np.isnan(x)]
    if x.size < 2:
        return "none"
    sign = _first_move(x, MOVE)
    return "right" if sign > 0 else "left" if sign < 0 else "none"


def video_count(cfg: DirectionConfig) -> int:
    """Videos ``run_direction`` makes per model: every mode, subject, seed and side."""
    return len(cfg.modes) * len(SUBJECTS) * cfg.seeds * len(SIDES)


def run_direction(generator, cfg: DirectionConfig, progress: Callable[[float], None] | None = None) -> dict:
    """Every subject, side, seed and mode: a JSON-able dict with ``summary[mode]`` and the ``videos``."""
    from worldreel.data.captions import parse_caption
    from worldreel.eval.worldbench import score_video

    size = tuple(generator.config.default_size)
    fps = generator.config.fps
    kwargs = dict(steps=cfg.steps, guidance=cfg.guidance, stagger=cfg.stagger, rewrite=False)
    rows = []
    total = video_count(cfg)
    for mode in cfg.modes:
        for subject in SUBJECTS:
            for seed in range(cfg.seed_base, cfg.seed_base + cfg.seeds):
                first = resting_first_frame(subject, seed, size) if mode == "image" else None
                for side in SIDES:
                    prompt = prompt_for(subject, side)
                    if first is None:
                        frames = generator.generate(prompt, seed=seed, **kwargs).frames
                    else:
                        frames = generator.animate(first, prompt, seed=seed, **kwargs).frames
                    score = score_video(frames, parse_caption(prompt), fps=fps)
                    motion = score.checks["motion"]
                    rows.append({"mode": mode, "subject": " ".join(subject), "side": side, "seed": seed,
                                 "prompt": prompt, "motion": motion.status, "reason": motion.reason,
                                 "moved": first_side(score)})
                    if progress is not None:
                        progress(len(rows) / total)
    return {"config": {**asdict(cfg), "modes": list(cfg.modes), "size": list(size), "subjects": [list(s) for s in SUBJECTS]},
            "summary": summarise(rows), "videos": rows}


def summarise(rows: list[dict]) -> dict:
    """Per mode (and per subject within it): follows, other_way, both, videos, pairs."""
    def stats(part: list[dict]) -> dict:
        passed = {(r["subject"], r["seed"], r["side"]): r["motion"] == "pass" for r in part}
        pairs = {(s, seed) for s, seed, _ in passed}
        both = [all(passed.get((s, seed, side), False) for side in SIDES) for s, seed in pairs]
        other = [r["moved"] not in (r["side"], "none") for r in part]
        return {"videos": len(part), "pairs": len(pairs), "follows": float(np.mean(list(passed.values()))),
                "other_way": float(np.mean(other)), "both": float(np.mean(both)) if both else 0.0}

    out = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        part = [r for r in rows if r["mode"] == mode]
        out[mode] = {**stats(part), "by_side": {side: stats([r for r in part if r["side"] == side]) for side in SIDES},
                     "by_subject": {s: stats([r for r in part if r["subject"] == s])
                                    for s in dict.fromkeys(r["subject"] for r in part)}}
    return out
