"""Long-video drift: world-bench per window over a long video, two ways of making it.

A long video can be made by
* **windowed extension** (what ``Generator.generate`` does): windows of the model's native
  latent length, each given the previous window's last latent frames (several frames of
  motion, in latent space) and decoded together; or
* **last-frame image-to-video chaining** (the approach DESIGN.md rejects): make 4 s, take
  its last frame, animate it for 4 s more, and so on. Each link sees one picture of the
  past and no motion, so errors pile up.

``run_drift`` makes both for the same prompts and seeds, cuts each video into windows of
``window_seconds`` and scores every window with world-bench against the prompt's facts.
The true world (rendered from the same scene) is scored the same way: it is the ceiling
per window (a "falls" prompt cannot fall again in the third window, for truth either).
``chain_last_frame`` exists for this benchmark only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

METHODS = ("windowed", "chained", "truth")


@dataclass
class DriftConfig:
    """What the drift benchmark makes and scores."""

    prompts: int = 8  # reel-world scenes (prompts) to test
    seconds: float = 12.0  # length of each video
    window_seconds: float = 4.0  # length of each scored window (and of each chained link)
    steps: int | None = None  # sampler steps (None: the generator's default)
    guidance: float | None = None  # guidance scale (None: the generator's default)
    seed: int = 0  # scene i uses seed + i, for the scene and for generation
    size: tuple[int, int] | None = None  # (W, H); None: the model's default size


def chain_last_frame(generator, prompt: str, *, seconds: float, link_seconds: float, seed: int, **kwargs) -> np.ndarray:
    """Baseline: text-to-video for one link, then image-to-video from each link's last frame.

    Returns uint8 (F, H, W, 3) with F = 1 + round(seconds * fps); link k uses seed + k.
    """
    from worldreel.pipelines.conditioning import frames_for_seconds

    fps = generator.config.fps
    total = frames_for_seconds(seconds, fps)
    video = generator.generate(prompt, seconds=link_seconds, seed=seed, **kwargs).frames
    link = 1
    while len(video) < total:
        nxt = generator.animate(video[-1], prompt, seconds=link_seconds, seed=seed + link, **kwargs).frames
        video = np.concatenate([video, nxt[1:]])  # nxt[0] is video[-1]
        link += 1
    return video[:total]


def window_bounds(num_frames: int, fps: int, window_seconds: float) -> list[tuple[int, int]]:
    """[start, end) of each whole window; windows share their boundary frame (4 s = 33 frames at 8 fps)."""
    step = int(round(window_seconds * fps))
    return [(s, s + step + 1) for s in range(0, num_frames - step, step)]


def score_windows(frames: np.ndarray, facts, fps: int, window_seconds: float) -> list[dict]:
    """world-bench's verdict on each window of ``frames``."""
    from worldreel.eval.worldbench import score_video

    return [score_video(frames[a:b], facts, fps=fps).to_dict() for a, b in window_bounds(len(frames), fps, window_seconds)]


def drift_prompts(cfg: DriftConfig, size: tuple[int, int]) -> list[tuple[str, object, np.ndarray, int]]:
    """(caption, facts, true frames, seed) for each test scene, simulated for the whole length."""
    from worldreel.data.captions import caption, parse_caption
    from worldreel.data.render import render_clip
    from worldreel.data.world import sample_scene

    out = []
    for i in range(cfg.prompts):
        seed = cfg.seed + i
        scene = sample_scene(seed, size=size, seconds=cfg.seconds, holdout="exclude")
        text = caption(scene.facts, np.random.default_rng(seed))
        out.append((text, parse_caption(text), render_clip(scene), seed))
    return out


def run_drift(generator, cfg: DriftConfig, progress: Callable[[float], None] | None = None) -> dict:
    """Both methods (and the truth) over ``cfg.prompts`` scenes; a JSON-able dict.

    ``summary[method]["score"][w]`` is the mean world-bench score of window ``w``;
    ``summary[method]["checks"][name][w]`` the fraction of videos passing that check there.
    """
    size = tuple(cfg.size or generator.config.default_size)
    fps = generator.config.fps
    kwargs = dict(size=size, steps=cfg.steps, guidance=cfg.guidance, rewrite=False)
    rows = []
    cases = drift_prompts(cfg, size)
    for i, (text, facts, truth, seed) in enumerate(cases):
        def part(lo: float, hi: float):
            if progress is None:
                return None
            return lambda f: progress((i + lo + (hi - lo) * f) / len(cases))

        windowed = generator.generate(text, seconds=cfg.seconds, seed=seed, progress=part(0.0, 0.5), **kwargs).frames
        chained = chain_last_frame(generator, text, seconds=cfg.seconds, link_seconds=cfg.window_seconds, seed=seed,
                                   progress=part(0.5, 1.0), **kwargs)
        rows.append({
            "prompt": text,
            "seed": seed,
            **{name: score_windows(frames, facts, fps, cfg.window_seconds)
               for name, frames in (("windowed", windowed), ("chained", chained), ("truth", truth))},
        })
    summary = {}
    for method in METHODS:
        per_window = list(zip(*[row[method] for row in rows]))  # window -> verdict per video
        checks = sorted({name for window in per_window for v in window for name in v["checks"]})
        summary[method] = {
            "score": [float(np.mean([v["score"] for v in window])) for window in per_window],
            "checks": {
                name: [float(np.mean([v["checks"][name]["status"] == "pass" for v in window
                                      if v["checks"].get(name, {}).get("status", "n/a") != "n/a"] or [np.nan]))
                       for window in per_window]
                for name in checks
            },
        }
    sampling = generator.sampling
    return {
        "config": {**asdict(DriftConfig(**{**asdict(cfg), "size": list(size)})), "fps": fps,
                   "steps": cfg.steps or sampling.steps, "guidance": cfg.guidance or sampling.guidance,
                   "window_latents": sampling.window_latents, "overlap_latents": sampling.overlap_latents},
        "summary": summary,
        "videos": rows,
    }
