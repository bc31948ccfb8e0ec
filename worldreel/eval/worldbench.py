"""world-bench: does a video follow its prompt and obey the reel world's physics?

``score_video(frames, facts)`` runs the seven checks of WORLD.md ("world-bench") on any
video in the reel world's look, whatever made it, against the facts a prompt states:

    presence    every prompted object (colour + shape) is seen in >= 80 % of the frames
                where it is not hidden (behind the pillar, outside the frame)
    extras      no palette-coloured object (or pillar) the prompt did not ask for
    permanence  objects do not pop in or out: every track begins at the clip start, the
                border, the pillar or a twin's blob, and ends likewise; whatever goes
                behind the pillar comes out
    motion      each object's track matches its verb (falls / rolls / thrown / rests),
                stated collisions happen, "behind a pillar" passes behind it
    gravity     a free fall before the first contact fits a parabola (R^2 >= 0.95) whose
                acceleration is within 25 % of GRAVITY (n/a when the prompt has no fall or throw)
    camera      the floor ticks drift as the stated pan says (or stay for a static camera)
    stability   sky and floor away from objects do not flicker

The score of a video is the fraction of applicable checks passed. Segmentation and
tracking live in ``tracking.py``; every tolerance is a named constant below or there,
and docs/worldbench.md explains each.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import cv2
import numpy as np

from worldreel.data.facts import FPS, GRAVITY, ObjectFacts, SceneFacts
from worldreel.eval.tracking import BG, FLOOR_ID, TICK_MIN_STRENGTH, Observation, Track, box_gap, floor_row, observe

CHECKS: tuple[str, ...] = ("presence", "extras", "permanence", "motion", "gravity", "camera", "stability")

# --- presence / extras / permanence --------------------------------------------------------
PRESENCE_MIN_FRACTION = 0.8  # WORLD.md: found in >= 80 % of the frames where it is not hidden
PILLAR_MIN_FRAMES = 3  # a prompted pillar must be in view this many frames (pans may take it out)
EXTRA_MIN_FRAMES = 3  # an unasked-for object counts once seen in this many frames (or 10 % of them)
SPECKS_MAX = 2  # one-frame blobs tolerated per clip (detector noise on generated video)
PILLAR_HIDE_MAX_S = 2.0  # an object may still be behind the pillar when the clip ends if it went in this late
# Continuity: a frame "jumps" when the velocity changes by more than this many g beyond
# falling or resting; a track jumps about when at least JUMPS_MIN frames, and more than
# JUMPS_MAX_FRACTION of its frames, do. A ball dropped from the top bounces on ~6 frames
# of 31 (0.19) above the threshold; shuffled frames jump on 0.2-1.0 of theirs.
JUMP_ACCEL = 1.0
JUMPS_MIN = 4
JUMPS_MAX_FRACTION = 0.3

# --- motion (world units: 1 = frame height; x corrected for the camera pan) -----------------
MOVE = 0.05  # a displacement this large is a "real" move, not jitter
TRAVEL = 0.10  # rolls / slides / thrown: horizontal travel in the stated direction
FALL_DROP = 0.15  # falls: ends at least this much lower than it started
RISE = 0.03  # thrown: rises at least this much before falling
REST_DRIFT = 0.05  # rests: never farther than this from where it started, until something touches it
STEP_NOISE = 0.01  # per-frame moves below this (0.6 px at 64) are jitter when judging direction
DIRECTION_CONSISTENCY = 0.7  # rolls: this fraction of moving frames go the stated way (before any contact)
CONTACT_GAP = 2.0 / 64  # two objects whose boxes are this close (fraction of H) may touch
CONTACT_MIN_FRAMES = 3  # ... if the other one is an object followed at least this many frames

# --- gravity --------------------------------------------------------------------------------
# Free-flight frames needed: three fix a parabola's acceleration (R^2 is then trivially 1,
# but a fall from rest covers 0, g/2, 2g pixels: the acceleration alone is a real test).
GRAVITY_MIN_POINTS = 3
GRAVITY_R2 = 0.95  # WORLD.md
GRAVITY_TOL = 0.25  # WORLD.md: acceleration within 25 % of GRAVITY

# --- camera ---------------------------------------------------------------------------------
# The world pans 0.0625 units/s, slowed so a clip pans at most 0.25 units (world.py), so a
# pan is judged by how far the floor travels, not how fast.
CAMERA_STATIC_DRIFT = 0.03  # world units (2 px at 64): a static floor drifts less, overall and in any second
CAMERA_PAN_TRAVEL = 0.1  # world units: a pan moves the floor at least this far the stated way...
CAMERA_PAN_SPEED = 0.015  # ... or this much per second of a shorter video (a 12 s clip pans 0.021 units/s)
CAMERA_CONSISTENCY = 0.75  # this fraction of one-second windows must agree with the stated camera
CAMERA_MIN_READABLE = 0.5  # fraction of frame steps whose ticks are readable

# --- stability ------------------------------------------------------------------------------
STABILITY_MARGIN = 2.0 / 64  # stay this far (fraction of H) from objects, ticks and the pillar
STABILITY_MAX_DIFF = 6.0  # grey levels: mean frame-to-frame change of stable pixels, per frame pair
STABILITY_PAIRS = 0.9  # this fraction of frame pairs must be under STABILITY_MAX_DIFF
STABILITY_MIN_AREA = 0.2  # fraction of the frame that must read as stable sky/floor


@dataclass
class CheckResult:
    """One check's verdict on one video."""

    status: str  # "pass", "fail" or "n/a" (not applicable to this prompt)
    reason: str = ""  # why it failed (or why n/a), for people
    objects: list[str] | None = None  # per prompted object (presence, motion, gravity): pass / fail / n/a


