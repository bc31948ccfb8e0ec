"""Steering by the world's state: a sampler wrapper that pushes each stated object its stated way.

world-tiny reads the colour, the shape and the verb of a prompt but hardly the side: which
way a mover goes is decided by the start noise (docs/training.md, "The side is not read").
Steering decides it at sampling time, with a small learnt *state probe* and the parsed
prompt, as classifier guidance does with a noisy classifier (Dhariwal & Nichol 2021) and
diffusion self-guidance moves objects through properties read off the network (Epstein et
al. 2023):

1. The probe (``StateProbe``, trained by ``worldreel train probe`` with the reel world's
   re-simulated states as targets, ``data/world_state.py``) reads the denoiser's predicted
   clean latent ``x0 = x - t v`` and gives each palette colour's occupancy per latent cell.
2. From the occupancy, each stated object's centre per latent frame (its colour's centroid);
   the *objective* J rewards what the caption states (``objective``): a mover's centre moving
   its side, a thrown object rising then coming down, a falling one going down, a resting one
   staying put.
3. While the noise level is at least ``STEER_FROM`` (where the layout is decided), the
   gradient of J with respect to the sampler's state ``x``, through the denoiser, is scaled
   to a largest value of 1, and the velocity becomes ``v - strength * g / t``: the clean
   prediction moves by ``strength * g`` (the DPS form, Chung et al. 2023, which backpropagates
   through the denoiser's clean estimate).

Nothing changes where the prompt states no colour the probe knows, below ``STEER_FROM``, or
with strength 0. Measured on world-tiny: docs/worldbench.md, "Steering".

The same probe also *picks the start* (``rank_starts``, sampling ``best_of``): the layout of a
clip is set by its start noise in the first few steps, so K start noises are each run
``LOOK_STEPS`` steps, the probe reads each one's clean prediction, and the one whose layout
best fits the prompt (``layout_score``: the stated motions, no colour the prompt did not
state, no more of a colour than it states, no object that pops in or out away from the
borders) goes on: a search over start noises with a verifier, as Ma et al. 2025 scale
diffusion sampling at inference, here with the probe as a cheap verifier read early. Unlike a
push, a picked start is an ordinary sample of the model: nothing is drawn off its path.
With sampling ``finalists`` F > 1 the best F of that ranking (``rank_starts``) are made to the
end and the probe reads each one's finished latents again, each untidiness term by its worst
frame (``layout_score(worst=True)``). With sampling ``likelihood`` W > 0 the denoiser reads them
too: ``flow_error`` re-noises each finished clip with one shared noise and measures how far the
denoiser's velocity is from the true one (a Monte Carlo estimate of the flow-matching loss, so
of the clip's negative log-likelihood under the model up to a weighting), and
``pick_finalist`` keeps the finalist with the largest ``z(fit) - W z(error)``: a clip the model
finds atypical for its prompt (a teleport, a flicker the probe's layout misses) loses to one
it finds typical. Measured: docs/worldbench.md, "Picking the start" and "Finalists".
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from worldreel.data.facts import COLORS

STEER_FROM = 0.5  # steer while the noise level t (1 = noise) is at least this
MAX_STEER = 20.0
MAX_BEST_OF = 16  # most start noises picked from
LOOK_STEPS = 4  # sampler steps each start noise runs before the probe reads it (t 1 -> 0.92 at 20 steps, shift 3)
TIDY_WEIGHT = 0.3  # layout_score: weight of the untidiness (extra colour, surplus, popping) against the motions
OBJECT_MASS = 3.5  # summed occupancy of one object in a 64x64 clip's 8x8 latent cells (world-tiny's probe: 3-4)
SURPLUS_SLACK = 1.5  # mass over the stated count's that is not yet a surplus (64x64)
SEEN_MASS = 1.0  # mass from which a colour counts as there in a frame (64x64)
PRESENT_MASS = 1.5  # mass each stated object should have in every frame (64x64; a whole one reads 2-3.5 early)
EDGE = 0.7  # |centre x| beyond this (of -1..1) is at the border, where an object may come and go
PROBE_WIDTH = 64

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Target = tuple[int, str, float]  # (colour index in COLORS, verb, side: +1 right, -1 left, 0 none)


class StateProbe(nn.Module):
    """A clean latent (B, C, f, h, w) -> occupancy logits (B, len(COLORS), f, h, w) per latent cell.

    Two small convolutions (one 3x3 per frame, one 3x3x3 across frames) and a 1x1 read-out:
    about 0.12 M parameters, trained on the denoiser's own clean predictions at every noise level.
    """

    def __init__(self, channels: int, width: int = PROBE_WIDTH, colors: int = len(COLORS)):
        super().__init__()
        self.channels, self.width, self.colors = channels, width, colors
        self.net = nn.Sequential(nn.Conv3d(channels, width, (1, 3, 3), padding=(0, 1, 1)), nn.GELU(),
                                 nn.Conv3d(width, width, 3, padding=1), nn.GELU(),
                                 nn.Conv3d(width, colors, 1))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return self.net(x0)


def targets(facts, every_verb: bool = False) -> list[Target]:
    """What steering asks of each stated colour: (colour, verb, side).

    By default only the side of each mover: rollers, sliders and thrown objects, all as
    ("rolls", side), their horizontal travel. That is what the model does not read from the
    prompt; asking the other verbs too (``every_verb``: a thrown object's arc, a fall, a rest)
    cost more ghosts than it bought (docs/worldbench.md, "Steering"). A colour stated twice
    with different motions is left alone (its centroid would mix two objects). Under a camera
    pan a resting object moves across the screen: its verb is then "rests_panned" (kept level only).
    """
    if not every_verb:
        return [(c, "rolls", side) for c, verb, side in targets(facts, every_verb=True)
                if verb in ("rolls", "thrown") and side]
    out: dict[int, tuple[str, float] | None] = {}
    for o in facts.objects:
        if o.color not in COLORS:
            continue
        verb, _, side = o.motion.partition("_")
        if verb == "rests" and facts.camera != "static":
            verb = "rests_panned"
        want = (verb, 1.0 if side == "right" else -1.0 if side == "left" else 0.0)
        c = COLORS.index(o.color)
        out[c] = None if c in out and out[c] != want else want
    return [(c, *want) for c, want in out.items() if want is not None]


def objective(occupancy: torch.Tensor, wanted: list[Target], drift: float | None = None) -> torch.Tensor:
    """J (B,) of occupancies (B, K, f, h, w) in [0, 1]: larger where the stated objects do what is stated.

    Each colour's centre per frame (x right, y down, both -1..1 across the frame); a mover's
    mean x travel from frame 0 times its side; a thrown object's rise to its highest point in
    latent frames 1-2 and its fall from there to the end; a falling object's mean y travel
    down; minus a resting object's mean travel. Under a camera pan the world moves across the
    screen: ``drift`` is how far per latent frame, in the same units (``world_drift``), and x
    travel is then counted in the world (the screen's less the drift), so a resting object
    must move with the floor; without ``drift`` a resting object under a pan is kept level only.

    Each frame's term counts as much as the colour is seen in it, ``mass / (mass + 0.5)``
    (held constant: no gradient), with mass the summed occupancy (about 1-2 for a whole
    object). So a frame where the object is hidden (behind the pillar) or not yet formed asks
    nothing; a plain centroid would push hardest exactly there, where moving a trace of colour
    shifts the centre most, and draw ghosts.
    """
    f, h, w = occupancy.shape[2:]
    xs = torch.linspace(-1, 1, w, device=occupancy.device)
    ys = torch.linspace(-1, 1, h, device=occupancy.device)
    total = occupancy.new_zeros(occupancy.shape[0])
    for c, verb, side in wanted:
        columns, rows = occupancy[:, c].sum(2), occupancy[:, c].sum(3)  # (B, f, w), (B, f, h)
        mass = columns.sum(-1)  # (B, f)
        seen = (mass / (mass + 0.5)).detach()  # (B, f) in [0, 1)
        cx = (columns * xs).sum(-1) / mass.clamp(min=1e-4)  # (B, f)
        cy = (rows * ys).sum(-1) / mass.clamp(min=1e-4)  # (B, f)
        if drift:  # the world's x: the screen's less the pan's drift (no gradient: a constant)
            cx = cx - drift * torch.arange(f, device=occupancy.device, dtype=cx.dtype)
        both = seen[:, 1:] * seen[:, :1]  # (B, f - 1): frame k and frame 0 both seen

        def travel(v: torch.Tensor) -> torch.Tensor:  # (B, f) -> (B, f - 1), weighted
            return both * (v[:, 1:] - v[:, :1])

        if verb in ("rolls", "thrown"):
            total = total + side * travel(cx).mean(1)
        if verb == "thrown" and f >= 3:
            k = 1 + torch.argmin(cy[:, 1:3], dim=1, keepdim=True)  # (B, 1): the highest of frames 1-2
            peak, at_peak = cy.gather(1, k)[:, 0], seen.gather(1, k)[:, 0]
            total = total + at_peak * (seen[:, 0] * (cy[:, 0] - peak) + seen[:, -1] * (cy[:, -1] - peak))
        elif verb == "falls":
            total = total + travel(cy).mean(1)
        elif verb == "rests" or (verb == "rests_panned" and drift is not None):  # still in the world
            total = total - (travel(cx).abs() + travel(cy).abs()).mean(1)
        elif verb == "rests_panned":  # the pan's drift unknown: kept level only
            total = total - travel(cy).abs().mean(1)
    return total


def world_drift(camera: str, seconds: float, size: tuple[int, int], latent_width: int, time_factor: int,
                fps: float) -> float:
    """How far the world moves across the screen per latent frame under the camera's pan, in
    ``objective``'s centre units (-1..1 between the outer latent cells' centres; + right).

    The pan's speed is the world's (``physics.pan_speed``: world units, frame heights, a
    second; slower over long clips); the world moves against the camera.
    """
    from worldreel.data.physics import pan_speed

    width, height = size
    pixels = -pan_speed(camera, seconds) * height / fps * time_factor  # per latent frame, + right
    return pixels * 2 / (width - width / latent_width) if latent_width > 1 else 0.0


def steer_wrapper(model_fn: ModelFn, probe: nn.Module, wanted: list[Target], strength: float,
                  t_from: float = STEER_FROM) -> ModelFn:
    """``model_fn`` steered towards ``wanted`` (see the module's docstring); the same function
    when there is nothing to steer. x (B, C, f, h, w); t (B,) or per frame (B, f)."""
    if not wanted or strength <= 0:
        return model_fn

    def steered(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if float(t.max()) < t_from or x.shape[2] < 2:
            return model_fn(x, t)
        level = (t if t.ndim == 1 else t.amax(1))[:, None, None, None, None]  # (B, 1, 1, 1, 1)
        per_frame = level if t.ndim == 1 else t[:, None, :, None, None]  # (B, 1, f or 1, 1, 1)
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            v = model_fn(xr, t)
            x0 = xr - per_frame * v  # the clean prediction (given frames: their clean latents)
            gain = objective(torch.sigmoid(probe(x0.float())), wanted).sum()
            (grad,) = torch.autograd.grad(gain, xr)
        scale = grad.abs().amax(dim=(1, 2, 3, 4), keepdim=True).clamp(min=1e-12)  # (B, 1, 1, 1, 1)
        return v.detach() - strength * (grad / scale) / level.clamp(min=0.05)

    return steered


def layout_score(occupancy: torch.Tensor, facts, drift: float | None = None, worst: bool = False) -> torch.Tensor:
    """How well occupancies (B, K, f, h, w) in [0, 1] fit the prompt's facts: (B,), larger is better.

    ``objective`` for every stated verb (``targets(every_verb=True)``; ``drift`` as there),
    minus ``TIDY_WEIGHT`` times the untidiness, each term a mean over latent frames: the mass of
    each colour the prompt does not state; a stated colour's mass beyond its count's
    (``OBJECT_MASS`` each plus ``SURPLUS_SLACK``) and short of it (``PRESENT_MASS`` each: a
    stated object missing; the world keeps every object in view, and with a pillar, which may
    hide one for a while, the colour's largest mass over the frames counts); and, with no
    pillar to hide behind, how much a stated colour's mass changes between frames where it is
    away from the side borders (an object popping in or out). Without the shortfall an empty
    scene, which moves nothing the wrong way, outscored every start that drew the object.
    Where a stated object's colour is not in the palette, only the motions count. The masses
    are a 64x64 clip's; the world scales with the frame height (WORLD.md), so an object covers
    (h / 8)^2 times as many cells. ``worst``: each untidiness term is its worst frame's instead
    of the mean over frames (for finished latents, where one frame with a ghost or without a
    stated object is a failure; the finalists are read so).
    """
    wanted = targets(facts, every_verb=True)
    score = objective(occupancy, wanted, drift) if wanted else occupancy.new_zeros(occupancy.shape[0])
    counts: dict[int, int] = {}
    for o in facts.objects:
        if o.color not in COLORS:
            return score
        counts[COLORS.index(o.color)] = counts.get(COLORS.index(o.color), 0) + 1
    f, h, w = occupancy.shape[2:]
    scale = (h / 8) ** 2  # cells an object covers, against a 64x64 clip's 8x8 latent
    xs = torch.linspace(-1, 1, w, device=occupancy.device)
    untidy = occupancy.new_zeros(occupancy.shape[0])

    def over_frames(per_frame: torch.Tensor) -> torch.Tensor:  # (B, frames) -> (B,)
        return per_frame.amax(1) if worst else per_frame.mean(1)

    for c in range(occupancy.shape[1]):
        columns = occupancy[:, c].sum(2)  # (B, f, w)
        mass = columns.sum(-1)  # (B, f)
        n = counts.get(c, 0)
        if n == 0:
            untidy = untidy + over_frames(mass)
            continue
        untidy = untidy + over_frames((mass - scale * (n * OBJECT_MASS + SURPLUS_SLACK)).clamp(min=0))
        shown = mass if not facts.pillar else mass.amax(1, keepdim=True)  # behind a pillar: drawn at all
        untidy = untidy + over_frames((scale * n * PRESENT_MASS - shown).clamp(min=0))
        if not facts.pillar and f >= 2:
            cx = (columns * xs).sum(-1) / mass.clamp(min=1e-4)
            inside = ((cx.abs() < EDGE) & (mass > scale * SEEN_MASS)).float()  # (B, f)
            either = torch.maximum(inside[:, 1:], inside[:, :-1])  # the step shows it inside on one side
            untidy = untidy + over_frames(either * (mass[:, 1:] - mass[:, :-1]).abs())
    return score - TIDY_WEIGHT * untidy


@torch.no_grad()
def read_fit(probe: nn.Module, x0: torch.Tensor, facts, drift: float | None = None, worst: bool = False) -> float:
    """How well a clean latent (1, C, f, h, w) fits the prompt's facts: the probe's occupancy
    of it scored by ``layout_score`` (``drift`` and ``worst`` as there)."""
    return float(layout_score(torch.sigmoid(probe(x0.float())), facts, drift, worst)[0])


LIKELIHOOD_TIMES = (0.3, 0.5, 0.7, 0.9)  # noise levels at which flow_error re-noises a finished clip
MAX_LIKELIHOOD = 10.0


@torch.no_grad()
def flow_error(model_fn: ModelFn, x0: torch.Tensor, noise: torch.Tensor, free: torch.Tensor) -> float:
    """The denoiser's own flow-matching error on clean latents x0 (1, C, f, h, w): the mean
    squared error of its velocity on x0 re-noised with ``noise`` (C, f, h, w) at each of
    ``LIKELIHOOD_TIMES``, over the ``free`` (f,) latent frames (given frames are the same in
    every candidate). A Monte Carlo estimate of the flow-matching loss, which bounds the clip's
    negative log-likelihood under the model up to a weighting of the noise levels: lower is
    a clip more typical of what the model learnt for the prompt. ``model_fn(x, t)`` is the
    prompt's denoiser without guidance. Candidates compared by it should share ``noise``."""
    errors = []
    for t in LIKELIHOOD_TIMES:
        x_t = (1 - t) * x0 + t * noise
        v = model_fn(x_t, x0.new_full((x0.shape[0],), t))
        errors.append(((v - (noise - x0)) ** 2)[:, :, free].mean())
    return float(torch.stack(errors).mean())


def pick_finalist(fits: list[float], errors: list[float] | None = None, weight: float = 0.0,
                  judged: list[float] | None = None, judge: float = 0.0) -> int:
    """The finalist to keep: the largest ``z(fit) - weight * z(error) + judge * z(judged)``, each
    reading standardised over the finalists (the probe's fit, ``flow_error`` and the judge's
    expected score, ``judge.read_judge``, have unrelated scales; a reading that is the same for
    all counts 0). ``weight`` and ``judge`` 0 (or no readings) keep the best fit. Ties go to the
    first (the look-ahead's best)."""
    def z(values: list[float]) -> torch.Tensor:
        v = torch.tensor(values, dtype=torch.float64)
        spread = v.std(unbiased=False)
        return (v - v.mean()) / spread if spread > 0 else torch.zeros_like(v)

    total = z(fits)
    if weight and errors is not None:
        total = total - weight * z(errors)
    if judge and judged is not None:
        total = total + judge * z(judged)
    return max(range(len(fits)), key=lambda k: (float(total[k]), -k))


@torch.no_grad()
def rank_starts(look: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], starts: list[torch.Tensor],
                probe: nn.Module, facts, drift: float | None = None) -> tuple[list[int], list[torch.Tensor], list[float]]:
    """The starts ranked by how well they fit the prompt: (their indices best first, every
    start's state after the look-ahead, every score).

    ``look(x)`` runs one start ``LOOK_STEPS`` steps and returns (the state there, the clean
    prediction there); the probe reads the clean prediction and ``layout_score`` scores it
    (``drift``: the pan's, ``world_drift``). Ties go to the earlier start (so the seed's own
    noise wins a tie).
    """
    scores, states = [], []
    for x in starts:
        state, x0 = look(x)
        scores.append(read_fit(probe, x0, facts, drift))
        states.append(state)
    order = sorted(range(len(starts)), key=lambda k: (-scores[k], k))
    return order, states, scores
