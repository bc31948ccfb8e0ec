"""Speed benchmark: denoiser step time against a peer, FLOP/s utilisation, generation real-time factor.

``worldreel bench speed --json OUT`` (cli/speed.py) runs ``run_speed`` and prints a table:

(a) Denoiser step time (forward, and forward + backward; best of interleaved repeats) for our ``DiT`` at a preset's
    width, depth and heads, at several token counts, side by side *in the same process*
    with the peer implementation ``diffusers.WanTransformer3DModel`` built at the same
    width, depth, heads, MLP width, patch and text width (random weights). diffusers is an
    optional benchmark extra (``pip install -c constraints.txt diffusers``); without it
    the peer rows say so.
(b) Achieved FLOP/s of a denoiser step (FLOPs counted by ``torch.utils.flop_counter`` on
    the actual call, so attention is included) as a fraction of this machine's fp32 matmul
    peak, measured in the same run (best of square ``torch.mm``).
(c) Seconds to generate a clip (default 4 s at 64x64, the model's default sampling
    settings) with ``pipelines.generate.Generator`` (best of two, after a warm-up), divided
    by the clip's length: below 1 is faster than real time. A named model that is not installed is measured as a
    random-weights folder of the same preset (speed does not depend on the weights; the
    row says so).

Token counts map to latent grids of 9 latent frames (a 4 s clip) at the 1x2x2 patch:
144 = 9 x 4 x 4 (64x64 pixels), 576 = 9 x 8 x 8 (128x128), 2304 = 9 x 16 x 16 (256x256).
"""
from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from worldreel.errors import UserError


@dataclass
class SpeedConfig:
    preset: str = "world-tiny"  # denoiser architecture measured in (a) and (b)
    tokens: list[int] = field(default_factory=lambda: [144, 576, 2304])  # token counts; each must be 9 x a square
    batch: int = 2  # items per denoiser call (2 = one guided sampling step: prompt + negative prompt)
    text_tokens: int = 16  # text length the cross-attention sees
    repeats: int = 5  # timed calls per measurement, interleaved between the models (best and median kept)
    warmup: int = 1  # untimed calls first (allocator, kernels)
    threads: int = 0  # torch CPU threads (0 = leave torch's default)
    peer: bool = True  # also time diffusers.WanTransformer3DModel
    model: str = "world-tiny"  # model for (c): a name or folder; "" skips (c)
    seconds: float = 4.0  # clip length for (c)
    size: tuple[int, int] = (64, 64)  # (width, height) for (c)
    device: str = "cpu"  # where to run
    peak_seconds: float = 1.5  # time spent measuring the matmul peak


LATENT_FRAMES = 9  # a 4 s clip at 8 fps with the x4 causal time compression: 1 + 32/4


