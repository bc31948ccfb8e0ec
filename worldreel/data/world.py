"""The reel world (WORLD.md v1): scenes, pymunk physics, and the streaming training dataset.

A ``Scene`` is the physical set-up of one clip (objects with size, pose and velocity, an
optional pillar, the camera pan, frame size and length); ``simulate`` runs it in pymunk
(Chipmunk2D) and returns a ``Trajectory``; ``render.render_clip`` draws it. Scenes come
from ``sample_scene(seed)`` (random; its facts are what the simulation really did) or
``scene_from_facts(facts, seed)`` (a scene that realises a caption; world-bench's truth).

World units: the frame is 1.0 high and W/H wide, y up, floor surface at FLOOR_TOP.
Constants below are the world's physics; docs/world.md explains how they were chosen.
Every object stays fully inside the frame for the whole clip: invisible walls bound the
part of the world that the panning camera always sees, and an invisible ceiling caps arcs.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pymunk

from worldreel.data.captions import canonical_order
from worldreel.data.facts import (
    BALL_RADIUS, BOX_SIDE, COLORS, FLOOR_TOP, FPS, GRAVITY, PILLAR_HEIGHT, PILLAR_WIDTH, SHAPES, SIZE_MULTIPLE,
    ObjectFacts, SceneFacts,
)
from worldreel.errors import UserError

# Physics constants. pymunk multiplies the two shapes' elasticity and friction values.
SUBSTEPS = 16  # physics steps per video frame (dt = 1/128 s)
FLOOR_ELASTICITY = 1.0
BALL_ELASTICITY = 0.7  # ball on floor: restitution 0.7, so a dropped ball bounces for ~3 s
BOX_ELASTICITY = 0.2  # box on floor: 0.2, boxes land and settle
WALL_ELASTICITY = 0.5  # invisible walls soak up half the bounce
FLOOR_FRICTION = 1.0
BALL_FRICTION = 0.8  # balls roll without slipping
BOX_FRICTION = 0.12  # box on floor: kinetic friction 0.12, a slide decelerates at 0.12 * g = 0.48 u/s^2
ROLLING_RESISTANCE = 0.0375  # resisting torque c*m*g*r on balls: a rolling disc decelerates at c*g/1.5 = 0.1 u/s^2
DENSITY = 1.0  # mass per unit area, all objects
COLLISION_SLOP = 0.0005  # allowed overlap (world units; pymunk's default 0.1 is a tenth of the frame)
BALL_DECEL = ROLLING_RESISTANCE * GRAVITY / 1.5
BOX_DECEL = BOX_FRICTION * FLOOR_FRICTION * GRAVITY

# Camera and layout.
PAN_SPEED = 0.0625  # world units / s (0.5 px per frame at 64 px); slower for clips over 4 s, see pan_speed()
PAN_DISTANCE = 0.25  # the camera pans at most this far (world units) over a clip, so objects stay in view
WALL_MARGIN = 0.02  # invisible walls stand this far inside the always-visible part of the world
FALL_TOP = 0.65  # "falls" starts with its centre in the top 35 % of the frame
HIT_SPEED = 0.12  # an object-object contact counts as a hit above this approach speed (u/s)
BEHIND_COVER = 0.5  # an object "passes behind the pillar" when the pillar covers at least half of it
SAME_COLOUR_GAP = 0.07  # same-colour objects stay this far apart (4.5 px at 64 px), or their blobs merge
REST_TOLERANCE = 0.015  # a resting object that is not hit moves less than this (world units)
MAX_ATTEMPTS = 400  # scene samples tried before giving up (a bug, never expected)
LAYOUT_TRIES = 8  # layouts tried for one random plan before drawing another plan
PROPOSALS = 15  # random placements tried per object within one layout

MIN_TRAVEL = 0.2  # rollers and throws travel at least this far (world units; more when the camera follows them)
EXTRA_TRAVEL = 0.3  # ... plus up to this much
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


@dataclass(frozen=True)
class WorldObject:
    """One body at t = 0 (world units, radians, y up)."""

    color: str  # a palette name
    shape: str  # "ball" or "box"
    size: float  # ball radius or box side
    x: float  # centre
    y: float
    angle: float = 0.0  # counter-clockwise
    vx: float = 0.0
    vy: float = 0.0
    spin: float = 0.0  # angular velocity, rad/s counter-clockwise
    motion: str = "rests"  # the stated motion it was set up for

    @property
    def extent(self) -> float:
        """Half height when upright: the radius or half the side."""
        return self.size if self.shape == "ball" else self.size / 2


@dataclass
class Trajectory:
    """Per-frame state of every object; arrays are (F, N) unless noted."""

    t: np.ndarray  # (F,) seconds
    x: np.ndarray  # centre, world units
    y: np.ndarray
    angle: np.ndarray  # radians counter-clockwise
    cam_x: np.ndarray  # (F,) world x at the frame's left edge
    covered: np.ndarray  # fraction of the object's area behind the pillar
    hidden: np.ndarray  # bool: any part of the object behind the pillar
    first_contact: np.ndarray  # (N,) time of the first contact with anything (floor included); inf if none
    contacts: tuple[tuple[float, int, int, float], ...]  # object-object hits: (time, hitter, target, approach speed)


@dataclass
class Scene:
    """The physical set-up of one clip; ``facts`` is what its caption states."""

    objects: tuple[WorldObject, ...]
    pillar_x: float | None  # pillar centre (world x) or None
    pan_speed: float  # camera speed, world units/s (> 0 pans right: the world appears to move left)
    cam_x0: float  # world x at the frame's left edge at t = 0
    walls: tuple[float, float]  # inner faces of the invisible walls (world x)
    size: tuple[int, int]  # (W, H) pixels
    seconds: float
    seed: int
    facts: SceneFacts
    notes: tuple[str, ...] = ()  # scene_from_facts: facts it could not realise (empty when all hold)
    trajectory: Trajectory | None = field(default=None, repr=False, compare=False)  # cached simulate() result

    @property
    def width(self) -> float:
        return self.size[0] / self.size[1]

    @property
    def frames(self) -> int:
        return num_frames(self.seconds)

    def cam_x(self, t):
        return self.cam_x0 + self.pan_speed * np.asarray(t, dtype=np.float64)


def num_frames(seconds: float) -> int:
    return 1 + int(round(seconds * FPS))


def pan_speed(camera: str, seconds: float) -> float:
    """Signed camera speed (world units/s): PAN_SPEED, slowed for clips over 4 s to pan PAN_DISTANCE in all."""
    if camera == "static":
        return 0.0
    speed = min(PAN_SPEED, PAN_DISTANCE / seconds)
    return speed if camera == "pan_right" else -speed


def check_size(size) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UserError(f"size must be (width, height), got {size!r}", param="size") from None
    if w < SIZE_MULTIPLE or h < SIZE_MULTIPLE or w % SIZE_MULTIPLE or h % SIZE_MULTIPLE or max(w, h) > 2048:
        raise UserError(f"size {w}x{h}: each side must be a multiple of {SIZE_MULTIPLE} from 16 to 2048", param="size")
    if not 0.25 <= w / h <= 4:
        raise UserError(f"size {w}x{h}: aspect ratio must be between 1:4 and 4:1", param="size")
    return w, h


def check_seconds(seconds) -> float:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        raise UserError(f"seconds must be a number, got {seconds!r}", param="seconds") from None
    if not 1.0 <= s <= 60.0:
        raise UserError(f"seconds {s:g}: must be between 1 and 60", param="seconds")
    return s


# ---------------------------------------------------------------------------------------
# Physics


def simulate(scene: Scene) -> Trajectory:
    """Run the scene in pymunk; deterministic for a given scene."""
    if scene.trajectory is not None:
        return scene.trajectory
    # 1. Static world: floor, two invisible walls, invisible ceiling.
    space = pymunk.Space()
    space.gravity = (0.0, -GRAVITY)
    space.collision_slop = COLLISION_SLOP
    wl, wr = scene.walls
    static = space.static_body
    floor = pymunk.Poly(static, [(wl - 2, FLOOR_TOP - 1), (wr + 2, FLOOR_TOP - 1), (wr + 2, FLOOR_TOP), (wl - 2, FLOOR_TOP)])
    floor.elasticity, floor.friction = FLOOR_ELASTICITY, FLOOR_FRICTION
    top = 1.0 - WALL_MARGIN
    walls = [
        pymunk.Poly(static, [(wl - 1, 0), (wl, 0), (wl, 3), (wl - 1, 3)]),
        pymunk.Poly(static, [(wr, 0), (wr + 1, 0), (wr + 1, 3), (wr, 3)]),
        pymunk.Poly(static, [(wl - 1, top), (wr + 1, top), (wr + 1, top + 1), (wl - 1, top + 1)]),
    ]
    for w in walls:
        w.elasticity, w.friction = WALL_ELASTICITY, 0.0
    space.add(floor, *walls)
    # 2. Bodies; balls get a rate-0 motor with limited torque: rolling resistance.
    bodies, index = [], {}
    for i, o in enumerate(scene.objects):
        if o.shape == "ball":
            mass = DENSITY * np.pi * o.size**2
            body = pymunk.Body(mass, pymunk.moment_for_circle(mass, 0, o.size))
            shape = pymunk.Circle(body, o.size)
            shape.elasticity, shape.friction = BALL_ELASTICITY, BALL_FRICTION
            motor = pymunk.SimpleMotor(body, static, 0.0)
            motor.max_force = ROLLING_RESISTANCE * mass * GRAVITY * o.size  # a torque for a motor
            space.add(motor)
        else:
            mass = DENSITY * o.size**2
            body = pymunk.Body(mass, pymunk.moment_for_box(mass, (o.size, o.size)))
            shape = pymunk.Poly.create_box(body, (o.size, o.size))
            shape.elasticity, shape.friction = BOX_ELASTICITY, BOX_FRICTION
        body.position, body.angle = (o.x, o.y), o.angle
        body.velocity, body.angular_velocity = (o.vx, o.vy), o.spin
        shape.collision_type = 1
        space.add(body, shape)
        bodies.append(body)
        index[shape] = i
    # 3. Contacts: first contact with anything per object, and object-object hits.
    n = len(bodies)
    first_contact = np.full(n, np.inf)
    contacts: list[tuple[float, int, int, float]] = []
    clock = [0.0]

    def begin(arbiter, _space, _data):
        a, b = arbiter.shapes
        ia, ib = index.get(a), index.get(b)
        for k in (ia, ib):
            if k is not None and first_contact[k] == np.inf:
                first_contact[k] = clock[0]
        if ia is None or ib is None:
            return
        p = arbiter.contact_point_set.points[0].point_a
        va, vb = bodies[ia].velocity_at_world_point(p), bodies[ib].velocity_at_world_point(p)
        speed = (va - vb).dot(arbiter.normal)  # normal points from a to b: > 0 when approaching
        if speed >= HIT_SPEED:
            hitter, target = (ia, ib) if bodies[ia].velocity.length >= bodies[ib].velocity.length else (ib, ia)
            contacts.append((clock[0], hitter, target, float(speed)))

    space.on_collision(begin=begin)
    # 4. Step and record a state per frame.
    frames = scene.frames
    state = np.zeros((frames, n, 3))
    dt = 1.0 / (FPS * SUBSTEPS)
    for f in range(frames):
        for i, b in enumerate(bodies):
            state[f, i] = (b.position.x, b.position.y, b.angle)
        if f == frames - 1:
            break
        for s in range(SUBSTEPS):
            clock[0] = (f * SUBSTEPS + s + 1) * dt
            space.step(dt)
    t = np.arange(frames) / FPS
    x, y, angle = state[..., 0], state[..., 1], state[..., 2]
    covered, hidden = _pillar_cover(scene, x, y, angle)
    return Trajectory(t=t, x=x, y=y, angle=angle, cam_x=scene.cam_x(t), covered=covered, hidden=hidden,
                      first_contact=first_contact, contacts=tuple(contacts))


_DISC = np.stack(np.meshgrid(np.linspace(-1, 1, 11), np.linspace(-1, 1, 11)), -1).reshape(-1, 2)
_DISC = _DISC[(_DISC**2).sum(-1) <= 1.0]  # sample points of the unit disc
_SQUARE = np.stack(np.meshgrid(np.linspace(-0.5, 0.5, 10), np.linspace(-0.5, 0.5, 10)), -1).reshape(-1, 2)


def _pillar_cover(scene: Scene, x, y, angle) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of each object behind the pillar (sampled) and whether any of it is (exact)."""
    frames, n = x.shape
    covered, hidden = np.zeros((frames, n)), np.zeros((frames, n), dtype=bool)
    if scene.pillar_x is None:
        return covered, hidden
    x0, x1 = scene.pillar_x - PILLAR_WIDTH / 2, scene.pillar_x + PILLAR_WIDTH / 2
    y0, y1 = FLOOR_TOP, FLOOR_TOP + PILLAR_HEIGHT
    for i, o in enumerate(scene.objects):
        if o.shape == "ball":
            pts = _DISC * o.size  # (P, 2)
            px, py = x[:, i, None] + pts[:, 0], y[:, i, None] + pts[:, 1]  # (F, P)
            dx = np.maximum(np.maximum(x0 - x[:, i], x[:, i] - x1), 0)
            dy = np.maximum(np.maximum(y0 - y[:, i], y[:, i] - y1), 0)
            hidden[:, i] = dx**2 + dy**2 < o.size**2
        else:
            c, s = np.cos(angle[:, i, None]), np.sin(angle[:, i, None])  # (F, 1)
            u, v = _SQUARE[:, 0] * o.size, _SQUARE[:, 1] * o.size
            px, py = x[:, i, None] + c * u - s * v, y[:, i, None] + s * u + c * v  # (F, P)
            half = o.size / 2 * (np.abs(c[:, 0]) + np.abs(s[:, 0]))  # rotated half-extent (axis-aligned box test)
            hidden[:, i] = (np.abs(x[:, i] - (x0 + x1) / 2) < half + PILLAR_WIDTH / 2) & \
                (np.abs(y[:, i] - (y0 + y1) / 2) < half + PILLAR_HEIGHT / 2)
        covered[:, i] = ((px > x0) & (px < x1) & (py > y0) & (py < y1)).mean(-1)
    return covered, hidden


