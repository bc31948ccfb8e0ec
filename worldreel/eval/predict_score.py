"""Scoring one continuation against the world's own: the metrics of ``worldreel bench predict``.

A continuation is a video whose first ``given`` frames are the truth's (the model saw
them) and whose later frames were predicted. ``score_continuation`` compares every
predicted frame with the truth's frame at the same time, through the same eyes
(``tracking.detect_objects``), so the truth scored against itself is perfect by
construction and the evaluator's own small biases (a centroid behind the pillar) cancel.
The simulator says which object is which and which frames hide it.

Per object (frames where the truth shows it whole, not behind the pillar):
    position   centroid distance, frame heights, to the same-colour detection matched to it
               (where the prediction last showed it, once lost)
    lost       no same-colour detection left for it in the prediction
    events     bounce and contact times: frames where the object's acceleration departs
               from both free fall and rest by EVENT_ACCEL g (a bounce, a hit, a landing)
Per clip and frame:
    invented   detections beyond the number of objects of their colour the scene has
    motion     Physics-IQ-style motion masks: pixels whose colour changes by MOTION_DIFF
               from the frame before; IoU per frame (spatiotemporal) and of their union
               over a second (spatial)

Frames are (F, H, W, 3) uint8; positions are in pixels until divided by H.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from worldreel.data.facts import FPS, GRAVITY

# A pixel "moves" when a channel changes by more than this between consecutive frames
# (grey levels). Every palette colour is 60+ from the sky in some channel; at 40 the truth
# after an H.264 round trip keeps a spatiotemporal IoU of 0.87 with itself (24: 0.80, codec
# noise at moving edges; 64: 0.86, the faint edges of anti-aliasing drop out).
MOTION_DIFF = 40
# An event is a frame whose acceleration is this many g away from both falling and resting.
# A ball's bounce on the floor is 5-20 g at 8 fps; a roll's deceleration is 0.05 g.
EVENT_ACCEL = 1.0
# A truth event with no predicted event of the same object this close (seconds), or a
# predicted event with no truth event this close, scores this (a missed or invented bounce).
EVENT_CAP = 0.5


@dataclass
class ContinuationScore:
    """Per-frame numbers for one continuation; arrays cover the predicted frames ``given..F-1``."""

    error: np.ndarray  # (N, P) centroid distance in frame heights; NaN where not measured
    visible: np.ndarray  # (N, P) bool: the truth shows object i whole at that frame
    lost: np.ndarray  # (N, P) bool: visible in the truth, no detection left for it in the prediction
    invented: np.ndarray  # (P,) detections beyond the scene's count of their colour
    motion_iou: np.ndarray  # (P,) IoU of the frame's motion masks (1 when both are empty)
    motion_truth: np.ndarray = field(repr=False)  # (P, H, W) bool motion masks of the truth
    motion_pred: np.ndarray = field(repr=False)  # (P, H, W) bool motion masks of the prediction
    events: list = field(default_factory=list)  # per object: [(time s, capped timing error s, "missed"|"extra"|"hit")]


def motion_masks(frames: np.ndarray) -> np.ndarray:
    """(F, H, W, 3) uint8 -> (F - 1, H, W) bool: pixels that changed from the frame before."""
    diff = np.abs(frames[1:].astype(np.int16) - frames[:-1].astype(np.int16)).max(-1)  # (F-1, H, W)
    return diff > MOTION_DIFF


def iou(a: np.ndarray, b: np.ndarray, axes) -> np.ndarray:
    """IoU of boolean masks over ``axes``; 1 where both are empty (they agree nothing moved)."""
    inter = (a & b).sum(axes)
    union = (a | b).sum(axes)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _match(truth_dets: list, pred_dets: list, colors: list[str]) -> tuple[dict[int, object], int]:
    """Greedy nearest matching, colour by colour, of scene objects (with a truth detection) to
    predicted detections. A merged predicted blob may stand for two objects (a twin pair).

    truth_dets: per object, its truth detection or None. Returns (object -> predicted
    detection, predicted detections beyond the scene's count of their colour).
    """
    matched: dict[int, object] = {}
    invented = 0
    for color in sorted(set(colors)):
        objs = [i for i, c in enumerate(colors) if c == color]
        dets = [d for d in pred_dets if d.color == color]
        capacity = {id(d): (2 if d.merged else 1) for d in dets}
        pairs = sorted(
            (np.hypot(d.x - truth_dets[i].x, d.y - truth_dets[i].y), i, k)
            for i in objs if truth_dets[i] is not None for k, d in enumerate(dets)
        )
        for _, i, k in pairs:
            d = dets[k]
            if i not in matched and capacity[id(d)] > 0:
                matched[i] = d
                capacity[id(d)] -= 1
        invented += max(0, sum(2 if d.merged else 1 for d in dets) - len(objs))
    return matched, invented


def _truth_detections(scene, per_frame: list, frame: int, height: int) -> list:
    """Per scene object, the truth's detection of it at ``frame`` (the nearest same-colour blob
    to its simulated centre, within a quarter of its size plus a pixel), or None."""
    traj = scene.trajectory
    out = []
    for i, o in enumerate(scene.objects):
        px = (traj.x[frame, i] - traj.cam_x[frame]) * height - 0.5  # world -> pixel centroid (tracking convention)
        py = (1.0 - traj.y[frame, i]) * height - 0.5
        near = [(np.hypot(d.x - px, d.y - py), k) for k, d in enumerate(per_frame[frame]) if d.color == o.color]
        best = min(near, default=None)
        out.append(per_frame[frame][best[1]] if best is not None and best[0] <= 0.25 * o.size * height + 1 else None)
    return out


def _events(track: np.ndarray, height: int, fps: float) -> list[int]:
    """Frames of contact events in a (F, 2) pixel track (NaN where unknown): clusters of frames
    whose acceleration is EVENT_ACCEL g from both free fall and rest; each cluster's strongest."""
    g = GRAVITY * height / fps**2  # pixels / frame^2, y down
    a = track[2:] - 2 * track[1:-1] + track[:-2]  # (F-2, 2): acceleration at frames 1..F-2
    off = np.minimum(np.hypot(a[:, 0], a[:, 1] - g), np.hypot(a[:, 0], a[:, 1]))  # NaN where a frame is missing
    strong = np.nan_to_num(off, nan=0.0) > EVENT_ACCEL * g
    frames, k = [], 0
    while k < strong.size:
        if strong[k]:
            end = k
            while end + 1 < strong.size and strong[end + 1]:
                end += 1
            frames.append(1 + k + int(np.argmax(off[k:end + 1])))
            k = end + 1
        else:
            k += 1
    return frames