@dataclass
class VideoScore:
    """world-bench's verdict on one video."""

    score: float  # fraction of applicable checks passed
    checks: dict[str, CheckResult]
    observation: Observation = field(repr=False)
    assignment: dict[int, int] = field(default_factory=dict)  # prompted object index -> index in observation.tracks

    @property
    def failed(self) -> list[str]:
        return [n for n, c in self.checks.items() if c.status == "fail"]

    @property
    def tracks(self) -> list[Track]:
        return self.observation.tracks

    def to_dict(self) -> dict:
        return {
            "score": round(self.score, 4),
            "failed": self.failed,
            "checks": {
                n: {"status": c.status, "reason": c.reason, **({"objects": c.objects} if c.objects is not None else {})}
                for n, c in self.checks.items()
            },
        }


def _world(obs: Observation, track: Track):
    """(frames, x, y) of a track in world units (y up, x with the camera pan removed).

    Only frames whose blob is whole enough to place: not at the image edge, not merged
    with a twin. x is NaN where the pillar hides a vertical slice of the object (that
    shifts its centroid sideways, never up or down).
    """
    H = obs.shape[1]
    dets = [d for d in track.dets if not (d.border or d.merged)]
    fr = np.array([d.frame for d in dets], dtype=np.int64)
    x = np.array([np.nan if d.occluded else (d.x + 0.5 - obs.cam[d.frame]) / H for d in dets])  # pixel centres at +0.5
    y = np.array([(H - d.y - 0.5) / H for d in dets])
    return fr, x, y


def _first_contact(obs: Observation, track: Track) -> int:
    """First frame where the track's blob nearly touches another object (F if never).

    Only objects followed for CONTACT_MIN_FRAMES count: a speck of noise is not a hit.
    """
    H = obs.shape[1]
    solid = {id(d) for t in obs.tracks if t is not track and len(t.dets) >= CONTACT_MIN_FRAMES for d in t.dets}
    for d in track.dets:
        if d.border:
            return d.frame
        for other in obs.per_frame[d.frame]:
            if id(other) in solid and box_gap(d, other) <= CONTACT_GAP * H:
                return d.frame
    return obs.shape[0]