# ---------------------------------------------------------------------------------------
# Checking a simulated scene against facts


def _half_extent(o: WorldObject, angle):
    if o.shape == "ball":
        return np.full_like(angle, o.size)
    return o.size / 2 * (np.abs(np.cos(angle)) + np.abs(np.sin(angle)))


def problems(scene: Scene, traj: Trajectory, facts: SceneFacts) -> list[str]:
    """What in the simulated clip contradicts ``facts`` or the framing rules (empty: all good)."""
    out: list[str] = []
    sx = traj.x - traj.cam_x[:, None]  # (F, N) screen x, frame heights from the left edge
    stated = {(i, o.hits) for i, o in enumerate(facts.objects) if o.hits is not None}
    hit_pairs = {frozenset((h, t)) for _, h, t, _ in traj.contacts}
    targets = {t for _, t in stated} | {t for _, _, t, _ in traj.contacts}
    for i, (o, fo) in enumerate(zip(scene.objects, facts.objects)):
        name = f"{fo.color} {fo.shape} #{i}"
        half = _half_extent(o, traj.angle[:, i])
        # 1. Fully inside the frame in every frame.
        if (sx[:, i] - half < -1e-3).any() or (sx[:, i] + half > scene.width + 1e-3).any() or \
                (traj.y[:, i] + half > 1.0 + 1e-3).any():
            out.append(f"{name} leaves the frame")
        # 2. Pillar: stated behind = covered at least half, in view at the start and the end.
        if fo.behind_pillar:
            if traj.covered[:, i].max() < BEHIND_COVER or traj.hidden[0, i] or traj.hidden[-1, i]:
                out.append(f"{name} does not pass behind the pillar")
        elif traj.hidden[:, i].any():
            out.append(f"{name} is partly behind the pillar")
        # 3. Motion, in world coordinates.
        dx = traj.x[-1, i] - traj.x[0, i]
        base, _, direction = fo.motion.partition("_")
        sign = 1.0 if direction == "right" else -1.0
        if base == "falls":
            if not (traj.y[1, i] < traj.y[0, i] - 0.01 and traj.y[:, i].min() < traj.y[0, i] - 0.15):
                out.append(f"{name} does not fall")
        elif base == "rolls":
            if sign * dx < 0.15 or traj.y[:, i].max() > traj.y[0, i] + 0.1:
                out.append(f"{name} does not roll {direction}")
        elif base == "thrown":
            k = min(4, len(traj.t) - 1)
            rise = traj.y[1:k + 1, i].max() - traj.y[0, i]
            if rise < 0.04 or traj.y[-1, i] > traj.y[:, i].max() - 0.1 or sign * dx < 0.15:
                out.append(f"{name} is not thrown {direction}")
        if base in ("falls", "thrown"):
            # A clean free flight before the first contact: at least 3 frames, and a parabola
            # fit that stays near g even with one frame past the contact (an evaluator that
            # sees the contact a frame late must still measure g).
            free = int((traj.t < traj.first_contact[i]).sum())
            by_object = any(t <= traj.first_contact[i] + 1e-9 and i in (h, g) for t, h, g, _ in traj.contacts)
            k = min(free + (1 if by_object else 0), len(traj.t))
            accel = 2 * np.polyfit(traj.t[:k], traj.y[:k, i], 2)[0] if k >= 3 else 0.0
            if free < 3 or abs(-accel - GRAVITY) > 0.12 * GRAVITY:
                out.append(f"{name} has no clean free flight")
        if base == "rests":
            moved = np.hypot(traj.x[:, i] - traj.x[0, i], traj.y[:, i] - traj.y[0, i]).max()
            if i not in targets and moved > REST_TOLERANCE:
                out.append(f"{name} does not rest")
            if fo.hits is not None:
                out.append(f"{name} rests yet hits something")
    # 4. Hits: every stated hit happens, every hit is stated.
    for i, j in stated:
        if frozenset((i, j)) not in hit_pairs:
            out.append(f"object #{i} does not hit #{j}")
    for pair in hit_pairs:
        i, j = tuple(pair)
        if (i, j) not in stated and (j, i) not in stated:
            out.append(f"unstated hit between #{i} and #{j}")
    # 5. Same-colour objects never touch (segmentation by colour would merge them).
    for i in range(len(scene.objects)):
        for j in range(i + 1, len(scene.objects)):
            a, b = scene.objects[i], scene.objects[j]
            if a.color == b.color:
                gap = np.hypot(traj.x[:, i] - traj.x[:, j], traj.y[:, i] - traj.y[:, j]) - \
                    _half_extent(a, traj.angle[:, i]) * 1.0 - _half_extent(b, traj.angle[:, j])
                if gap.min() < SAME_COLOUR_GAP:
                    out.append(f"same-colour objects #{i} and #{j} touch")
    return out