def _timing(truth_frames: list[int], pred_frames: list[int], first: int, fps: float) -> list[tuple]:
    """Each event (truth and predicted) from frame ``first`` on, with its capped distance in time
    to the nearest event of the other side: a symmetric, capped chamfer distance in seconds."""
    out = []
    for mine, other, missing in ((truth_frames, pred_frames, "missed"), (pred_frames, truth_frames, "extra")):
        for f in mine:
            if f < first:
                continue
            gap = min((abs(f - o) / fps for o in other), default=np.inf)
            out.append((f / fps, min(gap, EVENT_CAP), "hit" if gap < EVENT_CAP else missing))
    return out


def score_continuation(truth: np.ndarray, pred: np.ndarray, scene, given: int, *, fps: float = FPS,
                       truth_detections: list | None = None) -> ContinuationScore:
    """Compare ``pred`` with ``truth`` (both (F, H, W, 3) uint8, same shape) on frames given..F-1.

    scene: the simulated scene behind ``truth`` (objects in facts order, trajectory cached).
    truth_detections: ``detect_objects(truth)[0]`` when already known (it is per clip, not per method).
    """
    from worldreel.eval.tracking import detect_objects

    if truth.shape != pred.shape:
        raise ValueError(f"truth {truth.shape} and prediction {pred.shape} differ in shape")
    F, H = truth.shape[0], truth.shape[1]
    n = len(scene.objects)
    colors = [o.color for o in scene.objects]
    hidden = scene.trajectory.hidden  # (F, N) any part behind the pillar
    t_dets = truth_detections if truth_detections is not None else detect_objects(truth)[0]
    p_dets = detect_objects(pred)[0]
    # 1. Per frame: the truth's view of each object, its match in the prediction, the extras.
    P = F - given
    error = np.full((n, P), np.nan)
    visible = np.zeros((n, P), bool)
    lost = np.zeros((n, P), bool)
    invented = np.zeros(P)
    truth_xy = np.full((F, n, 2), np.nan)  # pixel centroids for the event detector
    pred_xy = np.full((F, n, 2), np.nan)
    held: list = [None] * n  # per object, where the prediction last showed it
    for f in range(F):
        seen = _truth_detections(scene, t_dets, f, H)
        matched, extra = _match(seen, p_dets[f], colors)
        for i, d in enumerate(seen):
            whole = d is not None and not hidden[f, i] and not d.border
            if whole:
                truth_xy[f, i] = (d.x, d.y)
            m = matched.get(i)
            if m is not None:
                held[i] = m
                if whole and not (m.occluded or m.border or m.merged):
                    pred_xy[f, i] = (m.x, m.y)
            if f < given or not whole:
                continue
            visible[i, f - given] = True
            lost[i, f - given] = m is None
            # A lost object is taken to be where the prediction last showed it, so losing an
            # object (a fall through the floor, a fade) never lowers the position error.
            if held[i] is not None:
                error[i, f - given] = np.hypot(held[i].x - d.x, held[i].y - d.y) / H
        if f >= given:
            invented[f - given] = extra
    # 2. Motion masks of the predicted frames (frame given - 1 -> given is the first predicted change).
    mt, mp = motion_masks(truth[given - 1:]), motion_masks(pred[given - 1:])  # (P, H, W)
    # 3. Events: bounces and contacts from the last given frame on (its acceleration needs the first predicted one).
    events = [_timing(_events(truth_xy[:, i], H, fps), _events(pred_xy[:, i], H, fps), given - 1, fps) for i in range(n)]
    return ContinuationScore(error=error, visible=visible, lost=lost, invented=invented,
                             motion_iou=iou(mt, mp, (1, 2)), motion_truth=mt, motion_pred=mp, events=events)
