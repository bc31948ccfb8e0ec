"""The reel world's bodies and their physics: scenes, pymunk simulation, and the checks a clip must pass.

A ``Scene`` is the physical set-up of one clip (objects with size, pose and velocity, an
optional pillar, the camera pan, frame size and length); ``simulate`` runs it in pymunk
(Chipmunk2D) and returns a ``Trajectory``; ``problems`` lists what in a simulated clip
contradicts its facts or the framing rules (every object fully in view, same-colour
objects apart, clean free flights). World units: the frame is 1.0 high and W/H wide, y up,
floor surface at FLOOR_TOP. The constants are the world's physics; docs/world.md explains them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pymunk

from worldreel.data.facts import (
    FLOOR_TOP, FPS, GRAVITY, PILLAR_HEIGHT, PILLAR_WIDTH, SIZE_MULTIPLE, SceneFacts,
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
BOX_FRICTION = 0.08  # box on floor: kinetic friction 0.08, a slide decelerates at 0.08 * g = 0.32 u/s^2
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
    # Narrower than 1:2, a panning camera leaves too little always-visible world for objects.
    if not 0.5 <= w / h <= 4:
        raise UserError(f"size {w}x{h}: width/height must be between 1:2 and 4:1", param="size")
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
    """Run the scene in pymunk; deterministic for a given scene (a scene's cached trajectory is returned as is)."""
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


def half_extent(o: WorldObject, angle):
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
        half = half_extent(o, traj.angle[:, i])
        # 1. Fully inside the frame in every frame.
        if (sx[:, i] - half < -1e-3).any() or (sx[:, i] + half > scene.width + 1e-3).any() or \
                (traj.y[:, i] + half > 1.0 + 1e-3).any():
            out.append(f"{name} leaves the frame")
        # An object may not end propped up by an invisible wall (touching it, off the floor).
        wall_gap = min(traj.x[-1, i] - half[-1] - scene.walls[0], scene.walls[1] - traj.x[-1, i] - half[-1])
        if wall_gap < 0.005 and traj.y[-1, i] - half[-1] > FLOOR_TOP + 0.01:
            out.append(f"{name} leans on a wall")
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
                    half_extent(a, traj.angle[:, i]) * 1.0 - half_extent(b, traj.angle[:, j])
                if gap.min() < SAME_COLOUR_GAP:
                    out.append(f"same-colour objects #{i} and #{j} touch")
    return out