# ---------------------------------------------------------------------------------------
# Laying out a scene


@dataclass
class _Spec:
    """What one object should do: its stated facts plus where to aim it."""

    color: str
    shape: str
    motion: str
    behind: bool = False  # aim its path behind the pillar
    target: int | None = None  # aim its path at this object


@dataclass
class _Placed:
    obj: WorldObject
    path: tuple[float, float]  # x-range it sweeps (floor level), extents included
    zone: tuple[float, float] | None  # (near, far): where a target of it should start, in its direction of travel
    speed: float = 0.0  # rollers: initial speed along their direction
    heading: float = 0.0  # +1 / -1 for rollers and throws (the target's own extent moves the zone's near end), 0 else


def _layout(specs: list[_Spec], camera: str, pillar: bool, size: tuple[int, int], seconds: float,
            seed: int, rng: np.random.Generator, strict: int = 2) -> Scene | None:
    """Positions and velocities for ``specs``; None when this draw found no room.

    strict: 2 keeps unrelated objects' swept paths apart and non-behind paths off the
    pillar, 1 only throws' paths and the pillar rule (sample_scene: the simulation says who
    hits whom), 0 neither,
    -1 also accepts short rolls and throws (a last resort for crowded prompts).
    """
    width = size[0] / size[1]
    speed = pan_speed(camera, seconds)
    travel = abs(speed) * seconds
    # The always-visible part of the world is [0, width - travel]: the camera starts at
    # -travel when panning right and ends there when panning left.
    cam_x0 = -travel if speed > 0 else 0.0
    wl, wr = WALL_MARGIN, width - travel - WALL_MARGIN
    pillar_x = float(rng.uniform(wl + 0.3 * (wr - wl), wl + 0.7 * (wr - wl))) if pillar else None
    pil = None if pillar_x is None else (pillar_x - PILLAR_WIDTH / 2 - 0.03, pillar_x + PILLAR_WIDTH / 2 + 0.03)
    # Hitters before their targets, then movers (they need the most room), then the rest.
    def rank(i: int) -> tuple[bool, bool]:
        return specs[i].target is None, specs[i].motion in ("falls", "rests")

    order = sorted(range(len(specs)), key=rank)
    placed: dict[int, _Placed] = {}
    for i in order:
        spec = specs[i]
        related = {j for j in placed if specs[j].target == i or spec.target == j}
        for _ in range(PROPOSALS):
            p = _propose(spec, i, specs, placed, related, (wl, wr), pil, speed * seconds, rng, strict)
            if p is not None and _fits(p, placed, related, spec, pil, strict):
                placed[i] = p
                break
        else:
            return None
    objects = tuple(placed[i].obj for i in range(len(specs)))
    facts = SceneFacts(tuple(ObjectFacts(s.color, s.shape, s.motion, s.behind, s.target) for s in specs), camera, pillar)
    return Scene(objects=objects, pillar_x=pillar_x, pan_speed=speed, cam_x0=cam_x0, walls=(wl, wr), size=size,
                 seconds=seconds, seed=seed, facts=facts)


