"""Predict the world: how well a model continues a clip it is shown (``worldreel bench predict``).

Physics-IQ (Motamed et al. 2025) shows a model the start of a filmed experiment and
compares its continuation with the filmed one. The reel world does this with a perfect
truth: a clip is a pure function of its seed, so the simulator's own continuation is exact.

1. Clips: ``sample_scene(seed)`` for seeds SEED_BASE, SEED_BASE + 1, ... of both scene
   suites: "default" (the training distribution, ``holdout="exclude"``) and "holdout"
   (every clip holds a (colour, shape, motion) combination training never saw,
   ``holdout="only"``). Training draws every scene seed below 2^31 (``WorldItems`` and
   ``WorldClips`` take ``integers(2**31)`` or ``& 0x7FFFFFFF``; the autoencoder's clips are
   seeded the same way), so seeds from 2^31 up are clips no training run has seen.
2. The model is given the first second (GIVEN_FRAMES = 9 frames: three latent frames,
   latent-aligned) and the clip's caption, and continues it for HORIZON_SECONDS
   (``Generator.extend``); the "no caption" run gives it the frames alone.
3. Baselines make continuations too: the last given frame held (``copy_last``), the
   tracked objects moved on at their last velocity (``constant_velocity``), the truth
   itself (scores perfect), and the truth through the model's autoencoder (the ceiling
   any denoiser on its latents can reach).
4. Every continuation is scored by ``predict_score.score_continuation`` and summarised by
   motion type and by horizon (each second of the continuation).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from worldreel.data.facts import BACKGROUND, FPS, PALETTE, PILLAR
from worldreel.errors import UserError

GIVEN_FRAMES = 9  # the first second at 8 fps: latent frames 0-2 of the causal autoencoder (1 + 4 + 4 frames)
HORIZON_SECONDS = 3  # predicted seconds; each is one horizon of the summary
SEED_BASE = 2**31  # first scene seed: training never draws one this high (module docstring)
SUITES = ("default", "holdout")
MODEL_METHODS = ("model", "no_caption")  # need a model
BASELINES = ("copy_last", "constant_velocity", "truth")
CEILING = "autoencoder"  # the truth through the model's autoencoder (needs a model)
METHODS = MODEL_METHODS + BASELINES + (CEILING,)
MOTIONS = ("falls", "rolls", "thrown", "rests")  # an object's stated motion (rolls: rolls or slides)
CATEGORIES = ("all", "falls", "rolls", "thrown", "rests", "collisions", "pillar")
NO_CAPTION_PROMPT = "(no caption)"  # what the caption-blind generator is called with; it encodes ""


@dataclass
class PredictConfig:
    """What ``bench predict`` shows the model and how it samples."""

    clips: int = 6  # clips per suite (6 x 2 suites fit 10 minutes on 2 idle cores: docs/predict.md)
    suites: tuple[str, ...] = SUITES  # scene suites: default and/or holdout
    seed_base: int = SEED_BASE  # clip k of a suite is scene seed seed_base + k
    seed: int = 0  # generation noise seed (the same for every clip and both model runs)
    steps: int | None = None  # sampler steps (None: the model's own)
    guidance: float | None = None  # guidance scale with the caption (None: the model's own)
    shift: float | None = None  # timestep shift (None: the model's own)


def check_config(cfg: PredictConfig) -> PredictConfig:
    if not isinstance(cfg.clips, int) or not 1 <= cfg.clips <= 10_000:
        raise UserError(f"clips must be a whole number from 1 to 10000, got {cfg.clips!r}", param="clips")
    suites = tuple(cfg.suites)
    if not suites or any(s not in SUITES for s in suites) or len(set(suites)) != len(suites):
        raise UserError(f"suites must be one or both of default, holdout, got {','.join(map(str, suites)) or 'none'}",
                        param="suites")
    if not isinstance(cfg.seed_base, int) or cfg.seed_base < 0:
        raise UserError(f"seed base must be a whole number >= 0, got {cfg.seed_base!r}", param="seed_base")
    if not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**63:
        raise UserError(f"seed must be a whole number >= 0, got {cfg.seed!r}", param="seed")
    return PredictConfig(**{**asdict(cfg), "suites": suites})


# ---------------------------------------------------------------------------------------
# Clips


@dataclass
class Case:
    """One held-out clip: its scene, caption, true frames and what each object does next."""

    suite: str
    seed: int
    caption: str
    scene: object = field(repr=False)  # data.physics.Scene, trajectory cached
    frames: np.ndarray = field(repr=False)  # (F, H, W, 3) uint8 truth, 4 s
    tags: list[list[str]] = field(default_factory=list)  # per object: motion, plus "collisions" / "pillar"

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.seed}"


def object_tags(scene, given: int = GIVEN_FRAMES, fps: float = FPS) -> list[list[str]]:
    """Per object: its stated motion (falls, rolls, thrown, rests), "collisions" when it hits or is
    hit after the given frames, "pillar" when it passes behind the pillar then."""
    traj = scene.trajectory
    after = (given - 1) / fps  # time of the last given frame
    tags = []
    for i, o in enumerate(scene.facts.objects):
        t = [o.motion.split("_")[0]]
        if any(when > after and i in (h, g) for when, h, g, _ in traj.contacts):
            t.append("collisions")
        if traj.hidden[given:, i].any():
            t.append("pillar")
        tags.append(t)
    return tags


def make_case(suite: str, seed: int, size: tuple[int, int] = (64, 64)) -> Case:
    """The clip of scene ``seed`` in ``suite`` (4 s, rendered at ``size``)."""
    from worldreel.data.captions import caption
    from worldreel.data.render import render_clip
    from worldreel.data.world import sample_scene

    scene = sample_scene(seed, size=size, seconds=(GIVEN_FRAMES - 1) / FPS + HORIZON_SECONDS,
                         holdout="only" if suite == "holdout" else "exclude")
    text = caption(scene.facts, np.random.default_rng([seed, 2]))  # as training captions a clip (WorldClips.item)
    return Case(suite, seed, text, scene, render_clip(scene), object_tags(scene))


# ---------------------------------------------------------------------------------------
# Baselines: each returns a whole clip (F, H, W, 3) whose first ``given`` frames are the truth's


def copy_last(frames: np.ndarray, given: int) -> np.ndarray:
    """The last given frame, held."""
    out = frames.copy()
    out[given:] = frames[given - 1]
    return out


def _shift(image: np.ndarray, dx: float, dy: float, wrap: bool = False) -> np.ndarray:
    """Translate an (H, W[, C]) float image by (dx, dy) pixels, bilinear; outside is 0 (or wrapped)."""
    import cv2

    h, w = image.shape[:2]
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    border = cv2.BORDER_WRAP if wrap else cv2.BORDER_CONSTANT
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0)


def constant_velocity(frames: np.ndarray, given: int) -> np.ndarray:
    """The objects of the last given frame moved on at their last velocity, the camera panned on.

    Each object is cut out of the last given frame as a soft sprite (its coverage, the
    fraction of the way its luma has gone from the sky's to its colour's) and pasted at
    position + velocity x frames, the velocity being its centroid's move between the
    last two given frames (nearest same-colour blob). The floor's ticks and the pillar move
    at the pan speed read from the ticks. No gravity, no floor, no walls: constant velocity.
    """
    import cv2

    from worldreel.eval.tracking import (
        BG, COLORS, LINK_GATE, PILLAR_ID, TICK_MIN_STRENGTH, UNKNOWN, _LUMA, detect_objects, floor_row, floor_shifts,
        label_pixels, pillar_columns,
    )

    F, H, W, _ = frames.shape
    last = frames[given - 1].astype(np.float32)  # (H, W, 3)
    labels = label_pixels(frames[:given])
    dets, _ = detect_objects(frames[given - 2:given])  # the last two given frames
    # 1. The camera: median tick shift over the given frames (pixels per frame, + = world moves right).
    shifts, strength = floor_shifts(frames[:given], labels)
    readable = shifts[strength >= TICK_MIN_STRENGTH]
    pan = float(np.median(readable)) if readable.size else 0.0
    # 2. Layers of the last frame: sky, the floor band, the pillar's coverage, each object's sprite.
    top = floor_row(H)
    sky = np.array(BACKGROUND, np.float32)
    luma = last @ _LUMA - float(np.dot(BACKGROUND, _LUMA))  # (H, W) luma above the sky's
    pillar = np.zeros((H, W), np.float32)
    span = pillar_columns(labels[-1:])[0]  # (x0, x1) of the pillar in the last given frame, or None
    if span is not None:
        grey = np.clip(luma / float(np.dot(np.subtract(PILLAR, BACKGROUND), _LUMA)), 0, 1)  # its coverage
        lo, hi = max(span[0] - 1, 0), min(span[1] + 2, W)  # the pillar and its anti-aliased edge columns
        is_pillar = labels[-1, :top, lo:hi] == PILLAR_ID
        rows = np.flatnonzero(is_pillar.any(1))
        r0 = max(rows[0] - 1, 0)  # its anti-aliased top row; below, it stands on the floor
        inside = is_pillar[r0:].any(0)  # columns holding pillar grey
        pillar[r0:top, lo:hi] = np.where(is_pillar[r0:], 1.0, grey[r0:top, lo:hi] * inside)
    sprites = []  # (coverage (H, W), rgb, vx, vy)
    objects = np.isin(labels[-1], np.arange(len(COLORS)))
    near_object = cv2.dilate(objects.astype(np.uint8), np.ones((3, 3), np.uint8))  # objects and their edge ring
    _, comp = cv2.connectedComponents(near_object, connectivity=8)
    for d in dets[-1]:
        k = comp[int(round(np.clip(d.y, 0, H - 1))), int(round(np.clip(d.x, 0, W - 1)))]
        mine = labels[-1] == COLORS.index(d.color)
        # its blob and edge ring, never a pixel that is another object, the pillar or the floor
        region = (comp == k) & (mine | (labels[-1] == BG) | (labels[-1] == UNKNOWN)) if k > 0 else mine
        region[top:] = False
        rgb = np.array(PALETTE[d.color], np.float32)
        cover = np.clip(luma / max(float(np.dot(rgb - sky, _LUMA)), 1.0), 0, 1)
        cover[mine] = 1.0
        cover = (cover * region).astype(np.float32)
        before = [p for p in dets[0] if p.color == d.color]
        prev = min(before, key=lambda p: np.hypot(p.x - d.x, p.y - d.y), default=None)
        vx, vy = (d.x - prev.x, d.y - prev.y) if prev is not None and \
            np.hypot(prev.x - d.x, prev.y - d.y) <= LINK_GATE * H else (0.0, 0.0)
        sprites.append((cover, rgb, vx, vy))
    floor_band = last[top:]
    # 3. Compose each future frame back to front: sky, floor, objects, pillar (in front, as rendered).
    out = frames.copy()
    for f in range(given, F):
        n = f - (given - 1)
        image = np.empty((H, W, 3), np.float32)
        image[:top] = sky
        image[top:] = _shift(floor_band, pan * n, 0.0, wrap=True)
        for cover, rgb, vx, vy in sprites:
            a = _shift(cover, vx * n, vy * n)[..., None]  # (H, W, 1)
            image = image * (1 - a) + rgb * a
        if span is not None:
            a = _shift(pillar, pan * n, 0.0)[..., None]
            image = image * (1 - a) + np.array(PILLAR, np.float32) * a
        out[f] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return out


def through_autoencoder(vae, frames: np.ndarray, given: int) -> np.ndarray:
    """The truth encoded and decoded by ``vae``, the given frames pasted back (as the generator does)."""
    import torch

    from worldreel.eval.vae_bench import reconstruct

    device = next(vae.parameters()).device
    video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float().to(device) / 127.5 - 1.0  # (1, 3, F, H, W)
    recon = reconstruct(vae, video)[0]  # (3, F, H, W) in [-1, 1]
    out = ((recon.permute(1, 2, 3, 0) + 1.0) * 127.5).round().clamp(0, 255).byte().cpu().numpy()  # (F, H, W, 3)
    out[:given] = frames[:given]
    return out


class _CaptionBlind:
    """A text encoder that hears every prompt as "" (the unconditional input the model was
    trained on for dropped captions): the generator's view with the caption removed."""

    def __init__(self, encoder):
        self.encoder = encoder

    def encode(self, prompts: list[str]):
        return self.encoder.encode([""] * len(prompts))


