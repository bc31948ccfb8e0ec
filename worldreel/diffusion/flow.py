"""Rectified flow (flow matching on straight paths): schedules, timestep sampling and the loss.

Convention: ``x_t = (1 - t) * x0 + t * noise``, t = 1 is pure noise, t = 0
is the data; the network predicts the velocity ``v = dx_t/dt = noise - x0``; sampling runs
t from 1 to 0 with ``x <- x + (t_next - t) * v``.

Timestep shift. A longer or larger video holds more tokens carrying the same signal, so
at a given t it is *less* destroyed by the noise; SD3 (Esser et al. 2024, "Scaling
Rectified Flow Transformers", section 5.3.2) compensates by shifting the times towards the
noisy end, ``t' = a t / (1 + (a - 1) t)``, with ``a = sqrt(m / n)`` for m tokens against a
base of n tokens (they derive it by matching the SNR of a uniform image). Open-Sora 2.0
uses the same shift map with ``a`` linear in the token count and scaled by sqrt(frames).
We keep SD3's square-root rule with the base at our native clip (4 s at 64x64 = 144
tokens, shift 1): ``shift_for_tokens(n) = sqrt(n / 144)``; a 1-frame 64x64 image (16
tokens) gets 1/3, an 8 s 128x128 clip (17 x 64 tokens) gets ~2.7. The same shift is used
for training times and for sampling schedules so both see the same noise levels.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

BASE_TOKENS = 144  # tokens of the native 4 s 64x64 clip at the 1x2x2 patch: shift 1 there


def time_shift(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's shift map t -> shift * t / (1 + (shift - 1) * t); keeps 0 and 1 fixed, shift > 1 moves towards noise."""
    return shift * t / (1 + (shift - 1) * t)


def shift_for_tokens(n_tokens: int, *, base_tokens: int = BASE_TOKENS, base_shift: float = 1.0) -> float:
    """Timestep shift for a sequence of ``n_tokens`` (SD3 square-root rule, see the module docstring)."""
    return base_shift * math.sqrt(n_tokens / base_tokens)


def timesteps(steps: int, shift: float = 1.0) -> torch.Tensor:
    """Sampling schedule: ``steps + 1`` times from 1 down to 0 (uniform, then shifted), float32."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return time_shift(torch.linspace(1.0, 0.0, steps + 1), shift)


def stagger_timesteps(steps: int, shift: float, frames: int, lead: float) -> torch.Tensor:
    """Per-frame sampling schedule (steps + 1, frames): the earlier frames run ahead of the later ones.

    Every frame follows the shifted schedule of ``timesteps``, but frame i of n starts its
    descent later and ends it later: with progress s = 0..1 over the steps and r = i / (n - 1),
    frame i is at progress ``clamp((1 + lead) s - lead r, 0, 1)``. So the first frame is clean
    when s = 1 / (1 + lead) while the last is still pure noise until s = lead / (1 + lead): the
    later frames are made while the earlier ones are (nearly) known, as in diffusion forcing
    (Chen et al. 2024) and rolling diffusion (Ruhe et al. 2024). Each frame moves on about
    ``steps / (1 + lead)`` of the steps. ``lead = 0`` is ``timesteps`` for every frame.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if frames < 1 or not lead >= 0:
        raise ValueError(f"need frames >= 1 and lead >= 0, got {frames}, {lead}")
    progress = torch.linspace(0.0, 1.0, steps + 1)  # (steps + 1,)
    return stagger_times(progress, frames, torch.full_like(progress, lead), shift)  # (steps + 1, frames)


def stagger_times(t: torch.Tensor, frames: int, lead: torch.Tensor, shift: float = 1.0) -> torch.Tensor:
    """Training times for staggered sampling: the per-frame times ``stagger_timesteps`` visits.

    t (B,) in [0, 1] is each sample's place on the schedule (0 = the start, all noise; 1 = the
    end); lead (B,) >= 0 its lead -> (B, frames) times, the same map as ``stagger_timesteps``.
    """
    rank = torch.linspace(0.0, 1.0, frames, device=t.device)[None] if frames > 1 else t.new_zeros(1, 1)  # (1, f)
    progress = ((1.0 + lead[:, None]) * t[:, None] - lead[:, None] * rank).clamp(0.0, 1.0)  # (B, f)
    return time_shift(1.0 - progress, shift)


def sample_t(
    batch: int,
    *,
    generator: torch.Generator | None = None,
    mean: float = 0.0,
    std: float = 1.0,
    shift: float = 1.0,
) -> torch.Tensor:
    """Training times (batch,): logit-normal (SD3's best, mean 0, std 1: more weight on the middle), then shifted.

    Drawn on the generator's device (CPU by default), so resuming with the same generator state repeats them.
    """
    device = generator.device if generator is not None else "cpu"
    u = torch.randn(batch, generator=generator, device=device) * std + mean  # (B,)
    return time_shift(torch.sigmoid(u), shift)  # (B,) in (0, 1)


def noisy(x0: torch.Tensor, noise: torch.Tensor, t_frames: torch.Tensor) -> torch.Tensor:
    """x_t for per-frame times: x0, noise (B, C, f, h, w), t_frames (B, f) -> (B, C, f, h, w)."""
    tb = t_frames[:, None, :, None, None].to(x0.dtype)  # (B, 1, f, 1, 1)
    return (1 - tb) * x0 + tb * noise


def flow_loss(
    model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    *,
    t: torch.Tensor,
    noise: torch.Tensor,
    given: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rectified-flow loss: mean squared error of the predicted velocity on the frames that are not given.

    model_fn(x_t (B, C, f, h, w), t_frames (B, f)) -> v; x0, noise (B, C, f, h, w); t (B,), or
    (B, f) per frame (staggered times, ``stagger_times``);
    given (B, f) bool: frames the model is shown clean (their time is 0, their latents x0)
    and not scored on. A sample with every frame given contributes nothing.
    weight: optional per-element weights of the squared error, broadcastable to x0 (e.g.
    (B, 1, f, h, w) per latent cell, the DiT task's ``object_weight``); None = uniform.
    """
    B, _, f = x0.shape[:3]
    # 1. Per-frame times: the sample's t on generated frames (or each frame's own, t (B, f)), 0 on given ones.
    t_frames = (t[:, None].expand(B, f) if t.ndim == 1 else t).to(x0.device)  # (B, f)
    if given is None:
        given = torch.zeros(B, f, dtype=torch.bool, device=x0.device)
    t_frames = t_frames.masked_fill(given, 0.0)  # (B, f)
    # 2. Straight path and its velocity.
    x_t = noisy(x0, noise, t_frames)  # (B, C, f, h, w)
    target = noise - x0  # (B, C, f, h, w)
    # 3. Per-frame error, averaged over the frames the model must generate.
    sq = (model_fn(x_t, t_frames).float() - target.float()).square()  # (B, C, f, h, w)
    if weight is not None:
        sq = sq * weight.float()
    err = sq.mean(dim=(1, 3, 4))  # (B, f)
    weight = (~given).float()  # (B, f)
    return (err * weight).sum() / weight.sum().clamp(min=1.0)