def _propose(spec, i, specs, placed, related, walls, pil, pan_travel, rng, strict) -> _Placed | None:
    """One random candidate for object i (position, velocity, swept path)."""
    size = float(rng.uniform(*BALL_RADIUS)) if spec.shape == "ball" else float(rng.uniform(*BOX_SIDE))
    e = size if spec.shape == "ball" else size / 2
    base, _, direction = spec.motion.partition("_")
    # Falling boxes start tilted half the time (they tumble and settle); a tilted box reaches further.
    angle = float(rng.uniform(-0.4, 0.4)) if base == "falls" and spec.shape == "box" and rng.random() < 0.5 else 0.0
    reach = e * (abs(np.cos(angle)) + abs(np.sin(angle)))
    lo, hi = walls[0] + reach + 0.005, walls[1] - reach - 0.005
    if lo >= hi:
        return None
    hitter = next((placed[j] for j in placed if specs[j].target == i), None)
    zone = None
    # A thrown target starts where throws start (aiming it would put it under a falling hitter).
    if hitter is not None and hitter.zone is not None and base != "thrown":
        near, far = hitter.zone
        near += hitter.heading * e  # our near edge, not our centre, must be past the zone's start
        if hitter.heading * (far - near) < 0:
            return None
        zone = (max(lo, min(near, far)), min(hi, max(near, far)))
        if zone[0] >= zone[1]:
            return None
    s = 1.0 if direction == "right" else -1.0
    decel = BALL_DECEL if spec.shape == "ball" else BOX_DECEL
    # Rollers going the same way may share a path as a convoy, checked below.
    convoy = [p for j, p in placed.items() if j not in related and p.obj.motion == spec.motion and base == "rolls"]
    blocked = [p.path for j, p in placed.items()
               if j not in related and p not in convoy and _apart(strict, spec.motion, p.obj.motion)]
    blocked += [pil] if pil and not spec.behind and strict >= 1 else []

    def pick_x(lo_frac: float, hi_frac: float, half: float) -> float | None:
        """A start x in [lo, hi] (movers: the given fraction of it, on the side they leave) whose
        span x +- half keeps clear of the blocked paths; None when there is no room."""
        if zone is not None:
            return float(rng.uniform(*zone))
        a, b = lo_frac, hi_frac
        if s < 0:
            a, b = 1 - hi_frac, 1 - lo_frac
        for start, end in ((lo + a * (hi - lo), lo + b * (hi - lo)), (lo, hi)):
            free = [(start, end)]
            for p0, p1 in blocked:  # subtract every blocked path, widened by our half-width and a gap
                cut0, cut1 = p0 - half - 0.03, p1 + half + 0.03
                free = [piece for f0, f1 in free for piece in ((f0, min(f1, cut0)), (max(f0, cut1), f1)) if piece[1] > piece[0]]
            total = sum(f1 - f0 for f0, f1 in free)
            if total > 1e-6:
                u = float(rng.random()) * total  # uniform over the free pieces
                for f0, f1 in free:
                    if u <= f1 - f0:
                        return f0 + u
                    u -= f1 - f0
                return free[-1][1]
        return None

    def free_run(x0: float) -> float:
        ahead = [(a - x0 if s > 0 else x0 - b) for a, b in blocked if (a > x0 if s > 0 else b < x0)]
        if any(a <= x0 <= b for a, b in blocked):
            return 0.0
        return min(ahead + [(hi - x0) if s > 0 else (x0 - lo)]) - (0.03 if ahead else 0.0)

    # World-bench judges travel in world coordinates (the pan removed), so a camera following
    # a roller may leave it nearly still on screen, as a real camera would.
    min_travel = MIN_TRAVEL if strict >= 0 else 0.05
    if base == "falls":
        x = pick_x(0.0, 1.0, reach + 0.3 * e)
        if x is None:
            return None
        top = 1.0 - WALL_MARGIN - reach - 0.005
        if hitter is not None and hitter.obj.motion == "falls":  # start below the falling hitter
            top = min(top, hitter.obj.y - hitter.obj.extent - e - 0.03)
        if top < FALL_TOP:
            return None
        y = float(rng.uniform(FALL_TOP, top))
        obj = WorldObject(spec.color, spec.shape, size, x, y, angle, motion=spec.motion)
        return _Placed(obj, (x - reach - 0.3 * e, x + reach + 0.3 * e), (x - 0.4 * e, x + 0.4 * e))
    if base == "rests":
        x = pick_x(0.0, 1.0, e)
        if x is None:
            return None
        obj = WorldObject(spec.color, spec.shape, size, x, FLOOR_TOP + e, motion=spec.motion)
        return _Placed(obj, (x - e, x + e), None)
    if base == "rolls":
        # The first of a convoy (same-direction rollers) starts at the back and leaves room ahead.
        pending = any(specs[j].motion == spec.motion for j in range(len(specs)) if j != i and j not in placed)
        x0 = pick_x(0.0, 1.0 if convoy else (0.1 if pending else 0.5), e)
        if x0 is None:
            return None
        run = free_run(x0)
        d = min(0.9 * run, min_travel + float(rng.uniform(0.0, EXTRA_TRAVEL)))
        if spec.target is not None:  # a hitter goes far, so its target fits in its path
            d = float(rng.uniform(0.7, 0.9)) * run
        if pending:  # the ones placed later go ahead of it and at least as far
            d = min(d, min_travel + float(rng.uniform(0.0, 0.08)))
        if d < min_travel:
            d = min(min_travel, 0.97 * run)
            if d < min_travel:
                return None
        if spec.behind and pil and not (s * (pil[0 if s > 0 else 1] - x0) > e and s * (x0 + s * d - pil[1 if s > 0 else 0]) > e):
            return None
        v = float(np.sqrt(2 * decel * d))
        if convoy and not _convoy_ok(x0, v, decel, e, s, convoy):
            return None
        spin = -s * v / size if spec.shape == "ball" else 0.0
        obj = WorldObject(spec.color, spec.shape, size, x0, FLOOR_TOP + e, vx=s * v, spin=spin, motion=spec.motion)
        path = (min(x0, x0 + s * d) - e, max(x0, x0 + s * d) + e)
        near = x0 + s * (e + min_travel)  # roll a while before the hit (it may stop dead there)
        if spec.behind and pil:  # hit something past the pillar, so the roller comes out first
            near = (pil[1] if s > 0 else pil[0]) + s * (2 * e + 0.03)
        return _Placed(obj, path, (near, x0 + s * 0.8 * d), v, s)
    # thrown: mid-height at the side it leaves, velocity up and sideways.
    x0 = pick_x(0.0, 0.3, e)
    if x0 is None:
        return None
    y0 = max(float(rng.uniform(0.35, 0.55)), FLOOR_TOP + e + 0.05)
    vy = float(rng.uniform(0.9, 1.3))
    vy = min(vy, float(np.sqrt(max(0.0, 2 * GRAVITY * (1.0 - WALL_MARGIN - e - 0.03 - y0)))))
    if vy < 0.8:
        return None
    air = (vy + np.sqrt(vy**2 + 2 * GRAVITY * (y0 - FLOOR_TOP - e))) / GRAVITY
    run = free_run(x0)
    total = min(0.9 * run, min_travel + float(rng.uniform(0.0, EXTRA_TRAVEL)))
    if spec.target is not None:
        total = float(rng.uniform(0.7, 0.9)) * run
    if total < min_travel:
        total = min(min_travel, 0.97 * run)
        if total < min_travel:
            return None
    if spec.behind and pil and not (s * (pil[0 if s > 0 else 1] - x0) > e and s * (x0 + s * total - pil[1 if s > 0 else 0]) > e):
        return None
    # Air distance vx*T plus the roll or slide after landing (a disc keeps 2/3 of vx once rolling).
    k = (4.0 / 9.0 if spec.shape == "ball" else 0.25) / (2 * decel)  # a box loses most of vx on landing
    vx = float((-air + np.sqrt(air**2 + 4 * k * total)) / (2 * k))
    spin = -s * float(rng.uniform(2.0, 5.0)) if spec.shape == "box" else 0.0
    obj = WorldObject(spec.color, spec.shape, size, x0, y0, 0.0, s * vx, vy, spin, spec.motion)
    land = x0 + s * vx * air
    if spec.behind and pil:  # hit something past the pillar, so the throw comes out first
        land = s * max(s * land, s * (pil[1] if s > 0 else pil[0]) + 2 * e + 0.03)
    path = (min(x0, x0 + s * total) - e, max(x0, x0 + s * total) + e)
    return _Placed(obj, path, (land, x0 + s * max(0.9 * total, s * (land - x0) + 0.05)), heading=s)