# ---------------------------------------------------------------------------------------------
# Motion, one verb at a time: (ok, reason)


def _first_move(values: np.ndarray, threshold: float) -> float:
    """Sign of the first displacement from the start larger than threshold (0 if none)."""
    rel = values - values[0]
    big = np.flatnonzero(np.abs(rel) > threshold)
    return float(np.sign(rel[big[0]])) if big.size else 0.0


def _motion_ok(obs: Observation, o: ObjectFacts, track: Track) -> tuple[bool, str]:
    fr, x, y = _world(obs, track)
    name = f"{o.color} {o.shape}"
    seen = ~np.isnan(x)
    if fr.size < 3:
        return False, f"{name} is seen whole in only {fr.size} frames"
    verb, _, side = o.motion.partition("_")
    sign = -1.0 if side == "left" else 1.0
    dx = (x[seen] - x[seen][0]) * sign if seen.any() else np.zeros(1)  # travel the stated way
    if verb == "falls":
        end = float(np.median(y[-3:]))
        if _first_move(y, MOVE) > 0:
            return False, f"{name} rises before it falls"
        if y[0] - end < FALL_DROP:
            return False, f"{name} ends {y[0] - end:+.2f} lower than it starts (needs {FALL_DROP})"
        if y.max() > y[0] + MOVE:
            return False, f"{name} later rises above its start"
        return True, ""
    if verb == "rolls":
        if _first_move(dx, MOVE) < 0:
            return False, f"{name} first moves {'right' if sign < 0 else 'left'}"
        if dx.max() < TRAVEL:
            return False, f"{name} travels {dx.max():.2f} {side} (needs {TRAVEL})"
        # A steady direction on the way out, until its farthest point or first contact
        # (frames played out of order go back and forth).
        before = (fr[seen] < _first_contact(obs, track)) & (np.arange(dx.size) <= int(np.argmax(dx)))
        steps = np.diff(x[seen][before]) * sign
        steps = steps[np.abs(steps) > STEP_NOISE]
        if steps.size >= 3 and np.mean(steps > 0) < DIRECTION_CONSISTENCY:
            return False, f"{name} goes {side} in only {np.mean(steps > 0):.0%} of its moves"
        return True, ""
    if verb == "thrown":
        peak = int(np.argmax(y))
        if _first_move(y, RISE) < 0 or y[peak] - y[0] < RISE:
            return False, f"{name} does not rise first"
        if y[peak] - y[peak:].min() < FALL_DROP:
            return False, f"{name} does not come down after rising"
        if _first_move(dx, MOVE) < 0 or dx.max() < TRAVEL:
            return False, f"{name} is not thrown {side} (travel {dx.max():.2f})"
        return True, ""
    # rests: still until something touches it
    before = fr < _first_contact(obs, track)
    drift = np.abs(y[before] - y[0]) if before.any() else np.zeros(1)
    xb = x[before & seen]
    if xb.size:
        drift = np.concatenate([drift, np.abs(xb - xb[0])])
    if drift.max() > REST_DRIFT:
        return False, f"{name} moves {drift.max():.2f} while nothing touches it"
    return True, ""


def _hit_ok(obs: Observation, a: Track, b: Track) -> bool:
    """Did tracks a and b touch? Close enough in some frame, allowing for half a frame's
    relative motion (at 8 fps a fast hit can happen between two frames); unverifiable
    (one of them at the pillar at the closest approach) counts as a hit."""
    H = obs.shape[1]
    by_frame = {d.frame: d for d in b.dets}
    prev: dict = {}
    best, best_pair = np.inf, None
    for d in a.dets:
        e = by_frame.get(d.frame)
        if e is None:
            continue
        slack = 0.0
        if d.frame - 1 in prev:
            pd, pe = prev[d.frame - 1]
            slack = 0.5 * np.hypot((d.x - pd.x) - (e.x - pe.x), (d.y - pd.y) - (e.y - pe.y))
        prev[d.frame] = (d, e)
        g = box_gap(d, e) - slack
        if g < best:
            best, best_pair = g, (d, e)
    if best <= CONTACT_GAP * H:
        return True
    return best_pair is None or best_pair[0].occluded or best_pair[1].occluded


