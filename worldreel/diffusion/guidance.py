"""Guidance rules: how the conditional and unconditional velocities combine into one.

Classifier-free guidance runs the network twice (prompt, negative prompt) and extrapolates;
the wrappers in ``diffusion/samplers.py`` (``cfg_wrapper``, ``cfg_batched_wrapper``) make
those two passes and hand them to a rule from here. A rule is a small object
``rule(v_cond, v_uncond, x, t) -> v`` plus ``rule.needs_uncond(t)`` (False lets the
wrapper skip the unconditional pass on that call). Rules that keep state across steps
(APG's momentum) are made fresh for every sampling run: ``make_rule`` per ``model_fn``.

Shapes: v_cond, v_uncond, x (B, C, f, h, w) or any (B, ...); t (B,) or per frame (B, f).
Per-frame t comes from ``frame_condition_wrapper``: given frames sit at t = 0 while the
frames being made share the sample's noise level, so a sample's level is ``t.amax(1)``.

The modes (``GUIDANCE_MODES``; config.json "sampling.guidance_mode", ``--guidance-mode``):

- ``cfg``: plain classifier-free guidance (Ho & Salimans 2022), v_u + s (v_c - v_u).
- ``interval``: CFG only while the noise level t is inside ``(lo, hi]``, the conditional
  model alone outside it (Kynkäänniemi et al. 2024, "Applying guidance in a limited
  interval improves sample and distribution quality"); outside the interval the
  unconditional pass is skipped, so it is also cheaper.
- ``zero-star``: CFG-Zero* (Fan et al. 2025): the unconditional velocity is first scaled by
  the per-sample least-squares factor s* = <v_c, v_u> / |v_u|^2 (the "optimised scale"),
  v = s* v_u + s (v_c - s* v_u); and the very first step (t = 1, pure noise) moves nothing
  ("zero-init"), because there the flow model's estimate is worse than zero.
- ``apg``: adaptive projected guidance (Sadat et al. 2024, "Eliminating oversaturation and
  artifacts of high guidance scales"), on the clean-sample prediction D = x - t v: the
  guidance difference D_c - D_u is accumulated with negative momentum, its norm capped, and
  its component parallel to D_c dropped; D = D_c + (s - 1) update, turned back into v.

Every mode with scale 1 is the conditional model alone (the wrappers then skip the
unconditional pass), so "guidance 1 = off" holds whatever the mode.
"""
from __future__ import annotations

import torch

from worldreel.errors import UserError

GUIDANCE_MODES = ("cfg", "interval", "zero-star", "apg")
DEFAULT_INTERVAL = (0.2, 0.85)  # noise levels t where "interval" guides; EDM2's sigma (0.28, 5.42] is t (0.22, 0.84]

# APG's published defaults (Sadat et al. 2024, their reference code): momentum -0.75, eta 0
# (the parallel component dropped). Their norm cap (2.5 for a Stable Diffusion latent of
# 4x64x64 values) is stated here per value, so it scales with the latent's size, and set
# for world-tiny: on its 16x9x8x8 clips |D_c - D_u| is about 30-45 at t = 1, 20 at t = 0.85,
# 6 at t = 0.5 and 2 at t = 0.14 (|D_c| about 80), so 0.15 per value (a cap of 14) binds on
# the first, noisiest third of the steps only. SD's own 2.5 would cut every step's guidance
# to a twentieth.
APG_MOMENTUM = -0.75
APG_ETA = 0.0
APG_NORM_PER_VALUE = 0.15


def check_mode(mode) -> str:
    """``mode`` if it is a guidance mode, else a UserError naming guidance_mode."""
    if mode not in GUIDANCE_MODES:
        raise UserError(f"unknown guidance mode {mode!r}; choose one of {list(GUIDANCE_MODES)}", param="guidance_mode")
    return mode


def check_interval(interval) -> tuple[float, float]:
    """(lo, hi) with 0 <= lo < hi <= 1 (noise levels, 1 = pure noise), from a pair or 'LO,HI'."""
    try:
        if isinstance(interval, str):
            interval = interval.split(",")
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise UserError(f"guidance interval must be two noise levels LO,HI, got {interval!r}",
                        param="guidance_interval") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise UserError(f"guidance interval must satisfy 0 <= LO < HI <= 1 (noise levels), got {lo:g},{hi:g}",
                        param="guidance_interval")
    return lo, hi


def _level(t: torch.Tensor) -> torch.Tensor:
    """Each sample's noise level: (B,) or per frame (B, f) -> (B,)."""
    return t if t.ndim == 1 else t.amax(dim=1)


def _per_sample(t_b: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1), broadcastable against ``like`` (B, ...)."""
    return t_b.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def _per_frame(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """t (B,) or (B, f) -> broadcastable against ``like``: (B, 1, 1, 1, 1) or (B, 1, f, 1, 1) for (B, C, f, h, w)."""
    if t.ndim == 1:
        return _per_sample(t, like)
    return t[:, None, :, None, None].to(like.dtype)  # (B, f) -> (B, 1, f, 1, 1)


def _dims(v: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, v.ndim))  # every axis but the batch


def _norm(v: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm over every axis but the batch: (B, ...) -> (B, 1, ..., 1)."""
    return torch.linalg.vector_norm(v, dim=_dims(v), keepdim=True)