def caption_blind(generator):
    """The same model (shared modules, same sampling) with the caption removed."""
    from worldreel.pipelines.generate import Generator

    return Generator(generator.config, generator.vae, generator.dit, _CaptionBlind(generator.text_encoder),
                     device=str(generator.device), sampling=generator.sampling, precision=generator.precision,
                     probe=generator.probe, judge=generator.judge)


# ---------------------------------------------------------------------------------------
# Running and summarising


def _clean(values) -> list:
    """A float array as JSON: NaN -> None, rounded."""
    return [None if v != v else round(float(v), 5) for v in np.asarray(values, np.float64).ravel()]


def score_row(case: Case, continuations: dict[str, np.ndarray], given: int = GIVEN_FRAMES, fps: float = FPS) -> dict:
    """One clip's JSON row: the per-frame numbers of every method's continuation."""
    from worldreel.eval.predict_score import iou, score_continuation
    from worldreel.eval.tracking import detect_objects

    truth_dets = detect_objects(case.frames)[0]
    per = int(round(fps))
    methods = {}
    for name, video in continuations.items():
        s = score_continuation(case.frames, video, case.scene, given, fps=fps, truth_detections=truth_dets)
        P = s.invented.size
        windows = [slice(a, min(a + per, P)) for a in range(0, P, per)]
        methods[name] = {
            "error": [_clean(row) for row in s.error],
            "visible": s.visible.astype(int).tolist(),
            "lost": s.lost.astype(int).tolist(),
            "invented": _clean(s.invented),
            "frame_iou": _clean(s.motion_iou),
            "spatial_iou": _clean([iou(s.motion_truth[w].any(0), s.motion_pred[w].any(0), (0, 1)) for w in windows]),
            "st_iou": _clean([iou(s.motion_truth[w], s.motion_pred[w], (0, 1, 2)) for w in windows]),
            "events": [[[round(t, 4), round(e, 4), kind] for t, e, kind in ev] for ev in s.events],
        }
    return {"suite": case.suite, "seed": case.seed, "caption": case.caption, "tags": case.tags,
            "objects": [f"{o.color} {o.shape}" for o in case.scene.facts.objects], "methods": methods}