def _behind_ok(obs: Observation, track: Track) -> bool:
    return any(d.occluded for d in track.dets) or track.death == "pillar"


# ---------------------------------------------------------------------------------------------
# Matching prompted objects to tracks


def _assign(obs: Observation, facts: SceneFacts) -> dict[int, int]:
    """Prompted object index -> track index, per colour: long tracks first, then matching shape and motion."""
    assignment: dict[int, int] = {}
    colors = sorted({o.color for o in facts.objects})
    for color in colors:
        objs = [i for i, o in enumerate(facts.objects) if o.color == color]
        cands = [k for k, t in enumerate(obs.tracks) if t.color == color and len(t.dets) >= 2]
        cands = sorted(cands, key=lambda k: -len(obs.tracks[k].dets))[:5]
        if not cands:
            continue
        value: dict[tuple[int, int], float] = {}
        for i in objs:
            for k in cands:
                t = obs.tracks[k]
                shape_ok = t.shape() == facts.objects[i].shape
                motion_ok = _motion_ok(obs, facts.objects[i], t)[0]
                # the longest tracks first (a fragment never stands in for a whole object), then shape, then motion
                value[i, k] = 4.0 * len(t.dets) / obs.shape[0] + 2.0 * shape_ok + 1.0 * motion_ok
        best, best_map = -1.0, {}
        n = min(len(objs), len(cands))
        for chosen in itertools.permutations(cands, n):
            for objs_sub in itertools.combinations(objs, n):
                v = sum(value[i, k] for i, k in zip(objs_sub, chosen))
                if v > best:
                    best, best_map = v, dict(zip(objs_sub, chosen))
        assignment.update(best_map)
    return assignment


# ---------------------------------------------------------------------------------------------
# The seven checks


def _visible_counts(obs: Observation, color: str) -> np.ndarray:
    """(F,) objects of a colour visible per frame; a blob holding two twins counts twice."""
    return np.array([sum(2 if d.merged else 1 for d in dets if d.color == color) for dets in obs.per_frame])


def _hidden_counts(obs: Observation, color: str) -> np.ndarray:
    """(F,) objects of a colour hidden (behind the pillar, outside the frame) or partly hidden, per frame."""
    F = obs.shape[0]
    hidden = np.zeros(F, np.int64)
    for t in obs.tracks:
        if t.color != color:
            continue
        seen = {d.frame: d for d in t.dets}
        for f in range(t.start, F):
            d = seen.get(f)
            if d is None:
                prev = max((g for g in seen if g < f), default=None)
                nxt = min((g for g in seen if g > f), default=None)
                edge = (prev is not None and not seen[prev].clean) or (nxt is not None and not seen[nxt].clean)
                if edge or (nxt is None and t.death in ("pillar", "border")):
                    hidden[f] += 1
            elif d.occluded or d.border:
                hidden[f] += 1
        if t.birth in ("border", "pillar"):
            hidden[: t.start] += 1
    return hidden


def check_presence(obs: Observation, facts: SceneFacts, assignment: dict[int, int]) -> CheckResult:
    """Every prompted object (colour + shape) is seen in >= 80 % of the frames where it is not hidden."""
    F = obs.shape[0]
    verdicts: list[tuple[bool, str]] = []
    for i, o in enumerate(facts.objects):
        want = sum(p.color == o.color for p in facts.objects)
        seen, hidden = _visible_counts(obs, o.color), _hidden_counts(obs, o.color)
        eligible = want - hidden > 0
        found = (seen >= want - hidden)[eligible].mean() if eligible.any() else 1.0
        if found < PRESENCE_MIN_FRACTION:
            verdicts.append((False, f"{want} {o.color} object(s) found in only {found:.0%} of frames"))
        elif i not in assignment:
            verdicts.append((False, f"no {o.color} {o.shape} found"))
        elif (shape := obs.tracks[assignment[i]].shape()) != o.shape:
            verdicts.append((False, f"the {o.color} {o.shape} looks like a {shape}"))
        else:
            verdicts.append((True, ""))
    result = _per_object(verdicts)
    if result.status == "pass" and facts.pillar and sum(p is not None for p in obs.pillars) < min(PILLAR_MIN_FRAMES, F):
        return CheckResult("fail", "no pillar found", result.objects)
    return result