def _apart(strict: int, a: str, b: str) -> bool:
    """Must two unrelated objects with these motions keep their swept paths apart?"""
    # Even free layouts keep throws apart: a throw crossing a fall collides mid-air, a mess.
    return strict >= 2 or (strict == 1 and (a.startswith("thrown") or b.startswith("thrown")))


def _roll_x(x0: float, v: float, decel: float, s: float, t: np.ndarray) -> np.ndarray:
    """Where a roller starting at x0 with speed v is at times t (constant deceleration until it stops)."""
    t = np.minimum(t, v / decel)
    return x0 + s * (v * t - decel * t**2 / 2)


def _convoy_ok(x0: float, v: float, decel: float, e: float, s: float, convoy: list[_Placed]) -> bool:
    """Same-direction rollers never close in on each other (same-colour ones would merge)."""
    t = np.linspace(0.0, 8.0, 65)
    mine = _roll_x(x0, v, decel, s, t)
    for q in convoy:
        o = q.obj
        theirs = _roll_x(o.x, q.speed, BALL_DECEL if o.shape == "ball" else BOX_DECEL, s, t)
        side = np.sign(mine - theirs)
        if np.abs(mine - theirs).min() < e + o.extent + SAME_COLOUR_GAP + 0.01 or side.min() != side.max():
            return False
    return True