def grid_for_tokens(tokens: int, patch: tuple[int, int, int]) -> tuple[int, int, int]:
    """Latent grid (f, h, w) holding ``tokens`` tokens: 9 latent frames, square in space."""
    side = math.isqrt(tokens // LATENT_FRAMES)
    if LATENT_FRAMES * side * side != tokens or tokens <= 0:
        raise UserError(f"token count {tokens} is not 9 x a square (e.g. 144, 576, 2304)", param="tokens")
    return LATENT_FRAMES * patch[0], side * patch[1], side * patch[2]


def matmul_peak(device: torch.device, seconds: float = 1.5, dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """Best FLOP/s of a square matrix product in ``dtype`` (n = 1024 and 2048), about ``seconds`` of work."""
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        torch.mm(a, b)  # warm-up
        deadline = time.perf_counter() + seconds / 2
        while time.perf_counter() < deadline:
            _sync(device)
            t0 = time.perf_counter()
            torch.mm(a, b)
            _sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return {"flops": best, "gflops": best / 1e9}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _count_flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _measure(entries: list[tuple[str, Callable[[], torch.Tensor], list]], tokens: int, cfg: SpeedConfig,
             device: torch.device, peak: float) -> list[dict[str, Any]]:
    """Forward and forward+backward times, FLOPs and utilisation of each (name, forward, params).

    The models' timed calls are interleaved (ours, peer, ours, peer, ...), so load from other
    processes on a shared machine hits them alike; the best and the median of ``repeats``
    calls are kept, and the best is the headline (the least disturbed run).
    """
    calls = []
    for name, forward, params in entries:
        def fwd(forward=forward):
            with torch.no_grad():
                forward()

        def fwd_bwd(forward=forward, params=params):
            forward().square().mean().backward()
            for p in params:
                p.grad = None

        for _ in range(cfg.warmup):
            fwd()
            fwd_bwd()
        calls.append((name, params, fwd, fwd_bwd, [], []))
    for _ in range(cfg.repeats):
        for _name, _params, fwd, fwd_bwd, t_fwd, t_fb in calls:
            t_fwd.append(_timed(fwd, device))
            t_fb.append(_timed(fwd_bwd, device))
    rows = []
    for name, params, fwd, fwd_bwd, t_fwd, t_fb in calls:
        row: dict[str, Any] = {"model": name, "tokens": tokens, "batch": cfg.batch, "params": sum(p.numel() for p in params)}
        row["forward_s"], row["forward_s_median"] = min(t_fwd), statistics.median(t_fwd)
        row["forward_backward_s"], row["forward_backward_s_median"] = min(t_fb), statistics.median(t_fb)
        row["forward_gflop"] = _count_flops(fwd) / 1e9
        row["forward_backward_gflop"] = _count_flops(fwd_bwd) / 1e9
        row["forward_util"] = row["forward_gflop"] * 1e9 / row["forward_s"] / peak
        row["forward_backward_util"] = row["forward_backward_gflop"] * 1e9 / row["forward_backward_s"] / peak
        rows.append(row)
    return rows


def _ours(dit_cfg, grid, cfg: SpeedConfig, device: torch.device):
    from worldreel.models.dit import DiT

    torch.manual_seed(0)
    model = DiT(dit_cfg).to(device).train()
    with torch.no_grad():  # random weights everywhere (zero-init layers too), so nothing is trivially zero
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    f, h, w = grid
    x = torch.randn(cfg.batch, dit_cfg.in_channels, f, h, w, device=device)
    t = torch.rand(cfg.batch, f, device=device)
    text = torch.randn(cfg.batch, cfg.text_tokens, dit_cfg.text_dim, device=device)
    mask = torch.ones(cfg.batch, cfg.text_tokens, dtype=torch.bool, device=device)
    return (lambda: model(x, t, text, mask)), list(model.parameters())


def _peer(dit_cfg, grid, cfg: SpeedConfig, device: torch.device):
    """diffusers' Wan 2.1 transformer at our width, depth, heads, MLP width, patch and text width."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(
        patch_size=tuple(dit_cfg.patch), num_attention_heads=dit_cfg.heads, attention_head_dim=dit_cfg.width // dit_cfg.heads,
        in_channels=dit_cfg.in_channels, out_channels=dit_cfg.in_channels, text_dim=dit_cfg.text_dim, freq_dim=256,
        ffn_dim=int(dit_cfg.width * dit_cfg.mlp_ratio), num_layers=dit_cfg.depth, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
    ).to(device).train()
    f, h, w = grid
    x = torch.randn(cfg.batch, dit_cfg.in_channels, f, h, w, device=device)
    t = torch.rand(cfg.batch, device=device) * 1000  # Wan takes one integer-scale time per item
    text = torch.randn(cfg.batch, cfg.text_tokens, dit_cfg.text_dim, device=device)
    return (lambda: model(x, t, text, return_dict=False)[0]), list(model.parameters())


def _generation(cfg: SpeedConfig, device: torch.device) -> dict[str, Any]:
    """Row (c): seconds to generate ``cfg.seconds`` of video at ``cfg.size`` / cfg.seconds."""
    row: dict[str, Any] = {"model": cfg.model, "seconds": cfg.seconds, "size": f"{cfg.size[0]}x{cfg.size[1]}"}
    try:
        from worldreel.pipelines.generate import Generator
        from worldreel.model_folder import find, save_random_model
        from worldreel.presets import PRESETS
    except ImportError as err:
        return {**row, "status": f"unavailable: the generation pipeline is not installed ({err.name})"}
    with tempfile.TemporaryDirectory() as tmp:
        folder, note = cfg.model, "trained weights"
        try:
            find(cfg.model)
        except UserError:
            if cfg.model not in PRESETS:
                return {**row, "status": f"unavailable: no model {cfg.model!r}"}
            folder = str(save_random_model(tmp, preset=cfg.model))
            note = f"random weights, {cfg.model} architecture (no trained {cfg.model} installed; speed does not depend on weights)"
        gen = Generator.load(folder, device=str(device))
        kwargs = dict(seconds=cfg.seconds, size=cfg.size, rewrite=False)
        gen.generate("a red ball falls", seed=0, **kwargs)  # warm-up (text encoder cache, allocator)
        times = []
        for seed, prompt in enumerate(("a blue box slides right and the camera pans left", "two green balls are thrown left")):
            t0 = time.perf_counter()
            video = gen.generate(prompt, seed=seed, **kwargs)
            times.append(time.perf_counter() - t0)
        sc = gen.sampling
        return {**row, "status": "ok", "weights": note, "frames": int(len(video.frames)), "steps": sc.steps,
                "guidance": sc.guidance, "sampler": sc.sampler, "generate_s": min(times), "generate_s_all": times,
                "realtime_ratio": min(times) / cfg.seconds}


def run_speed(cfg: SpeedConfig, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """All three measurements as a JSON-able dict: {"machine", "denoiser": [rows], "generation": row}."""
    from worldreel.presets import get_preset

    device = torch.device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dit_cfg = get_preset(cfg.preset).model.dit
    grids = [grid_for_tokens(n, dit_cfg.patch) for n in cfg.tokens]  # check all before any work
    # 1. This machine's fp32 matmul peak, the yardstick for (b).
    log("measuring the fp32 matmul peak")
    peak = matmul_peak(device, cfg.peak_seconds)
    result: dict[str, Any] = {
        "machine": {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "matmul_peak_gflops": peak["gflops"]},
        "config": {"preset": cfg.preset, "width": dit_cfg.width, "depth": dit_cfg.depth, "heads": dit_cfg.heads,
                   "mlp_ratio": dit_cfg.mlp_ratio, "batch": cfg.batch, "text_tokens": cfg.text_tokens, "repeats": cfg.repeats},
        "denoiser": [],
    }
    # 2. Denoiser steps, ours then the peer, at each token count.
    peer_note = None
    if cfg.peer:
        try:
            import diffusers  # noqa: F401
        except ImportError:
            peer_note = "diffusers is not installed (optional: pip install -c constraints.txt diffusers)"
    for tokens, grid in zip(cfg.tokens, grids):
        log(f"denoisers at {tokens} tokens")
        entries = [("worldreel DiT", *_ours(dit_cfg, grid, cfg, device))]
        if cfg.peer and not peer_note:
            entries.append(("diffusers WanTransformer3DModel", *_peer(dit_cfg, grid, cfg, device)))
        result["denoiser"] += _measure(entries, tokens, cfg, device, peak["flops"])
        if cfg.peer and peer_note:
            result["denoiser"].append({"model": "diffusers WanTransformer3DModel", "tokens": tokens, "status": peer_note})
        del entries
    # The peak again after the long middle part: on a shared machine the best of the two is
    # the closer estimate of what the cores can do.
    peak_after = matmul_peak(device, cfg.peak_seconds)
    if peak_after["flops"] > peak["flops"]:
        for row in result["denoiser"]:
            for key in ("forward_util", "forward_backward_util"):
                if key in row:
                    row[key] *= peak["flops"] / peak_after["flops"]
        result["machine"]["matmul_peak_gflops"] = peak_after["gflops"]
    # 3. A whole generation.
    if cfg.model:
        log(f"generating {cfg.seconds:g} s at {cfg.size[0]}x{cfg.size[1]} with {cfg.model}")
        result["generation"] = _generation(cfg, device)
    return result