def _per_object(verdicts: list[tuple[bool | None, str]]) -> CheckResult:
    """A check made of one verdict per prompted object (None: n/a for that object)."""
    objects = ["n/a" if ok is None else ("pass" if ok else "fail") for ok, _ in verdicts]
    failed = [why for ok, why in verdicts if ok is False]
    if failed:
        return CheckResult("fail", failed[0], objects)
    if all(ok is None for ok, _ in verdicts):
        return CheckResult("n/a", verdicts[0][1] if verdicts else "", objects)
    return CheckResult("pass", "", objects)


def check_extras(obs: Observation, facts: SceneFacts) -> CheckResult:
    """No palette-coloured object (or pillar) the prompt did not ask for."""
    F = obs.shape[0]
    need = max(EXTRA_MIN_FRAMES, int(np.ceil(0.1 * F)))
    colors = sorted({t.color for t in obs.tracks})
    for color in colors:
        want = sum(o.color == color for o in facts.objects)
        over = (_visible_counts(obs, color) > want).sum()
        if over >= min(need, F):
            what = f"a {color} object" if want == 0 else f"more than {want} {color} object(s)"
            return CheckResult("fail", f"{what} in {over} frames")
    if not facts.pillar and sum(p is not None for p in obs.pillars) >= min(need, F):
        return CheckResult("fail", "a pillar the prompt did not ask for")
    return CheckResult("pass")


def check_permanence(obs: Observation, facts: SceneFacts) -> CheckResult:
    """Objects do not pop in or out or jump about; what goes behind the pillar comes out."""
    F = obs.shape[0]
    if not obs.tracks:
        return CheckResult("n/a", "no object to follow")
    specks = [t for t in obs.tracks if len(t.dets) == 1 and not t.merged_frames]
    if len(specks) > SPECKS_MAX:
        return CheckResult("fail", f"{len(specks)} objects flash for a single frame")
    for t in obs.tracks:
        if len(t.dets) == 1 and not t.merged_frames:
            continue
        where = f"the {t.color} {t.shape() or 'object'}"
        if t.birth == "none":
            return CheckResult("fail", f"{where} appears from nowhere at frame {t.start}")
        if t.death == "none":
            return CheckResult("fail", f"{where} vanishes after frame {t.end}")
        if t.death == "pillar" and (F - 1 - t.end) / obs.fps > PILLAR_HIDE_MAX_S:
            return CheckResult("fail", f"{where} goes behind the pillar at frame {t.end} and never comes out")
        jumps, measured = _jumps(obs, t)
        if jumps >= JUMPS_MIN and jumps > JUMPS_MAX_FRACTION * measured:
            return CheckResult("fail", f"{where} jumps about ({jumps} of {measured} frames)")
    return CheckResult("pass")


def _jumps(obs: Observation, track: Track) -> tuple[int, int]:
    """(frames where the track jumps, frames measured): its velocity changes by more than
    JUMP_ACCEL in one frame, beyond what gravity or resting explains. A bounce or a hit
    makes one or two such frames; frames played out of order make most frames jumps.
    """
    H = obs.shape[1]
    g = GRAVITY * H / obs.fps**2
    dets = [d for d in track.dets if not (d.border or d.merged)]
    fr = np.array([d.frame for d in dets])
    if fr.size < 3:
        return 0, 0
    p = np.array([(d.x - obs.cam[d.frame], d.y) for d in dets])  # (n, 2) pixels, pan removed
    ok = (fr[2:] - fr[1:-1] == 1) & (fr[1:-1] - fr[:-2] == 1)  # three consecutive frames
    a = p[2:] - 2 * p[1:-1] + p[:-2]  # (n-2, 2) pixels / frame^2, y down
    off = np.minimum(np.hypot(a[:, 0], a[:, 1] - g), np.hypot(a[:, 0], a[:, 1]))  # from falling / from resting
    big = off[ok] > JUMP_ACCEL * g
    return int(big.sum()), int(ok.sum())


