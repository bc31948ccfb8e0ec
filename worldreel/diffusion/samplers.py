"""Samplers for the rectified-flow ODE dx/dt = v(x, t), integrated from t = 1 (noise) to t = 0.

Every sampler is a plain function with one signature (after k-diffusion's ``sampling.py``):
``sample_x(model_fn, x, ts, *, callback=None) -> x`` where ``model_fn(x, t)`` returns the
velocity for x (B, ...) at t (B,), and ``ts`` is a 1-D schedule from 1 to 0
(``diffusion.flow.timesteps``). A 2-D ``ts`` (steps + 1, f) gives every latent frame of x
(B, C, f, h, w) its own times (``flow.stagger_timesteps``): model_fn then gets t (B, f), and
each frame moves by its own step. The network knows nothing about guidance or given frames:
those are wrappers that turn one ``model_fn`` into another (``cfg_wrapper``,
``cfg_batched_wrapper``, ``frame_condition_wrapper``); how guidance combines the two
passes (plain CFG, an interval, CFG-Zero*, APG) is a rule from ``diffusion/guidance.py``.

``callback`` (optional) is called after every step with a dict
``{"i": step index, "steps": number of steps, "t": t, "t_next": t_next, "x": new x, "v": velocity used}``
(t and t_next: the noisiest frame's, for a per-frame schedule);
``(info["i"] + 1) / info["steps"]`` is the fraction done.
"""
from __future__ import annotations

from typing import Callable

import torch

from worldreel.diffusion.guidance import DEFAULT_INTERVAL, make_rule

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (B, ...), t (B,)) -> v (B, ...)