def _fits(p: _Placed, placed: dict[int, _Placed], related: set[int], spec: _Spec, pil, strict: int) -> bool:
    o = p.obj
    for j, q in placed.items():
        r = q.obj
        # Start apart (a tilted box reaches up to 1.42x its half side).
        reach = float(_half_extent(o, np.float64(o.angle)) + _half_extent(r, np.float64(r.angle)))
        reach += SAME_COLOUR_GAP + 0.01 if o.color == r.color else 0.03
        if abs(o.x - r.x) < reach and abs(o.y - r.y) < reach:
            return False
        convoy = o.motion == r.motion and o.motion.startswith("rolls")
        if _apart(strict, o.motion, r.motion) and j not in related and not convoy and p.path[0] < q.path[1] + 0.03 and q.path[0] < p.path[1] + 0.03:
            return False
    if strict >= 1 and pil is not None and not spec.behind and p.path[0] < pil[1] and pil[0] < p.path[1]:
        return False
    return True


# ---------------------------------------------------------------------------------------
# Sampling scenes and realising facts


def _check_holdout(holdout: str) -> str:
    if holdout not in ("exclude", "only", "any"):
        raise UserError(f"holdout must be exclude, only or any, got {holdout!r}", param="holdout")
    return holdout


def _sample_specs(rng: np.random.Generator, holdout: str) -> tuple[list[_Spec], list[int], str, bool]:
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
            specs.append(_Spec(*triples[k]))
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