def run_predict(cfg: PredictConfig, generator=None, *, keep: list[dict] | None = None,
                on_row: Callable[[dict], None] | None = None, progress: Callable[[int, int], None] | None = None,
                size: tuple[int, int] = (64, 64), videos_dir: Path | None = None) -> list[dict]:
    """Every clip of ``cfg``, continued by every method; returns the rows (``keep``'s first).

    generator None runs the baselines only. ``keep``: rows already made the same way (resume):
    their clips are skipped. ``on_row(row)`` after each clip (to save it); ``progress(done, total)``.
    ``videos_dir``: a folder for each clip's truth and model continuations (SUITE-SEED.npz, uint8
    arrays named by method), to look at or to score again without generating.
    """
    cfg = check_config(cfg)
    rows = list(keep or [])
    have = {(r["suite"], r["seed"]) for r in rows}
    # suites interleaved, so an interrupted run has clips of each
    jobs = [(s, cfg.seed_base + k) for k in range(cfg.clips) for s in cfg.suites if (s, cfg.seed_base + k) not in have]
    blind = caption_blind(generator) if generator is not None else None
    if generator is not None:
        size = tuple(generator.config.default_size)
    horizon = dict(seconds=HORIZON_SECONDS, steps=cfg.steps, shift=cfg.shift, seed=cfg.seed, rewrite=False)
    for done, (suite, seed) in enumerate(jobs):
        case = make_case(suite, seed, size)
        given = case.frames[:GIVEN_FRAMES]
        videos = {}
        if generator is not None:
            videos["model"] = generator.extend(given, case.caption, guidance=cfg.guidance, **horizon).frames
            # Without a caption guidance has nothing to push towards (the conditional input is the
            # unconditional one), so 1.0 gives the same video at half the cost.
            videos["no_caption"] = blind.extend(given, NO_CAPTION_PROMPT, guidance=1.0, **horizon).frames
        videos["copy_last"] = copy_last(case.frames, GIVEN_FRAMES)
        videos["constant_velocity"] = constant_velocity(case.frames, GIVEN_FRAMES)
        videos["truth"] = case.frames
        if generator is not None:
            videos[CEILING] = through_autoencoder(generator.vae, case.frames, GIVEN_FRAMES)
        for name, video in videos.items():
            if video.shape != case.frames.shape:
                raise RuntimeError(f"{name} made {video.shape[0]} frames for {case.frames.shape[0]} (a bug)")
        if videos_dir is not None:
            videos_dir.mkdir(parents=True, exist_ok=True)
            kept = {k: v for k, v in videos.items() if k in MODEL_METHODS or k == "truth"}
            np.savez_compressed(videos_dir / f"{suite}-{seed}.npz", **kept)
        row = score_row(case, videos)
        rows.append(row)
        if on_row is not None:
            on_row(row)
        if progress is not None:
            progress(done + 1, len(jobs))
    return rows