def _t_batch(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A schedule entry for the batch: () -> (B,), or per frame (f,) -> (B, f)."""
    t = t.to(device=x.device, dtype=torch.float32)
    return t.expand(x.shape[0]) if t.ndim == 0 else t.expand(x.shape[0], -1)


def _dt(t_next: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The step t -> t_next, broadcastable against x: a scalar, or (1, 1, f, 1, 1) for a per-frame
    schedule and x (B, C, f, h, w)."""
    dt = (t_next - t).to(device=x.device, dtype=x.dtype)
    return dt if dt.ndim == 0 else dt[None, None, :, None, None]


@torch.no_grad()
def sample_euler(model_fn: ModelFn, x: torch.Tensor, ts: torch.Tensor, *, callback=None) -> torch.Tensor:
    """Euler's method (1 network call per step)."""
    steps = len(ts) - 1
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        v = model_fn(x, _t_batch(t, x))  # (B, ...)
        x = x + _dt(t_next, t, x) * v
        if callback is not None:
            callback({"i": i, "steps": steps, "t": float(t.max()), "t_next": float(t_next.max()), "x": x, "v": v})
    return x


@torch.no_grad()
def sample_heun(model_fn: ModelFn, x: torch.Tensor, ts: torch.Tensor, *, callback=None) -> torch.Tensor:
    """Heun's method (explicit trapezoid, 2 network calls per step, second order; also on the last step)."""
    # Unlike k-diffusion's Heun, the last step is corrected too: a velocity model is well
    # defined at t = 0 (no division by sigma), and the correction keeps the method exact
    # for velocities linear in t.
    steps = len(ts) - 1
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        dt = _dt(t_next, t, x)
        v = model_fn(x, _t_batch(t, x))  # (B, ...)
        x_euler = x + dt * v
        v_next = model_fn(x_euler, _t_batch(t_next, x))  # (B, ...)
        v = (v + v_next) / 2
        x = x + dt * v
        if callback is not None:
            callback({"i": i, "steps": steps, "t": float(t.max()), "t_next": float(t_next.max()), "x": x, "v": v})
    return x


SAMPLERS: dict[str, Callable] = {"euler": sample_euler, "heun": sample_heun}


def cfg_wrapper(cond_fn: ModelFn, uncond_fn: ModelFn, scale: float, mode: str = "cfg", *,
                interval: tuple[float, float] = DEFAULT_INTERVAL) -> ModelFn:
    """Classifier-free guidance (Ho & Salimans 2022): v = v_u + scale * (v_c - v_u), or a variant.

    ``uncond_fn`` is the network on the negative prompt ("" by default); ``mode`` picks how the
    two velocities combine (``diffusion/guidance.py``: cfg, interval, zero-star, apg; interval
    is the noise levels where "interval" guides). Scale 1 is the plain conditional model in
    every mode and skips the second call.
    """
    if scale == 1.0:
        return cond_fn
    rule = make_rule(mode, scale, interval)  # fresh per sampling run: APG keeps momentum

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_cond = cond_fn(x, t)
        v_uncond = uncond_fn(x, t) if rule.needs_uncond(t) else None
        return rule(v_cond, v_uncond, x, t)

    return guided


def cfg_batched_wrapper(
    net_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    text: torch.Tensor,
    text_mask: torch.Tensor,
    null_text: torch.Tensor,
    null_mask: torch.Tensor,
    scale: float,
    mode: str = "cfg",
    *,
    interval: tuple[float, float] = DEFAULT_INTERVAL,
) -> ModelFn:
    """Guidance with the conditional and unconditional passes in one batch of 2B (same result as ``cfg_wrapper``).

    net_fn(x, t, text, text_mask) is the network (e.g. a ``DiT``); text (B, L, D) and
    text_mask (B, L) the prompt, null_text (B or 1, L', D) and null_mask the negative
    prompt. t may be (B,) or per frame (B, f): it is passed through, doubled. ``mode`` and
    ``interval`` as in ``cfg_wrapper``; a call where the mode needs no unconditional pass
    (outside the guidance interval) runs the conditional batch of B alone.
    """
    from worldreel.models.text import pad_text

    B = text.shape[0]
    null_text, null_mask = null_text.expand(B, -1, -1), null_mask.expand(B, -1)  # (B, L', D), (B, L')
    length = max(text.shape[1], null_text.shape[1])
    text, text_mask = pad_text(text, text_mask, length)  # (B, L, D), (B, L)
    null_text, null_mask = pad_text(null_text, null_mask, length)  # (B, L, D), (B, L)
    both_text = torch.cat([text, null_text])  # (2B, L, D)
    both_mask = torch.cat([text_mask, null_mask])  # (2B, L)
    rule = make_rule(mode, scale, interval)  # fresh per sampling run: APG keeps momentum

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not rule.needs_uncond(t):
            return rule(net_fn(x, t, text, text_mask), None, x, t)  # (B, ...)
        v = net_fn(torch.cat([x, x]), torch.cat([t, t]), both_text, both_mask)  # (2B, ...)
        v_cond, v_uncond = v.chunk(2)  # (B, ...) each
        return rule(v_cond, v_uncond, x, t)

    return guided


def frame_condition_wrapper(frame_fn: ModelFn, clean: torch.Tensor, given: torch.Tensor) -> ModelFn:
    """Given latent frames as data: they are shown clean at t = 0 and never move.

    frame_fn(x (B, C, f, h, w), t_frames (B, f)) -> v is the per-frame network (a DiT with
    its text bound, or a guidance wrapper around one); clean (B, C, f, h, w) holds the given
    latents; given (B, f) bool. Start the sampler from ``x`` with the given frames already
    in place (``torch.where``) and they come out bit-for-bit unchanged, because their
    velocity is zero.
    """
    g = given[:, None, :, None, None]  # (B, 1, f, 1, 1)

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = torch.where(g, clean, x)  # (B, C, f, h, w)
        t_frames = (t[:, None].expand(-1, given.shape[1]) if t.ndim == 1 else t).masked_fill(given, 0.0)  # (B, f)
        return frame_fn(x, t_frames).masked_fill(g, 0.0)  # (B, C, f, h, w)

    return model_fn