def check_motion(obs: Observation, facts: SceneFacts, assignment: dict[int, int]) -> CheckResult:
    """Each object's track matches its verb; stated hits happen; "behind a pillar" passes behind it."""
    verdicts: list[tuple[bool, str]] = []
    for i, o in enumerate(facts.objects):
        if i not in assignment:
            verdicts.append((False, f"no {o.color} {o.shape} to follow"))
            continue
        track = obs.tracks[assignment[i]]
        ok, why = _motion_ok(obs, o, track)
        if ok and o.hits is not None and o.hits in assignment and not _hit_ok(obs, track, obs.tracks[assignment[o.hits]]):
            t = facts.objects[o.hits]
            ok, why = False, f"the {o.color} {o.shape} never touches the {t.color} {t.shape}"
        if ok and o.behind_pillar and not _behind_ok(obs, track):
            ok, why = False, f"the {o.color} {o.shape} never passes behind the pillar"
        verdicts.append((ok, why))
    return _per_object(verdicts)


def free_flight(obs: Observation, track: Track) -> tuple[np.ndarray, np.ndarray, str]:
    """A track's first free-flight segment: (frames, y pixels down, why it ended).

    Starts at the track's first frame and ends before the first frame that touches the
    floor ("floor"), bounces between frames ("bounce": braking harder than gravity
    could), touches another object ("object": boxes adjacent, or close while the fall
    departs from gravity by half of it), reaches the image edge or a twin ("edge"), or
    skips a frame ("hidden"). A pillar hides a vertical slice of an object, which leaves
    its centroid's height unbiased, so partly hidden frames stay in.
    """
    H = obs.shape[1]
    floor_y = floor_row(H)
    near = CONTACT_GAP * H
    g = GRAVITY * H / obs.fps**2
    fr: list[int] = []
    ys: list[float] = []
    why = "end"
    for d in track.dets:
        accel = (d.y - ys[-1]) - (ys[-1] - ys[-2]) if len(fr) >= 2 else g  # pixels / frame^2, down
        gaps = [box_gap(d, other) for other in obs.per_frame[d.frame] if other is not d]
        if fr and d.frame != fr[-1] + 1:
            why = "hidden"
        elif d.border or d.merged:
            why = "edge"
        elif floor_y - 1 - d.box[3] <= near:
            why = "floor"
        elif any(gp <= 0 or (gp <= near and abs(accel - g) > 0.5 * g) for gp in gaps):
            why = "object"
        elif accel < -0.5 * g:
            why = "bounce"
        else:
            fr.append(d.frame)
            ys.append(d.y)
            continue
        break
    return np.array(fr, np.int64), np.array(ys, np.float64), why