def summarize(rows: list[dict], fps: float = FPS) -> dict:
    """Per method, per category (CATEGORIES), per horizon ("1s", "2s", "3s", and "all" = the whole
    continuation): position error (frame heights, mean over object-frames), lost (fraction of
    object-frames), invented (objects per frame), spatial and spatiotemporal motion IoU (mean over
    clips), contact timing error (seconds, mean over events) and the counts behind each.
    Also per frame (for the plot): position error, lost fraction and motion IoU per method."""
    per = int(round(fps))
    methods = [m for m in METHODS if rows and all(m in r["methods"] for r in rows)]
    frames = len(rows[0]["methods"]["truth"]["invented"]) if rows else 0
    horizons = [f"{h + 1}s" for h in range((frames + per - 1) // per)] + ["all"]
    table: dict = {}
    for m in methods:
        table[m] = {}
        for cat in CATEGORIES:
            acc = {h: {"err": [], "lost": [], "invented": [], "spatial": [], "st": [], "timing": [], "clips": 0}
                   for h in horizons}
            for r in rows:
                d = r["methods"][m]
                objs = [i for i, tags in enumerate(r["tags"]) if cat == "all" or cat in tags]
                if not objs:
                    continue
                for h_i, h in enumerate(horizons):
                    sel = range(frames) if h == "all" else range(h_i * per, min((h_i + 1) * per, frames))
                    a = acc[h]
                    a["clips"] += 1
                    for i in objs:
                        for p in sel:
                            if d["visible"][i][p]:
                                a["lost"].append(d["lost"][i][p])
                                if d["error"][i][p] is not None:
                                    a["err"].append(d["error"][i][p])
                        for t, e, _ in d["events"][i]:
                            # clip time -> predicted frame; an event on the last given frame opens the first second
                            p = max(int(round(t * fps)) - GIVEN_FRAMES, 0)
                            if p in sel:
                                a["timing"].append(e)
                    a["invented"].extend(d["invented"][p] for p in sel)
                    if h == "all":
                        a["spatial"].append(float(np.mean(d["spatial_iou"])))
                        a["st"].append(float(np.mean(d["st_iou"])))
                    else:
                        a["spatial"].append(d["spatial_iou"][h_i])
                        a["st"].append(d["st_iou"][h_i])
            table[m][cat] = {h: {
                "position": _mean(a["err"]), "lost": _mean(a["lost"]), "invented": _mean(a["invented"]),
                "spatial_iou": _mean(a["spatial"]), "st_iou": _mean(a["st"]), "timing": _mean(a["timing"]),
                "object_frames": len(a["lost"]), "events": len(a["timing"]), "clips": a["clips"],
            } for h, a in acc.items()}
    curves = {}
    for m in methods:
        err = [[] for _ in range(frames)]
        lost = [[] for _ in range(frames)]
        for r in rows:
            d = r["methods"][m]
            for i in range(len(d["visible"])):
                for p in range(frames):
                    if d["visible"][i][p]:
                        lost[p].append(d["lost"][i][p])
                        if d["error"][i][p] is not None:
                            err[p].append(d["error"][i][p])
        curves[m] = {"position": [_mean(v) for v in err], "lost": [_mean(v) for v in lost],
                     "frame_iou": [_mean([r["methods"][m]["frame_iou"][p] for r in rows]) for p in range(frames)]}
    return {"methods": methods, "horizons": horizons, "table": table, "curves": curves,
            "clips": {s: sum(r["suite"] == s for r in rows) for s in SUITES}}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 5) if values else None