class CFG:
    """Plain classifier-free guidance: v_u + s (v_c - v_u)."""

    def __init__(self, scale: float):
        self.scale = scale

    def needs_uncond(self, t: torch.Tensor) -> bool:
        return True

    def __call__(self, v_cond, v_uncond, x, t):
        return v_uncond + self.scale * (v_cond - v_uncond)


class IntervalCFG(CFG):
    """CFG while lo < t <= hi, the conditional velocity elsewhere (Kynkäänniemi et al. 2024)."""

    def __init__(self, scale: float, interval: tuple[float, float] = DEFAULT_INTERVAL):
        super().__init__(scale)
        self.lo, self.hi = check_interval(interval)

    def _inside(self, t: torch.Tensor) -> torch.Tensor:
        level = _level(t)
        return (level > self.lo) & (level <= self.hi)  # (B,)

    def needs_uncond(self, t: torch.Tensor) -> bool:
        return bool(self._inside(t).any())

    def __call__(self, v_cond, v_uncond, x, t):
        if v_uncond is None:  # the wrapper skipped the pass: every sample is outside
            return v_cond
        inside = _per_sample(self._inside(t), v_cond).bool()  # (B, 1, ...)
        return torch.where(inside, super().__call__(v_cond, v_uncond, x, t), v_cond)


class CFGZeroStar(CFG):
    """CFG-Zero* (Fan et al. 2025): optimised scale for the unconditional velocity, zero velocity at t = 1."""

    def needs_uncond(self, t: torch.Tensor) -> bool:
        return bool((_level(t) < 1.0).any())  # at t = 1 the output is zero anyway

    def __call__(self, v_cond, v_uncond, x, t):
        if v_uncond is None:  # the wrapper skipped the pass: every sample is at t = 1
            return torch.zeros_like(v_cond)
        # s* = <v_c, v_u> / |v_u|^2 per sample, over the frames being made only (given frames,
        # at t = 0, have velocities that are masked away later and must not tilt s*).
        made = (_per_frame(t, v_cond) > 0).to(v_cond.dtype)  # (B, 1, f, 1, 1) or (B, 1, ..., 1)
        dot = (v_cond * v_uncond * made).sum(dim=_dims(v_cond), keepdim=True)  # (B, 1, ..., 1)
        norm = (v_uncond.square() * made).sum(dim=_dims(v_cond), keepdim=True)  # (B, 1, ..., 1)
        s_star = dot / (norm + 1e-8)
        v = s_star * v_uncond + self.scale * (v_cond - s_star * v_uncond)
        # Zero-init: the frames still at pure noise do not move on this step.
        return v.masked_fill(_per_frame(t, v) >= 1.0, 0.0)


class APG(CFG):
    """Adaptive projected guidance (Sadat et al. 2024) on D = x - t v, with momentum; keeps state across calls."""

    def __init__(self, scale: float, momentum: float = APG_MOMENTUM, eta: float = APG_ETA,
                 norm_per_value: float = APG_NORM_PER_VALUE):
        super().__init__(scale)
        self.momentum, self.eta, self.norm_per_value = momentum, eta, norm_per_value
        self.running: torch.Tensor | None = None  # the momentum buffer, (B, ...)

    def __call__(self, v_cond, v_uncond, x, t):
        tt = _per_frame(t, v_cond)  # (B, 1, f, 1, 1) or (B, 1, ..., 1)
        d_cond = x - tt * v_cond  # clean-sample predictions, (B, ...)
        diff = -tt * (v_cond - v_uncond)  # D_c - D_u, (B, ...)
        # 1. Negative momentum: the update leans away from the previous steps' direction.
        if self.running is not None and self.running.shape == diff.shape:
            diff = diff + self.momentum * self.running
        self.running = diff
        # 2. Cap the update's norm (per sample), scaled with the number of values.
        if self.norm_per_value > 0:
            cap = self.norm_per_value * diff[0].numel() ** 0.5
            norm = _norm(diff)  # (B, 1, ..., 1)
            diff = diff * torch.clamp(cap / (norm + 1e-12), max=1.0)
        # 3. Drop (eta = 0) the part parallel to D_c: it saturates without adding prompt adherence.
        unit = d_cond / (_norm(d_cond) + 1e-12)  # (B, ...)
        parallel = (diff * unit).sum(dim=_dims(diff), keepdim=True) * unit
        update = diff - parallel + self.eta * parallel
        # 4. D = D_c + (s - 1) update, and back to a velocity: v = (x - D) / t. At t = 0 the
        # difference is 0, so the guidance vanishes (no division by zero).
        return v_cond - (self.scale - 1.0) * update / tt.clamp(min=1e-6)


def make_rule(mode: str, scale: float, interval: tuple[float, float] = DEFAULT_INTERVAL) -> CFG:
    """A fresh guidance rule for one sampling run (``mode`` one of ``GUIDANCE_MODES``)."""
    check_mode(mode)
    if mode == "interval":
        return IntervalCFG(scale, interval)
    if mode == "zero-star":
        return CFGZeroStar(scale)
    if mode == "apg":
        return APG(scale)
    return CFG(scale)