def check_gravity(obs: Observation, facts: SceneFacts, assignment: dict[int, int]) -> CheckResult:
    """A free fall before the first contact fits a parabola (R^2 >= 0.95) at GRAVITY within 25 %."""
    g = GRAVITY * obs.shape[1] / obs.fps**2  # pixels / frame^2 (frame height = 1 world unit)
    verdicts: list[tuple[bool | None, str]] = []
    for i, o in enumerate(facts.objects):
        name = f"the {o.color} {o.shape}"
        if not (o.motion == "falls" or o.motion.startswith("thrown")):
            verdicts.append((None, "nothing falls or is thrown"))
            continue
        if i not in assignment:
            verdicts.append((False, f"no {o.color} {o.shape} to measure"))
            continue
        fr, ys, why = free_flight(obs, obs.tracks[assignment[i]])
        if fr.size < GRAVITY_MIN_POINTS:
            # Hidden, or stopped early by another object (a short drop onto a box): nothing
            # to measure. Touching the floor or the edge from the start is no fall at all.
            ok = None if why in ("hidden", "object") and fr.size >= 1 else False
            verdicts.append((ok, f"{name} has no free fall to measure ({fr.size} frames, then {why})"))
            continue
        t = (fr - fr[0]).astype(np.float64)
        coef = np.polyfit(t, ys, 2)
        resid = ys - np.polyval(coef, t)
        ss_tot = float(((ys - ys.mean()) ** 2).sum())
        r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 1e-9 else 0.0
        accel = 2.0 * coef[0]
        if r2 < GRAVITY_R2:
            verdicts.append((False, f"{name}'s fall is not a parabola (R^2 {r2:.2f})"))
        elif abs(accel - g) > GRAVITY_TOL * g:
            verdicts.append((False, f"{name} accelerates at {accel / g:.2f} g"))
        else:
            verdicts.append((True, ""))
    return _per_object(verdicts)


def check_camera(obs: Observation, facts: SceneFacts) -> CheckResult:
    """The floor ticks drift as the stated pan says (or stay for a static camera)."""
    readable = obs.strength >= TICK_MIN_STRENGTH
    if readable.size == 0:
        return CheckResult("n/a", "a single frame has no camera motion")
    if readable.mean() < CAMERA_MIN_READABLE:
        return CheckResult("fail", "floor ticks not readable")
    # Tick drift in world units: over the clip, and per one-second window (+ = ticks move right).
    step = np.where(readable, obs.shifts, 0.0) / obs.shape[1]
    per = max(1, int(round(obs.fps)))
    windows = np.add.reduceat(step, np.arange(0, step.size, per))
    total = float(step.sum())
    seconds = step.size / obs.fps
    if facts.camera == "static":
        calm = np.mean(np.abs(windows) <= CAMERA_STATIC_DRIFT)
        if abs(total) > CAMERA_STATIC_DRIFT or calm < CAMERA_CONSISTENCY:
            return CheckResult("fail", f"the camera should stay; the floor drifts {total:+.3f} (still in {calm:.0%} of seconds)")
        return CheckResult("pass")
    # panning left moves the camera left, so the world (and its ticks) drifts right
    sign = 1.0 if facts.camera == "pan_left" else -1.0
    need = min(CAMERA_PAN_TRAVEL, CAMERA_PAN_SPEED * seconds)
    agree = np.mean(windows * sign > 0)
    if total * sign < need or agree < CAMERA_CONSISTENCY:
        what = facts.camera.replace("_", " ")
        return CheckResult("fail", f"the camera should {what}; the floor drifts {total:+.3f} (that way in {agree:.0%} of seconds)")
    return CheckResult("pass")


def check_stability(obs: Observation) -> CheckResult:
    """Sky and floor away from everything else do not flicker."""
    F, H, W = obs.shape
    if F < 2:
        return CheckResult("n/a", "a single frame cannot flicker")
    band = np.zeros((H, W), bool)
    band[floor_row(H) + 1 :] = True
    plain = (obs.labels == BG) | ((obs.labels == FLOOR_ID) & band)  # (F, H, W)
    k = max(3, int(round(2 * STABILITY_MARGIN * H)) + 1) | 1
    pad = k
    busy = np.zeros((F, H + pad, W), np.uint8)
    busy[:, :H] = ~plain
    busy = cv2.dilate(busy.reshape(F * (H + pad), W), np.ones((k, k), np.uint8))  # stacked frames, padded apart
    calm = ~busy.reshape(F, H + pad, W)[:, :H].astype(bool)  # (F, H, W)
    pair = calm[1:] & calm[:-1]  # (F-1, H, W)
    area = pair.mean()
    if area < STABILITY_MIN_AREA:
        return CheckResult("fail", f"only {area:.0%} of the frame reads as sky or floor")
    diff = np.abs(obs.frames[1:].astype(np.int16) - obs.frames[:-1].astype(np.int16)).mean(-1)  # (F-1, H, W)
    n = np.maximum(pair.sum((1, 2)), 1)
    flicker = (diff * pair).sum((1, 2)) / n  # (F-1,)
    calm_pairs = (flicker <= STABILITY_MAX_DIFF).mean()
    if calm_pairs < STABILITY_PAIRS:
        return CheckResult("fail", f"background flickers (worst change {flicker.max():.1f} grey levels)")
    return CheckResult("pass")