def sample_scene(seed: int, *, size=(64, 64), seconds: float = 4.0, holdout: str = "exclude") -> Scene:
    """A random scene whose facts are what its simulation really does (deterministic per seed).

    holdout: "exclude" never yields a HOLDOUT combination, "only" always contains one, "any" either.
    Objects (and trajectory columns) are in canonical facts order: scene.objects[i] is facts.objects[i].
    """
    size, seconds, holdout = check_size(size), check_seconds(seconds), _check_holdout(holdout)
    for attempt in range(MAX_ATTEMPTS):
        if attempt % LAYOUT_TRIES == 0:
            rng = np.random.default_rng([seed, attempt // LAYOUT_TRIES])
            specs, groups, camera, pillar = _sample_specs(rng, holdout)
        # Several layouts per plan, so crowded plans (3 objects, pans) are not under-represented;
        # paths kept apart first (clean scenes, planned hits only), then free (the simulation decides).
        scene = _layout(specs, camera, pillar, size, seconds, seed, rng, strict=2 if attempt % LAYOUT_TRIES < 4 else 1)
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
    specs = [_Spec(o.color, o.shape, o.motion, o.behind_pillar, o.hits) for o in facts.objects]
    pillar = facts.pillar or any(o.behind_pillar for o in facts.objects)
    best: tuple[int, Scene, Trajectory, list[str]] | None = None
    for attempt in range(80):
        if attempt >= 60 and best is not None:
            break
        rng = np.random.default_rng([seed, attempt, 1])
        strict = 2 if attempt < 40 else (0 if attempt < 60 else -1)  # relax until something fits
        scene = _layout(specs, facts.camera, pillar, size, seconds, seed, rng, strict=strict)
        if scene is None:
            continue
        traj = simulate(scene)
        found = problems(scene, traj, facts)
        if best is None or len(found) < best[0]:
            best = (len(found), scene, traj, found)
        if not found:
            break
    if best is None:  # nothing fits with aims: drop them (the notes will say what does not hold)
        plain = [_Spec(o.color, o.shape, o.motion) for o in facts.objects]
        for attempt in range(50):
            scene = _layout(plain, facts.camera, pillar, size, seconds, seed, np.random.default_rng([seed, attempt, 2]), -1)
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

from worldreel.data.render import render_clip  # noqa: E402  (render.py needs the classes above)

import torch  # noqa: E402


class WorldClips(torch.utils.data.IterableDataset):
    """Endless reel-world clips rendered on the fly (seeded, data-loader-worker and rank aware).

    Item k of the stream (counted over all workers and ranks) comes from
    ``sample_scene(seed_k)`` with seed_k derived from (seed, k), so the data do not depend
    on the number of workers. Yields ``{"video": float32 (3, F, H, W) in [-1, 1],
    "caption": str, "facts": dict, "seed": int}``.
    """

    def __init__(self, seed: int = 0, size=(64, 64), frames: int | None = None, seconds: float = 4.0,
                 image_prob: float = 0.0, holdout: str = "exclude", crop: tuple[int, int, int] | None = None,
                 rank: int = 0, world_size: int = 1):
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
        scene = sample_scene(seed, size=self.size, seconds=self.sim_seconds, holdout=self.holdout)
        image = rng.random() < self.image_prob
        frames = [0] if image else list(range(self.frames))
        video = render_clip(scene, frames=frames)  # (F, H, W, 3) uint8
        if self.crop is not None:
            f, h, w = self.crop
            t0 = 0 if image else int(rng.integers(video.shape[0] - f + 1))
            y0, x0 = int(rng.integers(video.shape[1] - h + 1)), int(rng.integers(video.shape[2] - w + 1))
            video = video[t0:t0 + (1 if image else f), y0:y0 + h, x0:x0 + w]
        tensor = torch.from_numpy(np.ascontiguousarray(video)).permute(3, 0, 1, 2)  # (F, H, W, 3) -> (3, F, H, W)
        tensor = tensor.float() / 127.5 - 1.0
        return {"video": tensor, "caption": caption(scene.facts, rng), "facts": facts_to_dict(scene.facts), "seed": seed}

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        stride = workers * self.world_size
        k = self.rank * workers + worker
        while True:
            yield self.item(k)
            k += stride