def score_video(frames: np.ndarray, facts: SceneFacts, *, fps: float = FPS) -> VideoScore:
    """Run the seven checks on one video. frames: (F, H, W, 3) uint8, any size."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    obs = observe(frames, fps=fps)
    assignment = _assign(obs, facts)
    checks = {
        "presence": check_presence(obs, facts, assignment),
        "extras": check_extras(obs, facts),
        "permanence": check_permanence(obs, facts),
        "motion": check_motion(obs, facts, assignment),
        "gravity": check_gravity(obs, facts, assignment),
        "camera": check_camera(obs, facts),
        "stability": check_stability(obs),
    }
    applicable = [c for c in checks.values() if c.status != "n/a"]
    score = sum(c.status == "pass" for c in applicable) / max(len(applicable), 1)
    return VideoScore(score=score, checks=checks, observation=obs, assignment=assignment)


# ---------------------------------------------------------------------------------------------
# Prompt suites

# Every colour, shape, motion, count (1-3), camera move, the pillar (passed behind and
# standing alone) and stated hits, in the caption style of the world; no held-out combination.
_SUITE = (
    "a red ball falls and bounces on the floor",
    "a green box falls and lands on the floor",
    "a blue ball rolls to the right",
    "a yellow box slides to the left",
    "a magenta ball is thrown to the right",
    "an orange ball is thrown to the left",
    "a cyan box rests on the floor",
    "a white box falls; the camera pans left",
    "a red box slides to the right; the camera pans right",
    "a green ball rolls to the right; the camera pans left",
    "two blue balls rest on the floor",
    "three yellow boxes fall",
    "a magenta box rests and an orange ball falls",
    "a cyan ball rolls to the right behind a gray pillar",
    "a white box slides to the left and hits a red ball",
    "a green box is thrown to the left; the camera pans right",
    "a blue ball rolls to the right behind a gray pillar and hits an orange box",
    "two white boxes rest while a magenta ball is thrown to the left",
    "a yellow ball falls; a gray pillar stands on the floor",
    "a red ball rolls to the left, a cyan box falls; the camera pans left",
    "an orange ball rests; the camera pans right",
    "a blue box is thrown to the right behind a gray pillar",
    "a white ball rolls to the right and a green box slides to the left",
    "a magenta ball falls and a yellow box rests; the camera pans right",
)


def default_prompt_suite() -> list[str]:
    """world-bench's default prompts: every colour, shape, motion, count, camera move and the pillar."""
    return list(_SUITE)


def holdout_prompt_suite() -> list[str]:
    """One prompt per held-out (colour, shape, motion) triple of the world, static and panning."""
    from worldreel.data.captions import indefinite_article
    from worldreel.data.world import HOLDOUT

    verbs = {
        "falls": "falls", "rests": "rests on the floor", "rolls_left": "{roll} to the left", "rolls_right": "{roll} to the right",
        "thrown_left": "is thrown to the left", "thrown_right": "is thrown to the right",
    }
    prompts = []
    for k, (color, shape, motion) in enumerate(sorted(HOLDOUT)):
        verb = verbs[motion].format(roll="rolls" if shape == "ball" else "slides")
        article = indefinite_article(color)
        prompts.append(f"{article} {color} {shape} {verb}")
        prompts.append(f"{article} {color} {shape} {verb}; the camera pans {'left' if k % 2 else 'right'}")
    return prompts
